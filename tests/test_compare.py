"""compare_logits on hand-made outputs whose errors, flips and verdicts are known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dgla_export.compare import compare_logits, error_stats
from dgla_export.models.config import Tolerance

CLASSES = ["MEL", "NV", "BCC"]
LOOSE = Tolerance(logits_rel=1.0, probs_abs=1.0, max_top1_flips=10)


def test_error_statistics_are_scaled_by_the_largest_reference_logit() -> None:
    reference = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    actual = reference + np.array([[0.01, 0.0, 0.0], [0.0, 0.0, -0.02]])
    stats = error_stats(reference, actual)
    assert stats.max_abs == pytest.approx(0.02)
    assert stats.mean_abs == pytest.approx(0.03 / 6)
    assert stats.max_rel == pytest.approx(0.01)  # 0.02 / max |reference| = 2
    assert stats.nan == stats.inf == 0


def test_each_exceeded_tolerance_is_named() -> None:
    reference = np.array([[2.0, 0.0, -1.0]])
    comparison = compare_logits(
        reference,
        reference + np.array([[0.02, 0.0, 0.0]]),
        tolerance=Tolerance(logits_rel=0.005, probs_abs=1e-6),
        image_names=["a"],
        class_names=CLASSES,
    )
    assert not comparison.passed
    assert any("logits max rel error 0.01 > 0.005" in f for f in comparison.failures), comparison.failures
    assert any(f.startswith("probs max abs error") for f in comparison.failures), comparison.failures


def test_a_flip_names_the_image_classes_and_margins() -> None:
    reference = np.array([[1.0, 0.9, 0.0], [3.0, 0.0, 0.0]])
    actual = np.array([[0.9, 1.0, 0.0], [3.0, 0.0, 0.0]])
    comparison = compare_logits(
        reference,
        actual,
        tolerance=Tolerance(logits_rel=1.0, probs_abs=1.0),
        image_names=["close_call", "clear"],
        class_names=CLASSES,
    )
    (flip,) = comparison.flips
    assert (flip.image, flip.reference_class, flip.actual_class) == ("close_call", "MEL", "NV")
    total = math.exp(1.0) + math.exp(0.9) + 1.0
    margin = (math.exp(1.0) - math.exp(0.9)) / total
    assert flip.reference_margin == pytest.approx(margin) and flip.actual_margin == pytest.approx(margin)
    assert comparison.top1_agreement == 0.5
    assert comparison.failures == ("1 top-1 flips > 0 allowed",)


def test_non_finite_outputs_are_counted_and_fail() -> None:
    reference = np.zeros((2, 3))
    actual = np.array([[np.nan, 0.0, 0.0], [np.inf, 0.0, 0.0]])
    comparison = compare_logits(reference, actual, tolerance=LOOSE, image_names=["a", "b"], class_names=CLASSES)
    assert (comparison.logits.nan, comparison.logits.inf) == (1, 1)
    assert comparison.failures and comparison.failures[0].startswith("non-finite outputs")


def test_shapes_must_match() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3\) vs actual \(2, 7\)"):
        error_stats(np.zeros((2, 3)), np.zeros((2, 7)))


def test_map_comparison_names_each_failure() -> None:
    from dgla_export.compare import compare_maps

    rng = np.random.default_rng(0)
    reference = rng.random((4, 7, 3, 3))
    top1 = np.array([0, 1, 2, 3])
    same = compare_maps(reference, reference * 5.0, top1, max_abs=1e-6)  # a positive scale changes nothing
    assert same.passed and same.top1_max_abs < 1e-12 and same.hottest_agreement == 1.0, same
    moved = reference.copy()
    moved[0, 0] = moved[0, 0][::-1, ::-1]  # image 0's top-1 map points elsewhere
    result = compare_maps(reference, moved, top1, max_abs=0.05)
    assert not result.passed and result.hottest_agreement == 0.75, result
    assert any("top-1 maps differ" in f for f in result.failures) and any("hottest" in f for f in result.failures)
    logits = np.eye(7)[[3, 3, 3, 3]]  # the runtime's own top-1: class 3 for every image
    own = reference[:, 3]
    assert compare_maps(reference, reference, top1, max_abs=1e-6, own_top1=(own, logits)).passed
    wrong = compare_maps(reference, reference, top1, max_abs=1e-6, own_top1=(reference[:, 0], logits))
    assert wrong.failures == ("cam_top1 is not the cam of the runtime's own top-1 class",), wrong
    nan = reference.copy()
    nan[1, 2, 0, 0] = np.nan
    assert "non-finite class activation maps" in compare_maps(reference, nan, top1, max_abs=1.0).failures


def test_a_hottest_cell_the_reference_barely_picks_is_not_held_to_it() -> None:
    """BF16 and INT8, like their flips: a map whose two hottest cells are within the margin points at
    no one place, so its hottest cell moving is listed (undecided), not failed; a clear one still fails."""
    from dgla_export.compare import compare_maps

    reference = np.zeros((2, 1, 2, 2))
    reference[:, 0, 0, 0], reference[:, 0, 1, 1] = 1.0, 0.98  # image 0 and 1: two cells almost tied
    reference[1, 0, 1, 1] = 0.5  # image 1: a clear hottest cell
    swapped = reference.copy()
    swapped[:, 0, 1, 1] = 1.0
    swapped[:, 0, 0, 0] = 0.97  # both images' hottest cell moves (within 0.03 of the reference on image 0)
    top1 = np.array([0, 0])
    strict = compare_maps(reference, swapped, top1, max_abs=1.0)
    assert strict.hottest_agreement == 0.0 and not strict.passed, strict
    margin = compare_maps(reference, swapped, top1, max_abs=1.0, hottest_margin=0.05)
    assert margin.undecided == 1 and margin.hottest_agreement == 0.0 and not margin.passed, margin  # image 1 moved
    near = swapped.copy()
    near[1] = reference[1]
    kept = compare_maps(reference, near, top1, max_abs=1.0, hottest_margin=0.05)
    print(f"hottest cell: {kept.hottest_agreement:.0%} of decided images, {kept.undecided} undecided")
    assert kept.passed and kept.undecided == 1 and kept.hottest_agreement == 1.0, kept
    assert not compare_maps(reference, near, top1, max_abs=1.0).passed  # without the margin, the tie fails


def test_nan_in_the_reference_never_passes() -> None:
    """max(nan, eps) is NaN and NaN > tol is False: a NaN reference once passed every check."""
    from dgla_export.compare import compare_maps

    reference = np.array([[np.nan, 0.0, 0.0], [1.0, 0.0, 0.0]])
    comparison = compare_logits(reference, np.zeros((2, 3)), tolerance=LOOSE, image_names="ab", class_names=CLASSES)
    assert not comparison.passed, comparison
    assert comparison.failures[0].startswith("non-finite values in the PyTorch FP32 reference: 1 NaN, 0 Inf")
    assert math.isinf(comparison.logits.max_abs) and comparison.logits.reference_nan == 1
    both = compare_logits(reference, reference.copy(), tolerance=LOOSE, image_names="ab", class_names=CLASSES)
    assert not both.passed and not both.flips, both  # NaN on both sides is no agreement, and no flip either
    maps = np.ones((2, 7, 3, 3))
    broken = maps.copy()
    broken[0, 0, 0, 0] = np.nan
    result = compare_maps(broken, maps, np.array([0, 0]), max_abs=1.0)
    assert "non-finite values in the reference Grad-CAM maps" in result.failures, result.failures


def test_nan_outputs_are_one_failure_not_a_flip_per_image() -> None:
    reference = np.tile([[3.0, 0.0, 0.0]], (48, 1))
    comparison = compare_logits(
        reference, np.full((48, 3), np.nan), tolerance=LOOSE, image_names=[str(i) for i in range(48)],
        class_names=CLASSES,
    )  # fmt: skip
    assert comparison.failures == ("non-finite outputs: 288 NaN, 0 Inf",), comparison.failures
    assert comparison.flips == () and comparison.top1_agreement == 0.0
