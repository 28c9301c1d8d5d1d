"""Image mixture of a batch with partner images, per sample (CutMix, Yun et al. 2019; mixup,
Zhang et al. 2018), usable by any method's ``prepare_batch`` (CLIM: docs/methods/clim.md §Image mixture).

The random draws come in as tensors (``lam`` ~ Beta(alpha, alpha), box centres uniform in
[0, 1)^2), so the caller decides where randomness comes from (CLIM keys it on the global batch,
so that DDP ranks and one process agree). Both return the mixed images and the per-sample
fraction of the anchor kept, lambda: under CutMix 1 - (clipped box area) / (H W).
"""
from __future__ import annotations

import torch

MIXES = ("cutmix", "mixup")


def draw_mix(count: int, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` lambdas ~ Beta(alpha, alpha) and box centres (count, 2) in [0, 1)^2, from torch's
    global generator."""
    lam = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha))).sample((count,))
    return lam, torch.rand(count, 2)


def cutmix(images: torch.Tensor, partners: torch.Tensor, lam: torch.Tensor,
           centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste into each image (B, C, H, W) a box of ``partners`` of area (1 - lam) H W (sides
    H sqrt(1 - lam), W sqrt(1 - lam)) centred at ``centres`` (B, 2) (row, column fractions),
    clipped to the image; returns the mixed images and lambda = 1 - clipped box area / (H W)."""
    height, width = images.shape[-2:]
    side = (1.0 - lam.to(images.device, torch.float32)).clamp(0.0, 1.0).sqrt()
    centres = centres.to(images.device, torch.float32)
    bounds = []
    for axis, size in enumerate((height, width)):
        centre, half = centres[:, axis] * size, side * size / 2.0
        bounds.append(((centre - half).round().clamp(0, size), (centre + half).round().clamp(0, size)))
    (top, bottom), (left, right) = bounds
    rows = torch.arange(height, device=images.device).view(1, -1)
    cols = torch.arange(width, device=images.device).view(1, -1)
    in_rows = (rows >= top.view(-1, 1)) & (rows < bottom.view(-1, 1))
    in_cols = (cols >= left.view(-1, 1)) & (cols < right.view(-1, 1))
    box = (in_rows.unsqueeze(2) & in_cols.unsqueeze(1)).unsqueeze(1)  # (B, 1, H, W)
    kept = 1.0 - (bottom - top) * (right - left) / (height * width)
    return torch.where(box, partners, images), kept


def mixup(images: torch.Tensor, partners: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """lam * image + (1 - lam) * partner per sample; returns the mixed images and lam."""
    lam = lam.to(images.device, torch.float32)
    weight = lam.view(-1, *[1] * (images.dim() - 1)).to(images.dtype)
    return weight * images + (1 - weight) * partners, lam


def mix_images(kind: str, images: torch.Tensor, partners: torch.Tensor, lam: torch.Tensor,
               centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``cutmix`` or ``mixup`` of ``images`` with ``partners``; (mixed images, per-sample lambda)."""
    if kind == "cutmix":
        return cutmix(images, partners, lam, centres)
    if kind == "mixup":
        return mixup(images, partners, lam)
    raise ValueError(f"mix must be one of {', '.join(MIXES)}, got {kind!r}")
