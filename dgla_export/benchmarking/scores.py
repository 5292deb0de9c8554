"""Clinical scores against ground truth (ISIC 2018 Task 3 labels): reading and matching the
labels, and accuracy, balanced accuracy, weighted F1, macro AUC and per-class sensitivity."""

from __future__ import annotations

import csv
import dataclasses
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dgla_export.compare import softmax
from dgla_export.data import image_key
from dgla_export.errors import UserError

__all__ = ["METRIC_COLUMNS", "Scores", "format_score", "match_labels", "read_labels", "score"]

METRIC_COLUMNS = ("accuracy", "balanced_accuracy", "weighted_f1", "macro_auc")


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
            **{f"sensitivity_{c}": value for c, value in self.sensitivity.items()},
        }


def format_score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def read_labels(path: Path, class_names: Sequence[str]) -> dict[str, int]:
    """ISIC 2018 Task 3 ground truth: ``image`` column + one-hot class columns -> {image key: class}.

    Every row must hold exactly one 1 (and 0 elsewhere): a row without one is refused, never
    read as the first class. A UTF-8 byte-order mark (Excel writes one) is read as such, and image
    names may carry their file extension (``ISIC_0024306.jpg`` is ``ISIC_0024306``)."""
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
        key = image_key(row["image"])
        if key in labels:
            raise UserError(f"--labels {path}, line {line}: image {row['image']} is labelled twice")
        labels[key] = values.index(1.0)
    return labels


def _listed(names: Sequence[str], limit: int = 3) -> str:
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def match_labels(names: Sequence[str], labels: dict[str, int], path: Path, *, allow_subset: bool = False) -> None:
    """Every image of the run has a label and every label an image, unless ``allow_subset``
    (then only the labelled images are scored): checked before the slow work."""
    keys = {image_key(n) for n in names}
    unlabelled, orphans = sorted(keys - set(labels)), sorted(set(labels) - keys)
    if not keys & set(labels):
        raise UserError(f"--labels {path} names none of the {len(keys)} images (e.g. {_listed(sorted(keys))})")
    if (unlabelled or orphans) and not allow_subset:
        parts = [f"{len(unlabelled)} images without a label ({_listed(unlabelled)})"] if unlabelled else []
        parts += [f"{len(orphans)} labels without an image ({_listed(orphans)})"] if orphans else []
        raise UserError(
            f"--labels {path} does not match the images: {'; '.join(parts)}; fix the CSV or the image folder, "
            "or pass --allow-label-subset to score only the labelled images"
        )


def score(logits: np.ndarray, names: Sequence[str], labels: dict[str, int], classes: Sequence[str]) -> Scores:
    """Scores of ``logits`` (one row per image of ``names``) on the images that have a label."""
    from sklearn import metrics

    keep = [i for i, n in enumerate(names) if image_key(n) in labels]
    if not keep:
        raise UserError("no image of the run has a label in the labels CSV")
    truth = np.array([labels[image_key(names[i])] for i in keep])
    scores = softmax(logits[keep].astype(np.float64))
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
    return Scores(
        images=len(keep),
        accuracy=float(metrics.accuracy_score(truth, predicted)),
        weighted_f1=float(weighted_f1),
        balanced_accuracy=float(balanced),
        sensitivity=sensitivity,
        classes_absent_from_ground_truth=tuple(c for c, v in sensitivity.items() if v is None),
        macro_auc=auc,
    )
