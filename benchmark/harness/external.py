"""Planning the evaluation of weights files as they are (``run --weights``, ``sweep
--weights-list``): no pretraining, no sanity rows, one task job per (file, task unit).

Each file is read once here, before any job is submitted: a file that is missing, in no known
format, unsafe to unpickle or missing trunk keys is a user error naming the file and the fix; its
format (``auto`` resolved) and sha256 go into the plan, so every job reads the same bytes the same
way. A weights list (``--weights-list``) is a YAML mapping of checkpoint names (the keys of
``benchmark/report/paper/published_checkpoints.yaml``) to local paths.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

from benchmark.core.config import ConfigError, RunConfig, config_hash, read_yaml_file
from benchmark.core.fields import safe_name
from benchmark.harness.job_request import job_request
from benchmark.harness.plan import Job, model_json, model_structure, plan_external, select_tasks
from benchmark.models.external_encoder import ExternalWeights
from benchmark.models.external_weights import AUTO, load_weights
from benchmark.report.protocol_check import PublishedCheckpoint, published_checkpoints

NAME_FIX = "pass --name with letters, digits, '_', '.' and '-' only"


@dataclass(frozen=True)
class WeightsOptions:
    """How to read a weights file (the ``--weights-format`` and ``--allow-missing-keys`` flags)."""

    format: str = AUTO
    allow_missing_keys: bool = False


def external_weights(path: str | Path, name: str | None, cfg: RunConfig,
                     options: WeightsOptions) -> tuple[ExternalWeights, str]:
    """The weights at ``path`` read once onto ``cfg``'s model section (checked: format, strict
    trunk, safe loading), named ``name`` (default: the file's stem), and the loader's one-line
    summary. Raises a WeightsError or ConfigError (user errors) naming the file or --name."""
    path = Path(path)
    label = safe_name(name if name is not None else path.stem, "--name (the weights' row name)",
                      NAME_FIX)
    loaded = load_weights(path, cfg.model, options.format,
                          allow_missing_keys=options.allow_missing_keys)
    own_model = loaded.format == "suite"  # the file's model section builds its trunk
    weights = ExternalWeights(path=str(path.resolve()), format=loaded.format, name=label,
                              sha256=loaded.sha256, allow_missing_keys=options.allow_missing_keys,
                              model_json=model_json(loaded.model_cfg) if own_model else None)
    return weights, f"{label}: {path} (sha256 {loaded.sha256[:12]}): {loaded.summary()}"


@dataclass(frozen=True)
class WeightsSpec:
    """What a run on weights files covers (its hash names the state folder ``status`` reads)."""

    profile: str
    tasks: str
    seeds: tuple[int, ...]
    overrides: tuple[str, ...]
    weights: tuple[tuple[str, str], ...]  # (name, sha256) per file

    @property
    def name(self) -> str:
        return f"{Path(self.profile).stem}-weights-{config_hash(asdict(self), length=10)}"


def plan_weights(cfgs: Sequence[RunConfig], tasks: str, weights: Sequence[ExternalWeights],
                 overrides: Sequence[str] = ()) -> tuple[WeightsSpec, list[Job]]:
    """The jobs of ``tasks`` on every file of ``weights`` under each config of ``cfgs`` (one per
    seed; each job's resource request checked) and the spec naming their state folder."""
    jobs: dict[str, Job] = {}
    for cfg in cfgs:
        for each in weights:
            backbone = model_structure(each.model_json) if each.model_json else None
            names = select_tasks(cfg, tasks, backbone)  # on the trunk the file builds
            for job in plan_external(cfg, names, each):
                jobs.setdefault(job.job_id, job)
    for job in jobs.values():
        job_request(job)
    spec = WeightsSpec(profile=cfgs[0].profile, tasks=tasks,
                       seeds=tuple(int(cfg.seed) for cfg in cfgs), overrides=tuple(overrides),
                       weights=tuple((w.name, w.sha256) for w in weights))
    return spec, list(jobs.values())


@dataclass(frozen=True)
class ListedWeights:
    """The files of a weights list: those found (with their published entry) and one line per
    listed file that is not there."""

    found: tuple[tuple[PublishedCheckpoint, Path], ...]
    not_found: tuple[str, ...]


def read_weights_list(path: str | Path,
                      published: Mapping[str, PublishedCheckpoint] | None = None) -> ListedWeights:
    """The weights list at ``path``: ``<checkpoint name>: <file>`` per line (relative files are
    read from the list's folder). A name that is not a published checkpoint, or a list that is
    not such a mapping, is a ConfigError naming the list and the fix; a file that is not there
    is a ``not found`` line (the other checkpoints are still evaluated)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--weights-list {path}: no such file; pass a YAML file of "
                          "`<checkpoint name>: <path to its weights>` lines")
    known = published_checkpoints() if published is None else published
    entries = read_yaml_file(path)
    if not isinstance(entries, Mapping) or not entries:
        raise ConfigError(f"--weights-list {path} must map checkpoint names to weights files, e.g. "
                          f"`{next(iter(known))}: ~/weights/file.pth`")
    found, not_found = [], []
    for key, value in entries.items():
        if key not in known:
            raise ConfigError(f"--weights-list {path}: {key!r} is not a published checkpoint; "
                              f"valid names: {', '.join(known)}")
        file = Path(str(value)).expanduser()
        file = file if file.is_absolute() else path.parent / file
        if file.is_file():
            found.append((known[key], file))
        else:
            not_found.append(f"{key}: not found at {file} ({known[key].title}; get it: "
                             f"{known[key].url})")
    return ListedWeights(tuple(found), tuple(not_found))


def plan_weights_list(path: str | Path, cfgs: Sequence[RunConfig], tasks: str,
                      options: WeightsOptions,
                      overrides: Sequence[str] = ()) -> tuple[WeightsSpec, list[Job], list[str]]:
    """The jobs of ``tasks`` on every file of the weights list at ``path`` that is there (each
    read once, in its published format, named by its checkpoint), and the lines to print: the
    loader's summary per file, then a ``not found`` line per listed file that is not there. A
    list none of whose files is there is a ConfigError listing them."""
    listed = read_weights_list(path)
    if not listed.found:
        raise ConfigError(f"--weights-list {path}: none of its files is there: "
                          f"{'; '.join(listed.not_found)}; fix the paths in the list")
    weights, lines = [], []
    for entry, file in listed.found:
        each, line = external_weights(file, entry.key, cfgs[0],
                                      WeightsOptions(entry.format, options.allow_missing_keys))
        weights.append(each)
        lines.append(line)
    spec, jobs = plan_weights(cfgs, tasks, weights, overrides)
    return spec, jobs, lines + list(listed.not_found)
