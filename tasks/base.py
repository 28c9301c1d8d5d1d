"""The interface every evaluation task implements, and the task registry.

A task takes an encoder (a pretrained checkpoint, external weights given by ``run --weights``, or
one of the two sanity encoders: a randomly initialised network and raw pixels) and returns Measurements; the harness turns them into
ResultRecords with provenance (``benchmark/core/store.py``). A task's settings live in the run
config under ``tasks.<name>``; ``--tasks all`` runs every registered task (a profile configures
each, or excludes it with a reason). A task declares the kind of job it is
(:data:`RESOURCE_KINDS`), which the profile's ``launcher.task_kinds`` sizes, and how many
processes (one per GPU) its job can use.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import torch

from benchmark.core.registry import Registry
from benchmark.models.encoders import load_encoder_backbone, load_encoder_head
from benchmark.models.external_encoder import EXTERNAL, ExternalWeights, load_external_backbone
from tasks.errors import TaskNotApplicable
from tasks.progress import CHECKPOINT_EVERY_S, TaskProgress

if TYPE_CHECKING:
    from benchmark.core.fields import Spec

# the kinds of task job a profile sizes (launcher.task_kinds): frozen features cached once; a
# frozen trunk training heads on augmented images; fine-tuning the network; detection; a CPU fit
RESOURCE_KINDS = ("cached_features", "online_probe", "finetune", "detection", "cpu_fit")
# ``max_processes`` of a task whose job runs one DDP process per GPU it is given, however many
EVERY_GPU = 1 << 30


@dataclass(frozen=True)
class Measurement:
    """One metric value a task produced."""
    metric: str
    value: float
    dataset: str
    split: str = "test"
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EncoderHandle:
    """What a task evaluates. ``kind`` is ``pretrained`` (``checkpoint`` set), ``external``
    (``weights`` set; ``checkpoint_hash`` = their sha256), ``random`` or ``pixels``; ``load()``
    builds the frozen-or-trainable feature extractor."""

    kind: str
    config: Any  # RunConfig of the run (model section says how to build the backbone)
    checkpoint: Path | None = None
    checkpoint_hash: str | None = None
    weights: ExternalWeights | None = None

    def load(self, device: torch.device | str = "cpu") -> torch.nn.Module:
        """The encoder's backbone (features, no projection head) on ``device``, in eval mode."""
        if self.kind == EXTERNAL:
            if self.weights is None:
                raise ValueError("an external EncoderHandle needs `weights` (an ExternalWeights)")
            return load_external_backbone(self.weights, self.config.model).to(device).eval()
        return load_encoder_backbone(self, device)

    def load_head(self, backbone: torch.nn.Module, device: torch.device | str = "cpu") -> torch.nn.Module | None:
        """The projection head on ``backbone`` (its output: the embedding the method trained), in
        eval mode on ``device``; None for raw pixels, which have none. External weights have none
        here either: asking for it raises TaskNotApplicable (the job is a recorded skip)."""
        if self.kind == EXTERNAL:
            raise TaskNotApplicable("external weights (--weights) are evaluated without their "
                                    "projection head, which feature layer 'embedding' needs; use "
                                    "the backbone's features, e.g. --set tasks.knn.layer=pooled "
                                    "(in Python: evaluate(..., layer='pooled'))")
        return load_encoder_head(self, backbone, device)


@dataclass
class TaskContext:
    """Everything a task needs besides its own settings."""
    config: Any  # RunConfig
    encoder: EncoderHandle
    data_root: Path
    device: torch.device
    seed: int
    cache_dir: Path
    # where the task checkpoints its progress (tasks/progress.py); None: no checkpoints
    progress_dir: Path | None = None
    progress_every_s: float = CHECKPOINT_EVERY_S
    # the job's memory (the launcher's mem_gb for this task); None: what the machine has free
    memory_budget_gb: float | None = None

    @property
    def settings(self) -> Mapping[str, Any]:
        return self.config.tasks[self.task_name]

    task_name: str = ""

    def progress(self, part: str, identity: Mapping[str, Any]) -> TaskProgress:
        """The checkpoint of one part of this task (see tasks/progress.py); ``identity``: what
        makes its state valid (the task's settings, the part's own values)."""
        return TaskProgress(self.progress_dir, part,
                            {"task": self.task_name, "encoder": self.encoder.checkpoint_hash,
                             "kind": self.encoder.kind, "seed": self.seed, **identity},
                            self.progress_every_s)


class Task(ABC):
    """An evaluation of a frozen or fine-tuned encoder."""
    name: ClassVar[str]
    summary: ClassVar[str]
    paper_table: ClassVar[str | None] = None  # e.g. "Table 1"; None for mini-only tasks
    paper_column: ClassVar[str | None] = None
    metrics: ClassVar[tuple[str, ...]] = ()
    # what the metrics' values are: "fraction" (in [0, 1]; reports show x100), "percent" (shown as
    # they are) or "native" (their own units, e.g. RankMe or a cosine; shown as they are)
    metric_units: ClassVar[str] = "fraction"
    # a setting whose value (from each record's ``extra``) the report's column header shows
    label_setting: ClassVar[str | None] = None
    protocol: ClassVar[str] = ""
    defaults: ClassVar[Mapping[str, Any]] = {}  # the protocol's settings; profiles override them
    # each setting's type and constraint (tasks/common.py adds the settings every task accepts)
    settings_fields: ClassVar[Mapping[str, "Spec"]] = {}
    resource_kind: ClassVar[str]  # one of RESOURCE_KINDS: the launcher.task_kinds block sizing it
    # processes (one per GPU) a job of this task can use; a task that runs DDP raises it
    # (EVERY_GPU: all of its job's); its job then runs one process per GPU, only rank 0 stores
    max_processes: ClassVar[int] = 1
    # the task trains the encoder's weights (fine-tuning): on the raw-pixels encoder, which has
    # none, its job only records a skip, so planning asks one GPU at most for it
    fine_tunes: ClassVar[bool] = False

    @classmethod
    def resource_kind_for(cls, settings: Mapping[str, Any]) -> str:
        """The resource kind of this task's job under ``settings`` (over its ``defaults``)."""
        return cls.resource_kind

    @classmethod
    def max_processes_for(cls, settings: Mapping[str, Any]) -> int:
        """Processes (one per GPU) this task's job can use under ``settings``."""
        return cls.max_processes

    @classmethod
    def datasets(cls, settings: Mapping[str, Any]) -> tuple[str, ...]:
        """Dataset registry names this task needs under ``settings`` (over its ``defaults``)."""
        return ({**cls.defaults, **settings}["dataset"],)

    @classmethod
    def units(cls, settings: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """The jobs this task runs as under ``settings`` (checked, over its ``defaults``): one
        (unit name, settings overrides) pair per job, e.g. one per dataset or per trial. Default:
        one unit, no overrides."""
        return [("", {})]

    @classmethod
    def identity_settings(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The settings of one unit that its job id hashes; default: all of them (a task drops a
        setting that only says how it splits into units)."""
        return dict(settings)

    @classmethod
    def missing_inputs(cls, settings: Mapping[str, Any], data_root: Path) -> list[str]:
        """Inputs under ``data_root`` without which a job of this task must not start, each a
        message naming the file and the fix (checked when planning, before any job takes its
        GPUs); none by default: a missing dataset is a recorded skip."""
        return []

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        """Checks across settings that the fields cannot state (run at planning time, after the
        fields' checks); none by default."""

    @classmethod
    def check_backbone(cls, backbone: torch.nn.Module, settings: Mapping[str, Any]) -> None:
        """Raise a ConfigError with the reason when this task cannot run on ``backbone`` under
        ``settings`` (checked at planning on the profile's backbone built on the meta device,
        structure only, no values; by ``evaluate()`` on the module it is given); none by default. Feature-layer settings are checked for
        every task (``tasks.features.check_backbone_fit``)."""

    @abstractmethod
    def run(self, ctx: TaskContext) -> list[Measurement]:
        """Evaluate ``ctx.encoder`` and return the measurements."""


TASKS: Registry[type[Task]] = Registry("task")
register = TASKS.register  # class decorator: make a task available by its ``name``


def available_tasks() -> dict[str, type[Task]]:
    """Registered tasks by name."""
    return dict(TASKS.items())


def get_task(name: str) -> Task:
    """The task registered as ``name``."""
    return TASKS.get(name)()
