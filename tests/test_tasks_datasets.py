"""The real-dataset modules, each loaded from a tiny copy of its real on-disk layout.

CIFAR and Flowers102: torchvision md5-checks the batch / .mat files, which hand-written
fixtures cannot match; those tests replace torchvision's ``check_integrity`` in the dataset's
module (and only there) so that everything else (pickle/mat parsing, labels) runs for real.
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from tasks_support import TinyBackbone, make_context

from benchmark.data import DatasetMissing, get_dataset
from benchmark.data.caltech101 import split_indices
from tasks.base import get_task
from tasks.semisup import read_subset_list


def _jpeg(path, value=128, size=(12, 10), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, 255 - value, 0)).save(path)


# ImageNet ------------------------------------------------------------------------------------

def write_imagenet(root, per_class=4):
    base = root / "imagenet"
    wnids = ["n01440764", "n01443537", "n01484850"]
    for split in ("train", "val"):
        for c, wnid in enumerate(wnids):
            for i in range(per_class):
                _jpeg(base / split / wnid / f"{wnid}_{i}.JPEG", 40 + 80 * c)
    torch.save(({w: (f"class {w}",) for w in wnids}, []), base / "meta.bin")
    return wnids


def test_imagenet_through_torchvision(tmp_path):
    write_imagenet(tmp_path)
    data = get_dataset("imagenet").build(tmp_path, "train")
    assert len(data) == 12 and sorted(set(data.targets)) == [0, 1, 2]
    assert data[0][0].size == (12, 10)


def test_imagenet_missing_names_meta_and_archives(tmp_path):
    with pytest.raises(DatasetMissing, match="meta.bin.*ILSVRC2012_devkit_t12.tar.gz"):
        get_dataset("imagenet").build(tmp_path, "val")


def test_semisup_list_file_selects_named_images_and_rejects_strangers(tmp_path):
    wnids = write_imagenet(tmp_path)
    train = get_dataset("imagenet").build(tmp_path, "train")
    listing = tmp_path / "1percent.txt"
    listing.write_text(f"{wnids[0]}_1.JPEG\n{wnids[2]}_3.JPEG\n")
    chosen = read_subset_list(listing, train)
    assert [train.samples[i][0].rsplit("/", 1)[1] for i in chosen] == [
        f"{wnids[0]}_1.JPEG", f"{wnids[2]}_3.JPEG"]
    listing.write_text(f"{wnids[0]}_1.JPEG\nn0000_1.JPEG\nn0000_2.JPEG\n")
    with pytest.raises(ValueError, match="2 of 3 files are not in the train set, e.g. n0000_1"):
        read_subset_list(listing, train)


def test_semisup_task_uses_the_list_file(tmp_path):
    wnids = write_imagenet(tmp_path / "data")
    (tmp_path / "data" / "sub.txt").write_text(
        "".join(f"{w}_{i}.JPEG\n" for w in wnids for i in (0, 1)))
    settings = {"fractions": [0.5], "subset_files": {0.5: "sub.txt"}, "epochs": 1,
                "milestones": [], "batch_size": 3, "crop": 8, "resize": 8}
    ctx = make_context(tmp_path, "semisup", settings, TinyBackbone(3))
    out = {m.metric: m for m in get_task("semisup").run(ctx)}
    assert out["top1_50pct"].extra["labelled_images"] == 6
    assert out["top1_50pct"].extra["subset"].startswith("list file")
    assert out["top1_50pct"].split == "val"


# Places205 -----------------------------------------------------------------------------------

def test_places205_csv_lists(tmp_path):
    base = tmp_path / "Places205"
    lists = base / "trainvalsplit_places205"
    lists.mkdir(parents=True)
    for split in ("train", "val"):
        rows = [f"a/abbey/{split}{i}.jpg 0" for i in range(2)] + [f"b/bar/{split}0.jpg 204"]
        (lists / f"{split}_places205.csv").write_text("\n".join(rows) + "\n")
        for row in rows:
            _jpeg(base / "images256" / row.split()[0])
    data = get_dataset("places205").build(tmp_path, "val")
    assert data.targets == [0, 0, 204] and data[2][0].size == (12, 10)
    (lists / "val_places205.csv").write_text("a/abbey/x.jpg 205\n")
    with pytest.raises(ValueError, match="val_places205.csv:1"):
        get_dataset("places205").build(tmp_path, "val")
    (lists / "val_places205.csv").write_text("a/abbey/missing.jpg 3\n")
    with pytest.raises(OSError, match="missing.jpg"):
        get_dataset("places205").build(tmp_path, "val")[0]


def test_places205_folders_need_205_classes(tmp_path):
    for split in ("train", "val"):
        _jpeg(tmp_path / "Places205" / split / "abbey" / "0.jpg")
    with pytest.raises(ValueError, match="1 class folders, expected 205"):
        get_dataset("places205").build(tmp_path, "train")


def test_places205_missing(tmp_path):
    with pytest.raises(DatasetMissing, match="Places205.*trainvalsplit_places205"):
        get_dataset("places205").build(tmp_path, "train")


# CIFAR ---------------------------------------------------------------------------------------

def test_cifar10_and_100_pickles(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: True)
    rng = np.random.default_rng(0)
    c10 = tmp_path / "cifar-10-batches-py"
    c10.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 255, (2, 3072), dtype=np.uint8), "labels": [1, 9]}
        (c10 / name).write_bytes(pickle.dumps(batch))
    (c10 / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    train = get_dataset("cifar10").build(tmp_path, "train")
    assert len(train) == 10 and train.targets[:2] == [1, 9] and train[0][0].size == (32, 32)
    c100 = tmp_path / "cifar-100-python"
    c100.mkdir()
    for name in ("train", "test"):
        batch = {"data": rng.integers(0, 255, (3, 3072), dtype=np.uint8), "fine_labels": [0, 50, 99]}
        (c100 / name).write_bytes(pickle.dumps(batch))
    (c100 / "meta").write_bytes(pickle.dumps({"fine_label_names": [str(i) for i in range(100)]}))
    assert get_dataset("cifar100").build(tmp_path, "test").targets == [0, 50, 99]


def test_cifar_missing_lists_files(tmp_path):
    with pytest.raises(DatasetMissing, match="data_batch_1.*download=True"):
        get_dataset("cifar10").build(tmp_path, "train")


# Caltech101 ----------------------------------------------------------------------------------

def test_caltech101_thirty_per_class_split(tmp_path):
    base = tmp_path / "caltech101" / "101_ObjectCategories"
    counts = {"accordion": 33, "ant": 31, "BACKGROUND_Google": 2}
    for cat, n in counts.items():
        for i in range(1, n + 1):
            _jpeg(base / cat / f"image_{i:04d}.jpg", mode="L" if cat == "ant" else "RGB")
    train = get_dataset("caltech101").build(tmp_path, "train")
    test = get_dataset("caltech101").build(tmp_path, "test")
    assert np.bincount(train.targets).tolist() == [30, 30]
    assert np.bincount(test.targets).tolist() == [3, 1]
    assert not set(train.indices) & set(test.indices)
    assert train.indices == get_dataset("caltech101").build(tmp_path, "train").indices
    assert len(split_indices([0] * 40, "train", seed=1)) == 30


# Stanford Cars, Pets, Flowers ----------------------------------------------------------------

def test_stanford_cars_mat_annotations(tmp_path):
    base = tmp_path / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    annos = np.array([("00001.jpg", 1), ("00002.jpg", 196)], dtype=[("fname", "O"), ("class", "O")])
    scipy.io.savemat(base / "devkit" / "cars_train_annos.mat", {"annotations": annos})
    scipy.io.savemat(base / "cars_test_annos_withlabels.mat", {"annotations": annos})
    names = np.array([f"car {i}" for i in range(196)], dtype=object)
    scipy.io.savemat(base / "devkit" / "cars_meta.mat", {"class_names": names})
    for folder in ("cars_train", "cars_test"):
        for fname in ("00001.jpg", "00002.jpg"):
            _jpeg(base / folder / fname)
    data = get_dataset("stanford_cars").build(tmp_path, "test")
    assert data.targets == [0, 195] and data[1][1] == 195


def test_oxford_pets_annotation_lists(tmp_path):
    base = tmp_path / "oxford-iiit-pet"
    (base / "annotations").mkdir(parents=True)
    for split, rows in {"trainval": ["Abyssinian_1 1 1 1", "yorkshire_terrier_2 37 2 25"],
                        "test": ["Abyssinian_3 1 1 1"]}.items():
        (base / "annotations" / f"{split}.txt").write_text("\n".join(rows) + "\n")
        for row in rows:
            _jpeg(base / "images" / f"{row.split()[0]}.jpg")
    data = get_dataset("oxford_pets").build(tmp_path, "trainval")
    assert data.targets == [0, 36] and data[1][1] == 36


def test_flowers102_setid_and_labels(tmp_path, monkeypatch):
    import torchvision.datasets.flowers102 as tv_flowers

    monkeypatch.setattr(tv_flowers, "check_integrity", lambda path, md5=None: True)
    base = tmp_path / "flowers-102"
    for i in range(1, 7):
        _jpeg(base / "jpg" / f"image_{i:05d}.jpg")
    scipy.io.savemat(base / "imagelabels.mat", {"labels": np.array([1, 1, 2, 2, 102, 102])})
    scipy.io.savemat(base / "setid.mat", {"trnid": np.array([1, 3]), "valid": np.array([2, 4]),
                                          "tstid": np.array([5, 6])})
    assert get_dataset("flowers102").build(tmp_path, "train").targets == [0, 1]
    assert get_dataset("flowers102").build(tmp_path, "test").targets == [101, 101]


@pytest.mark.parametrize("task", ["linear", "linear_multilayer"])
def test_imagenet_probes_run_on_the_real_layout(tmp_path, task):
    write_imagenet(tmp_path / "data", per_class=6)
    layers = "blocks" if task == "linear" else ["stem@2/2/0", "layer2.0@1", "pooled"]
    settings = {"dataset": "imagenet", "layers": layers, "epochs": 2, "milestones": [1],
                "holdout": 4, "resize": 8, "crop": 8, "lr": 0.1}
    ctx = make_context(tmp_path, task, settings, TinyBackbone(3))
    out = get_task(task).run(ctx)
    top1 = next(m for m in out if m.metric == "top1" and m.split == "val")
    assert 0 <= top1.value <= 1 and top1.dataset == "imagenet"
    per_layer = [m.metric for m in out if m.metric.startswith("top1@")]
    assert len(per_layer) == 3
