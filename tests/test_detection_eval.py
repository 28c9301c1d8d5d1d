"""The VOC07 detection evaluator against hand-computed cases and a loop-by-loop reference."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tasks.detection.voc_eval import IOU_THRESHOLDS, evaluate_voc07, paired_iou, voc07_ap

CLASSES = ("a", "b")


def gt(boxes, labels, difficult=None):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    difficult = difficult if difficult is not None else [False] * len(labels)
    return {"boxes": boxes, "labels": torch.tensor(labels), "difficult": torch.tensor(difficult)}


def det(boxes, scores, labels):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels),
    }


def test_eleven_point_ap_by_hand():
    # recall reaches 0.5 at precision 1: points 0, 0.1, ..., 0.5 count -> 6/11
    assert voc07_ap(np.array([0.5]), np.array([1.0])) == pytest.approx(6 / 11)
    # the max precision to the right is used: at r = 0 it is 1.0, not the first point's 0.5
    ap = voc07_ap(np.array([0.5, 0.5, 1.0]), np.array([0.5, 1.0, 0.6]))
    assert ap == pytest.approx((6 * 1.0 + 5 * 0.6) / 11)
    assert voc07_ap(np.array([]), np.array([])) == 0.0


def test_perfect_detection_scores_100_everywhere():
    result = evaluate_voc07([det([[0, 0, 10, 10]], [0.9], [1])], [gt([[0, 0, 10, 10]], [1])], ("a",))
    assert result["AP"] == pytest.approx(100.0)
    assert result["AP50"] == result["AP75"] == pytest.approx(100.0)


def test_duplicate_and_threshold_by_hand():
    # det 1 (0.9) overlaps the box with IoU exactly 0.6, det 2 (0.8) is exact.
    detections = [det([[0, 0, 10, 6], [0, 0, 10, 10]], [0.9, 0.8], [1, 1])]
    truth = [gt([[0, 0, 10, 10]], [1])]
    result = evaluate_voc07(detections, truth, ("a",))
    per_threshold = result["per_threshold"]
    # t = 0.50, 0.55: det 1 TP, det 2 a duplicate (FP) -> AP 100
    assert per_threshold["0.50"] == pytest.approx(100.0)
    assert per_threshold["0.55"] == pytest.approx(100.0)
    # t >= 0.60 (overlap must exceed t): det 1 FP, det 2 TP at precision 1/2 -> AP 50
    for t in ("0.60", "0.75", "0.95"):
        assert per_threshold[t] == pytest.approx(50.0)
    assert result["AP"] == pytest.approx((2 * 100 + 8 * 50) / 10)
    assert result["AP50"] == pytest.approx(100.0) and result["AP75"] == pytest.approx(50.0)


def test_difficult_boxes_neither_count_nor_penalise():
    truth = [gt([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1], [False, True])]
    # the top detection hits the difficult box: ignored, so the second is a TP at precision 1
    detections = [det([[20, 20, 30, 30], [0, 0, 10, 10]], [0.9, 0.8], [1, 1])]
    assert evaluate_voc07(detections, truth, ("a",))["AP50"] == pytest.approx(100.0)
    # without the flag the same detections give two TPs on two positives: still 100, while a
    # miss on a non-difficult box halves recall
    truth_missing = [gt([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1], [False, False])]
    only_one = [det([[0, 0, 10, 10]], [0.9], [1])]
    assert evaluate_voc07(only_one, truth_missing, ("a",))["AP50"] == pytest.approx(100 * 6 / 11)
    assert evaluate_voc07(only_one, truth, ("a",))["AP50"] == pytest.approx(100.0)


def test_detection_matches_only_its_own_image_and_class():
    truth = [gt([[0, 0, 10, 10]], [1]), gt([[0, 0, 10, 10]], [2])]
    # image 0 gets a class-2 box where its class-1 box is, image 1 a class-1 box: all wrong
    detections = [det([[0, 0, 10, 10]], [0.9], [2]), det([[0, 0, 10, 10]], [0.9], [1])]
    result = evaluate_voc07(detections, truth, CLASSES)
    assert result["AP50"] == pytest.approx(0.0)


def test_class_without_ground_truth_is_nan_and_left_out():
    result = evaluate_voc07([det([[0, 0, 10, 10]], [0.9], [1])], [gt([[0, 0, 10, 10]], [1])], CLASSES)
    assert np.isnan(result["per_class"]["b"][0])
    assert result["AP50"] == pytest.approx(100.0)


def test_bad_input_is_reported():
    with pytest.raises(ValueError, match="detections for 1 images but ground truth for 2"):
        evaluate_voc07([det([], [], [])], [gt([], []), gt([], [])], CLASSES)
    with pytest.raises(ValueError, match="no non-difficult box"):
        evaluate_voc07([det([], [], [])], [gt([[0, 0, 5, 5]], [1], [True])], CLASSES)


def test_paired_iou_by_hand():
    boxes = np.array([[0.0, 0, 10, 10], [0, 0, 2, 2]])
    others = np.array([[[5.0, 0, 15, 10], [0, 0, 10, 10]], [[4.0, 4, 6, 6], [1, 1, 3, 3]]])
    expected = np.array([[50 / 150, 1.0], [0.0, 1 / 7]])
    np.testing.assert_allclose(paired_iou(boxes, others), expected)


def reference_voc_eval(detections, truths, label, threshold):
    """detectron2's voc_eval loop, transcribed: rank detections, match greedily one by one."""
    records = [
        {
            "boxes": t["boxes"][t["labels"] == label].numpy(),
            "difficult": t["difficult"][t["labels"] == label].numpy(),
            "taken": np.zeros(int((t["labels"] == label).sum()), dtype=bool),
        }
        for t in truths
    ]
    npos = sum(int((~r["difficult"]).sum()) for r in records)
    items = [
        (float(s), i, b.numpy())
        for i, d in enumerate(detections)
        for b, s, lab in zip(d["boxes"], d["scores"], d["labels"])
        if int(lab) == label
    ]
    items.sort(key=lambda x: -x[0])
    tp, fp = np.zeros(len(items)), np.zeros(len(items))
    for k, (_, i, box) in enumerate(items):
        r = records[i]
        best, j = -1.0, -1
        for g, other in enumerate(r["boxes"]):
            iw = max(min(box[2], other[2]) - max(box[0], other[0]), 0.0)
            ih = max(min(box[3], other[3]) - max(box[1], other[1]), 0.0)
            inter = iw * ih
            union = (box[2] - box[0]) * (box[3] - box[1]) + (other[2] - other[0]) * (other[3] - other[1]) - inter
            if inter / union > best:
                best, j = inter / union, g
        if best > threshold:
            if not r["difficult"][j]:
                if not r["taken"][j]:
                    tp[k], r["taken"][j] = 1, True
                else:
                    fp[k] = 1
        else:
            fp[k] = 1
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall, precision = tp / npos, tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    ap = 0.0
    for t in np.arange(0.0, 1.1, 0.1):
        ap += (np.max(precision[recall >= t]) if np.sum(recall >= t) else 0.0) / 11
    return 100 * ap


def random_case(rng, images=6, classes=2):
    truths, detections = [], []
    for _ in range(images):
        n = int(rng.integers(1, 4))
        xy = rng.uniform(0, 40, size=(n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 20, size=(n, 2))], axis=1)
        labels = rng.integers(1, classes + 1, size=n)
        truths.append(gt(boxes.tolist(), labels.tolist(), (rng.random(n) < 0.2).tolist()))
        m = int(rng.integers(0, 6))
        pick = rng.integers(0, n, size=m)
        noisy = boxes[pick] + rng.normal(0, 2.5, size=(m, 4))
        noisy[:, 2:] = np.maximum(noisy[:, 2:], noisy[:, :2] + 1)
        det_labels = np.where(rng.random(m) < 0.8, labels[pick], rng.integers(1, classes + 1, size=m))
        detections.append(det(noisy.tolist(), rng.random(m).tolist(), det_labels.tolist()))
    return detections, truths


@pytest.mark.parametrize("seed", range(8))
def test_vectorised_matching_equals_the_greedy_loop(seed):
    rng = np.random.default_rng(seed)
    detections, truths = random_case(rng)
    result = evaluate_voc07(detections, truths, CLASSES)
    for c, name in enumerate(CLASSES):
        npos = sum(int(((t["labels"] == c + 1) & ~t["difficult"]).sum()) for t in truths)
        for k, t in enumerate(IOU_THRESHOLDS):
            got = result["per_class"][name][k]
            if npos == 0:
                assert np.isnan(got)
            else:
                assert got == pytest.approx(reference_voc_eval(detections, truths, c + 1, t), abs=1e-9)
