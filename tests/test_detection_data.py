"""VOC-layout loading (fixtures written in the real on-disk format), the mini set, bad input."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.core.errors import user_error_message
from benchmark.data.mini_det import MINI_DET_CLASSES, MINI_SPEC, MiniDetParams, prepare_mini_det
from benchmark.data.voc_detection import SPEC, VOC_CLASSES
from benchmark.data.voc_format import VOCAnnotationError, VOCDetectionSet
from tasks.detection.data import DetectionInput, EndlessShardedSampler

OBJECT = (
    "<object><name>{name}</name><difficult>{difficult}</difficult>"
    "<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
)


def write_voc(parent: Path, year: str, image_set: str, images: dict[str, list[tuple]], size=(40, 30)) -> Path:
    """A VOCdevkit/VOC<year> fixture: ``images`` maps id -> [(name, (x0, y0, x1, y1), difficult)]."""
    voc = parent / "VOCdevkit" / f"VOC{year}"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    for image_id, objects in images.items():
        Image.new("RGB", size, (10, 20, 30)).save(voc / "JPEGImages" / f"{image_id}.jpg")
        body = "".join(OBJECT.format(name=n, b=b, difficult=int(d)) for n, b, d in objects)
        xml = f"<annotation><size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>{body}</annotation>"
        (voc / "Annotations" / f"{image_id}.xml").write_text(xml)
    (voc / "ImageSets" / "Main" / f"{image_set}.txt").write_text("".join(f"{i}\n" for i in images))
    return voc


def test_voc07_plus_12_trainval_and_07_test(tmp_path):
    write_voc(tmp_path, "2007", "trainval", {"000001": [("dog", (1, 1, 10, 20), False), ("person", (5, 6, 40, 30), True)]})
    write_voc(tmp_path, "2007", "test", {"000002": [("cat", (2, 3, 4, 5), False)]})
    write_voc(tmp_path, "2012", "trainval", {"2008_000001": [("tvmonitor", (11, 12, 13, 14), False)]})
    assert SPEC.check(tmp_path) == []
    trainval = SPEC.build(tmp_path, "trainval")
    assert len(trainval) == 2
    image, target = trainval[0]
    assert image.size == (40, 30) and image.mode == "RGB"
    # 0-based continuous boxes (xmin - 1, ymin - 1, xmax, ymax), labels 1..20 in VOC's order
    torch.testing.assert_close(target["boxes"], torch.tensor([[0.0, 0, 10, 20], [4, 5, 40, 30]]))
    assert target["labels"].tolist() == [VOC_CLASSES.index("dog") + 1, VOC_CLASSES.index("person") + 1]
    assert target["difficult"].tolist() == [False, True]
    assert trainval.target(1)["labels"].tolist() == [20] and trainval.target(1)["image_id"] == "2008_000001"
    test = SPEC.build(tmp_path, "test")
    assert [r.image_id for r in test.records] == ["000002"]


def test_missing_voc_names_the_files(tmp_path):
    write_voc(tmp_path, "2007", "trainval", {"000001": [("dog", (1, 1, 10, 20), False)]})
    problems = SPEC.check(tmp_path)
    assert any("VOC2007/ImageSets/Main/test.txt" in p for p in problems)
    assert any("VOC2012/ImageSets/Main/trainval.txt" in p for p in problems)


@pytest.mark.parametrize(
    "objects, xml_text, message",
    [
        ([("unicorn", (1, 1, 5, 5), False)], None, "unknown class name 'unicorn'"),
        ([("dog", (1, 1, 50, 5), False)], None, "lies outside the 40x30 image"),
        ([], "<annotation><size><width>4", "cannot read the annotation XML"),
        ([], "<annotation></annotation>", "no <size> element"),
    ],
)
def test_bad_annotations_name_the_file(tmp_path, objects, xml_text, message):
    voc = write_voc(tmp_path, "2007", "test", {"000009": objects})
    if xml_text is not None:
        (voc / "Annotations" / "000009.xml").write_text(xml_text)
    with pytest.raises(VOCAnnotationError, match=message) as info:
        VOCDetectionSet(tmp_path, [("2007", "test")], VOC_CLASSES)
    assert "000009.xml" in str(info.value)
    assert user_error_message(info.value) == str(info.value)  # printed as one line, exit 2


def test_empty_image_set_names_the_list_file(tmp_path):
    voc = write_voc(tmp_path, "2007", "test", {})
    with pytest.raises(VOCAnnotationError, match="image set is empty") as info:
        VOCDetectionSet(tmp_path, [("2007", "test")], VOC_CLASSES)
    assert str(voc / "ImageSets" / "Main" / "test.txt") in str(info.value)


def test_degenerate_boxes_are_skipped_and_counted(tmp_path, caplog):
    write_voc(tmp_path, "2007", "test", {"000003": [("dog", (9, 1, 5, 5), False), ("cat", (1, 1, 5, 5), False)]})
    dataset = VOCDetectionSet(tmp_path, [("2007", "test")], VOC_CLASSES)
    assert dataset.skipped_degenerate == 1
    assert dataset.target(0)["labels"].tolist() == [VOC_CLASSES.index("cat") + 1]
    assert "skipped 1 degenerate" in caplog.text


SMALL = MiniDetParams(seed=3, trainval_images=12, test_images=6)


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory, data_root):
    root = tmp_path_factory.mktemp("mini")
    (root / "FashionMNIST").symlink_to((data_root / "FashionMNIST").resolve())
    prepare_mini_det(root, SMALL)
    return root


def test_mini_set_is_a_voc_layout_the_loader_reads(mini_root):
    voc = mini_root / "mini_det" / "VOCdevkit" / "VOC2007"
    assert MINI_SPEC.check(mini_root) == []
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        assert (voc / sub).is_dir()
    trainval, test = MINI_SPEC.build(mini_root, "trainval"), MINI_SPEC.build(mini_root, "test")
    assert (len(trainval), len(test)) == (12, 6)
    assert not {r.image_id for r in trainval.records} & {r.image_id for r in test.records}
    for record in trainval.records + test.records:
        assert SMALL.items_min <= len(record.labels) <= SMALL.items_max
        assert SMALL.canvas_min <= record.width <= SMALL.canvas_max
        assert (record.boxes[:, 2:] > record.boxes[:, :2]).all()
        assert (record.boxes[:, 2] <= record.width).all() and (record.boxes[:, 3] <= record.height).all()
    image, target = test[0]
    pixels = np.asarray(image.convert("L"))
    x0, y0, x1, y1 = target["boxes"][0].round().int().tolist()
    assert pixels[y0:y1, x0:x1].max() > 100  # an item is drawn inside its box
    lines = (voc / "ImageSets" / "Main" / f"{MINI_DET_CLASSES[0]}_test.txt").read_text().split("\n")
    assert {line.split()[1] for line in lines if line} <= {"1", "0", "-1"}


def test_mini_set_is_deterministic_in_its_seed(mini_root, tmp_path):
    (tmp_path / "FashionMNIST").symlink_to((mini_root / "FashionMNIST").resolve())
    prepare_mini_det(tmp_path, SMALL)
    same = lambda name: (tmp_path / name).read_bytes() == (mini_root / name).read_bytes()  # noqa: E731
    voc = "mini_det/VOCdevkit/VOC2007"
    assert same(f"{voc}/Annotations/000004.xml") and same(f"{voc}/JPEGImages/000013.jpg")
    prepare_mini_det(tmp_path, dataclasses.replace(SMALL, seed=4))
    assert not same(f"{voc}/Annotations/000004.xml")


def test_flip_mirrors_image_and_boxes():
    image = Image.new("L", (10, 4))
    image.putpixel((1, 2), 255)
    target = {"boxes": torch.tensor([[1.0, 2.0, 2.0, 3.0]]), "labels": torch.tensor([1])}
    torch.manual_seed(0)
    flips = [DetectionInput(1, flip=True)(image, target) for _ in range(20)]
    flipped = [(t, b) for t, b in flips if b["boxes"][0, 0] != 1.0]
    assert 0 < len(flipped) < 20
    tensor, out = flipped[0]
    torch.testing.assert_close(out["boxes"], torch.tensor([[8.0, 2.0, 9.0, 3.0]]))
    assert tensor.shape == (1, 4, 10) and tensor[0, 2, 8] == 1.0
    plain, _ = DetectionInput(3, flip=False)(image, target)
    assert plain.shape == (3, 4, 10) and plain[:, 2, 1].eq(1.0).all()


def test_sampler_shards_do_not_overlap_and_cover_every_pass():
    ranks = [EndlessShardedSampler(range(10), seed=5, rank=r, world_size=2) for r in range(2)]
    first = [[i for _, i in zip(range(5), iter(s))] for s in ranks]
    assert sorted(first[0] + first[1]) == list(range(10))
    with pytest.raises(ValueError, match="training set is empty"):
        EndlessShardedSampler([], seed=0)
