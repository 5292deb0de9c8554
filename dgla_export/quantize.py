"""FP32 ONNX -> INT8 Q/DQ ONNX, accuracy first: calibrate, measure sensitivity, keep the worst out.

ONNX Runtime's static quantizer writes explicit QuantizeLinear/DequantizeLinear pairs (the only
INT8 TensorRT 11 accepts, and what ONNX Runtime's CPU kernels fuse). Stages, each callable alone:

1. :func:`quantization_units`: Conv/Gemm nodes grouped by the module their weight belongs to
   (stem, dual-branch fusion, classifier, and per residual block its convolutions and its attention);
2. calibration: activation ranges from real images through the project's preprocessing, computed
   once and cached, so the later stages only re-write the graph;
3. :func:`measure_sensitivity`: the output error when only one unit is quantized;
4. :func:`search_mixed_precision`: keep the most sensitive units in float until the graph meets
   the accuracy target (the model config's ``int8`` tolerance) on the calibration images.

Kept-out units stay in the graph's float type (FP32); the INT8 MAC share is reported beside it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx

from dgla_export.artefacts.graph import graph_macs
from dgla_export.clinical import clinical_check
from dgla_export.compare import compare_logits
from dgla_export.data import pixels_digest
from dgla_export.errors import MismatchError, OptionError, UserError
from dgla_export.io import atomic_path
from dgla_export.models.architecture import Architecture
from dgla_export.models.config import ModelConfig, Tolerance
from dgla_export.preprocess import Method, preprocess_batch
from dgla_export.runtimes.base import Runner
from dgla_export.runtimes.onnxruntime import OnnxRuntimeRunner
from dgla_export.validation import run_batched

__all__ = [
    "QuantizationError",
    "QuantizationOptions",
    "QuantizationReport",
    "Quantizer",
    "calibration_digest",
    "measure_sensitivity",
    "quantization_units",
    "quantize_onnx",
    "runner_logits",
    "save_int8_graph",
    "search_mixed_precision",
]

Target = Literal["cpu", "tensorrt", "openvino"]
Progress = Callable[[str], None]
QUANTIZED_OPS = ("Conv", "Gemm")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
NNCF_RANGES = "--calibration-method is ONNX Runtime's quantizer's; NNCF chooses its own ranges (--int8-target openvino)"


class QuantizationError(MismatchError):
    """No INT8 graph meets the accuracy target (exit 3: the numbers are not good enough)."""


@dataclasses.dataclass(frozen=True)
class QuantizationOptions:
    """``target`` picks the Q/DQ flavour: ``cpu`` = unsigned asymmetric activations with 7-bit
    weights (fastest on x86 and safe from the int16 saturation of AVX2 without VNNI);
    ``tensorrt`` = signed symmetric activations and weights, the only form TensorRT accepts;
    ``openvino`` = NNCF's placement for OpenVINO's CPU plugin (:mod:`dgla_export.quantize_nncf`)."""

    target: Target = "cpu"
    method: str = "minmax"
    tolerance: Tolerance | None = None  # default: the model config's "int8" tolerance
    preprocess: Method = "fast"  # how the calibration images become inputs: as the deployment will
    # With labels of (some) calibration images, each candidate must also keep the clinical scores
    # within max_drop of the FP32 graph's on them (see dgla_export.clinical)
    labels: dict[str, int] | None = None
    max_drop: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if self.target not in ("cpu", "tensorrt", "openvino"):
            raise OptionError(f"target must be cpu, tensorrt or openvino, got {self.target!r}")
        if self.method not in CALIBRATION_METHODS:
            raise OptionError(f"calibration method must be one of {CALIBRATION_METHODS}, got {self.method!r}")
        if self.target == "openvino" and self.method != "minmax":
            raise OptionError(NNCF_RANGES)

    def describe(self) -> dict[str, str]:
        if self.target == "cpu":
            activations, weights = "uint8 asymmetric per-tensor", "int8 symmetric per-channel, 7-bit range"
        elif self.target == "openvino":
            activations, weights = "NNCF's CPU preset: symmetric per-tensor", "int8 symmetric per-channel"
        else:
            activations, weights = "int8 symmetric per-tensor", "int8 symmetric per-channel"
        return {"activations": activations, "weights": weights, "preprocessing": self.preprocess}


@dataclasses.dataclass(frozen=True)
class QuantizationReport:
    target: str
    method: str
    calibration_images: tuple[str, ...]
    calibration_digest: str
    sensitivity: dict[str, float]  # unit -> logits RMS error / reference RMS when only it is INT8
    kept_out: tuple[str, ...]  # units left in float, most sensitive first
    int8_mac_share: float
    quantized_nodes: int
    calibration_check: dict[str, Any]  # max prob error, flips of the chosen graph on the calibration images

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def require_calibration_cache() -> None:
    """The search re-writes the graph dozens of times; without ONNX Runtime's calibration cache
    (1.27+) each would repeat the calibration pass."""
    import onnxruntime
    from onnxruntime.quantization import quantize_static

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise UserError(
            f"INT8 export needs onnxruntime-gpu (or onnxruntime) >= 1.27, found {onnxruntime.__version__}; "
            "upgrade it (a CPU environment is enough: the INT8 graph then runs on any ONNX Runtime >= 1.15)"
        )


def graph_architecture(graph: onnx.ModelProto) -> Architecture:
    """The architecture contract of an exported graph, from the config it records."""
    props = {p.key: p.value for p in graph.metadata_props}
    if "config" not in props:
        raise UserError("the graph lacks dgla-export metadata (its config); export it with `dgla-export onnx`")
    return ModelConfig.from_dict(json.loads(props["config"])).architecture


def explanation_nodes(graph: onnx.ModelProto) -> list[str]:
    """The nodes that compute the ``cam`` output of an explained graph from layer4 (its 1x1
    convolution with the classifier's weights, and the ReLU): they stay FP32 and out of the
    search, since the maps are held to Grad-CAM and cost a few thousand MACs."""
    producers = {output: node for node in graph.graph.node for output in node.output}
    names, wanted = [], [o.name for o in graph.graph.output if o.name == "cam"]
    while wanted:
        node = producers.get(wanted.pop())
        if node is None or node.op_type not in ("Relu", "Conv", "Cast"):
            continue
        names.append(node.name)
        if node.op_type != "Conv":  # walk back to the convolution, no further
            wanted.append(node.input[0])
    return names


def quantization_units(graph: onnx.ModelProto) -> dict[str, list[str]]:
    """Unit name -> names of its Conv/Gemm nodes, in graph order (the explanation's left out).

    Weight initializers keep the PyTorch state-dict names (behind the export wrapper's ``model.``);
    the architecture contract names the unit each belongs to."""
    units: dict[str, list[str]] = {}
    explanation = set(explanation_nodes(graph))
    contract = graph_architecture(graph)
    for node in graph.graph.node:
        if node.op_type in QUANTIZED_OPS and node.name not in explanation:
            units.setdefault(contract.unit_of(node.input[1].removeprefix("model.")), []).append(node.name)
    return units


def calibration_digest(images: Sequence[tuple[str, np.ndarray]]) -> str:
    """sha256 over names and pixels: the same digest means the same calibration set."""
    digest = hashlib.sha256()
    for name, image in images:
        digest.update(name.encode() + b"\0" + str(image.shape).encode() + np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


class Quantizer:
    """Calibrate once, then write Q/DQ graphs for any subset of units from the cached ranges."""

    def __init__(
        self, fp32_path: Path, inputs: dict[str, np.ndarray], options: QuantizationOptions, workdir: Path
    ) -> None:
        self.fp32_path, self.inputs, self.options, self.workdir = fp32_path, inputs, options, workdir
        self.explanation = explanation_nodes(onnx.load(str(fp32_path), load_external_data=False))
        self.cache = workdir / "calibration.json"

    def write(self, output: Path, exclude: Sequence[str] = (), only: Sequence[str] | None = None) -> Path:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        cpu = self.options.target == "cpu"
        method = {
            "minmax": CalibrationMethod.MinMax,
            "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy,
        }[self.options.method]
        root = logging.getLogger()
        level = root.level
        if level >= logging.WARNING:  # it advises pre-processing on every call
            root.setLevel(logging.ERROR)
        try:
            quantize_static(
                str(self.fp32_path),
                str(output),
                None if self.cache.is_file() else _Reader(self.inputs),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OPS),
                per_channel=True,
                reduce_range=cpu,
                activation_type=QuantType.QUInt8 if cpu else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                nodes_to_quantize=list(only) if only is not None else None,
                nodes_to_exclude=[*exclude, *self.explanation],
                calibrate_method=method,
                extra_options={"ActivationSymmetric": not cpu, "WeightSymmetric": True},
                calibration_cache_path=str(self.cache),
            )
        finally:
            root.setLevel(level)
        return output

    def logits(self, path: Path) -> np.ndarray:
        with OnnxRuntimeRunner(path, "cpu", "int8") as runner:
            return runner_logits(runner, self.inputs)


def runner_logits(runner: Runner, inputs: dict[str, np.ndarray], batch: int = 8) -> np.ndarray:
    """Logits of a loaded runner over ``inputs`` (name -> all images), in batches."""
    return run_batched(runner.infer, list(inputs), list(inputs.values()), batch)["logits"]


class _Reader:
    """ONNX Runtime's calibration data reader protocol, one image pair per call."""

    def __init__(self, inputs: dict[str, np.ndarray]) -> None:
        self.inputs, self.index = inputs, 0
        self.count = len(next(iter(inputs.values())))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.index >= self.count:
            return None
        self.index += 1
        return {k: v[self.index - 1 : self.index] for k, v in self.inputs.items()}

    def __len__(self) -> int:
        return self.count


def _relative_rms(reference: np.ndarray, actual: np.ndarray) -> float:
    return float(np.sqrt(np.mean((actual - reference) ** 2) / max(np.mean(reference**2), 1e-30)))


def measure_sensitivity(
    quantizer: Quantizer, units: dict[str, list[str]], reference: np.ndarray, progress: Progress
) -> dict[str, float]:
    """Logits error (RMS, relative to the reference's RMS) with only one unit in INT8."""
    sensitivity = {}
    for i, (unit, nodes) in enumerate(units.items(), 1):
        path = quantizer.write(quantizer.workdir / "single.onnx", only=nodes)
        sensitivity[unit] = _relative_rms(reference, quantizer.logits(path))
        progress(f"sensitivity {i}/{len(units)}: {unit} {sensitivity[unit]:.4f}")
    return sensitivity


def search_mixed_precision(passes: Callable[[int], bool], count: int, progress: Progress) -> int:
    """Smallest k such that ``passes(k)`` (k most sensitive units kept out), by bisection.

    ``passes(count)`` (nothing in INT8) is not evaluated: it is the float graph. Bisection
    assumes more kept-out units never hurt; the chosen graph is measured, not assumed.
    """
    if passes(0):
        return 0
    low, high = 0, count  # passes(low) is False; high is the float graph
    while high - low > 1:
        middle = (low + high) // 2
        ok = passes(middle)
        progress(f"{middle} units kept out: {'meets' if ok else 'misses'} the accuracy target")
        low, high = (low, middle) if ok else (middle, high)
    return high


def save_int8_graph(
    quantized: onnx.ModelProto,
    fp32: onnx.ModelProto,
    output: Path,
    *,
    tool: str,
    options: QuantizationOptions,
    report: QuantizationReport,
    images: Sequence[tuple[str, np.ndarray]],
) -> None:
    """Write ``quantized`` with the FP32 graph's metadata, marked INT8 and carrying how it was made
    (``quantization``: the tool, the Q/DQ flavour, the calibration images' digests, what stayed in
    float), in one step."""
    props = {p.key: p.value for p in fp32.metadata_props}
    props["precision"] = "int8"
    props["int8_target"] = options.target
    props["quantization"] = json.dumps(
        {
            "tool": tool,
            **options.describe(),
            "calibration_method": report.method,
            "calibration_count": len(images),
            "calibration_digest": report.calibration_digest,
            "calibration_pixels": [pixels_digest(image) for _, image in images],
            "kept_out": list(report.kept_out),
            "int8_mac_share": round(report.int8_mac_share, 4),
        }
    )
    del quantized.metadata_props[:]
    onnx.helper.set_model_props(quantized, props)
    quantized.producer_name, quantized.producer_version = fp32.producer_name, fp32.producer_version
    with atomic_path(output) as tmp_path:
        onnx.save_model(quantized, str(tmp_path))


def quantize_onnx(
    fp32_path: str | Path,
    output: str | Path,
    config: ModelConfig,
    images: Sequence[tuple[str, np.ndarray]],
    *,
    options: QuantizationOptions = QuantizationOptions(),
    progress: Progress = print,
) -> QuantizationReport:
    """Write ``output``: the INT8 Q/DQ form of ``fp32_path`` that meets the accuracy target on
    ``images`` with the most MACs in INT8 that the sensitivity order allows."""
    import onnxruntime

    if options.target == "openvino":
        raise OptionError("the openvino target is NNCF's placement: dgla_export.quantize_nncf.quantize_nncf writes it")
    require_calibration_cache()
    fp32_path, output = Path(fp32_path), Path(output)
    tolerance = options.tolerance or config.tolerances["int8"]
    graph = onnx.load(str(fp32_path), load_external_data=False)
    units = quantization_units(graph)
    macs = graph_macs(graph)
    total_macs = sum(macs.values())
    names = [name for name, _ in images]
    arrays = preprocess_batch([image for _, image in images], config, method=options.preprocess)
    inputs = dict(zip(config.input_names, arrays, strict=True))
    with tempfile.TemporaryDirectory(prefix="dgla-int8.") as tmp:
        quantizer = Quantizer(fp32_path, inputs, options, Path(tmp))
        reference = quantizer.logits(fp32_path)
        progress(f"calibrating ({options.method}) on {len(names)} images")
        quantizer.write(Path(tmp) / "kept0.onnx")  # all in INT8: the search's first candidate
        sensitivity = measure_sensitivity(quantizer, units, reference, progress)
        order = sorted(units, key=lambda unit: -sensitivity[unit])
        checks: dict[int, Any] = {}

        def passes(kept: int) -> bool:
            path = Path(tmp) / f"kept{kept}.onnx"
            if kept:  # kept0.onnx is the calibration pass's output
                quantizer.write(path, exclude=[node for unit in order[:kept] for node in units[unit]])
            logits = quantizer.logits(path)
            checks[kept] = compare_logits(
                reference, logits, tolerance=tolerance, image_names=names, class_names=config.class_names
            )
            passed = checks[kept].passed
            if passed and options.labels is not None:  # the clinical target, on the labelled calibration images
                clinical = clinical_check(
                    reference, logits, names, options.labels, config.class_names, max_drop=options.max_drop
                )
                passed = clinical.passed
                if not passed:
                    checks[kept] = dataclasses.replace(checks[kept], failures=clinical.failures)
            if not passed:
                path.unlink()  # only the chosen graph is kept (full-size graphs are ~100 MB)
            return passed

        kept = search_mixed_precision(passes, len(order), progress)
        if kept == len(order):
            worst = checks[max(checks)]
            raise QuantizationError(
                f"no INT8 graph meets the int8 tolerance on the {len(names)} calibration images, even with only "
                f"the least sensitive unit in INT8 ({'; '.join(worst.failures)}); calibrate on images of the "
                "model's domain (--calibration-images) or deploy FP16"
            )
        chosen = checks[kept]
        kept_out = tuple(order[:kept])
        quantized = [node for unit in order[kept:] for node in units[unit]]
        report = QuantizationReport(
            target=options.target,
            method=options.method,
            calibration_images=tuple(names),
            calibration_digest=calibration_digest(images),
            sensitivity={unit: round(sensitivity[unit], 6) for unit in order},
            kept_out=kept_out,
            int8_mac_share=sum(macs.get(node, 0) for node in quantized) / total_macs,
            quantized_nodes=len(quantized),
            calibration_check={
                "probs_max_abs": chosen.probs.max_abs,
                "logits_max_rel": chosen.logits.max_rel,
                "flips": [dataclasses.asdict(flip) for flip in chosen.flips],
            },
        )
        quantized_graph = onnx.load(str(Path(tmp) / f"kept{kept}.onnx"))
    tool = f"onnxruntime.quantization {onnxruntime.__version__} (QDQ, quantize_static)"
    save_int8_graph(quantized_graph, graph, output, tool=tool, options=options, report=report, images=images)
    return report
