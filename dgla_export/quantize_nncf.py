"""FP32 ONNX -> INT8 for OpenVINO: NNCF's post-training quantization, held to the accuracy target.

Where the graph runs on OpenVINO (a CPU with VNNI or AMX), the quantizers belong where OpenVINO's
CPU plugin fuses them: NNCF's CPU placement, which the package's own search (ONNX Runtime's
quantizer, :mod:`dgla_export.quantize`) does not know. NNCF works here on the ONNX graph (its ONNX
backend) and returns a Q/DQ ONNX graph, its weights stored in INT8: the same kind of artefact as
every other graph of this package, so it is validated, benched and served (``dgla-export triton
--runtime openvino``) as they are. OpenVINO reads the Q/DQ pairs as the FakeQuantize nodes NNCF's
OpenVINO backend would have written (``benchmarks/int8_nncf.py`` times both in one run).

Accuracy first: the graph must meet, on the calibration images run on OpenVINO, the int8 tolerance
against the FP32 graph, or it is refused (:class:`~dgla_export.quantize.QuantizationError`), never
written. Where some calibration images are labelled and drops are bounded (``--labels``,
``--max-drop``), NNCF's accuracy control first reverts quantizer groups to float, the most harmful
first, until every clinical score on them is within its bound and the probability bound holds: NNCF
drives one number, the least slack over those bounds (>= 0 exactly when every bound holds). It
ranks the remaining groups by compiling and scoring the graph once per group, again after a revert
that made things worse, which on 2 cores takes minutes for the tiny model and hours for the full
one (``benchmarks/int8_nncf.py``); without labels there is nothing for it to hold a clinical
score to, and the plain quantization is judged as it is.

NNCF is imported with its usage telemetry off (``NNCF_CI``): nothing of the run leaves the machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from dgla_export.artefacts.graph import graph_macs
from dgla_export.clinical import clinical_check
from dgla_export.compare import compare_logits, softmax
from dgla_export.errors import OptionError, UserError
from dgla_export.install import install_command
from dgla_export.models.config import ModelConfig, Tolerance
from dgla_export.preprocess import preprocess_batch
from dgla_export.quantize import (
    Progress,
    QuantizationError,
    QuantizationOptions,
    QuantizationReport,
    calibration_digest,
    explanation_nodes,
    quantization_units,
    save_int8_graph,
)
from dgla_export.runtimes.openvino import OpenVINORunner, import_openvino, openvino_problem
from dgla_export.validation import run_batched

__all__ = ["NNCF_INSTALL_HINT", "AccuracyBounds", "nncf_problem", "quantize_nncf", "quantized_nodes"]

NNCF_INSTALL_HINT = install_command("openvino")
OPENVINO = QuantizationOptions(target="openvino")
FAILED = -1.0  # the slack of a graph that misses a bound, before how far it misses


def nncf_problem() -> str | None:
    """None where NNCF and OpenVINO are installed, else why not (one sentence with the fix)."""
    problem = openvino_problem("int8")
    if problem is None and importlib.util.find_spec("nncf") is None:
        problem = f"NNCF is not installed ({NNCF_INSTALL_HINT})"
    return problem


def import_nncf() -> Any:
    """NNCF with its usage telemetry off: ``NNCF_CI`` for NNCF, and the telemetry package hidden
    from it (which would otherwise write a client ID under ~/intel even so); where NNCF was imported
    before, its telemetry objects are replaced by its own stub."""
    os.environ["NNCF_CI"] = "1"
    import_openvino()  # which hides the telemetry package from NNCF too
    nncf = importlib.import_module("nncf")
    from nncf.telemetry import decorator, wrapper

    stub = wrapper.NNCFTelemetryStub()
    for module in (wrapper, decorator, sys.modules["nncf.telemetry"]):
        module.telemetry = stub  # type: ignore[attr-defined]
    return nncf


@dataclasses.dataclass
class AccuracyBounds:
    """The accuracy target as NNCF's metric: on ``names`` (the calibration images), the int8
    ``tolerance`` against ``reference`` (FP32 logits), and with ``labels`` (some of them) the
    clinical ``max_drop``. :meth:`slack` is what NNCF drives."""

    reference: np.ndarray
    names: list[str]
    tolerance: Tolerance
    class_names: Sequence[str]
    labels: dict[str, int] | None = None
    max_drop: dict[str, float] | None = None

    @property
    def best(self) -> float:
        """The FP32 graph's own slack: the room NNCF may use (its ``max_drop``)."""
        drops = (self.max_drop or {}).values() if self.labels else ()
        return min([self.tolerance.probs_abs, *drops])

    def slack(self, logits: np.ndarray, rows: Sequence[int]) -> tuple[float, list[float]]:
        """The least margin left under any bound on ``rows`` (>= 0 exactly when every bound holds; a
        graph that misses one is below -1 by how far it misses, so a nearer miss ranks higher), and
        per image its margin under the probability bound. The clinical scores need the whole set."""
        reference, names = self.reference[list(rows)], [self.names[i] for i in rows]
        check = compare_logits(
            reference, logits, tolerance=self.tolerance, image_names=names, class_names=self.class_names
        )
        errors = np.abs(softmax(logits.astype(np.float64)) - softmax(reference.astype(np.float64))).max(axis=1)
        per_image = [float(self.tolerance.probs_abs - e) if np.isfinite(e) else FAILED for e in errors]
        least = min(per_image)
        if self.labels and self.max_drop and len(rows) == len(self.names):
            clinical = clinical_check(
                reference, logits, names, self.labels, self.class_names, max_drop=self.max_drop, rounds=0
            )
            for metric, allowed in self.max_drop.items():
                delta = clinical.differences[metric].delta
                least = min(least, FAILED if delta is None else allowed + delta)
        if least < 0 or not check.passed:  # a bound missed: a flip, the logits', a non-finite output too
            least = FAILED + min(least, 0.0)
        return float(least), per_image


def quantized_nodes(graph: onnx.ModelProto) -> list[str]:
    """The nodes computed in INT8: Conv/Gemm whose weights come through a DequantizeLinear, and the
    attention's MatMuls whose inputs do."""
    dequantized = {o for node in graph.graph.node if node.op_type == "DequantizeLinear" for o in node.output}
    return [
        n.name
        for n in graph.graph.node
        if (n.op_type in ("Conv", "Gemm") and n.input[1] in dequantized)
        or (n.op_type == "MatMul" and dequantized & set(n.input))
    ]


class _OpenVINOOutputs:
    """Outputs of a graph (a path, or the ModelProto NNCF hands over) on OpenVINO's CPU plugin."""

    def __init__(self, inputs: dict[str, np.ndarray], workdir: Path) -> None:
        self.inputs, self.workdir = inputs, workdir

    def __call__(self, graph: str | Path | onnx.ModelProto, rows: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        if isinstance(graph, onnx.ModelProto):
            path = self.workdir / "candidate.onnx"
            onnx.save_model(graph, str(path))
        else:
            path = Path(graph)
        arrays = [v if rows is None else v[list(rows)] for v in self.inputs.values()]
        with OpenVINORunner(path, "int8") as runner:
            return run_batched(runner.infer, list(self.inputs), arrays, 8)


def quantize_nncf(
    fp32_path: str | Path,
    output: str | Path,
    config: ModelConfig,
    images: Sequence[tuple[str, np.ndarray]],
    *,
    options: QuantizationOptions = OPENVINO,
    progress: Progress = print,
) -> QuantizationReport:
    """Write ``output``: the INT8 Q/DQ form of ``fp32_path`` that NNCF places for OpenVINO's CPU
    plugin, calibrated on ``images`` and held by its accuracy control to the target on them."""
    problem = nncf_problem()
    if problem:
        raise UserError(f"--int8-target openvino needs NNCF: {problem}")
    if options.target != "openvino":
        raise OptionError(f"quantize_nncf writes the openvino target, not {options.target!r}")
    nncf = import_nncf()
    fp32_path, output = Path(fp32_path), Path(output)
    tolerance = options.tolerance or config.tolerances["int8"]
    graph = onnx.load(str(fp32_path))
    names = [name for name, _ in images]
    arrays = preprocess_batch([image for _, image in images], config, method=options.preprocess)
    inputs = dict(zip(config.input_names, arrays, strict=True))
    controlled = bool(options.max_drop and any(name in (options.labels or {}) for name in names))
    with tempfile.TemporaryDirectory(prefix="dgla-nncf.") as tmp:
        outputs_of = _OpenVINOOutputs(inputs, Path(tmp))
        reference = outputs_of(fp32_path)["logits"]
        labels = options.labels if controlled else None
        bounds = AccuracyBounds(reference, names, tolerance, config.class_names, labels, options.max_drop)
        if controlled:  # a bound NNCF cannot measure would let it stop at once
            undefined = clinical_check(reference, reference, names, labels or {}, config.class_names,
                                       max_drop=options.max_drop, rounds=0).failures  # fmt: skip
            if undefined:
                raise OptionError(
                    f"--max-drop: {'; '.join(undefined)} on the labelled calibration images, so NNCF's accuracy "
                    "control could not hold it; label more calibration images, or bound other scores"
                )
        feeds = [{k: v[i : i + 1] for k, v in inputs.items()} for i in range(len(names))]
        settings = {
            "subset_size": len(names),
            "target_device": nncf.TargetDevice.CPU,
            "ignored_scope": nncf.IgnoredScope(names=explanation_nodes(graph)),  # the maps stay FP32
        }
        with _nncf_output():
            if controlled:
                progress(
                    f"NNCF: quantizing for OpenVINO on {len(names)} images, then reverting layers to FP32 until the "
                    f"probability bound holds on them and the clinical drops on the {len(labels or {})} labelled "
                    "ones (it ranks the remaining layer groups by compiling and scoring the graph once per "
                    "group: minutes to hours)"
                )

                def metric(candidate: onnx.ModelProto, items: Any) -> tuple[float, list[float]]:
                    picked = [int(index) for index in items]  # the dataset's items are their indices
                    return bounds.slack(outputs_of(candidate, picked)["logits"], picked)

                quantized = nncf.quantize_with_accuracy_control(
                    graph, nncf.Dataset(feeds), nncf.Dataset(list(range(len(names))), feeds.__getitem__), metric,
                    max_drop=bounds.best, drop_type=nncf.DropType.ABSOLUTE, **settings,
                )  # fmt: skip
            else:
                progress(f"NNCF: quantizing for OpenVINO on {len(names)} images")
                quantized = nncf.quantize(graph, nncf.Dataset(feeds), **settings)
        logits = outputs_of(quantized)["logits"]
        chosen = compare_logits(
            reference, logits, tolerance=tolerance, image_names=names, class_names=config.class_names
        )
        failures = list(chosen.failures)
        if controlled:
            failures += clinical_check(
                reference, logits, names, labels or {}, config.class_names, max_drop=options.max_drop
            ).failures
        way = (
            "calibrate on images of the model's domain (--calibration-images)"
            if controlled
            else "give labels and drop bounds (--labels, --max-drop) for NNCF's accuracy control"
        )
        if failures:
            raise QuantizationError(
                f"NNCF's INT8 graph misses the target on the {len(names)} calibration images on OpenVINO "
                f"({'; '.join(failures)}); {way}, or use --int8-target cpu (the package's own search)"
            )
    quantized_names = set(quantized_nodes(quantized))
    if not quantized_names:
        raise QuantizationError(
            f"NNCF left no layer in INT8 ({'its accuracy control reverted them all' if controlled else 'none placed'});"
            " deploy FP32 or FP16, or use --int8-target cpu"
        )
    units = quantization_units(graph)
    macs = graph_macs(graph)
    report = QuantizationReport(
        target="openvino",
        method="nncf",
        calibration_images=tuple(names),
        calibration_digest=calibration_digest(images),
        sensitivity={},
        kept_out=tuple(unit for unit, nodes in units.items() if not quantized_names & set(nodes)),
        int8_mac_share=sum(macs.get(node, 0) for node in quantized_names) / sum(macs.values()),
        quantized_nodes=len(quantized_names),
        calibration_check={
            "probs_max_abs": chosen.probs.max_abs,
            "logits_max_rel": chosen.logits.max_rel,
            "flips": [dataclasses.asdict(flip) for flip in chosen.flips],
        },
    )
    method = "quantize_with_accuracy_control" if controlled else "quantize"
    judge = f"judged on OpenVINO {import_openvino().get_version()}"
    tool = f"nncf {nncf.__version__} (ONNX backend, target_device CPU, {method}; {judge})"
    save_int8_graph(quantized, graph, output, tool=tool, options=options, report=report, images=images)
    return report


class _nncf_output:
    """NNCF's progress bars (its steps, with their estimates) and warnings to stderr beside the
    command's own progress, not into stdout, where results go; its log lines below warnings left out."""

    def __enter__(self) -> None:
        self.logger = logging.getLogger("nncf")
        self.level = self.logger.level
        self.logger.setLevel(logging.WARNING)
        streams = [h for h in self.logger.handlers if isinstance(h, logging.StreamHandler)]
        self.streams = [(handler, handler.setStream(sys.stderr)) for handler in streams]
        self.redirect = contextlib.redirect_stdout(sys.stderr)
        self.redirect.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.redirect.__exit__(*exc)
        for handler, stream in self.streams:
            if stream is not None:
                handler.setStream(stream)
        self.logger.setLevel(self.level)
