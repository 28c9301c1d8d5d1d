"""The data-pipeline options any method can use: CutMix / mixup of a batch with partner images
(per-sample lambda against a slow box loop) and multi-resolution views (per-view output sides)."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from benchmark.core.config import ConfigError
from benchmark.data.augment import train_transform
from methods.parts.mixing import cutmix, draw_mix, mix_images, mixup


def slow_cutmix(image: torch.Tensor, partner: torch.Tensor, lam: float, cy: float, cx: float):
    """One sample: a box of sides H sqrt(1-lam), W sqrt(1-lam) centred at (cy H, cx W), clipped."""
    _, h, w = image.shape
    side = (1 - lam) ** 0.5
    top = min(max(round(cy * h - side * h / 2), 0), h)
    bottom = min(max(round(cy * h + side * h / 2), 0), h)
    left = min(max(round(cx * w - side * w / 2), 0), w)
    right = min(max(round(cx * w + side * w / 2), 0), w)
    out = image.clone()
    for y in range(top, bottom):
        for x in range(left, right):
            out[:, y, x] = partner[:, y, x]
    return out, 1 - (bottom - top) * (right - left) / (h * w)


def test_cutmix_lambda_is_one_minus_the_clipped_box_fraction():
    torch.manual_seed(0)
    images, partners = torch.randn(7, 2, 10, 12), torch.randn(7, 2, 10, 12)
    lam = torch.tensor([0.0, 0.3, 0.5, 0.9, 1.0, 0.2, 0.6])
    centres = torch.tensor([[0.5, 0.5], [0.0, 0.0], [0.95, 0.1], [0.5, 0.99], [0.3, 0.3], [0.1, 0.9], [0.7, 0.4]])
    mixed, kept = cutmix(images, partners, lam, centres)
    for i in range(7):
        ref, ref_kept = slow_cutmix(images[i], partners[i], lam[i].item(), *centres[i].tolist())
        assert torch.equal(mixed[i], ref)
        assert kept[i].item() == pytest.approx(ref_kept)
        fraction_from_pixels = (mixed[i] == images[i]).all(dim=0).float().mean().item()
        assert kept[i].item() == pytest.approx(fraction_from_pixels)
    assert kept[0] == 0 and kept[4] == 1 and kept[1] > lam[1]  # clipped at the corner: more kept


def test_mixup_interpolates_and_dispatch_rejects_unknown_mixes():
    images, partners = torch.ones(3, 1, 4, 4), torch.zeros(3, 1, 4, 4)
    lam = torch.tensor([0.25, 0.5, 1.0])
    mixed, kept = mixup(images, partners, lam)
    assert torch.equal(kept, lam) and torch.allclose(mixed[:, 0, 0, 0], lam)
    assert torch.equal(mix_images("mixup", images, partners, lam, torch.zeros(3, 2))[0], mixed)
    with pytest.raises(ValueError, match="cutmix, mixup"):
        mix_images("blend", images, partners, lam, torch.zeros(3, 2))


def test_draws_follow_the_global_generator():
    torch.manual_seed(5)
    first = draw_mix(4, 1.0)
    torch.manual_seed(5)
    again = draw_mix(4, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert ((first[0] >= 0) & (first[0] <= 1)).all() and ((first[1] >= 0) & (first[1] < 1)).all()


def test_multi_resolution_views_have_their_sides_and_the_default_is_unchanged():
    image = Image.fromarray((torch.rand(28, 28) * 255).byte().numpy())
    torch.manual_seed(1)
    plain = train_transform("mini_mocov2", ("query", "key"))(image)
    torch.manual_seed(1)
    sized = train_transform("mini_mocov2", {"query": None, "key": None, "multires0": 21, "multires1": 14})(image)
    assert all(torch.equal(plain[name], sized[name]) for name in plain)  # same draws for the same views
    assert sized["multires0"].shape == (1, 21, 21) and sized["multires1"].shape == (1, 14, 14)
    with pytest.raises(ConfigError, match="multires0"):
        train_transform("mini_mocov2", {"query": None, "multires0": 40})
