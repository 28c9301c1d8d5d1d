"""The interface every pretext method implements, and the method registry.

Life cycle inside the pretraining engine, per step::

    out = method.loss(embeddings, indices, epoch)   # embeddings: (B, D) L2-normalised, with grad
    out.loss.backward(); optimizer.step()
    method.update()                                 # bank / graph update from the pre-step
                                                    # embeddings, all-gathered across ranks

``on_epoch_start(epoch)`` runs before the first step of every epoch (1-based epochs, as the
official InvP code counts them). Labels, when known, reach a method only through
``set_diagnostic_labels`` and may only be used for logged diagnostics, never for the loss.

Multi-view methods (MoCo v2 and its family) declare named ``views``: the data path then gives
every image one independently augmented view per name, and ``loss`` receives a dict of
L2-normalised embeddings by view name; ``view_sizes(config)`` may add views (e.g. at lower
resolutions) that depend on the method's options. A method whose ``key_encoder_spec`` is set makes the
engine own a momentum (EMA) copy of backbone + head that encodes the spec's views without
gradient (shuffled, split-batch BN); the other views go through the trained encoder. Per step::

    views = method.prepare_batch(views, indices, fetch)  # input-level work (e.g. mixing)
    out = method.loss({name: embedding}, indices, epoch)
    ...; method.update()

``on_train_start(extract)`` runs once before the first step of a fresh run (never on resume);
``extract()`` returns the clean (eval-transform) normalised embeddings of the whole training set.

A method is built for a training set of ``num_samples`` images and embeddings of width
``embed_dim`` (``model.embed_dim``), so its banks and queues exist, with their final shapes, from
the start. Its checkpoint state is declared once (``methods.state``): ``state_dict``,
``load_state_dict`` and ``to`` follow from the declaration. ``check_settings(config)`` reads and
checks its typed options without building it (the planner calls it before anything runs).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, ContextManager, Mapping

import torch

from benchmark.core.registry import Registry
from benchmark.core.settings import read_settings
from methods.state import Stateful

NORM_TOLERANCE = 1e-2  # |‖v‖ - 1| allowed for an "L2-normalised" embedding (bf16 heads included)


@dataclass
class LossOutput:
    """A method's loss for one step and the named scalars it wants logged."""
    loss: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)


KEY_MOMENTUM_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class KeyEncoderSpec:
    """What a method asks of the engine's momentum key encoder.

    ``views``: the named views it encodes (no gradient); ``momentum``: the EMA momentum m
    (key <- m * key + (1 - m) * query), constant or raised to 1 on a half-cosine over training
    (``schedule``: constant | cosine, BYOL's rule); ``bn_splits``: sub-batches per process whose
    BatchNorm statistics are computed apart, on a shuffled batch (MoCo's shuffle-BN; under DDP the
    shuffle spans all ranks).
    """

    views: tuple[str, ...]
    momentum: float
    schedule: str = "constant"
    bn_splits: int = 1

    def momentum_at(self, step: int, total_steps: int) -> float:
        """The momentum of global step ``step`` (0-based) of ``total_steps``."""
        if self.schedule == "constant":
            return self.momentum
        return 1.0 - (1.0 - self.momentum) * (math.cos(math.pi * step / max(total_steps, 1)) + 1.0) / 2.0


Fetch = Callable[[torch.Tensor], dict[str, torch.Tensor]]  # training views of any sample indices


def check_batch(embeddings: torch.Tensor, indices: torch.Tensor, num_samples: int, method: str) -> None:
    """Raise ValueError unless embeddings (B, D) are finite and unit-norm and indices (B,) in range.

    The checks reach the host in one transfer (one sync per step on a GPU).
    """
    if embeddings.dim() != 2 or indices.dim() != 1 or embeddings.shape[0] != indices.shape[0] or not len(indices):
        raise ValueError(
            f"method {method!r}: expected embeddings (B, D) and indices (B,) with B > 0, got "
            f"{tuple(embeddings.shape)} and {tuple(indices.shape)}"
        )
    if indices.dtype.is_floating_point or indices.dtype == torch.bool:
        raise ValueError(f"method {method!r}: indices must be an integer tensor, got {indices.dtype}")
    with torch.no_grad():
        worst_norm = (embeddings.detach().float().norm(dim=1) - 1.0).abs().max()  # NaN/inf propagate
        low, high, worst = torch.stack([indices.min().double(), indices.max().double(), worst_norm.double()]).tolist()
    if low < 0 or high >= num_samples:
        raise ValueError(
            f"method {method!r}: sample index out of range [0, {num_samples}) (got min {int(low)}, max "
            f"{int(high)}); the dataset must return each sample's position in the training set, and the "
            f"method must be built with that set's size"
        )
    if not math.isfinite(worst):
        raise ValueError(f"method {method!r}: embeddings hold NaN/inf; lower the lr or disable AMP")
    if worst > NORM_TOLERANCE:
        raise ValueError(
            f"method {method!r}: embeddings are not L2-normalised (max |norm - 1| = {worst:.3g}); "
            f"pass F.normalize(head_output, dim=1) to method.loss"
        )


def no_autocast(device: torch.device) -> ContextManager[Any]:
    """Bank and queue math runs in float32 even inside an AMP region."""
    if device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, enabled=False)
    return nullcontext()


def pack_output(loss: torch.Tensor, logs: Mapping[str, torch.Tensor | float]) -> tuple[LossOutput, float]:
    """The step's LossOutput with every log a float, and the loss's value; the loss and the
    tensor logs reach the host in one transfer."""
    tensors = {key: value for key, value in logs.items() if isinstance(value, torch.Tensor)}
    values = torch.stack([loss.detach().float(), *(t.detach().float() for t in tensors.values())]).tolist()
    host = dict(zip(tensors, values[1:]))
    return LossOutput(loss, {key: host[key] if key in host else float(value) for key, value in logs.items()}), values[0]


class Method(Stateful, ABC):
    """A pretext method (InvP, InsDis, KNN-positive, MoCo v2, ...)."""
    name: ClassVar[str]
    summary: ClassVar[str]
    views: ClassVar[tuple[str, ...]] = ()  # named views per image; () = one unnamed view (a tensor)
    # frozen dataclass of the options, each field a benchmark.core.settings.setting (a Spec, no default)
    settings_class: ClassVar[type | None] = None
    # the loader drops an epoch's last partial batch (MoCo's drop_last=True); False trains on it,
    # as the official InvP/InsDis loaders do
    drop_last: ClassVar[bool] = False

    def __init__(self, config: Mapping[str, Any], num_samples: int, embed_dim: int):
        self.config = config
        self.num_samples = num_samples
        self.embed_dim = embed_dim
        self.settings: Any = self.check_settings(config)
        self.device = torch.device("cpu")
        self.diagnostic_labels: torch.Tensor | None = None
        self.key_encoder_spec: KeyEncoderSpec | None = None

    @classmethod
    def create(cls, config: Mapping[str, Any], num_samples: int, embed_dim: int) -> "Method":
        """The method for ``config`` (a registry entry may build one of its variants)."""
        return cls(config, num_samples, embed_dim)

    @classmethod
    def check_settings(cls, config: Mapping[str, Any]) -> Any:
        """The typed options of ``config`` (a ``settings_class`` instance; None without one),
        checked without building the method: an unknown, mistyped or out-of-range option is a
        ConfigError naming ``method.<key>`` (the fields' specs), an absent one names
        ``methods.<name>.<key>`` of the profile, then ``validate_settings``.
        Checks against the training set's size wait for the build."""
        if cls.settings_class is None:
            return None
        settings = read_settings(cls.settings_class, config, cls.name)
        cls.validate_settings(settings)
        return settings

    @classmethod
    def validate_settings(cls, settings: Any) -> None:
        """Rules across options that no single field's spec states (``core.settings.require``)."""

    @classmethod
    def view_sizes(cls, config: Mapping[str, Any]) -> dict[str, int | None]:
        """The named views the data path draws for a run of ``config``, each with its output side
        (None = the recipe's; smaller sides give multi-resolution views). Default: ``views``."""
        return dict.fromkeys(cls.views)

    @abstractmethod
    def loss(self, embeddings: Any, indices: torch.Tensor, epoch: int) -> LossOutput:
        """Loss of samples ``indices`` (B,) given their L2-normalised embeddings: a tensor (B, D)
        for single-view methods, else a dict of (B, D) tensors by view name."""

    @abstractmethod
    def update(self) -> None:
        """Apply the state update prepared by the last ``loss`` call (after the optimizer step)."""

    @property
    def samples_with_replacement(self) -> bool:
        """Whether the training loader draws each epoch's N images with replacement (the data
        config of InterCLR's release) instead of as a permutation (every other method)."""
        return False

    def on_epoch_start(self, epoch: int) -> None:
        """Hook before the first step of ``epoch`` (1-based)."""

    def on_train_start(self, extract: Callable[[], torch.Tensor]) -> None:
        """Hook once before the first step of a fresh run; ``extract()`` gives the clean
        embeddings (N, D) of every training sample (computed only if called)."""

    def prepare_batch(self, views: dict[str, torch.Tensor], indices: torch.Tensor,
                      fetch: Fetch) -> dict[str, torch.Tensor]:
        """Multi-view methods: the views to encode, on the device, from the loaded ones (e.g. add
        a mixed view); ``fetch(idx)`` loads the training views of other samples."""
        return views

    def set_diagnostic_labels(self, labels: torch.Tensor | None) -> None:
        """Labels (n,) of the training samples, for logged diagnostics only (never for the loss);
        kept on the state's device, so diagnostics index them without copies."""
        if labels is not None and labels.shape != (self.num_samples,):
            raise ValueError(
                f"method {self.name!r}: diagnostic labels must have shape ({self.num_samples},), got "
                f"{tuple(labels.shape)}"
            )
        self.diagnostic_labels = None if labels is None else labels.to(self.device, torch.long)

    def to(self, device: torch.device | str) -> "Method":
        """Move the method's state (and diagnostic labels) to ``device``; returns self."""
        self.device = torch.empty(0, device=device).device  # "cuda" resolves to "cuda:0"
        if self.diagnostic_labels is not None:
            self.diagnostic_labels = self.diagnostic_labels.to(self.device)
        return super().to(self.device)

    def checked_view(self, embeddings: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """``embeddings`` (B, D) in float32, after ``check_batch`` and checks that they are on the
        state's device and D = ``embed_dim``."""
        check_batch(embeddings, indices, self.num_samples, self.name)
        if embeddings.device != self.device:
            raise ValueError(f"method {self.name!r}: embeddings are on {embeddings.device} but the method's "
                             f"state is on {self.device}; call method.to(device) after building it")
        if embeddings.shape[1] != self.embed_dim:
            raise ValueError(f"method {self.name!r}: embeddings have D={embeddings.shape[1]} but the method "
                             f"was built for D={self.embed_dim} (model.embed_dim)")
        return embeddings.float()


METHODS: Registry[type[Method]] = Registry("method")
register = METHODS.register  # class decorator: make a method available by its ``name``


def available_methods() -> dict[str, str]:
    """Registered method names and their one-line summaries."""
    return {name: cls.summary for name, cls in METHODS.items()}


def method_class(name: str) -> type[Method]:
    """The registered class of method ``name`` (its class attributes, e.g. ``views``)."""
    return METHODS.get(name)


def build_method(config: Mapping[str, Any], num_samples: int, embed_dim: int) -> Method:
    """Instantiate the method named ``config['name']`` for a dataset of ``num_samples`` and
    embeddings of width ``embed_dim``."""
    return method_class(config["name"]).create(config, num_samples, embed_dim)
