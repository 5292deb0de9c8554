"""Validate an exported runtime against the FP32 PyTorch model on real images.

Checked at batch 1, an odd batch and the largest batch, and with the same image at several
positions of one batch (a batch-dependent bug shows up as a spread between positions).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dgla_export.clinical import ClinicalCheck, clinical_check
from dgla_export.compare import Comparison, MapComparison, compare_logits, compare_maps
from dgla_export.models.attention import observe_attention_energy
from dgla_export.models.config import Tolerance
from dgla_export.models.resnet import ResNet
from dgla_export.preprocess import Method, preprocess_batch
from dgla_export.runtimes.base import Runner

__all__ = [
    "FP16_MAX",
    "BatchCheck",
    "Parity",
    "ValidationReport",
    "parity",
    "reference_logits",
    "reference_maps",
    "run_batched",
    "validate_runner",
]

log = logging.getLogger(__name__)
FP16_MAX = 65504.0


@dataclasses.dataclass(frozen=True)
class BatchCheck:
    batch: int
    comparison: Comparison
    maps: MapComparison | None = None  # a graph exported with explain: its maps against Grad-CAM

    @property
    def failures(self) -> tuple[str, ...]:
        return self.comparison.failures + (self.maps.failures if self.maps is not None else ())

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclasses.dataclass(frozen=True)
class ValidationReport:
    runtime: str
    precision: str
    images: tuple[str, ...]
    checks: tuple[BatchCheck, ...]
    position_spread: float
    max_attention_energy: float
    preprocessing: str = "fast"
    fp16_max: float = FP16_MAX
    clinical: ClinicalCheck | None = None  # with labels: the clinical scores next to the reference's

    @property
    def failures(self) -> tuple[str, ...]:
        found = tuple(f for check in self.checks for f in check.failures)
        return found + (self.clinical.failures if self.clinical is not None else ())

    @property
    def passed(self) -> bool:
        return bool(self.checks) and not self.failures

    @property
    def verdict(self) -> str:
        return "passed" if self.passed else "failed"

    def to_dict(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["passed"], record["verdict"] = self.passed, self.verdict
        if self.clinical is not None:
            record["clinical"] = self.clinical.to_dict()
        return record

    def write_json(self, path: str | Path, extra: dict[str, Any] | None = None) -> None:
        """The report as JSON, with ``extra`` entries (e.g. how an INT8 graph was quantized)."""
        from dgla_export.io import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({**self.to_dict(), **(extra or {})}, indent=2))


@dataclasses.dataclass(frozen=True)
class Parity:
    """A runtime's answers against the reference: logits and probabilities, and its maps where it has them."""

    logits: Comparison
    maps: MapComparison | None

    @property
    def passed(self) -> bool:
        return self.logits.passed and (self.maps is None or self.maps.passed)


def parity(
    reference: np.ndarray,
    outputs: dict[str, np.ndarray],
    *,
    tolerance: Tolerance,
    names: Sequence[str],
    class_names: Sequence[str],
    reference_cams: np.ndarray | None = None,
) -> Parity:
    """The one comparison every stage makes (validation, dgla-bench): a runtime's ``outputs``
    (logits; probs, cam and cam_top1 where the graph has them) against the reference's logits and,
    for an explained graph, its Grad-CAM maps, with the precision's ``tolerance``."""
    logits = outputs["logits"]
    comparison = compare_logits(
        reference, logits, tolerance=tolerance, image_names=names, class_names=class_names,
        actual_probs=outputs.get("probs"),
    )  # fmt: skip
    maps = None
    if reference_cams is not None and "cam" in outputs:
        maps = compare_maps(
            reference_cams,
            outputs["cam"],
            reference.argmax(-1),
            max_abs=tolerance.cam_abs,
            min_hottest=tolerance.cam_hottest,
            hottest_margin=tolerance.cam_hottest_margin,
            own_top1=(outputs["cam_top1"], logits) if "cam_top1" in outputs else None,
        )
    return Parity(comparison, maps)


def reference_maps(
    model: ResNet, inputs: Sequence[np.ndarray | torch.Tensor], batch: int = 8, device: str = "cpu"
) -> np.ndarray:
    """(N, classes, h, w) Grad-CAM at the architecture's ``cam_layer`` of the PyTorch model for
    every class, ReLU applied, by captum's ``LayerGradCam``: an independent implementation
    (autograd through the network), the reference the graph's ``cam`` output is held to after
    per-image normalisation. ``device``: where the model is (the inputs are moved there)."""
    from captum.attr import LayerGradCam

    gradcam = LayerGradCam(model, model.get_submodule(model.config.architecture.cam_layer))
    maps = []
    for start in range(0, len(inputs[0]), batch):
        chunk = tuple(torch.as_tensor(x[start : start + batch]).float().to(device) for x in inputs)
        per_class = [
            gradcam.attribute(chunk, target=c, relu_attributions=True).detach() for c in range(model.config.num_classes)
        ]
        maps.append(torch.cat(per_class, dim=1).double().cpu().numpy())
    return np.concatenate(maps)


def reference_logits(model: ResNet, inputs: Sequence[np.ndarray | torch.Tensor], batch: int = 8) -> np.ndarray:
    outputs = []
    with torch.no_grad():
        for start in range(0, len(inputs[0]), batch):
            chunk = (torch.as_tensor(x[start : start + batch]) for x in inputs)
            outputs.append(model(*chunk).float().numpy())
    return np.concatenate(outputs)


def run_batched(
    infer: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    names: Sequence[str],
    inputs: Sequence[np.ndarray],
    batch: int,
) -> dict[str, np.ndarray]:
    """Run ``infer`` over ``inputs`` in chunks of ``batch``; concatenate each output."""
    chunks: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(inputs[0]), batch):
        pairs = zip(names, inputs, strict=True)
        feed = {name: np.ascontiguousarray(x[start : start + batch]) for name, x in pairs}
        for key, value in infer(feed).items():
            chunks.setdefault(key, []).append(np.asarray(value))
    return {key: np.concatenate(value) for key, value in chunks.items()}


def _tiled(count: int, batch: int) -> np.ndarray:
    """Image indices filling whole batches: every image at least once, repeats at new positions."""
    total = max(batch, -(-count // batch) * batch)
    return np.arange(total) % count


def validate_runner(
    runner: Runner,
    model: ResNet,
    images: Sequence[tuple[str, np.ndarray]],
    *,
    precision: str | None = None,
    batches: Sequence[int] = (1, 3, 8),
    tolerance: Tolerance | None = None,
    preprocessing: Method = "fast",
    labels: dict[str, int] | None = None,
    max_drop: dict[str, float] | None = None,
    progress: Callable[[str], None] = log.info,
) -> ValidationReport:
    """Check a loaded ``runner`` against ``model`` on ``images`` (``precision``: the artefact's,
    which picks the tolerance; default the runner's). With ``labels`` (image key -> class) the
    runner is also judged on the clinical scores next to the reference's (``max_drop``: the largest
    drop of each allowed), from its answers at the first batch size."""
    runtime, precision = runner.name, precision or runner.precision
    config = model.config
    tolerance = tolerance or config.tolerances[precision]
    names = [name for name, _ in images]
    arrays = preprocess_batch([image for _, image in images], config, method=preprocessing)
    progress(f"PyTorch FP32 reference on {len(names)} images")
    with observe_attention_energy(model) as energies:
        reference = reference_logits(model, arrays)
    energy = max(energies)
    checks = []
    spread = 0.0
    reference_cams: np.ndarray | None = None
    clinical = None
    for batch in batches:
        index = _tiled(len(names), batch)
        progress(f"{runtime}: batch {batch} ({len(index)} pairs)")
        outputs = run_batched(runner.infer, config.input_names, [a[index] for a in arrays], batch)
        logits = outputs["logits"]
        if "cam" in outputs and reference_cams is None:
            progress(f"Grad-CAM of the PyTorch model (captum) for every class on {len(names)} images")
            reference_cams = reference_maps(model, arrays)
        found = parity(
            reference[index], outputs, tolerance=tolerance, names=[names[i] for i in index],
            class_names=config.class_names, reference_cams=None if reference_cams is None else reference_cams[index],
        )  # fmt: skip
        checks.append(BatchCheck(batch, found.logits, found.maps))
        if labels is not None and clinical is None:
            first = [int(np.flatnonzero(index == image)[0]) for image in range(len(names))]
            progress(f"clinical scores of {runtime} and PyTorch FP32 on the labelled images (paired bootstrap)")
            clinical = clinical_check(reference, logits[first], names, labels, config.class_names, max_drop=max_drop)
        for image in range(len(names)):
            rows = logits[index == image]
            spread = max(spread, float(np.abs(rows - rows[0]).max()))
    progress(f"largest HVA energy {energy:,.1f} = {energy / FP16_MAX:.2%} of FP16's limit {FP16_MAX:,.0f}")
    return ValidationReport(
        runtime, precision, tuple(names), tuple(checks), spread, energy, preprocessing, clinical=clinical
    )
