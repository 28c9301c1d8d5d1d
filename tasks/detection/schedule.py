"""MoCo's VOC detection schedule and the linear scaling rule (docs/protocols.md §MoCo recipe).

detectron2's ``WarmupMultiStepLR``: a linear warm-up from ``warmup_factor`` x lr to lr over
``warmup_iters``, then lr x gamma^(milestones passed). A schedule given at one batch size is
moved to another by the linear rule: lr x b/B, every iteration count x B/b (MoCo's 16 images,
lr 0.02, 24k iterations becomes the InvP repo's 4 images, lr 0.005, 96k, steps 72k/88k,
warm-up 400).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

from benchmark.core.config import ConfigError
from benchmark.core.fields import Float, Int, ListOf
from benchmark.core.settings import read_typed, setting, settings_section


@dataclass(frozen=True)
class DetectionSchedule:
    """SGD schedule of a detector: iteration counts, base lr, momentum and weight decay."""

    batch_size: int = setting(spec=Int(ge=1))
    lr: float = setting(spec=Float(gt=0))
    iterations: int = setting(spec=Int(ge=1))
    steps: tuple[int, ...] = setting(spec=ListOf(Int(ge=1)))
    warmup_iters: int = setting(spec=Int(ge=0))
    warmup_factor: float = setting(1e-3, Float(gt=0, le=1))
    gamma: float = setting(0.1, Float(gt=0))
    momentum: float = setting(0.9, Float(ge=0, lt=1))
    weight_decay: float = setting(1e-4, Float(ge=0))
    weight_decay_norm: float = setting(0.0, Float(ge=0))

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], where: str = "tasks.detection.schedule") -> "DetectionSchedule":
        """Build from a config block; unknown, missing or bad keys name the option."""
        schedule = read_typed(cls, settings, where)
        if list(schedule.steps) != sorted(schedule.steps) or any(s > schedule.iterations for s in schedule.steps):
            raise ConfigError(f"{where}.steps={list(schedule.steps)} must be increasing and <= iterations")
        return schedule

    def scaled_to(self, batch_size: int) -> "DetectionSchedule":
        """The same schedule at ``batch_size`` images per step, by the linear scaling rule."""
        if batch_size < 1:
            raise ConfigError(f"tasks.detection.batch_size={batch_size} must be >= 1")
        ratio = self.batch_size / batch_size
        scale = lambda n: int(round(n * ratio))  # noqa: E731
        return replace(
            self,
            batch_size=batch_size,
            lr=self.lr / ratio,
            iterations=scale(self.iterations),
            steps=tuple(scale(s) for s in self.steps),
            warmup_iters=scale(self.warmup_iters),
        )

    def lr_factor(self, iteration: int) -> float:
        """Multiplier of ``lr`` at 0-based ``iteration`` (warm-up, then multi-step decay)."""
        decay = self.gamma ** sum(1 for s in self.steps if iteration >= s)
        if iteration >= self.warmup_iters:
            return decay
        alpha = iteration / self.warmup_iters
        return (self.warmup_factor * (1 - alpha) + alpha) * decay


SCHEDULE_SETTINGS = settings_section(DetectionSchedule)  # the ``tasks.detection.schedule`` block

MOCO_VOC = DetectionSchedule(batch_size=16, lr=0.02, iterations=24000, steps=(18000, 22000), warmup_iters=100)
