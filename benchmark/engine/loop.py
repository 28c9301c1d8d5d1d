"""The training loop of one pretraining run: epochs of steps, the epoch's end (monitor, log
line, checkpoint), the run's checkpointed state, and the final encoder.

A step embeds the batch (:mod:`benchmark.engine.views`), takes the method's loss behind the
NaN/inf guard (:mod:`benchmark.engine.guard`), agrees with every rank on a non-finite loss or a
stop request (:mod:`benchmark.core.stop_request`), then steps the optimizer and the method; a
checkpoint follows a stop request and every ``pretrain.checkpoint_every_steps`` steps.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Mapping

import torch
from tqdm import tqdm

from benchmark.core.config import RunConfig
from benchmark.core.distributed import DistContext, barrier
from benchmark.core.errors import Preempted
from benchmark.core.identity import identity_fields
from benchmark.core.stop_request import stop_requested
from benchmark.engine import checkpoint as ckpt
from benchmark.engine.data import (
    PretrainData,
    ResumableDistributedSampler,
    bn_batch_warning,
    build_train_loader,
    per_rank_batch_size,
)
from benchmark.engine.encoder_file import write_encoder
from benchmark.engine.epoch_log import EpochLog, EpochMeter
from benchmark.engine.guard import NonFiniteLoss, any_rank, guarded_loss
from benchmark.engine.monitor import knn_monitor, monitor_due
from benchmark.engine.schedule import lr_at_epoch
from benchmark.engine.views import Batch, ViewRouter
from benchmark.engine.wiring import autocast_factory, build_training_parts, wrap_for_training


class PretrainRun:
    """One pretraining run: set-up, resume, the epoch loop, checkpoints and the final encoder."""

    def __init__(self, cfg: RunConfig, run_dir: Path, dist: DistContext, data: PretrainData):
        self.cfg, self.run_dir, self.dist, self.data = cfg, Path(run_dir), dist, data
        pcfg = cfg.pretrain
        self.device = dist.device
        self.epochs = int(pcfg.epochs)
        self.channels_last = bool(pcfg["channels_last"])
        self.autocast = autocast_factory(pcfg, self.device)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.log = EpochLog(self.run_dir / "log.jsonl", self.run_dir / "tensorboard")
        self.batch_size = per_rank_batch_size(int(pcfg.batch_size), dist.world_size)
        warning = bn_batch_warning(int(pcfg.batch_size), dist.world_size, int(pcfg["bn_batch"]))
        if warning and dist.is_main:
            print(warning, file=sys.stderr)
        self.parts = build_training_parts(cfg, data, self.device)
        self.views = ViewRouter(self.parts, data, self.device, self.channels_last, self.autocast,
                                int(cfg.seed))
        self.loader = build_train_loader(data.train, self.batch_size, dist, int(cfg.seed),
                                         int(cfg.data["num_workers"]), self.parts.method.drop_last,
                                         self.parts.method.samples_with_replacement)
        self.sampler: ResumableDistributedSampler = self.loader.sampler
        self.steps_per_epoch = len(self.loader)
        self.total_steps = self.epochs * self.steps_per_epoch
        self.next_epoch, self.next_step, self.global_step = 1, 0, 0
        self.meter = EpochMeter()

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs, with the config's identity (docs/CONTRACTS.md)."""
        return {
            **self.parts.state_dict(),
            "next_epoch": self.next_epoch,
            "next_step": self.next_step,
            "global_step": self.global_step,
            "lr": self.parts.optimizer.param_groups[0]["lr"],
            "meter": self.meter.state_dict(),
            "rng": ckpt.rng_state(),
            **identity_fields(self.cfg.tree),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved, the global RNG states last."""
        self.parts.load_state_dict(state, self.device)
        self.next_epoch, self.next_step = state["next_epoch"], state["next_step"]
        self.global_step = state["global_step"]
        self.meter.load_state_dict(state["meter"])
        ckpt.set_rng_state(state["rng"])

    def save_checkpoint(self) -> None:
        """Rank 0 writes the current state atomically and prunes old checkpoints."""
        if self.dist.is_main:
            ckpt.save(self.state_dict(), self.checkpoint_dir, self.global_step,
                      int(self.cfg.pretrain["keep_checkpoints"]))

    def resume(self, mode: str) -> None:
        """Restore the newest valid checkpoint (``auto``/``force``; ``never`` deletes old ones)
        and trim the log to it; temporary files of checkpoints whose writer was killed go."""
        state = ckpt.load_for_resume(self.checkpoint_dir, self.cfg.tree, mode, self.dist.is_main)
        if state is not None:
            self.load_state_dict(state)
            if self.dist.is_main:
                print(f"resumed from {state['path']} (epoch {self.next_epoch}, step {self.next_step})",
                      file=sys.stderr)
        if self.dist.is_main:
            self.log.trim(self.next_epoch)

    # ---------------------------------------------------------------- training
    def train_step(self, batch: Batch, positions: torch.Tensor, epoch: int, started: float) -> None:
        """Forward, method loss, guard, backward, optimizer step, method update; ``batch`` is the
        images, or the named views of a multi-view method; ``started`` is when fetching this
        batch began (images/s counts data loading)."""
        method, optimizer, scaler = self.parts.method, self.parts.optimizer, self.parts.scaler
        positions = positions.to(self.device, non_blocking=True)
        embeddings = self.views.embed_batch(batch, positions, self.global_step, self.total_steps)
        out, problem = guarded_loss(method, embeddings, positions, epoch)
        nonfinite, stop = any_rank(self.dist, out is None, stop_requested())
        if nonfinite:
            self.save_checkpoint()
            raise NonFiniteLoss(
                f"non-finite loss at epoch {epoch}, step {self.next_step + 1} (global step "
                f"{self.global_step + 1}): {problem or 'on another rank'}. The state before this step "
                f"is saved in {self.checkpoint_dir}. Lower pretrain.optimizer.lr or turn off pretrain.amp."
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(out.loss).backward()
        scaler.step(optimizer)
        scaler.update()
        method.update()
        self.next_step += 1
        self.global_step += 1
        logs = {"loss": out.loss.item(), **out.logs}
        self.meter.add(logs, positions.shape[0], time.perf_counter() - started)
        if stop:
            self.save_checkpoint()
            raise Preempted(f"stopped at epoch {epoch}, step {self.next_step}; checkpoint saved in "
                            f"{self.checkpoint_dir}; resume with --resume auto")
        every = int(self.cfg.pretrain["checkpoint_every_steps"])
        if every > 0 and self.global_step % every == 0:
            self.save_checkpoint()

    def train_epoch(self, epoch: int) -> None:
        """The remaining steps of ``epoch`` (all of them unless resuming mid-epoch)."""
        pcfg = self.cfg.pretrain
        lr = lr_at_epoch(pcfg.schedule, float(pcfg.optimizer.lr), epoch, self.epochs)
        for group in self.parts.optimizer.param_groups:
            group["lr"] = lr
        if self.next_step == 0:
            self.parts.method.on_epoch_start(epoch)
        self.data.train.epoch = epoch
        self.sampler.set_epoch(epoch)
        self.sampler.start = self.next_step * self.batch_size
        self.views.model.train()
        if self.parts.key_encoder is not None:
            self.parts.key_encoder.train()
        progress = tqdm(self.loader, total=self.steps_per_epoch - self.next_step,
                        desc=f"epoch {epoch}/{self.epochs}", leave=False, mininterval=2.0,
                        disable=not (self.dist.is_main and pcfg["progress"]))
        started = time.perf_counter()
        for batch, positions in progress:
            self.train_step(batch, positions, epoch, started)
            started = time.perf_counter()

    def end_epoch(self, epoch: int) -> None:
        """Monitor, log line, epoch checkpoint."""
        record: dict[str, Any] = {"epoch": epoch, "lr": self.parts.optimizer.param_groups[0]["lr"],
                                  "steps": self.global_step, **self.meter.summary(self.device)}
        monitor, encoder = self.cfg.pretrain.monitor, self.parts.encoder
        if self.dist.is_main and monitor_due(monitor, epoch, self.epochs) and len(self.data.holdout) > 0:
            record.update(knn_monitor(
                encoder.backbone, encoder.head, self.data.monitor_train, self.data.train_labels,
                self.data.holdout, self.data.holdout_labels, self.data.num_classes,
                k=int(monitor.k), sigma=float(monitor.sigma), device=self.device,
                autocast=self.autocast, channels_last=self.channels_last,
                augmented=self.data.holdout_augmented,
            ))
        self.next_epoch, self.next_step = epoch + 1, 0
        self.meter = EpochMeter()
        if self.dist.is_main:
            self.log.write(record)
        self.save_checkpoint()
        barrier()

    def run(self) -> Path:
        """Train the remaining epochs and write ``encoder.pt``; returns its path."""
        self.views.model = wrap_for_training(self.views.model, self.dist,
                                             bool(self.cfg.pretrain["compile"]))
        if self.dist.is_main:
            self.log.open_tensorboard()
        if self.global_step == 0:
            self.parts.method.on_train_start(self.views.clean_embeddings)
        try:
            for epoch in range(self.next_epoch, self.epochs + 1):
                self.train_epoch(epoch)
                self.end_epoch(epoch)
        finally:
            self.log.close()
        return write_encoder(self.run_dir, self.parts.encoder, self.cfg.tree, self.next_epoch - 1, self.dist)
