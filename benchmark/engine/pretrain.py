"""The pretraining engine: a method (``methods.<name>``) turned into a trained encoder.

One code path for one CPU core and for many GPUs: device auto, DataLoader workers and pinned
memory, channels_last, AMP (bf16 autocast on CPU behind ``pretrain.amp``; fp16 with a gradient
scaler or bf16 on CUDA), per-epoch lr schedules, DDP (torchrun or SLURM variables, one process
per device), checkpoints every epoch and every N steps with exact resume, a kNN monitor on a
held-out split, a NaN/inf guard and SIGTERM/SIGUSR1 handling.

Methods with named views (``Method.views``) get one augmented view per name; when a method sets
``key_encoder_spec`` the engine keeps its momentum key encoder (``benchmark/engine/key_encoder.py``),
in the checkpoint beside the trained encoder. Single-view methods take the original path.

Writes ``<run_dir>/log.jsonl`` (one line per epoch), ``<run_dir>/checkpoints/`` and, at the
end, ``<run_dir>/encoder.pt`` (format in docs/CONTRACTS.md). The run folder is locked while a
process pretrains into it (``<run_dir>/.lock``): a second one waits, then resumes or finds the
encoder done.

CLI: ``python -m benchmark.pretrain --profile mini --method invp --run-dir DIR``, also under
``torchrun --nproc_per_node=N -m benchmark.pretrain ...`` (benchmark/harness/pretrain_cli.py).
"""
from __future__ import annotations

import json
import signal
import sys
import threading
import time
import warnings
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, default_collate
from tqdm import tqdm

from benchmark.core.atomic import atomic_open, save_atomic
from benchmark.core.config import ConfigError, RunConfig
from benchmark.core.distributed import (
    DistContext,
    all_reduce_mean,
    barrier,
    broadcast_from_main,
    init_distributed,
)
from benchmark.core.errors import Preempted
from benchmark.core.folder_lock import FolderLock
from benchmark.core.identity import identity_fields
from benchmark.core.runtime import configure_threads, seed_everything
from benchmark.core.safe_load import CorruptFile, LoadError
from benchmark.data import resolve_data_root
from benchmark.engine import checkpoint as ckpt
from benchmark.engine.data import PretrainData, ResumableDistributedSampler, build_pretrain_data
from benchmark.engine.key_encoder import KeyEncoder
from benchmark.engine.monitor import evaluating, extract, knn_monitor
from benchmark.engine.schedule import lr_at_epoch
from benchmark.models import build_backbone, build_head, embed_dim_of
from benchmark.models.encoders import ENCODER_REMEDY, read_encoder_checkpoint
from methods.base import LossOutput, Method, build_method, method_class

AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
OPTIMIZERS = ("sgd",)
ENCODER_FILE = "encoder.pt"
LOCK_POLL_SECONDS = 1.0
# What rank 0 tells every rank about the run folder's lock and the encoder it holds.
LOCK_WAITING, LOCK_HELD, LOCK_STOPPED = 0, 1, 2
ENCODER_ABSENT, ENCODER_FOUND, ENCODER_BROKEN = 0, 1, 2


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or inf; the last good state was checkpointed."""


_STOP = threading.Event()


def request_stop() -> None:
    """Ask the running pretraining to checkpoint after the current step and raise
    :class:`Preempted` (what a SLURM/submitit launcher calls from its own signal hook)."""
    _STOP.set()


@contextmanager
def preemption_signals(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGUSR1)) -> Iterator[None]:
    """While active, the given signals call :func:`request_stop` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda *_: request_stop()) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Encoder(nn.Module):
    """Backbone followed by the projection head (un-normalised embeddings)."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class GroupedEncoder(nn.Module):
    """The encoder applied to several image batches in one call (one per input resolution), so
    that under DDP a step is one forward and one backward of the wrapped model, DDP's documented
    pattern (several forwards before one backward did run in a 2-rank gloo toy on torch 2.14, but
    are outside that pattern)."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, *batches: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.encoder(images) for images in batches)


def autocast_factory(pretrain_cfg: Mapping[str, Any], device: torch.device) -> Callable[[], ContextManager]:
    """A zero-argument factory of the autocast context ``pretrain.amp``/``amp_dtype`` ask for."""
    if not pretrain_cfg.get("amp", False):
        return nullcontext
    name = pretrain_cfg.get("amp_dtype", "bfloat16")
    if name not in AMP_DTYPES:
        raise ConfigError(f"pretrain.amp_dtype={name!r}; valid values: {', '.join(AMP_DTYPES)}")
    if device.type == "cpu" and name != "bfloat16":
        raise ConfigError("pretrain.amp on CPU supports only bfloat16; use --set pretrain.amp_dtype=bfloat16")
    return partial(torch.autocast, device_type=device.type, dtype=AMP_DTYPES[name])


def build_encoder(model_cfg: Mapping[str, Any]) -> Encoder:
    """Backbone + head of ``model_cfg``, initialised from torch's global generator."""
    backbone = build_backbone(model_cfg)
    return Encoder(backbone, build_head(model_cfg, backbone.feature_dim))


def build_optimizer(params: Iterator[nn.Parameter], optimizer_cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """SGD with the profile's lr, momentum, weight decay and Nesterov flag."""
    if optimizer_cfg.get("name", "sgd") not in OPTIMIZERS:
        raise ConfigError(f"pretrain.optimizer.name={optimizer_cfg.get('name')!r}; supported: "
                          f"{', '.join(OPTIMIZERS)}")
    return torch.optim.SGD(
        params,
        lr=float(optimizer_cfg["lr"]),
        momentum=float(optimizer_cfg.get("momentum", 0.9)),
        weight_decay=float(optimizer_cfg.get("weight_decay", 0.0)),
        nesterov=bool(optimizer_cfg.get("nesterov", False)),
    )


class EpochMeter:
    """Sums of the logged scalars, steps, images and seconds of the current epoch."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0
        self.images = 0
        self.seconds = 0.0

    def add(self, logs: Mapping[str, float], images: int, seconds: float) -> None:
        for key, value in logs.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
        self.steps += 1
        self.images += images
        self.seconds += seconds

    def summary(self, device: torch.device) -> dict[str, float]:
        """Epoch means of every scalar (averaged over ranks) and global images/s."""
        keys = sorted(self.sums)
        local = torch.tensor([self.sums[k] / max(self.steps, 1) for k in keys] + [self.images, self.seconds],
                             dtype=torch.float64, device=device)
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        mean = all_reduce_mean(local).tolist()
        out = dict(zip(keys, mean[: len(keys)]))
        out["images_per_s"] = mean[-2] * world / mean[-1] if mean[-1] > 0 else 0.0
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "steps": self.steps, "images": self.images, "seconds": self.seconds}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sums = dict(state["sums"])
        self.steps, self.images, self.seconds = state["steps"], state["images"], state["seconds"]


class PretrainRun:
    """One pretraining run: set-up, resume, the epoch loop, checkpoints and the final encoder."""

    def __init__(self, cfg: RunConfig, run_dir: Path, dist: DistContext, data: PretrainData):
        self.cfg, self.run_dir, self.dist, self.data = cfg, Path(run_dir), dist, data
        pcfg = cfg.pretrain
        self.device = dist.device
        self.epochs = int(pcfg.epochs)
        self.channels_last = bool(pcfg.get("channels_last", False))
        self.autocast = autocast_factory(pcfg, self.device)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.log_path = self.run_dir / "log.jsonl"

        global_batch = int(pcfg.batch_size)
        if global_batch % dist.world_size:
            raise ConfigError(f"pretrain.batch_size={global_batch} is not divisible by the "
                              f"{dist.world_size} processes; pick a multiple of {dist.world_size}")
        self.batch_size = global_batch // dist.world_size

        seed_everything(int(cfg.seed))
        self.encoder = build_encoder(cfg.model).to(self.device)
        if self.channels_last:
            self.encoder = self.encoder.to(memory_format=torch.channels_last)
        self.method: Method = build_method(cfg.method, len(data.train), embed_dim_of(cfg.model)).to(self.device)
        self.method.set_diagnostic_labels(data.train_labels.to(self.device))
        spec = self.method.key_encoder_spec
        if spec is not None and not set(spec.views) <= set(self.method.views):
            raise ValueError(f"method {self.method.name!r}: key views {spec.views} are not among its views "
                             f"{self.method.views}")
        self.key_encoder = None if spec is None else KeyEncoder(self.encoder, spec.bn_splits)
        self.optimizer = build_optimizer(self.encoder.parameters(), pcfg.optimizer)
        use_scaler = bool(pcfg.get("amp", False)) and pcfg.get("amp_dtype") == "float16"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.sampler = ResumableDistributedSampler(data.train, dist.world_size, dist.rank, int(cfg.seed))
        self.steps_per_epoch = len(self.sampler) // self.batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(f"data.train_subset gives {len(data.train)} images, fewer than one batch of "
                              f"pretrain.batch_size={global_batch}; raise the subset or lower the batch")
        self.total_steps = self.epochs * self.steps_per_epoch
        self.loader = DataLoader(
            data.train, batch_size=self.batch_size, sampler=self.sampler, drop_last=True,
            num_workers=int(cfg.data.get("num_workers", 0)), pin_memory=self.device.type == "cuda",
            generator=torch.Generator(),  # keeps the DataLoader off the global RNG (exact resume)
        )
        self.next_epoch, self.next_step, self.global_step = 1, 0, 0
        self.meter = EpochMeter()
        self.model: nn.Module = GroupedEncoder(self.encoder)
        self.tensorboard = None

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        key_encoder = {} if self.key_encoder is None else {"key_encoder": self.key_encoder.module.state_dict()}
        return {
            "backbone": self.encoder.backbone.state_dict(),
            "head": self.encoder.head.state_dict(),
            **key_encoder,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "method": self.method.state_dict(),
            "next_epoch": self.next_epoch,
            "next_step": self.next_step,
            "global_step": self.global_step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "meter": self.meter.state_dict(),
            "rng": ckpt.rng_state(),
            **identity_fields(self.cfg.tree),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.encoder.backbone.load_state_dict(state["backbone"])
        self.encoder.head.load_state_dict(state["head"])
        if self.key_encoder is not None:
            self.key_encoder.module.load_state_dict(state["key_encoder"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.method.load_state_dict(state["method"])
        self.method.to(self.device)
        self.next_epoch, self.next_step = state["next_epoch"], state["next_step"]
        self.global_step = state["global_step"]
        self.meter.load_state_dict(state["meter"])
        ckpt.set_rng_state(state["rng"])

    def save_checkpoint(self) -> None:
        """Rank 0 writes the current state atomically and prunes old checkpoints."""
        if self.dist.is_main:
            save_atomic(self.state_dict(), ckpt.checkpoint_path(self.checkpoint_dir, self.global_step))
            ckpt.prune(self.checkpoint_dir, int(self.cfg.pretrain.get("keep_checkpoints", 2)))

    def resume(self, mode: str) -> None:
        """Restore the newest valid checkpoint (``auto``/``force``; ``never`` deletes old ones)
        and trim the log to it; temporary files of checkpoints whose writer was killed go."""
        if self.dist.is_main:
            ckpt.remove_orphans(self.checkpoint_dir)
            if mode == "never":
                ckpt.remove_all(self.checkpoint_dir)  # stale ones would outrank the new run's
        barrier()
        state = ckpt.load_latest(self.checkpoint_dir, self.cfg.tree, mode)
        if state is not None:
            self.load_state_dict(state)
            if self.dist.is_main:
                print(f"resumed from {state['path']} (epoch {self.next_epoch}, step {self.next_step})",
                      file=sys.stderr)
        if self.dist.is_main:
            self._trim_log()

    def _trim_log(self) -> None:
        """Rewrite the log (atomically) with the lines of the epochs before ``next_epoch``; a line
        that is no log record (half-written when a run was killed) is dropped with a warning."""
        kept = []
        lines = self.log_path.read_text().splitlines() if self.log_path.is_file() else []
        for number, line in enumerate(lines, 1):
            epoch = _logged_epoch(line)
            if epoch is None and line.strip():
                warnings.warn(f"{self.log_path}, line {number}: dropping {line[:60]!r}, which is no log "
                              "record (half-written when the run was killed?)", stacklevel=2)
            elif epoch is not None and epoch < self.next_epoch:
                kept.append(line)
        with atomic_open(self.log_path, "w") as fh:
            fh.writelines(line + "\n" for line in kept)

    # ---------------------------------------------------------------- training
    def _agree(self, nonfinite: bool, stop: bool) -> tuple[bool, bool]:
        """Every rank's NaN and stop flags OR-ed together (so all ranks act alike)."""
        if not self.dist.enabled:
            return nonfinite, stop
        flags = torch.tensor([float(nonfinite), float(stop)], device=self.device)
        torch.distributed.all_reduce(flags)
        return bool(flags[0] > 0), bool(flags[1] > 0)

    def _guarded_loss(self, embeddings: torch.Tensor | dict[str, torch.Tensor], positions: torch.Tensor,
                      epoch: int) -> tuple[LossOutput | None, str]:
        """The method's loss, or None and the reason when embeddings or loss are not finite."""
        views = embeddings.values() if isinstance(embeddings, dict) else [embeddings]
        if not all(bool(torch.isfinite(view).all()) for view in views):
            return None, "the embeddings hold NaN/inf"
        try:
            out = self.method.loss(embeddings, positions, epoch)
        except FloatingPointError as exc:  # methods may detect a non-finite loss themselves
            return None, str(exc)
        if not bool(torch.isfinite(out.loss).item()):
            return None, f"loss = {out.loss.item()}"
        return out, ""

    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def _embed(self, *batches: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """L2-normalised float32 embeddings of the trained encoder (with gradient), one tensor per
        batch, from one forward of the (DDP-wrapped) model."""
        with self.autocast():
            raw = self.model(*batches)
        return tuple(F.normalize(part.float(), dim=1) for part in raw)

    def _embed_query_views(self, views: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The trained encoder's embeddings of ``views``: views of one resolution are concatenated
        (BatchNorm statistics shared across them, as SwAV's multi-crop), one model call in all."""
        groups: dict[tuple[int, ...], list[str]] = {}
        for name, images in views.items():
            groups.setdefault(tuple(images.shape[1:]), []).append(name)
        names = list(groups.values())
        outputs = self._embed(*(torch.cat([views[name] for name in group]) for group in names))
        embedded: dict[str, torch.Tensor] = {}
        for group, output in zip(names, outputs):
            embedded.update(zip(group, output.split([views[name].shape[0] for name in group])))
        return {name: embedded[name] for name in views}

    def _embed_views(self, views: dict[str, torch.Tensor], positions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Embeddings by view name: ``prepare_batch``, then the key views through the momentum
        encoder (EMA-updated first, as MoCo does) and the others through the trained encoder."""
        views = self.method.prepare_batch({name: self._to_device(t) for name, t in views.items()},
                                          positions, self._fetch_views)
        spec = self.method.key_encoder_spec
        if spec is None:
            return self._embed_query_views(views)
        assert self.key_encoder is not None
        self.key_encoder.update(self.encoder, spec.momentum_at(self.global_step, self.total_steps))
        queries = self._embed_query_views({name: t for name, t in views.items() if name not in spec.views})
        keys = {name: self.key_encoder.encode(images, int(self.cfg.seed), self.global_step, self.autocast)
                for name, images in views.items() if name in spec.views}
        return {name: keys[name] if name in keys else queries[name] for name in views}

    def _fetch_views(self, positions: torch.Tensor) -> dict[str, torch.Tensor]:
        """This epoch's augmented views of the training samples ``positions``, on the device."""
        views = default_collate([self.data.train[position][0] for position in positions.tolist()])
        return {name: self._to_device(images) for name, images in views.items()}

    def _clean_embeddings(self) -> torch.Tensor:
        """L2-normalised eval-mode embeddings (N, D) of every training image, clean transform."""
        with evaluating(self.encoder):
            _, embeddings = extract(self.encoder.backbone, self.encoder.head, self.data.monitor_train,
                                    self.device, self.autocast, channels_last=self.channels_last)
        return F.normalize(embeddings, dim=1)

    def train_step(self, batch: torch.Tensor | dict[str, torch.Tensor], positions: torch.Tensor, epoch: int,
                   started: float) -> None:
        """Forward, method loss, guard, backward, optimizer step, method update; ``batch`` is the
        images, or the named views of a multi-view method; ``started`` is when fetching this
        batch began (images/s counts data loading)."""
        positions = positions.to(self.device, non_blocking=True)
        if self.method.views:
            embeddings: torch.Tensor | dict[str, torch.Tensor] = self._embed_views(batch, positions)
        else:
            embeddings = self._embed(self._to_device(batch))[0]
        out, problem = self._guarded_loss(embeddings, positions, epoch)
        nonfinite, stop = self._agree(out is None, _STOP.is_set())
        if nonfinite:
            self.save_checkpoint()
            raise NonFiniteLoss(
                f"non-finite loss at epoch {epoch}, step {self.next_step + 1} (global step "
                f"{self.global_step + 1}): {problem or 'on another rank'}. The state before this step "
                f"is saved in {self.checkpoint_dir}. Lower pretrain.optimizer.lr or turn off pretrain.amp."
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out.loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.method.update()
        self.next_step += 1
        self.global_step += 1
        logs = {"loss": out.loss.item(), **out.logs}
        self.meter.add(logs, positions.shape[0], time.perf_counter() - started)
        if stop:
            self.save_checkpoint()
            raise Preempted(f"stopped at epoch {epoch}, step {self.next_step}; checkpoint saved in "
                            f"{self.checkpoint_dir}; resume with --resume auto")
        every = int(self.cfg.pretrain.get("checkpoint_every_steps", 0) or 0)
        if every > 0 and self.global_step % every == 0:
            self.save_checkpoint()

    def train_epoch(self, epoch: int) -> None:
        """The remaining steps of ``epoch`` (all of them unless resuming mid-epoch)."""
        lr = lr_at_epoch(self.cfg.pretrain.schedule, float(self.cfg.pretrain.optimizer.lr), epoch, self.epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.next_step == 0:
            self.method.on_epoch_start(epoch)
        self.data.train.epoch = epoch
        self.sampler.set_epoch(epoch)
        self.sampler.start = self.next_step * self.batch_size
        self.model.train()
        if self.key_encoder is not None:
            self.key_encoder.train()
        remaining = self.steps_per_epoch - self.next_step
        progress = tqdm(self.loader, total=remaining, desc=f"epoch {epoch}/{self.epochs}", leave=False,
                        disable=not (self.dist.is_main and self.cfg.pretrain.get("progress", True)),
                        mininterval=2.0)
        started = time.perf_counter()
        for batch, positions in progress:
            self.train_step(batch, positions, epoch, started)
            started = time.perf_counter()

    def end_epoch(self, epoch: int) -> None:
        """Monitor, log line, epoch checkpoint."""
        record: dict[str, Any] = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"],
                                  "steps": self.global_step, **self.meter.summary(self.device)}
        monitor = self.cfg.pretrain.monitor
        every = int(monitor.get("every", 1) or 0)
        wanted = every > 0 and (epoch % every == 0 or epoch == self.epochs) and len(self.data.holdout) > 0
        if wanted and self.dist.is_main:
            record.update(knn_monitor(
                self.encoder.backbone, self.encoder.head, self.data.monitor_train, self.data.train_labels,
                self.data.holdout, self.data.holdout_labels, self.data.num_classes,
                k=int(monitor.k), sigma=float(monitor.sigma), device=self.device,
                autocast=self.autocast, channels_last=self.channels_last,
            ))
        self.next_epoch, self.next_step = epoch + 1, 0
        self.meter = EpochMeter()
        if self.dist.is_main:
            with open(self.log_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
            if self.tensorboard is not None:
                for key, value in record.items():
                    if key != "epoch" and isinstance(value, (int, float)):
                        self.tensorboard.add_scalar(f"pretrain/{key}", value, epoch)
            print(json.dumps(record), file=sys.stderr)
        self.save_checkpoint()
        barrier()

    def run(self) -> Path:
        """Train the remaining epochs and write ``encoder.pt``; returns its path."""
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.model, device_ids=ids)
        if self.cfg.pretrain.get("compile", False):
            self.model = torch.compile(self.model)
        self.tensorboard = _tensorboard_writer(self.run_dir) if self.dist.is_main else None
        if self.global_step == 0:
            self.method.on_train_start(self._clean_embeddings)
        try:
            for epoch in range(self.next_epoch, self.epochs + 1):
                self.train_epoch(epoch)
                self.end_epoch(epoch)
        finally:
            if self.tensorboard is not None:
                self.tensorboard.close()
        return self.write_encoder()

    def write_encoder(self) -> Path:
        """``<run_dir>/encoder.pt`` as docs/CONTRACTS.md defines it (rank 0 writes it)."""
        path = self.run_dir / ENCODER_FILE
        if self.dist.is_main:
            save_atomic({
                "backbone": self.encoder.backbone.state_dict(),
                "head": self.encoder.head.state_dict(),
                **identity_fields(self.cfg.tree),
                "epoch": self.next_epoch - 1,
            }, path)
        barrier()
        return path


def _logged_epoch(line: str) -> int | None:
    """The epoch of one ``log.jsonl`` line; None when the line is no log record."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    epoch = record.get("epoch") if isinstance(record, dict) else None
    return epoch if isinstance(epoch, int) else None


def _tensorboard_writer(run_dir: Path) -> Any:
    """A SummaryWriter under ``<run_dir>/tensorboard`` when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def _check_request(cfg: RunConfig, resume: str) -> None:
    if "method" not in cfg.tree:
        raise ConfigError("the run config has no method; resolve it with a method (--method invp)")
    if resume not in ckpt.RESUME_MODES:
        raise ConfigError(f"--resume {resume!r}; valid values: {', '.join(ckpt.RESUME_MODES)}")


def prepare_run(cfg: RunConfig, run_dir: Path, resume: str = "auto",
                data_root: str | Path | None = None) -> PretrainRun:
    """Initialise the process (distributed group, threads), load the data, build the run and
    restore its newest checkpoint per ``resume``; :meth:`PretrainRun.run` then trains. Callers
    that may share ``run_dir`` with another process hold :func:`run_dir_lock` (as
    :func:`pretrain` does)."""
    _check_request(cfg, resume)
    dist = init_distributed(str(cfg.tree.get("device", "auto")))
    configure_threads(int(cfg.tree.get("threads", 0) or 0))
    views = method_class(str(cfg.method["name"])).view_sizes(cfg.method)
    run = PretrainRun(cfg, run_dir, dist, build_pretrain_data(cfg, resolve_data_root(data_root), views))
    run.resume(resume)
    return run


@contextmanager
def run_dir_lock(run_dir: Path, dist: DistContext, poll_seconds: float = LOCK_POLL_SECONDS) -> Iterator[None]:
    """Hold ``run_dir``'s :class:`~benchmark.core.folder_lock.FolderLock` for the block. Rank 0 takes
    it; while another process holds it, every rank waits, polling rank 0 through a broadcast (so
    no collective blocks long enough to time out). A stop request while waiting raises
    :class:`Preempted`."""
    lock = FolderLock(run_dir)
    told = False
    while True:
        state = LOCK_WAITING
        if dist.is_main:
            state = LOCK_HELD if lock.try_acquire() else LOCK_STOPPED if _STOP.is_set() else LOCK_WAITING
        state = broadcast_from_main(state, dist.device)
        if state == LOCK_HELD:
            break
        if state == LOCK_STOPPED:
            raise Preempted(f"stopped while waiting for {lock.path}; nothing was trained")
        if dist.is_main and not told:
            print(f"waiting for {lock.path}: another process is pretraining into {run_dir}",
                  file=sys.stderr, flush=True)
            told = True
        time.sleep(poll_seconds)
    try:
        yield
    finally:
        lock.release()


def _finished_encoder(path: Path, dist: DistContext) -> bool:
    """Whether ``path`` holds a finished encoder (rank 0 reads it, every rank gets the answer);
    one that does not load raises :class:`~benchmark.core.safe_load.LoadError` naming it."""
    verdict, problem = ENCODER_ABSENT, None
    if dist.is_main and path.exists():
        try:
            read_encoder_checkpoint(path)
            verdict = ENCODER_FOUND
        except LoadError as exc:
            verdict, problem = ENCODER_BROKEN, exc
    verdict = broadcast_from_main(verdict, dist.device)
    if verdict == ENCODER_BROKEN:
        raise problem or CorruptFile(path, "does not load (rank 0 logs why)", ENCODER_REMEDY)
    return verdict == ENCODER_FOUND


def pretrain_unless_done(cfg: RunConfig, run_dir: Path, resume: str = "auto",
                         data_root: str | Path | None = None, reuse: bool = True) -> tuple[Path, bool]:
    """:func:`pretrain`, and with ``reuse`` an ``encoder.pt`` already in ``run_dir`` (perhaps
    written by another process while this one waited for the folder's lock) is returned without
    training, once it is checked to load (one that does not raises
    :class:`~benchmark.core.safe_load.LoadError` naming it). Returns the encoder's path and whether
    this call trained it."""
    _check_request(cfg, resume)
    run_dir = Path(run_dir)
    try:
        with preemption_signals():  # also while loading: a stop asked then is honoured at step 1
            dist = init_distributed(str(cfg.tree.get("device", "auto")))
            with run_dir_lock(run_dir, dist):
                encoder = run_dir / ENCODER_FILE
                if reuse and _finished_encoder(encoder, dist):
                    return encoder, False
                return prepare_run(cfg, run_dir, resume, data_root).run(), True
    finally:
        _STOP.clear()  # a stop request belongs to this run only


def pretrain(cfg: RunConfig, run_dir: Path, resume: str = "auto", data_root: str | Path | None = None) -> Path:
    """Pretrain ``cfg.method`` on ``cfg.data`` into ``run_dir``; returns ``<run_dir>/encoder.pt``.

    ``resume``: ``auto`` continues from the newest valid checkpoint (refusing one of another
    config), ``never`` starts fresh, ``force`` continues even on a config mismatch. The data
    root is ``data_root``, else ``$BENCHMARK_DATA``, else ``./data``. SIGTERM/SIGUSR1 (or
    :func:`request_stop`) checkpoint after the current step and raise :class:`Preempted`. While
    another process pretrains into ``run_dir`` (it holds the folder's lock), this one waits.
    """
    return pretrain_unless_done(cfg, run_dir, resume, data_root, reuse=False)[0]
