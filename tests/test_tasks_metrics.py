"""Metric helpers against values worked out by hand from their definitions (docs/protocols.md §Metrics)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tasks.metrics import (
    mean_ap,
    mean_per_class_accuracy,
    pr_curve11_ap,
    sklearn_ap,
    voc11_ap,
    voc_area_ap,
)

# ranking: +, -, +, -  with 2 positives -> precision at hits: 1/1 (r=.5), 2/3 (r=1)
SCORES = np.array([0.9, 0.8, 0.7, 0.1])
POSITIVE = np.array([True, False, True, False])


def test_voc11_ap_by_hand():
    # t in 0..0.5 -> max precision at recall >= t is 1 (6 thresholds); t in .6..1 -> 2/3 (5)
    assert voc11_ap(SCORES, POSITIVE) == pytest.approx((6 * 1.0 + 5 * 2 / 3) / 11)


def test_the_two_11_point_variants_agree_when_the_top_image_is_a_positive_without_ties():
    # curve points (recall, precision): (0, 1) [sklearn's start], (.5, 1), (.5, 1/2), (1, 2/3):
    # the same maxima as the devkit's ranks
    assert pr_curve11_ap(SCORES, POSITIVE) == pytest.approx((6 * 1.0 + 5 * 2 / 3) / 11)


def test_11_point_variants_differ_when_the_top_image_is_a_negative():
    # ranking -, +, -: devkit ranks (recall, precision) = (0, 0), (1, 1/2), (1, 1/3): every t has
    # max precision 1/2 -> 0.5. The PR curve adds (0, 1) and stops at full recall: t = 0 -> 1,
    # t = .1..1 -> 1/2 -> (1 + 10 / 2) / 11 = 6/11
    scores, positive = np.array([0.9, 0.8, 0.7]), np.array([False, True, False])
    assert voc11_ap(scores, positive) == pytest.approx(0.5)
    assert pr_curve11_ap(scores, positive) == pytest.approx(6 / 11)


def test_11_point_variants_differ_on_tied_scores():
    # scores 0.5 (+), 0.5 (-), 0.1 (-): the devkit ranks the tie in stable order: + first at
    # precision 1, recall 1 -> 1.0. The PR curve makes the tie one point (recall 1, precision 1/2),
    # after its (0, 1): t = 0 -> 1, t = .1..1 -> 1/2 -> 6/11
    scores, positive = np.array([0.5, 0.5, 0.1]), np.array([True, False, False])
    assert voc11_ap(scores, positive) == pytest.approx(1.0)
    assert pr_curve11_ap(scores, positive) == pytest.approx(6 / 11)


def test_voc_area_ap_by_hand():
    # envelope: 1 on recall (0, .5], 2/3 on (.5, 1]
    assert voc_area_ap(SCORES, POSITIVE) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_area_ap_equals_sklearn_when_precision_is_monotone():
    assert voc_area_ap(SCORES, POSITIVE) == pytest.approx(sklearn_ap(SCORES, POSITIVE))


def test_area_ap_uses_the_monotone_envelope():
    # + - - + + : precisions at hits 1, 2/4, 3/5; envelope lifts the middle hit to 3/5
    scores = np.array([5.0, 4, 3, 2, 1])
    positive = np.array([1, 0, 0, 1, 1], dtype=bool)
    assert voc_area_ap(scores, positive) == pytest.approx(1 / 3 * 1 + 2 / 3 * 3 / 5)
    assert sklearn_ap(scores, positive) == pytest.approx(1 / 3 * (1 + 2 / 4 + 3 / 5))


def test_perfect_ranking_gives_one():
    assert voc11_ap(np.array([3.0, 2, 1]), np.array([1, 1, 0], bool)) == pytest.approx(1.0)


def test_mean_per_class_accuracy_weights_classes_equally():
    labels = torch.tensor([0, 0, 0, 1])
    scores = torch.tensor([[1.0, 0], [1, 0], [1, 0], [1, 0]])  # always predicts class 0
    assert mean_per_class_accuracy(scores, labels, 3) == pytest.approx(0.5)  # class 2 absent


def test_mean_ap_difficult_rules():
    scores = np.array([[0.9], [0.8], [0.7]])
    targets = np.array([[1], [0], [-1]])  # present, difficult, absent
    excluded, _ = mean_ap(scores, targets, voc_area_ap, "exclude")
    negative, _ = mean_ap(scores, targets, voc_area_ap, "negative")
    assert excluded == pytest.approx(1.0)
    assert negative == pytest.approx(1.0)  # positive still ranked first
    flipped = np.array([[0.1], [0.8], [0.7]])
    assert mean_ap(flipped, targets, voc_area_ap, "exclude")[0] == pytest.approx(0.5)
    assert mean_ap(flipped, targets, voc_area_ap, "negative")[0] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="difficult"):
        mean_ap(scores, targets, voc_area_ap, "ignore")
