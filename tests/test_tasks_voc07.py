"""VOC07 classification: the devkit layout read by our reader, and the three protocols on it.

The fixture writes ``VOCdevkit/VOC2007/{ImageSets/Main/<class>_<split>.txt, JPEGImages}``
with 20x16 JPEGs where each class lights its own 4x4 patch, so grid-pooled features separate
the classes and the mAP of each protocol must be high.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tasks_support import TinyBackbone, make_context

from benchmark.core.errors import user_error_message
from benchmark.data import DatasetMissing, get_dataset
from benchmark.data.mini_det import MINI_DET_CLASSES
from benchmark.data.voc07_cls import VOC_CLASSES
from tasks.base import get_task

SMALL = {"resize": 16, "crop": 16}


def write_voc(root, per_split=None, seed=0, classes=VOC_CLASSES, folder=""):
    base = root / folder / "VOCdevkit" / "VOC2007"
    (base / "JPEGImages").mkdir(parents=True)
    (base / "ImageSets" / "Main").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    sizes = per_split or {"train": 40, "val": 40, "test": 40}
    n_classes = len(classes)
    values = {}
    start = 0
    for split, n in sizes.items():
        ids = [f"{start + i:06d}" for i in range(n)]
        start += n
        labels = -np.ones((n, n_classes), dtype=int)
        for i in range(n):
            labels[i, [i % n_classes, (i * 7 + 3) % n_classes]] = 1
            if rng.random() < 0.2:
                labels[i, rng.integers(n_classes)] = 0  # difficult
        for i, image_id in enumerate(ids):
            pixels = np.zeros((16, 20, 3), dtype=np.uint8)
            for c in np.nonzero(labels[i] == 1)[0]:
                r, q = divmod(c, 5)
                pixels[r * 4 : r * 4 + 4, q * 4 : q * 4 + 4] = 255
            Image.fromarray(pixels).save(base / "JPEGImages" / f"{image_id}.jpg", quality=95)
        values[split] = (ids, labels)
    if "train" in values:
        values["trainval"] = (values["train"][0] + values["val"][0],
                              np.concatenate([values["train"][1], values["val"][1]]))
    for split, (ids, labels) in values.items():
        (base / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        for c, name in enumerate(classes):
            lines = [f"{image_id} {labels[i, c]:2d}" for i, image_id in enumerate(ids)]
            (base / "ImageSets" / "Main" / f"{name}_{split}.txt").write_text("\n".join(lines) + "\n")
    return values


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    write_voc(root)
    return root


def test_reader_keeps_raw_voc_values(voc_root):
    data = get_dataset("voc07_cls").build(voc_root, "trainval")
    assert len(data) == 80 and tuple(data.targets.shape) == (80, 20)
    assert set(data.targets.unique().tolist()) == {-1, 0, 1}
    image, target = data[0]
    assert image.size == (20, 16) and target[0] == 1


def test_missing_devkit_says_where_and_how(tmp_path):
    with pytest.raises(DatasetMissing, match="VOCdevkit/VOC2007.*VOCtrainval_06-Nov-2007"):
        get_dataset("voc07_cls").build(tmp_path, "test")


def test_malformed_class_file_names_the_file(tmp_path):
    write_voc(tmp_path, {"train": 2, "val": 2, "test": 2})
    bad = tmp_path / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "cat_test.txt"
    bad.write_text("000004 2\n")
    with pytest.raises(ValueError, match="cat_test.txt:1") as info:
        get_dataset("voc07_cls").build(tmp_path, "test")
    # a user error: commands print this one line and exit 2 instead of a traceback
    assert "cat_test.txt:1: expected '<image id> <1|-1|0>'" in user_error_message(info.value)


def test_corrupt_image_names_the_file(tmp_path):
    write_voc(tmp_path, {"train": 2, "val": 2, "test": 2})
    (tmp_path / "VOCdevkit" / "VOC2007" / "JPEGImages" / "000004.jpg").write_bytes(b"not a jpeg")
    data = get_dataset("voc07_cls").build(tmp_path, "test")
    with pytest.raises(OSError, match="000004.jpg"):
        data[0]


def test_svm_protocol_learns_and_resumes_finished_fits(tmp_path, voc_root, monkeypatch):
    settings = {**SMALL, "layers": ["stem@4", "pooled"], "costs": [0.1, 10.0], "workers": 2}
    ctx = make_context(tmp_path, "voc07_svm", settings, TinyBackbone(3), data_root=voc_root)
    out = {m.metric: m for m in get_task("voc07_svm").run(ctx)}
    assert out["map@stem@4"].value > 0.8
    assert out["map"].extra["layer"] in ("stem@4", "pooled")
    assert set(out["map"].extra["costs"]) <= {0.1, 10.0}
    assert out["map_best_layer_on_test"].value >= out["map"].value
    stored = list((tmp_path / "cache" / "voc07_svm").rglob("cls*_cost*.json"))
    assert len(stored) == 2 * 20 * 2  # layers x classes x costs

    import tasks.voc07

    def refuse(*args, **kwargs):
        raise AssertionError("finished (class, cost) fit was re-run")

    monkeypatch.setattr(tasks.voc07, "fit_svm", refuse)
    again = {m.metric: m for m in get_task("voc07_svm").run(ctx)}
    assert again["map"].value == out["map"].value

    # other features (here: another image size) never reuse those fits
    other = make_context(tmp_path, "voc07_svm", {**settings, "resize": 12, "crop": 12},
                         TinyBackbone(3), data_root=voc_root)
    with pytest.raises(AssertionError, match="re-run"):
        get_task("voc07_svm").run(other)


def test_bce_protocol(tmp_path, voc_root):
    settings = {**SMALL, "layer": "stem@4", "iterations": 300, "step_every": 120, "lr": 1.0}
    ctx = make_context(tmp_path, "voc07_bce", settings, TinyBackbone(3), data_root=voc_root)
    (result,) = get_task("voc07_bce").run(ctx)
    assert result.metric == "map" and result.value > 0.8
    assert len(result.extra["per_class_ap"]) == 20


def test_lbfgs_protocol_selects_c_on_val(tmp_path, voc_root):
    settings = {**SMALL, "layer": "stem@4", "weight_decays": [1.0, 10.0]}
    ctx = make_context(tmp_path, "voc07_lbfgs", settings, TinyBackbone(3), data_root=voc_root)
    out = get_task("voc07_lbfgs").run(ctx)
    tests = {m.metric: m for m in out if m.split == "test"}
    test, test_pr = tests["voc11_map"], tests["voc11_map_pr"]
    val = {m.metric: m for m in out if m.split == "holdout"}["voc11_map"]
    assert test.extra["weight_decay"] in (1.0, 10.0)
    assert test.extra["C"] == 1.0 / test.extra["weight_decay"] and val.value == test.extra["val"]
    assert test.value > 0.8 and test_pr.value > 0.8
    # the PR-curve variant's t = 0 term is always 1, the devkit's is the best precision at a rank
    assert test_pr.value >= test.value - 1e-12
    assert [m.metric for m in out] == ["voc11_map", "voc11_map_pr", "voc11_map"]


def test_mini_stand_in_reads_mini_det_lists(tmp_path):
    write_voc(tmp_path / "data", {"trainval": 40, "test": 20}, classes=MINI_DET_CLASSES,
              folder="mini_det")
    data = get_dataset("mini_voc_cls").build(tmp_path / "data", "trainval")
    assert tuple(data.targets.shape) == (40, 10)
    settings = {"dataset": "mini_voc_cls", "transform": "gray", **SMALL, "layer": "stem@4",
                "iterations": 200, "step_every": 100, "lr": 1.0}
    ctx = make_context(tmp_path, "voc07_bce", settings, TinyBackbone(1))
    (result,) = get_task("voc07_bce").run(ctx)
    assert result.dataset == "mini_voc_cls" and len(result.extra["per_class_ap"]) == 10
    assert result.value > 0.6


def test_raw_pixels_encoder_uses_the_flattened_image(tmp_path, voc_root):
    from tasks_support import PixelBackbone

    settings = {**SMALL, "layer": "layer4.1@2", "iterations": 50}
    ctx = make_context(tmp_path, "voc07_bce", settings, PixelBackbone(3 * 16 * 16),
                       data_root=voc_root, kind="pixels")
    (result,) = get_task("voc07_bce").run(ctx)
    assert result.extra["layer"] == "pooled" and 0 <= result.value <= 1


class CountingBackbone(TinyBackbone):
    """TinyBackbone that records the batch size of every trunk pass (shared by its copies)."""

    batches: list[int] = []

    def forward_blocks(self, x):
        CountingBackbone.batches.append(len(x))
        return super().forward_blocks(x)


def test_bce_augments_every_iteration_by_default(tmp_path, voc_root):
    """voc_linear.py: every iteration's images are augmented anew and go through the frozen
    trunk (80 trainval images, batch 16, 7 iterations: one epoch of 5 batches, then 2), the
    test set once with a random flip; ``features: cached`` is the named deviation."""
    from tasks.voc07_bce import VOC07BCETask

    assert VOC07BCETask.defaults["features"] == "online"
    assert VOC07BCETask.defaults["crop_scale"] == [0.2, 1.0]
    settings = {**SMALL, "layer": "stem@4", "iterations": 7, "lr": 1.0}
    CountingBackbone.batches = []
    ctx = make_context(tmp_path, "voc07_bce", settings, CountingBackbone(3), data_root=voc_root)
    (online,) = get_task("voc07_bce").run(ctx)
    assert CountingBackbone.batches == [16] * 7 + [40]
    assert online.extra["features"] == "online"
    CountingBackbone.batches = []
    ctx = make_context(tmp_path / "c", "voc07_bce", {**settings, "features": "cached"},
                       CountingBackbone(3), data_root=voc_root)
    (cached,) = get_task("voc07_bce").run(ctx)
    # extracted once, after one all-zero image per split (the layer widths for the memory check)
    assert CountingBackbone.batches == [1, 80, 1, 40]
    assert "deviation" in cached.extra["features"]


def test_bce_batches_keep_the_last_partial_batch():
    from tasks.voc07_bce import cached_batches

    batches = cached_batches(torch.arange(10.0)[:, None], torch.ones(10, 2), 4, seed=0)
    sizes = [len(next(batches)[0]) for _ in range(6)]
    assert sizes == [4, 4, 2, 4, 4, 2]
