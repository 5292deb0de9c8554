"""Find where a failing graph goes wrong: every intermediate tensor against the FP32 graph's.

When an FP16 or INT8 graph (or the same graph on another provider) fails validation, the report
says *that* it failed; this says *where*. Both graphs are run by Polygraphy's ONNX Runtime runner
with every tensor marked as an output (``polygraphy run --onnx-outputs mark all``), on the images
that fail (or the worst one); tensors are matched by name (the FP16 conversion and Q/DQ insertion
keep the FP32 graph's names) and walked in the candidate's topological order. The first tensor
whose relative error, max |a - r| / max |r|, exceeds the bound (default: the precision's logits
tolerance) or that holds a NaN or Inf where the reference does not, is where the fault starts:
everything after it inherits it. A folder keeps the inputs, the golden outputs (Polygraphy's JSON
formats) and a one-line ``polygraphy run`` that reproduces the failure alone.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dgla_export.artefacts.graph import GraphFileError, check_graph_model, graph_metadata, load_graph
from dgla_export.compare import compare_logits
from dgla_export.errors import UserError
from dgla_export.models.config import ModelConfig
from dgla_export.models.identity import CheckpointIdentity
from dgla_export.preprocess import Method, preprocess_batch

__all__ = ["DebugReport", "TensorError", "localise", "shell_comment", "tensor_errors"]


@dataclasses.dataclass(frozen=True)
class TensorError:
    """One intermediate tensor of the candidate against the reference's, over the images debugged."""

    name: str
    node: str
    op: str
    max_abs: float
    max_rel: float
    nan: int
    inf: int

    @property
    def non_finite(self) -> bool:
        return bool(self.nan or self.inf)


@dataclasses.dataclass(frozen=True)
class DebugReport:
    """Where the candidate first departs from the reference, and the worst tensors after it."""

    candidate: str
    reference: str
    precision: str
    images: tuple[str, ...]
    failing_images: tuple[str, ...]
    traced_images: tuple[str, ...]  # the failing ones compared tensor by tensor (the worst one if none failed)
    bound: float
    compared: int
    first_failure: TensorError | None
    worst: tuple[TensorError, ...]
    folder: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        if self.first_failure is None:
            return f"no intermediate tensor past {self.bound:g} (relative) among {self.compared} compared"
        first = self.first_failure
        what = f"{first.nan} NaN, {first.inf} Inf" if first.non_finite else f"relative error {first.max_rel:.3g}"
        return (
            f"first tensor past {self.bound:g}: {first.name} ({first.op} node {first.node}): {what}, "
            f"of {self.compared} tensors compared"
        )


def _producers(model: Any) -> dict[str, tuple[str, str]]:
    """Tensor name -> (producing node, op type), in topological order, for every node output."""
    produced = {}
    for node in model.graph.node:
        for output in node.output:
            if output:
                produced[output] = (node.name, node.op_type)
    return produced


def tensor_errors(
    reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], order: dict[str, tuple[str, str]]
) -> list[TensorError]:
    """Errors of every float tensor both runs produced, in ``order`` (the candidate's topology)."""
    errors = []
    for name, (node, op) in order.items():
        ref, got = reference.get(name), candidate.get(name)
        if ref is None or got is None or ref.shape != got.shape:
            continue
        if not (np.issubdtype(ref.dtype, np.floating) and np.issubdtype(got.dtype, np.floating)):
            continue
        r, g = ref.astype(np.float64), got.astype(np.float64)
        both = np.isfinite(r) & np.isfinite(g)
        diff = np.abs(np.where(both, g - r, 0.0))
        scale = max(float(np.abs(np.where(np.isfinite(r), r, 0.0)).max(initial=0.0)), 1e-12)
        new_nan = int((np.isnan(g) & ~np.isnan(r)).sum())
        new_inf = int((np.isinf(g) & ~np.isinf(r)).sum())
        peak = float(diff.max(initial=0.0))
        errors.append(TensorError(name, node, op, peak, peak / scale, new_nan, new_inf))
    return errors


def _runner(path: Path, providers: Sequence[str], *, every_tensor: bool = False):
    """Polygraphy's ONNX Runtime runner of ``path``; ``every_tensor``: all tensors marked as outputs."""
    from polygraphy import constants
    from polygraphy.backend.onnx import BytesFromOnnx, ModifyOutputs, OnnxFromPath
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    model = (
        BytesFromOnnx(ModifyOutputs(OnnxFromPath(str(path)), outputs=constants.MARK_ALL)) if every_tensor else str(path)
    )
    return OnnxrtRunner(SessionFromOnnx(model, providers=list(providers)), name=path.name)


def _run(runner: Any, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    from polygraphy.logger import G_LOGGER

    with G_LOGGER.verbosity(G_LOGGER.ERROR), runner:  # Polygraphy's progress lines stay out of the API's output
        return [dict(runner.infer(feed)) for feed in feeds]


def _check_pair(candidate: Path, reference: Path) -> tuple[dict[str, str], ModelConfig]:
    """Both graphs from the same model and checkpoint, the reference an FP32 one: checked first."""
    meta_c, meta_r = graph_metadata(load_graph(candidate)), graph_metadata(load_graph(reference))
    config = ModelConfig.from_dict(json.loads(meta_c["config"]))
    if candidate.resolve() == reference.resolve():  # one graph on two providers
        return meta_c, config
    check_graph_model(reference, meta_r, config)
    if meta_r.get("precision", "fp32") != "fp32":
        raise UserError(f"--reference {reference} is an {meta_r['precision']} graph; give the FP32 graph")
    ids = [CheckpointIdentity.from_metadata(m) for m in (meta_c, meta_r)]
    if ids[0] is not None and ids[1] is not None and ids[0].digest != ids[1].digest:
        raise GraphFileError(
            f"{candidate} and {reference} were exported from different weights ({ids[0].describe()} vs "
            f"{ids[1].describe()}); export the FP32 reference from the same checkpoint"
        )
    return meta_c, config


def localise(
    candidate: str | Path,
    reference: str | Path,
    images: Sequence[tuple[str, np.ndarray]],
    *,
    output: Path | None = None,
    bound: float | None = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    reference_providers: Sequence[str] = ("CPUExecutionProvider",),
    preprocess: Method = "fast",
    max_images: int = 2,
    progress: Callable[[str], None] = lambda message: None,
) -> DebugReport:
    """Compare every intermediate tensor of ``candidate`` with the FP32 ``reference`` graph's on the
    images whose final outputs fail the candidate's tolerance (at most ``max_images``; the worst
    one where none fails), and name the first past ``bound``. ``reference`` may be ``candidate``
    itself on other ``reference_providers`` (a provider's fault rather than a precision's).
    ``output``: a folder (created by the caller, empty) for the inputs, golden outputs and script."""
    import onnx

    candidate, reference = Path(candidate), Path(reference)
    metadata, config = _check_pair(candidate, reference)
    precision = metadata.get("precision", "fp32")
    tolerance = config.tolerances[precision]
    bound = tolerance.logits_rel if bound is None else bound
    names = [name for name, _ in images]
    arrays = preprocess_batch([image for _, image in images], config, method=preprocess)
    feeds = [{n: a[i : i + 1] for n, a in zip(config.input_names, arrays, strict=True)} for i in range(len(names))]
    progress(f"final outputs of both graphs on {len(names)} images")
    ref_final = _run(_runner(reference, reference_providers), feeds)
    cand_final = _run(_runner(candidate, providers), feeds)
    failing, worst_index, worst_error = [], 0, -1.0
    for i, name in enumerate(names):
        check = compare_logits(
            ref_final[i]["logits"], cand_final[i]["logits"], tolerance=tolerance, image_names=[name],
            class_names=config.class_names,
        )  # fmt: skip
        error = check.probs.max_abs
        if error > worst_error:
            worst_index, worst_error = i, error
        if not check.passed:
            failing.append(i)
    chosen = failing[:max_images] or [worst_index]
    progress(f"every intermediate tensor on {len(chosen)} image(s): {', '.join(names[i] for i in chosen)}")
    ref_all = _run(_runner(reference, reference_providers, every_tensor=True), [feeds[i] for i in chosen])
    cand_all = _run(_runner(candidate, providers, every_tensor=True), [feeds[i] for i in chosen])
    order = _producers(onnx.load(str(candidate), load_external_data=False))
    stacked_ref = {k: np.concatenate([run[k] for run in ref_all]) for k in ref_all[0]}
    stacked_cand = {k: np.concatenate([run[k] for run in cand_all]) for k in cand_all[0]}
    errors = tensor_errors(stacked_ref, stacked_cand, order)
    first = next((e for e in errors if e.non_finite or e.max_rel > bound), None)
    worst = tuple(sorted(errors, key=lambda e: (e.non_finite, e.max_rel), reverse=True)[:10])
    report = DebugReport(
        candidate=str(candidate),
        reference=str(reference),
        precision=precision,
        images=tuple(names),
        failing_images=tuple(names[i] for i in failing),
        traced_images=tuple(names[i] for i in chosen),
        bound=bound,
        compared=len(errors),
        first_failure=first,
        worst=worst,
        folder=str(output) if output is not None else None,
    )
    if output is not None:
        tensors = ["logits", *([first.name] if first is not None else [])]
        _write_repro(output, report, candidate, [feeds[i] for i in chosen], ref_all, tensors)
    return report


def _polygraphy() -> str:
    """The polygraphy command of this environment (its venv need not be activated to run the script)."""
    import shutil
    import sys

    beside = Path(sys.executable).parent / "polygraphy"
    return str(beside) if beside.is_file() else shutil.which("polygraphy") or "polygraphy"


def shell_comment(text: str) -> str:
    """``text`` as shell comment lines: a graph's tensor names are the graph author's, and a line
    break in one must not end the comment and become a command."""
    return "\n".join(f"# {line}" for line in text.splitlines() or [""])


def _write_repro(
    folder: Path,
    report: DebugReport,
    candidate: Path,
    feeds: list[dict[str, np.ndarray]],
    golden: list[dict[str, np.ndarray]],
    tensors: list[str],
) -> None:
    """inputs.json and golden.json in Polygraphy's formats, report.json, and reproduce.sh: one
    ``polygraphy run`` of the candidate alone, comparing the named tensors with the golden ones."""
    from polygraphy.comparator import RunResults
    from polygraphy.json import save_json
    from polygraphy.logger import G_LOGGER

    with G_LOGGER.verbosity(G_LOGGER.ERROR):
        save_json(feeds, str(folder / "inputs.json"))
        results = RunResults()
        results.append(("fp32-reference", [{name: run[name] for name in tensors} for run in golden]))
        results.save(str(folder / "golden.json"))
    (folder / "report.json").write_text(json.dumps(report.to_dict(), indent=2))
    # the bound is relative to each tensor's largest reference magnitude: an absolute one per tensor
    atol = [
        f"{name}:{report.bound * float(np.nanmax(np.abs(np.stack([run[name] for run in golden])))):.6g}"
        for name in tensors
    ]
    command = [
        _polygraphy(), "run", str(candidate.resolve()), "--onnxrt", "--onnx-outputs", *tensors,
        "--load-inputs", "inputs.json", "--load-outputs", "golden.json", "--atol", *atol, "--rtol", "0",
    ]  # fmt: skip
    script = f'#!/bin/sh\n{shell_comment(report.summary())}\ncd "$(dirname "$0")" && {shlex.join(command)}\n'
    (folder / "reproduce.sh").write_text(script)
    (folder / "reproduce.sh").chmod(0o755)
