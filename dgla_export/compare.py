"""Compare a runtime's outputs with the FP32 PyTorch reference: errors, flips, a verdict."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from dgla_export.models.config import Tolerance
from dgla_export.overlay import normalise_maps

__all__ = [
    "Comparison",
    "ErrorStats",
    "Flip",
    "MapComparison",
    "compare_logits",
    "compare_maps",
    "error_stats",
    "normalise_maps",
    "softmax",
]


def softmax(logits: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):  # non-finite logits give NaN rows, counted by the caller
        shifted = logits - logits.max(axis=-1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=-1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class ErrorStats:
    """Absolute errors, and relative errors scaled by the reference's largest magnitude."""

    max_abs: float
    mean_abs: float
    p99_abs: float
    max_rel: float
    mean_rel: float
    p99_rel: float
    nan: int
    inf: int
    reference_nan: int = 0
    reference_inf: int = 0


def error_stats(reference: np.ndarray, actual: np.ndarray) -> ErrorStats:
    """Errors of ``actual`` against ``reference``; a non-finite value on either side is an infinite
    error (never a NaN that compares as small) and is counted on its side."""
    if reference.shape != actual.shape:
        raise ValueError(f"shape mismatch: reference {reference.shape} vs actual {actual.shape}")
    actual64, reference64 = actual.astype(np.float64), reference.astype(np.float64)
    finite = np.isfinite(actual64) & np.isfinite(reference64)
    with np.errstate(invalid="ignore"):
        diff = np.where(finite, np.abs(actual64 - reference64), np.inf)
    magnitudes = np.abs(reference64[np.isfinite(reference64)])
    scale = max(float(magnitudes.max()) if magnitudes.size else 0.0, 1e-12)
    with np.errstate(invalid="ignore"):  # percentiles over inf errors: reported as counts, not warnings
        p99 = float(np.percentile(diff, 99))
    return ErrorStats(
        max_abs=float(diff.max()),
        mean_abs=float(diff.mean()),
        p99_abs=p99,
        max_rel=float(diff.max() / scale),
        mean_rel=float(diff.mean() / scale),
        p99_rel=p99 / scale,
        nan=int(np.isnan(actual64).sum()),
        inf=int(np.isinf(actual64).sum()),
        reference_nan=int(np.isnan(reference64).sum()),
        reference_inf=int(np.isinf(reference64).sum()),
    )


@dataclasses.dataclass(frozen=True)
class Flip:
    """An image whose top-1 class differs from the reference's; margins are top1 - top2 prob."""

    image: str
    reference_class: str
    actual_class: str
    reference_margin: float
    actual_margin: float


class _Verdict:
    """A judged comparison: it passes when it has no ``failures``, and its record says so."""

    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        record = dataclasses.asdict(self)
        record["passed"] = self.passed
        return record


@dataclasses.dataclass(frozen=True)
class Comparison(_Verdict):
    logits: ErrorStats
    probs: ErrorStats
    images: int
    top1_agreement: float
    flips: tuple[Flip, ...]
    tolerance: Tolerance
    failures: tuple[str, ...]


def _margin(probs: np.ndarray) -> np.ndarray:
    top2 = np.sort(probs, axis=-1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def compare_logits(
    reference: np.ndarray,
    actual: np.ndarray,
    *,
    tolerance: Tolerance,
    image_names: Sequence[str],
    class_names: Sequence[str],
    actual_probs: np.ndarray | None = None,
) -> Comparison:
    """Judge ``actual`` (N, classes) logits against ``reference``: every failure is named."""
    ref_probs = softmax(reference.astype(np.float64))
    probs = softmax(actual.astype(np.float64)) if actual_probs is None else actual_probs
    logit_stats = error_stats(reference, actual)
    prob_stats = error_stats(ref_probs, probs)
    ref_top, top = reference.argmax(-1), np.nan_to_num(actual).argmax(-1)
    ref_margin, margin = _margin(ref_probs), _margin(np.nan_to_num(probs))
    # a row with a NaN or Inf on either side is a non-finite failure, not a flip with NaN margins
    judged = np.isfinite(reference).all(-1) & np.isfinite(actual).all(-1) & np.isfinite(probs).all(-1)
    flips = tuple(
        Flip(
            image_names[i],
            class_names[ref_top[i]],
            class_names[top[i]],
            float(ref_margin[i]),
            float(margin[i]),
        )
        for i in np.flatnonzero((ref_top != top) & judged)
    )
    failures = []
    if logit_stats.reference_nan or logit_stats.reference_inf:
        failures.append(
            f"non-finite values in the PyTorch FP32 reference: {logit_stats.reference_nan} NaN, "
            f"{logit_stats.reference_inf} Inf (the weights or the model are broken; nothing can be judged against it)"
        )
    if logit_stats.nan or logit_stats.inf or prob_stats.nan or prob_stats.inf:
        nan, inf = logit_stats.nan + prob_stats.nan, logit_stats.inf + prob_stats.inf
        failures.append(f"non-finite outputs: {nan} NaN, {inf} Inf")
    if not failures:  # with a non-finite value the errors are infinite: said once, above
        if logit_stats.max_rel > tolerance.logits_rel:
            failures.append(f"logits max rel error {logit_stats.max_rel:.3g} > {tolerance.logits_rel:g}")
        if prob_stats.max_abs > tolerance.probs_abs:
            failures.append(f"probs max abs error {prob_stats.max_abs:.3g} > {tolerance.probs_abs:g}")
    counted = [flip for flip in flips if flip.reference_margin >= tolerance.min_flip_margin]
    if len(counted) > tolerance.max_top1_flips:
        margin = tolerance.min_flip_margin
        where = f" at margin >= {margin:g}" if margin else ""
        failures.append(f"{len(counted)} top-1 flips{where} > {tolerance.max_top1_flips} allowed")
    return Comparison(
        logits=logit_stats,
        probs=prob_stats,
        images=len(reference),
        top1_agreement=float(((ref_top == top) & judged).mean()),
        flips=flips,
        tolerance=tolerance,
        failures=tuple(failures),
    )


@dataclasses.dataclass(frozen=True)
class MapComparison(_Verdict):
    """A runtime's class activation maps against the reference's, both normalised per image and
    class: the largest difference for each image's top-1 class (the reference's) and over every
    class, and the share of images whose hottest cell of the top-1 map is the same (of those whose
    reference hottest cell leads by the margin; ``undecided``: how many did not)."""

    top1_max_abs: float
    all_max_abs: float
    hottest_agreement: float
    images: int
    failures: tuple[str, ...]
    undecided: int = 0


def compare_maps(
    reference: np.ndarray,
    actual: np.ndarray,
    top1: np.ndarray,
    *,
    max_abs: float,
    min_hottest: float = 1.0,
    hottest_margin: float = 0.0,
    own_top1: tuple[np.ndarray, np.ndarray] | None = None,
) -> MapComparison:
    """Judge ``actual`` (N, classes, h, w) maps against ``reference``; ``top1``: each image's class.

    ``own_top1``: the runtime's ``cam_top1`` (N, h, w) and logits, to check it is ``actual``'s map
    of the runtime's own top-1 class (a copy: any difference is a broken graph)."""
    if reference.shape != actual.shape:
        raise ValueError(f"shape mismatch: reference maps {reference.shape} vs actual {actual.shape}")
    finite, reference_finite = bool(np.isfinite(actual).all()), bool(np.isfinite(reference).all())
    clean = {"nan": 0.0, "posinf": 0.0, "neginf": 0.0}
    ref, act = normalise_maps(np.nan_to_num(reference, **clean)), normalise_maps(np.nan_to_num(actual, **clean))
    rows = np.arange(len(top1))
    diff = np.abs(act - ref)
    top1_diff = float(diff[rows, top1].max()) if len(top1) else 0.0
    ref_top1 = ref[rows, top1].reshape(len(top1), -1)
    ref_hot, act_hot = ref_top1.argmax(axis=1), act[rows, top1].reshape(len(top1), -1).argmax(axis=1)
    leads = np.diff(np.sort(ref_top1, axis=1)[:, -2:], axis=1)[:, 0] if ref_top1.shape[1] > 1 else np.ones(len(top1))
    decided = leads >= hottest_margin
    hottest = float((ref_hot == act_hot)[decided].mean()) if decided.any() else 1.0
    failures = [] if reference_finite else ["non-finite values in the reference Grad-CAM maps"]
    failures += [] if finite else ["non-finite class activation maps"]
    if own_top1 is not None:
        maps, logits = own_top1
        selected = actual[rows, np.asarray(logits).argmax(axis=-1)]
        if maps.shape != selected.shape or not np.array_equal(maps, selected):
            failures.append("cam_top1 is not the cam of the runtime's own top-1 class")
    if top1_diff > max_abs:
        failures.append(f"top-1 maps differ by {top1_diff:.3g} > {max_abs:g} (normalised)")
    if hottest < min_hottest:
        of = f" (of {int(decided.sum())} whose hottest cell leads by >= {hottest_margin:g})" if hottest_margin else ""
        failures.append(f"hottest cell of the top-1 map agrees on {hottest:.0%} of images{of} < {min_hottest:.0%}")
    undecided = int((~decided).sum())
    return MapComparison(top1_diff, float(diff.max()), hottest, len(top1), tuple(failures), undecided)
