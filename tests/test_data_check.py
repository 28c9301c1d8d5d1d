"""``data check`` looks at contents, not only names: tiny datasets in their real on-disk formats
are found whole, then each is damaged (a file truncated, a listed file removed, a class folder
emptied, a list shortened) and reported as corrupt, naming the file and the fix, with exit 1."""
from __future__ import annotations

import hashlib
import io
import pickle
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from test_detection_data import write_voc

from benchmark.core.config import PROFILE_DIR
from benchmark.data import get_dataset
from benchmark.data.fashion_mnist import RAW_FILES, raw_dir
from benchmark.data.imagenet import SUBSET_FIX, SUBSET_LISTS
from benchmark.data.integrity import md5_problems
from benchmark.data.mini_det import MiniDetParams, prepare_mini_det
from benchmark.data.voc07_cls import VOC_CLASSES
from benchmark.harness.cli import main

JPEG = io.BytesIO()
Image.new("RGB", (8, 6), (90, 30, 200)).save(JPEG, format="JPEG")


def jpeg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(JPEG.getvalue())


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file as Fashion-MNIST ships it: 00 00 08 <ndim>, big-endian dims, ubyte data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_fashion_mnist(root: Path, images: int = 5) -> None:
    for split in ("train", "t10k"):
        write_idx(raw_dir(root) / f"{split}-images-idx3-ubyte", np.zeros((images, 28, 28)))
        write_idx(raw_dir(root) / f"{split}-labels-idx1-ubyte", np.arange(images) % 10)


def class_folders(base: Path, names: list[str]) -> None:
    for name in names:
        jpeg(base / name / f"{name}_0.JPEG")


def check(root: Path, capsys) -> tuple[int, str, str]:
    code = main(["data", "check", "--data-root", str(root)])
    out = capsys.readouterr()
    return code, out.out, out.err


def state(out: str, name: str) -> str:
    return next(line.split()[1] for line in out.splitlines() if line.split()[:1] == [name])


# Fashion-MNIST: IDX sizes against their headers ---------------------------------------------

def test_a_truncated_idx_file_is_corrupt_with_its_expected_size_and_the_fix(tmp_path, capsys):
    write_fashion_mnist(tmp_path)
    code, out, _ = check(tmp_path, capsys)
    assert code == 0 and state(out, "fashion_mnist") == "found" and state(out, "cifar10") == "MISSING"
    images = raw_dir(tmp_path) / "t10k-images-idx3-ubyte"
    with open(images, "r+b") as fh:
        fh.truncate(1000)
    code, out, err = check(tmp_path, capsys)
    assert code == 1 and state(out, "fashion_mnist") == "CORRUPT"
    assert (f"corrupt: {images}, expected {16 + 5 * 28 * 28} bytes, found 1000; delete {images} "
            f"and run `python -m benchmark data prepare fashion_mnist --data-root {tmp_path}`") in out
    assert "corrupt or incomplete: fashion_mnist" in err


@pytest.mark.parametrize("damage, message", [
    (lambda raw: (raw / RAW_FILES[1]).write_bytes(b"PK\x03\x04 a zip"),
     r"train-labels-idx1-ubyte, expected an IDX header \(00 00 <type> <dims>\), found 50 4b 03 04"),
    (lambda raw: write_idx(raw / RAW_FILES[3], np.zeros(4)),
     r"t10k-labels-idx1-ubyte, expected 5 labels \(one per image\), found 4; delete the t10k-\* files"),
    (lambda raw: (raw / RAW_FILES[0]).write_bytes(bytes([0, 0, 8, 3, 0, 0])),
     r"train-images-idx3-ubyte, expected at least 16 bytes, found 6"),
    (lambda raw: (raw / RAW_FILES[1]).write_bytes(bytes([0, 0, 8, 0])),
     r"train-labels-idx1-ubyte, expected at least one item, its header says no dimensions"),
])
def test_bad_idx_headers_and_counts_name_the_file(tmp_path, damage, message):
    write_fashion_mnist(tmp_path)
    damage(raw_dir(tmp_path))
    problems = get_dataset("fashion_mnist").verify(tmp_path)
    assert len(problems) == 1 and problems[0].startswith("corrupt: ")
    assert re.search(message, problems[0]), problems


def test_an_idx_split_of_zero_items_is_corrupt(tmp_path):
    write_fashion_mnist(tmp_path)
    write_idx(raw_dir(tmp_path) / RAW_FILES[2], np.zeros((0, 28, 28)))
    write_idx(raw_dir(tmp_path) / RAW_FILES[3], np.zeros(0))
    problems = get_dataset("fashion_mnist").verify(tmp_path)
    assert len(problems) == 2, problems  # one per file: the image and label counts agree (0)
    assert "t10k-images-idx3-ubyte, expected at least one item, its header says shape 0x28x28" in problems[0]
    assert "t10k-labels-idx1-ubyte, expected at least one item, its header says shape 0" in problems[1]


# VOC: image sets against the annotation and image files they list ---------------------------

def write_voc_detection(root: Path) -> None:
    objects = [("dog", (1, 1, 10, 20), False)]
    write_voc(root, "2007", "trainval", {"000001": objects, "000002": objects})
    write_voc(root, "2007", "test", {"000003": objects})
    write_voc(root, "2012", "trainval", {"2012_000001": objects})


def test_voc_image_sets_are_checked_against_their_files(tmp_path, capsys):
    write_voc_detection(tmp_path)
    assert get_dataset("voc_detection").verify(tmp_path) == []
    voc = tmp_path / "VOCdevkit" / "VOC2007"
    (voc / "JPEGImages" / "000002.jpg").unlink()
    (voc / "Annotations" / "000003.xml").write_bytes(b"")
    code, out, _ = check(tmp_path, capsys)
    assert code == 1 and state(out, "voc_detection") == "CORRUPT"
    assert (f"missing: 1 of 4 files listed in {voc / 'ImageSets/Main/trainval.txt'}, e.g. "
            f"{voc / 'JPEGImages/000002.jpg'}; re-extract VOCtrainval_06-Nov-2007.tar") in out
    assert (f"corrupt: 1 of 2 files listed in {voc / 'ImageSets/Main/test.txt'} are empty "
            f"(0 bytes), e.g. {voc / 'Annotations/000003.xml'}") in out


def write_voc07_cls(root: Path, ids=("000001", "000002")) -> Path:
    voc = root / "VOCdevkit" / "VOC2007"
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    for image_id in ids:
        jpeg(voc / "JPEGImages" / f"{image_id}.jpg")
    for split in ("train", "val", "trainval", "test"):
        for name in VOC_CLASSES:
            lines = "".join(f"{i} {1 if name == 'dog' else -1}\n" for i in ids)
            (voc / "ImageSets" / "Main" / f"{name}_{split}.txt").write_text(lines)
    return voc


def test_voc07_class_files_must_agree_and_their_images_exist(tmp_path):
    voc = write_voc07_cls(tmp_path)
    spec = get_dataset("voc07_cls")
    assert spec.check(tmp_path) == [] and spec.verify(tmp_path) == []
    (voc / "ImageSets" / "Main" / "cat_test.txt").write_text("000001 -1\n")
    (voc / "JPEGImages" / "000002.jpg").unlink()
    problems = spec.verify(tmp_path)
    assert any(p.startswith(f"corrupt: {voc / 'ImageSets/Main/cat_test.txt'}, expected the 2 "
                            "images of aeroplane_test.txt, found 1") for p in problems)
    assert sum(p.startswith("missing: 1 of 2 files listed in") for p in problems) == 4  # 4 splits
    (voc / "ImageSets" / "Main" / "dog_val.txt").write_text("000001 7\n")
    assert any("dog_val.txt:1: expected '<image id> <1|-1|0>'" in p for p in spec.verify(tmp_path))


# the mini detection set: drawn for real, then damaged ---------------------------------------

@pytest.fixture
def mini(tmp_path, data_root):
    (tmp_path / "FashionMNIST").symlink_to((data_root / "FashionMNIST").resolve())
    prepare_mini_det(tmp_path, MiniDetParams(seed=2, trainval_images=6, test_images=3))
    return tmp_path


def test_the_mini_sets_list_the_number_of_images_they_were_drawn_with(mini):
    assert get_dataset("mini_det").verify(mini) == []
    assert get_dataset("mini_voc_cls").verify(mini) == []
    listing = mini / "mini_det" / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "trainval.txt"
    listing.write_text("".join(listing.read_text().splitlines(keepends=True)[:4]))
    assert get_dataset("mini_det").verify(mini) == [
        f"corrupt: {listing}, expected 6 lines, found 4; delete {mini / 'mini_det'} and run "
        f"`python -m benchmark data prepare mini_det --data-root {mini}`"]


# ImageFolder-style sets: class count, no empty class; the semisup subset lists ---------------

def test_imagenet_class_folders_and_semisup_subset_lists(tmp_path):
    base = tmp_path / "imagenet"
    wnids = [f"n{i:08d}" for i in range(1000)]
    for split in ("train", "val"):
        class_folders(base / split, wnids)
    (base / "meta.bin").write_bytes(b"\0")
    for path, lines in SUBSET_LISTS.values():
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).write_text("".join(f"{wnids[i % 1000]}_0.JPEG\n" for i in range(lines)))
    spec = get_dataset("imagenet")
    assert spec.check(tmp_path) == [] and spec.verify(tmp_path) == []
    one_percent, ten_percent = (tmp_path / path for path, _ in SUBSET_LISTS.values())
    one_percent.write_text("n00000000_0.JPEG\n" * 12_000)
    ten_percent.unlink()
    for name in wnids[:4]:
        (base / "val" / name / f"{name}_0.JPEG").unlink()
    shutil.rmtree(base / "train" / wnids[-1])
    problems = spec.verify(tmp_path)
    assert problems == [
        f"corrupt: {base / 'train'}, expected 1000 class folders, found 999; move "
        f"{base / 'train'} away and put ILSVRC2012_img_train.tar into {base} (the next load "
        "unpacks it)",
        f"corrupt: {base / 'val'}, 4 of 1000 class folders hold no image, e.g. n00000000, "
        f"n00000001, n00000002, ...; move {base / 'val'} away and put ILSVRC2012_img_val.tar "
        f"into {base} (the next load unpacks it)",
        f"corrupt: {one_percent}, expected 12811 lines, found 12000; {SUBSET_FIX}",
        f"missing: {ten_percent} (128116 lines); {SUBSET_FIX}",
    ]


@pytest.mark.parametrize("profile", ["imagenet", "imagenet-mlp"])
def test_the_checked_subset_lists_are_the_ones_the_imagenet_profiles_read(profile):
    tree = yaml.safe_load((PROFILE_DIR / f"{profile}.yaml").read_text())
    files = tree["tasks"]["semisup"]["subset_files"]
    assert {float(k): v for k, v in files.items()} == {k: p for k, (p, _) in SUBSET_LISTS.items()}


def test_places_and_caltech_folders_need_every_class_with_images(tmp_path):
    class_folders(tmp_path / "caltech101" / "101_ObjectCategories",
                  [f"c{i}" for i in range(101)] + ["BACKGROUND_Google"])
    assert get_dataset("caltech101").verify(tmp_path) == []
    (tmp_path / "caltech101" / "101_ObjectCategories" / "c7" / "c7_0.JPEG").unlink()
    assert get_dataset("caltech101").verify(tmp_path)[0].startswith(
        f"corrupt: {tmp_path / 'caltech101' / '101_ObjectCategories'}, 1 of 101 class folders "
        "hold no image, e.g. c7; unpack 101_ObjectCategories.tar.gz again")
    for split in ("train", "val"):
        class_folders(tmp_path / "Places205" / split, [f"p{i}" for i in range(205)])
    assert get_dataset("places205").verify(tmp_path) == []
    shutil.rmtree(tmp_path / "Places205" / "val" / "p3")
    assert get_dataset("places205").verify(tmp_path)[0].startswith(
        f"corrupt: {tmp_path / 'Places205' / 'val'}, expected 205 class folders, found 204")


def test_places_list_files_must_parse_and_list_something(tmp_path):
    lists = tmp_path / "Places205" / "trainvalsplit_places205"
    lists.mkdir(parents=True)
    jpeg(tmp_path / "Places205" / "images256" / "a" / "abbey" / "0.jpg")
    (lists / "train_places205.csv").write_text("a/abbey/0.jpg 0\n")
    (lists / "val_places205.csv").write_text("a/abbey/0.jpg 0\n")
    assert get_dataset("places205").verify(tmp_path) == []
    (lists / "train_places205.csv").write_text("a/abbey/0.jpg\n")
    (lists / "val_places205.csv").write_text("\n")
    train_error, val_error = get_dataset("places205").verify(tmp_path)
    assert train_error.startswith(f"corrupt: {lists / 'train_places205.csv'}:1: expected")
    assert val_error.startswith(f"corrupt: {lists / 'val_places205.csv'}, expected at least 1 "
                                "entries, found 0")


# Pets, Cars, Flowers, CIFAR ------------------------------------------------------------------

def test_fine_grained_sets_need_their_listed_or_folder_images(tmp_path):
    pets = tmp_path / "oxford-iiit-pet"
    (pets / "annotations").mkdir(parents=True)
    for split, name in (("trainval", "Abyssinian_1"), ("test", "Abyssinian_2")):
        (pets / "annotations" / f"{split}.txt").write_text(f"{name} 1 1 1\n")
        jpeg(pets / "images" / f"{name}.jpg")
    assert get_dataset("oxford_pets").verify(tmp_path) == []
    (pets / "images" / "Abyssinian_2.jpg").unlink()
    assert get_dataset("oxford_pets").verify(tmp_path) == [
        f"missing: 1 of 1 files listed in {pets / 'annotations' / 'test.txt'}, e.g. "
        f"{pets / 'images' / 'Abyssinian_2.jpg'}; replace {pets} with a complete copy (see how "
        "to get it)"]
    (tmp_path / "flowers-102" / "jpg").mkdir(parents=True)
    assert get_dataset("flowers102").verify(tmp_path) == [
        f"corrupt: {tmp_path / 'flowers-102' / 'jpg'}, expected images, found none; replace "
        f"{tmp_path / 'flowers-102'} with a complete copy (see how to get it)"]


def test_cifar_batches_are_compared_with_torchvision_s_md5s(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ("train", "test", "meta"):
        (folder / name).write_bytes(pickle.dumps({"data": name}))
    problems = get_dataset("cifar100").verify(tmp_path)
    assert [p.split(",")[0] for p in problems] == [f"corrupt: {folder / n}" for n in ("train", "test", "meta")]
    assert problems[0].startswith(f"corrupt: {folder / 'train'}, expected md5 "
                                  "16019d7e3df5f24257cddd939b257f8d, found ")
    payload = folder / "train"
    assert md5_problems(payload, hashlib.md5(payload.read_bytes()).hexdigest(), "fix") == []



class _ClosedPipe(io.StringIO):
    """stdout whose reader has gone away (``| head``): every write fails as a closed pipe does."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_stdout_ends_the_listing_quietly(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdout", _ClosedPipe())
    assert main(["data", "check", "--data-root", str(tmp_path)]) == 1  # no traceback: an exit code
    assert "Traceback" not in capsys.readouterr().err
