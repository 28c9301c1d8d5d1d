"""Report rows: one row per pretraining configuration, up to the seed.

A record's row has a base label (``paper_tables.row_label``: the method, its Table 5 ablation, a
sanity row; for an encoder loaded from a file, the name of its weights) and a *setup*: every
setting that determines the trained weights except the seed (``core.identity.pretrain_identity``
of the job's config: method settings, epochs, backbone, head, data, recipe; the model section
for a random-init encoder, nothing for raw pixels, the file's sha256 for loaded weights).
Records without their job's config (hand-made ones) use what a record carries: method
settings, epochs, backbone.

Records of one base label with different setups are different rows. The row whose setup is the
profile's default for its method keeps the bare label (if none is, the most common setup does);
every other row is labelled by what differs from it: ``InvP · 200 ep``, ``InvP · lr 0.06``.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import pandas as pd

from benchmark.core.config import flatten, resolve
from benchmark.core.fields import ConfigError
from benchmark.core.identity import SANITY_SECTIONS, pretrain_identity
from benchmark.models.external_encoder import EXTERNAL
from benchmark.report.paper_tables import ROW_ORDER, SANITY_ROWS, SEPARATOR, base_row, row_label

PIXELS = "pixels"  # the raw-pixels sanity encoder
EPOCHS_KEY, HEAD_KEY, BACKBONE_KEY = "pretrain.epochs", "model.head", "model.backbone"


@dataclass(frozen=True)
class RowKey:
    """A record's base row label and the setup (flattened settings) that sets its row apart."""

    base: str
    setup: Mapping[str, Any]

    @property
    def setup_id(self) -> str:
        return json.dumps(dict(self.setup), sort_keys=True, default=str)


def row_key(record: Mapping[str, Any], job_config: Mapping[str, Any] | None = None) -> RowKey:
    """The row identity of one record (``job_config``: its job file's config, when known)."""
    encoder = record["encoder"]
    if encoder == EXTERNAL:
        weights = record["extra"]["weights"]
        return RowKey(str(weights["name"]), {"weights.sha256": weights["sha256"]})
    base = row_label(record["method"], record["method_config"], encoder)
    if encoder == PIXELS:  # the images themselves: no setting changes them
        return RowKey(base, {})
    if job_config:
        setup = pretrain_identity(job_config)
        setup.pop("seed", None)
        if encoder != "pretrained":  # a sanity encoder depends on its model only
            setup = {k: v for k, v in setup.items() if k.split(".")[0] in SANITY_SECTIONS}
        return RowKey(base, setup)
    if encoder != "pretrained":
        return RowKey(base, {BACKBONE_KEY: record["backbone"]})
    method = {f"method.{k}": v for k, v in flatten(record["method_config"] or {}).items()}
    return RowKey(base, {**method, EPOCHS_KEY: record["pretrain_epochs"],
                         BACKBONE_KEY: record["backbone"]})


@functools.lru_cache(maxsize=64)
def _profile_setup(profile: str, method: str) -> str | None:
    """The setup of ``method`` under the shipped ``profile`` (JSON), None if either is unknown."""
    try:
        setup = pretrain_identity(resolve(profile, method).tree)
    except (ConfigError, OSError):
        return None
    setup.pop("seed", None)
    return json.dumps(setup, sort_keys=True, default=str)


def _default_of(profile: Any, method: Any) -> dict[str, Any] | None:
    if not isinstance(profile, str) or not isinstance(method, str):
        return None
    text = _profile_setup(profile, method)
    return json.loads(text) if text else None


def _setting_name(key: str, keys: set[str]) -> str:
    """``lr`` for ``pretrain.optimizer.lr`` unless another setting ends the same way; then the
    key without its section (``optimizer.lr``)."""
    leaf = key.rsplit(".", 1)[-1]
    if sum(k.rsplit(".", 1)[-1] == leaf for k in keys) > 1:
        return key.split(".", 1)[-1]
    return leaf


def _same(a: Any, b: Any) -> bool:
    """Equal as stored in a JSON record (tuples read back as lists)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _value_text(value: Any) -> str:
    return json.dumps(value, default=str) if isinstance(value, (list, dict)) else str(value)


def setup_difference(setup: Mapping[str, Any], reference: Mapping[str, Any]) -> str:
    """What ``setup`` changes in ``reference``: ``200 ep · lr 0.06`` (sorted by key)."""
    keys = set(setup) | set(reference)
    parts = []
    for key in sorted(keys):
        value = setup.get(key)
        if key in setup and key in reference and _same(value, reference[key]):
            continue
        if key == EPOCHS_KEY:
            parts.append(f"{value} ep")
        else:
            parts.append(f"{_setting_name(key, keys)} {_value_text(value) if key in setup else 'unset'}")
    return SEPARATOR.join(parts)


def _merged_ids(lines: pd.DataFrame) -> pd.Series:
    """``setup_id`` of each line, where a setup that says less (a skip file's partial config, a
    record without its job's config) than another and agrees with it takes the fuller one's id."""
    setups = dict(zip(lines["setup_id"], lines["setup"]))
    fuller = sorted(setups, key=lambda sid: -len(setups[sid]))
    target = {}
    for sid in fuller:
        small = setups[sid]
        target[sid] = next((big for big in fuller if len(setups[big]) > len(small) and all(
            k in setups[big] and _same(setups[big][k], v) for k, v in small.items())), sid)
    return lines["setup_id"].map(target)


def label_rows(frame: pd.DataFrame) -> pd.Series:
    """The row label of every line of ``frame`` (columns ``row_base``, ``setup``, ``setup_id``,
    ``profile``, ``method``): the base label, plus what differs from its reference setup."""
    labels = frame["row_base"].copy()
    for base, lines in frame.groupby("row_base", sort=False):
        ids = _merged_ids(lines)
        counts = ids.value_counts()
        if len(counts) < 2:
            continue
        known = dict(zip(lines["setup_id"], lines["setup"]))
        setups = {sid: known[sid] for sid in counts.index}  # the fuller setup of merged ones
        first = lines.iloc[0]
        default = _default_of(first.get("profile"), first.get("method"))
        matching = [sid for sid, s in setups.items()
                    if default is not None and all(_same(default.get(k), v) for k, v in s.items())]
        reference = matching[0] if matching else sorted(counts.index, key=lambda s: (-counts[s], s))[0]
        for sid, setup in setups.items():
            if sid != reference:
                labels[lines.index[ids == sid]] = (
                    f"{base}{SEPARATOR}{setup_difference(setup, setups[reference])}")
    return labels


def row_attributes(setup: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """(head, pretrain epochs, backbone) of a row's setup, None where it does not say."""
    return setup.get(HEAD_KEY), setup.get(EPOCHS_KEY), setup.get(BACKBONE_KEY)


def row_order(rows: Iterable[str]) -> list[str]:
    """The distinct ``rows`` in report order: the paper's rows (``ROW_ORDER``, each with its
    variants), then other rows, then the sanity rows."""
    sanity = list(SANITY_ROWS.values())

    def key(row: str) -> tuple[int, int, str]:
        base = base_row(row)
        if base in sanity:
            return (2, sanity.index(base), row)
        return (0, ROW_ORDER.index(base), row) if base in ROW_ORDER else (1, 0, row)

    return sorted(set(rows), key=key)
