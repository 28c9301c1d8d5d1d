"""External weights as an evaluation encoder: a weights file given by ``run --weights`` (or a
weights list), described once at planning (:class:`ExternalWeights`) and loaded by each task job
(:func:`load_external_backbone`) through ``benchmark.models.external_weights``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from benchmark.models.external_weights import WeightsError, load_weights

EXTERNAL = "external"  # the encoder kind (and the records' method) of external weights
CHANGED_REMEDY = "Plan the run again (the same command): its jobs then evaluate the file as it is now"


@dataclass(frozen=True)
class ExternalWeights:
    """A weights file evaluated as it is: where it is, how to read it, the row name it is
    reported under, and the sha256 of its bytes (its identity: job ids and feature caches hash
    it, never the path or the name)."""

    path: str
    format: str  # a resolved format of ``external_weights.WEIGHT_FORMATS`` (never ``auto``)
    name: str
    sha256: str
    allow_missing_keys: bool = False
    # the model section the file carries (JSON; a suite encoder.pt), which builds its trunk in
    # place of the profile's: planning checks the tasks on it. None: the profile's
    model_json: str | None = None

    def record_extra(self) -> dict[str, str]:
        """What each record's ``extra["weights"]`` says of the file."""
        return {"name": self.name, "format": self.format, "sha256": self.sha256,
                "file": Path(self.path).name}


def load_external_backbone(weights: ExternalWeights, model_cfg: Mapping[str, Any]) -> nn.Module:
    """The trunk ``weights`` describes, loaded onto ``model_cfg``'s backbone (eval mode, CPU);
    a WeightsError when the file's bytes are no longer those planned (its sha256 changed)."""
    loaded = load_weights(weights.path, model_cfg, weights.format,
                          allow_missing_keys=weights.allow_missing_keys)
    if loaded.sha256 != weights.sha256:
        raise WeightsError(weights.path, f"changed since the run was planned (sha256 "
                           f"{loaded.sha256[:12]}, planned {weights.sha256[:12]})", CHANGED_REMEDY)
    return loaded.backbone
