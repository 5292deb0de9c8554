"""Clinical scores against ground truth (ISIC 2018 Task 3 labels): reading and matching the
labels; accuracy, balanced accuracy, weighted F1, macro AUC, per-class sensitivity and melanoma
specificity; and the acceptance of a runtime or precision on those scores, next to the FP32
reference on the same images, with paired bootstrap confidence intervals of each difference."""

from __future__ import annotations

import csv
import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dgla_export.compare import softmax
from dgla_export.data import image_key
from dgla_export.errors import OptionError, UserError

__all__ = [
    "ACCEPTANCE_METRICS",
    "METRIC_COLUMNS",
    "Acceptance",
    "ClinicalCheck",
    "Difference",
    "Scores",
    "acceptance_scores",
    "clinical_check",
    "format_score",
    "match_labels",
    "parse_max_drop",
    "read_labels",
    "score",
]

METRIC_COLUMNS = ("accuracy", "balanced_accuracy", "weighted_f1", "macro_auc")
# What a runtime is accepted on: the scores a dermatologist signs off (melanoma is ISIC's first class)
ACCEPTANCE_METRICS = ("balanced_accuracy", "mel_sensitivity", "mel_specificity", "macro_auc")
BOOTSTRAP_ROUNDS = 2000
BOOTSTRAP_SEED = 20181
MELANOMA = "MEL"


@dataclasses.dataclass(frozen=True)
class Scores:
    """One model's scores on the labelled images. Per-class sensitivity is top-1 based: of the
    images whose ground truth is the class, the share whose top-1 is that class (what balanced
    accuracy averages); a class absent from the ground truth has none (None), not 0."""

    images: int
    accuracy: float
    weighted_f1: float
    balanced_accuracy: float
    sensitivity: dict[str, float | None]
    classes_absent_from_ground_truth: tuple[str, ...]
    macro_auc: float | None
    mel_specificity: float | None = None  # of the images that are not melanoma, the share not called melanoma

    @property
    def mel_sensitivity(self) -> float | None:
        return self.sensitivity.get(MELANOMA)

    def to_dict(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["classes_absent_from_ground_truth"] = list(self.classes_absent_from_ground_truth)
        return record

    def delta(self, reference: Scores) -> dict[str, Any]:
        """This minus ``reference`` for every score (per class for the sensitivities)."""
        delta: dict[str, Any] = {
            "sensitivity": {
                c: None if v is None or reference.sensitivity[c] is None else v - reference.sensitivity[c]
                for c, v in self.sensitivity.items()
            }
        }
        for key in METRIC_COLUMNS:
            mine, theirs = getattr(self, key), getattr(reference, key)
            if mine is not None and theirs is not None:
                delta[key] = mine - theirs
        return delta

    def row(self) -> dict[str, Any]:
        """Flat: the summary scores and one ``sensitivity_CLASS`` column per class (tables, CSV)."""
        return {
            "images": self.images,
            **{key: getattr(self, key) for key in METRIC_COLUMNS},
            "mel_specificity": self.mel_specificity,
            **{f"sensitivity_{c}": value for c, value in self.sensitivity.items()},
        }


def format_score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def read_labels(path: Path, class_names: Sequence[str]) -> dict[str, int]:
    """ISIC 2018 Task 3 ground truth: ``image`` column + one-hot class columns -> {image as written: class}.

    Every row must hold exactly one 1 (and 0 elsewhere): a row without one is refused, never
    read as the first class. A UTF-8 byte-order mark (Excel writes one) is read as such. Rows name
    photos with or without their extension (:func:`match_labels` matches them)."""
    if not path.is_file():
        raise UserError(f"--labels {path} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    missing = [c for c in ("image", *class_names) if rows and c not in rows[0]]
    if not rows or missing:
        raise UserError(f"--labels {path}: expected columns image,{','.join(class_names)}; missing {missing}")
    labels: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        try:
            values = [float(row[c]) for c in class_names]
        except (TypeError, ValueError):
            values = []
        if sorted(values) != [0.0] * (len(class_names) - 1) + [1.0]:
            raise UserError(
                f"--labels {path}, line {line} ({row.get('image')}): the class columns must hold one 1 and "
                f"0 elsewhere, found {[row.get(c) for c in class_names]}"
            )
        name = (row["image"] or "").strip()
        if name in labels:
            raise UserError(f"--labels {path}, line {line}: image {name} is labelled twice; keep one row")
        labels[name] = values.index(1.0)
    return labels


def _listed(names: Sequence[str], limit: int = 3) -> str:
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def match_labels(
    names: Sequence[str], labels: dict[str, int], path: Path, *, allow_subset: bool = False
) -> dict[str, int]:
    """{photo name: class} for the photos of the run (``names``, unique in it): a row matches a photo
    by its name (``skin.jpg``), or without the extension only one of them has (``skin``, as ISIC
    writes them; a bundled photo's name has none); ``skin.png`` never labels ``skin.jpg``. A
    photo two rows match, or a row two photos match (``skin`` for ``skin.jpg`` and ``skin.png``), is
    refused naming both. Every photo has a label and every label a photo, unless ``allow_subset``
    (then only the labelled photos are scored): checked before the slow work."""
    rows_of = _rows_of(names, labels)
    photos_of: dict[str, list[str]] = {}
    for name, found in rows_of.items():
        if len(found) > 1:
            raise UserError(
                f"--labels {path}: photo {name} is labelled by two rows, {found[0]} and {found[1]}; keep one"
            )
        for row in found:
            photos_of.setdefault(row, []).append(name)
    for row, photos in photos_of.items():
        if len(photos) > 1:
            raise UserError(
                f"--labels {path}: row {row} matches two photos, {photos[0]} and {photos[1]}; name the photo with "
                f"its extension in the CSV ({photos[0]})"
            )
    unlabelled = sorted(name for name, found in rows_of.items() if not found)
    orphans = sorted(set(labels) - set(photos_of))
    if not photos_of:
        raise UserError(f"--labels {path} names none of the {len(names)} images (e.g. {_listed(sorted(names))})")
    if (unlabelled or orphans) and not allow_subset:
        parts = [f"{len(unlabelled)} images without a label ({_listed(unlabelled)})"] if unlabelled else []
        parts += [f"{len(orphans)} labels without an image ({_listed(orphans)})"] if orphans else []
        raise UserError(
            f"--labels {path} does not match the images: {'; '.join(parts)}; fix the CSV or the image folder, "
            "or pass --allow-label-subset to score only the labelled images"
        )
    return {name: labels[found[0]] for name, found in rows_of.items() if found}


def _rows_of(names: Sequence[str], labels: dict[str, int]) -> dict[str, list[str]]:
    """Each photo's rows: equal to its name, or equal once the extension only one side has is dropped,
    letter case aside (a camera's ``IMG_0001.JPG``, a spreadsheet's ``IMG_0001.jpg``)."""
    by_key: dict[str, list[str]] = {}
    for row in labels:
        by_key.setdefault(image_key(row).casefold(), []).append(row)
    found = {}
    for name in names:
        bare = image_key(name) == name
        rows = by_key.get(image_key(name).casefold(), [])
        found[name] = [r for r in rows if r.casefold() == name.casefold() or bare or image_key(r) == r]
    return found


def _labelled(names: Sequence[str], labels: dict[str, int]) -> tuple[list[int], np.ndarray]:
    keep = [i for i, n in enumerate(names) if n in labels]
    if not keep:
        raise UserError("no image of the run has a label in the labels CSV")
    return keep, np.array([labels[names[i]] for i in keep])


def score(logits: np.ndarray, names: Sequence[str], labels: dict[str, int], classes: Sequence[str]) -> Scores:
    """Scores of ``logits`` (one row per image of ``names``) on the images that have a label."""
    keep, truth = _labelled(names, labels)
    return _scores(truth, softmax(logits[keep].astype(np.float64)), classes)


def _scores(truth: np.ndarray, scores: np.ndarray, classes: Sequence[str]) -> Scores:
    from sklearn import metrics

    predicted = scores.argmax(1)
    present = np.unique(truth)
    with warnings.catch_warnings():  # a small labelled set lacks some classes, which is reported below
        warnings.simplefilter("ignore", UserWarning)
        recall = metrics.recall_score(truth, predicted, labels=present, average=None, zero_division=0)
        weighted_f1 = metrics.f1_score(truth, predicted, average="weighted", zero_division=0)
        balanced = metrics.balanced_accuracy_score(truth, predicted)
    sensitivity: dict[str, float | None] = dict.fromkeys(classes)
    sensitivity.update({classes[c]: float(r) for c, r in zip(present, recall, strict=True)})
    auc = (
        float(metrics.roc_auc_score(truth, scores, multi_class="ovr", average="macro", labels=range(len(classes))))
        if len(present) == len(classes)
        else None
    )
    specificity = None
    if MELANOMA in classes:
        melanoma = list(classes).index(MELANOMA)
        others = truth != melanoma
        specificity = float((predicted[others] != melanoma).mean()) if others.any() else None
    return Scores(
        images=len(truth),
        accuracy=float(metrics.accuracy_score(truth, predicted)),
        weighted_f1=float(weighted_f1),
        balanced_accuracy=float(balanced),
        sensitivity=sensitivity,
        classes_absent_from_ground_truth=tuple(c for c, v in sensitivity.items() if v is None),
        macro_auc=auc,
        mel_specificity=specificity,
    )


def parse_max_drop(text: str) -> dict[str, float]:
    """``balanced_accuracy=0.01,mel_sensitivity=0.02`` -> {metric: largest drop allowed}."""
    drops: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        metric, _, value = (x.strip() for x in part.partition("="))
        if metric not in ACCEPTANCE_METRICS:
            raise UserError(f"--max-drop: unknown metric {metric!r}; use {', '.join(ACCEPTANCE_METRICS)}")
        try:
            drops[metric] = float(value)
        except ValueError:
            raise UserError(f"--max-drop: {part!r} needs METRIC=NUMBER, e.g. mel_sensitivity=0.02") from None
        if not 0 <= drops[metric] <= 1:
            raise UserError(f"--max-drop: {metric}={value} must be between 0 and 1 (a share)")
    if not drops:
        raise UserError("--max-drop: give METRIC=X[,METRIC=X...], e.g. balanced_accuracy=0.01")
    return drops


def acceptance_scores(
    truth: np.ndarray, probs: np.ndarray, classes: int, melanoma: int | None
) -> dict[str, float | None]:
    """The acceptance metrics in numpy, as :func:`score` computes them with scikit-learn (a test
    holds the two equal): thousands of bootstrap resamples in seconds."""
    from scipy.stats import rankdata

    predicted = probs.argmax(1)
    present = np.unique(truth)
    recalls = [float((predicted[truth == c] == c).mean()) for c in present]
    result: dict[str, float | None] = {"balanced_accuracy": float(np.mean(recalls))}
    result["mel_sensitivity"] = result["mel_specificity"] = None
    if melanoma is not None:
        positive, negative = truth == melanoma, truth != melanoma
        result["mel_sensitivity"] = float((predicted[positive] == melanoma).mean()) if positive.any() else None
        result["mel_specificity"] = float((predicted[negative] != melanoma).mean()) if negative.any() else None
    if len(present) < classes:
        result["macro_auc"] = None
        return result
    aucs = []
    for c in range(classes):  # one-vs-rest AUC: the Mann-Whitney statistic from average ranks (ties halved)
        positive = truth == c
        ranks = rankdata(probs[:, c])
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        aucs.append((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    result["macro_auc"] = float(np.mean(aucs))
    return result


@dataclasses.dataclass(frozen=True)
class Difference:
    """Runtime minus reference on one score: the point estimate and a 95% paired bootstrap interval
    (None where the score is undefined on these images, e.g. AUC without every class)."""

    reference: float | None
    actual: float | None
    delta: float | None
    low: float | None
    high: float | None


@dataclasses.dataclass(frozen=True)
class ClinicalCheck:
    """A runtime judged on the clinical scores next to the FP32 reference on the same labelled images.

    A drop (reference minus runtime) larger than ``max_drop`` allows fails. The judgement is on the
    point estimate; the interval says how much these images can tell (a few dozen images cannot
    tell a 1% drop from none)."""

    images: int
    differences: dict[str, Difference]
    max_drop: dict[str, float]
    bootstrap_rounds: int
    bootstrap_seed: int
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "passed": self.passed}


def clinical_check(
    reference_logits: np.ndarray,
    logits: np.ndarray,
    names: Sequence[str],
    labels: dict[str, int],
    classes: Sequence[str],
    *,
    max_drop: dict[str, float] | None = None,
    rounds: int = BOOTSTRAP_ROUNDS,
    seed: int = BOOTSTRAP_SEED,
) -> ClinicalCheck:
    """Score both on the labelled images, and bootstrap the difference of each acceptance metric by
    resampling images, the same resample for both (paired). Resamples where a score is undefined
    (AUC without every class) are left out of its interval."""
    keep, truth = _labelled(names, labels)
    ref_probs = softmax(reference_logits[keep].astype(np.float64))
    probs = softmax(logits[keep].astype(np.float64))
    reference, actual = _scores(truth, ref_probs, classes), _scores(truth, probs, classes)
    rng = np.random.default_rng(seed)
    melanoma = list(classes).index(MELANOMA) if MELANOMA in classes else None
    samples: dict[str, list[float]] = {m: [] for m in ACCEPTANCE_METRICS}
    for _ in range(rounds):
        pick = rng.integers(0, len(truth), len(truth))
        mine = acceptance_scores(truth[pick], probs[pick], len(classes), melanoma)
        theirs = acceptance_scores(truth[pick], ref_probs[pick], len(classes), melanoma)
        for metric in ACCEPTANCE_METRICS:
            a, b = mine[metric], theirs[metric]
            if a is not None and b is not None:
                samples[metric].append(a - b)
    differences, failures = {}, []
    for metric in ACCEPTANCE_METRICS:
        before, after = getattr(reference, metric), getattr(actual, metric)
        delta = None if before is None or after is None else after - before
        low, high = (None, None)
        if samples[metric]:
            low, high = (float(np.percentile(samples[metric], q)) for q in (2.5, 97.5))
        differences[metric] = Difference(before, after, delta, low, high)
        allowed = (max_drop or {}).get(metric)
        if allowed is None:
            continue
        if delta is None:
            failures.append(f"{metric} is undefined on these images (AUC needs a labelled image of every class)")
        elif -delta > allowed + 1e-12:
            failures.append(f"{metric} drops {-delta:.3f} ({before:.3f} -> {after:.3f}) > {allowed:g} allowed")
    return ClinicalCheck(len(truth), differences, dict(max_drop or {}), rounds, seed, tuple(failures))


@dataclasses.dataclass(frozen=True)
class Acceptance:
    """Clinical acceptance: ``labels`` (an ISIC 2018 Task 3 ground-truth CSV) score the runtime next to
    the FP32 reference on the same images; ``max_drop`` (metric -> share, or the command line's
    ``"balanced_accuracy=0.01,mel_sensitivity=0.02"``) turns a larger drop into a failure (exit 3).
    ``allow_label_subset`` scores only the labelled images."""

    labels: str | Path | None = None
    max_drop: Mapping[str, float] | str | None = None
    allow_label_subset: bool = False

    def drops(self) -> dict[str, float] | None:
        if self.max_drop is None:
            return None
        if self.labels is None:
            raise OptionError("max_drop (--max-drop) needs labels (--labels): the scores need the ground truth")
        if isinstance(self.max_drop, str):
            return parse_max_drop(self.max_drop)
        return parse_max_drop(",".join(f"{k}={v}" for k, v in self.max_drop.items()))

    def read(self, names: Sequence[str], class_names: Sequence[str]) -> dict[str, int] | None:
        """{name: class} of ``names`` (checked against them before any slow work), or None without labels."""
        if self.labels is None:
            if self.allow_label_subset:
                raise OptionError("allow_label_subset (--allow-label-subset) needs labels (--labels)")
            return None
        path = Path(self.labels)
        return match_labels(names, read_labels(path, class_names), path, allow_subset=self.allow_label_subset)

    def labels_of(self, names: Sequence[str], class_names: Sequence[str]) -> dict[str, int] | None:
        """The labels, where some of ``names`` (e.g. the INT8 calibration images) have one and a
        drop bound is set: the INT8 search then holds each candidate to it on them."""
        if self.labels is None or self.max_drop is None:
            return None
        path = Path(self.labels)
        labels = read_labels(path, class_names)
        if not any(_rows_of(names, labels).values()):
            return None
        return match_labels(names, labels, path, allow_subset=True)
