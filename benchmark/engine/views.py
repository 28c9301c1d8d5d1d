"""View routing: what a step's batch becomes before the method's loss.

A single-view method gets the trained encoder's embeddings of its one augmented batch. A method
with named views (``Method.views``) gets one embedding per view name: ``prepare_batch`` first,
then its key views (``key_encoder_spec``) through the momentum key encoder and the others through
the trained encoder, views of one resolution in one batch. The method's hooks also get the
views of other samples (``fetch_views``) and clean embeddings of every training image.
"""
from __future__ import annotations

from typing import Callable, ContextManager

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import default_collate

from benchmark.engine.data import PretrainData
from benchmark.engine.monitor import evaluating, extract
from benchmark.engine.wiring import GroupedEncoder, TrainingParts

Batch = torch.Tensor | dict[str, torch.Tensor]


class ViewRouter:
    """Embeds a step's batch for ``parts.method``; ``model`` is the trained encoder as the step
    calls it (a :class:`GroupedEncoder`, wrapped in DDP or compiled by the loop)."""

    def __init__(self, parts: TrainingParts, data: PretrainData, device: torch.device, channels_last: bool,
                 autocast: Callable[[], ContextManager], seed: int):
        self.parts, self.data, self.device = parts, data, device
        self.channels_last, self.autocast, self.seed = channels_last, autocast, seed
        self.model: nn.Module = GroupedEncoder(parts.encoder)

    def embed_batch(self, batch: Batch, positions: torch.Tensor, global_step: int, total_steps: int) -> Batch:
        """The embeddings the method's loss takes: a tensor, or one per view name; ``positions``
        (on the device) are the batch's samples, ``global_step`` the steps taken before it."""
        if self.parts.method.views:
            return self._embed_views(batch, positions, global_step, total_steps)
        return self._embed(self._to_device(batch))[0]

    def clean_embeddings(self) -> torch.Tensor:
        """L2-normalised eval-mode embeddings (N, D) of every training image, clean transform."""
        encoder = self.parts.encoder
        with evaluating(encoder):
            _, embeddings = extract(encoder.backbone, encoder.head, self.data.monitor_train,
                                    self.device, self.autocast, channels_last=self.channels_last)
        return F.normalize(embeddings, dim=1)

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

    def _embed_views(self, views: dict[str, torch.Tensor], positions: torch.Tensor, global_step: int,
                     total_steps: int) -> dict[str, torch.Tensor]:
        """Embeddings by view name: ``prepare_batch``, then the key views through the momentum
        encoder (EMA-updated first, as MoCo does) and the others through the trained encoder."""
        method, key_encoder = self.parts.method, self.parts.key_encoder
        views = method.prepare_batch({name: self._to_device(t) for name, t in views.items()},
                                     positions, self._fetch_views)
        spec = method.key_encoder_spec
        if spec is None:
            return self._embed_query_views(views)
        assert key_encoder is not None
        key_encoder.update(self.parts.encoder, spec.momentum_at(global_step, total_steps))
        queries = self._embed_query_views({name: t for name, t in views.items() if name not in spec.views})
        keys = {name: key_encoder.encode(images, self.seed, global_step, self.autocast)
                for name, images in views.items() if name in spec.views}
        return {name: keys[name] if name in keys else queries[name] for name in views}

    def _fetch_views(self, positions: torch.Tensor) -> dict[str, torch.Tensor]:
        """This epoch's augmented views of the training samples ``positions``, on the device."""
        views = default_collate([self.data.train[position][0] for position in positions.tolist()])
        return {name: self._to_device(images) for name, images in views.items()}
