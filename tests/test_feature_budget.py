"""The memory and disk checks before feature extraction: the bytes a task would hold, the refusal with the
numbers and the alternatives, and the machine's free memory as the budget when the job has none."""
from __future__ import annotations

import shutil
from collections import namedtuple
from pathlib import Path

import pytest
from tasks_support import PixelBackbone, make_context
from torch.utils.data import Dataset

from benchmark.core.errors import explain_failure
from tasks import common, feature_budget
from tasks.feature_budget import FeatureBudgetError, check_feature_budget, feature_bytes
from tasks.features import FeatureLayer, context_features

IMAGENET_TRAIN = 1_281_167
INVP_17_BLOCKS = 131_072  # dims of the InvP 17-block probe, summed over its layers


class ImageNetShaped(Dataset):
    """As many items as ImageNet train; reading one is a failure of the test."""

    targets = [0] * IMAGENET_TRAIN

    def __len__(self) -> int:
        return IMAGENET_TRAIN

    def __getitem__(self, i: int):
        raise AssertionError(f"image {i} was read before the budget check")

DiskUsage = namedtuple("DiskUsage", "total used free")  # shutil.disk_usage's result


def test_feature_bytes_are_rows_times_summed_dims_times_dtype_size():
    assert feature_bytes(10, [3, 5], "float16") == 160
    assert feature_bytes(10, [3, 5], "float32") == 320 and feature_bytes(0, [7], "bfloat16") == 0
    assert feature_bytes(IMAGENET_TRAIN, [INVP_17_BLOCKS], "float16") == 335_850_242_048  # the 336 GB


def test_an_imagenet_shaped_request_is_refused_with_the_numbers(capsys):
    with pytest.raises(FeatureBudgetError) as info:
        check_feature_budget(IMAGENET_TRAIN, [INVP_17_BLOCKS], "float16", 64, "tasks.linear: imagenet train", "linear")
    needed = IMAGENET_TRAIN * INVP_17_BLOCKS * (2 + 4) / 2**30  # the float16 rows + their float32 copy
    message = str(info.value)
    for part in ("tasks.linear: imagenet train: 1,281,167 rows x D [131072]", "float16",
                 f"need {needed:,.1f} GB resident", "above the 64.0 GB budget (the job's mem_gb)",
                 "use features: online (the online probe)", "launcher.tasks.linear.mem_gb"):
        assert part in message
    assert explain_failure(info.value, debug=False) == 2  # the CLI's one line, exit 2
    assert capsys.readouterr().err == f"error: {message}\n"


def test_a_task_refuses_before_reading_any_image(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "load_split", lambda *args: ImageNetShaped())
    ctx = make_context(tmp_path, "linear", {"dataset": "imagenet", "feature_dtype": "float16"}, kind="pixels")
    ctx.memory_budget_gb = 64
    pixels = 3 * 224 * 224  # the raw-pixel sanity row: the eval crop, flattened
    with pytest.raises(FeatureBudgetError, match=rf"1,281,167 rows x D \[{pixels}\].*float16.*launcher\.tasks\.linear"):
        context_features(ctx, dict(ctx.settings), "imagenet", "train", [FeatureLayer(None)], PixelBackbone(pixels))
    assert not (tmp_path / "cache").exists()  # nothing extracted, nothing written


def test_features_within_the_budget_pass_and_a_streaming_task_is_not_checked(tmp_path, monkeypatch):
    check_feature_budget(1000, [512, 256], "float16", 1, "fits")  # 4.6 MB of 1 GB
    monkeypatch.setattr(shutil, "disk_usage", lambda path: DiskUsage(2**50, 0, 2**50))  # the cache fits
    monkeypatch.setattr(common, "load_split", lambda *args: ImageNetShaped())
    ctx = make_context(tmp_path, "knn", {"dataset": "imagenet", "feature_dtype": "float16"}, kind="pixels")
    ctx.memory_budget_gb = 64
    with pytest.raises(AssertionError, match="image 0 was read"):  # it went on to extract
        context_features(ctx, dict(ctx.settings), "imagenet", "train", [FeatureLayer(None)], PixelBackbone(10),
                         resident=False)


def test_without_a_job_budget_the_free_memory_is_the_budget(tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       8388608 kB\nMemFree:         524288 kB\nMemAvailable:    1048576 kB\n")
    monkeypatch.setattr(feature_budget, "MEMINFO", meminfo)
    assert feature_budget.available_memory_gb() == 1.0
    with pytest.raises(FeatureBudgetError, match=r"above the 1\.0 GB budget \(free memory on this machine\)"):
        check_feature_budget(2**20 + 1, [256], "float32", None, "x")  # one row over 1 GB
    check_feature_budget(2**20, [256], "float32", None, "x")  # exactly 1 GB fits
    monkeypatch.setattr(feature_budget, "MEMINFO", Path(tmp_path / "absent"))
    assert feature_budget.available_memory_gb() > 0  # os.sysconf's free pages


def test_a_float64_working_copy_is_counted_per_layer_or_for_all():
    from tasks.feature_budget import WorkingCopy, resident_bytes

    n, dims = 1000, [512, 256]
    assert resident_bytes(n, dims, "float16") == n * 768 * (2 + 4)  # the probes: float32, every layer
    assert resident_bytes(n, dims, "float32") == n * 768 * 4  # already float32: the mapping itself
    # transfer-linear: a float64 copy of its layer; the SVM: of one layer at a time (the widest)
    assert resident_bytes(n, [512], "float32", WorkingCopy("float64")) == n * 512 * (4 + 8)
    svm = WorkingCopy("float64", one_layer_at_a_time=True)
    assert resident_bytes(n, dims, "float32", svm) == n * (768 * 4 + 512 * 8)
    with pytest.raises(FeatureBudgetError, match="the rows \\+ a float64 copy of one layer at a time"):
        check_feature_budget(2**20, [256, 128], "float32", 1.5, "svm", "voc07_svm", svm)  # 3.5 GB > 1.5


def test_a_cache_the_disk_cannot_hold_is_refused_before_any_image_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: DiskUsage(10 * 2**30, 0, 2**30))  # 1 GB free
    monkeypatch.setattr(common, "load_split", lambda *args: ImageNetShaped())
    ctx = make_context(tmp_path, "knn", {"dataset": "imagenet"}, kind="pixels")
    pixels = 3 * 224 * 224  # 1,281,167 rows x 150,528 float32: 718 GB, streamed by kNN
    with pytest.raises(FeatureBudgetError, match=r"imagenet train features of pooled: caching them needs "
                                                 r"718\.4 GB on the disk of .*1\.0 GB free.*--out"):
        context_features(ctx, dict(ctx.settings), "imagenet", "train", [FeatureLayer(None)], PixelBackbone(pixels),
                         resident=False)
    assert not (tmp_path / "cache").exists()  # nothing extracted, nothing written
