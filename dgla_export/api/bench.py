"""dgla-bench from Python: every runtime checked against the PyTorch reference, then timed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dgla_export.api.common import (
    ArtefactWeights,
    ImageOptions,
    Images,
    Progress,
    WeightOptions,
    Weights,
    check_held_out,
    config_of,
    quiet,
)
from dgla_export.api.common import warn as python_warning
from dgla_export.errors import OptionError, UserError
from dgla_export.io import check_output_folder

if TYPE_CHECKING:
    from dgla_export.benchmarking.catalogue import Backend
    from dgla_export.benchmarking.results import BenchResult
    from dgla_export.benchmarking.run import BenchOptions
    from dgla_export.models.resnet import ResNet

__all__ = ["bench"]


def bench(
    onnx: str | Path | None = None,
    *,
    onnx_fp16: str | Path | None = None,
    onnx_int8: str | Path | None = None,
    engine: str | Path | None = None,
    model: str | ResNet = "dgla_resnet50",
    weights: WeightOptions | Weights = None,
    backends: Sequence[str] | None = None,
    devices: Sequence[str] | None = None,
    images: ImageOptions | Images = None,
    options: BenchOptions | None = None,
    output: str | Path | None = None,
    heatmaps: bool = False,
    force: bool = False,
    progress: Progress = quiet,
    plan: Callable[[list[str], float], None] = lambda names, seconds: None,
    warn: Progress = python_warning,
) -> BenchResult:
    """Check every runtime against the FP32 PyTorch model on real images, then time it (see
    :mod:`dgla_export.benchmarking`). ``backends``: names to run (default: every one that makes sense here
    with the files given); ``options``: a :class:`dgla_export.benchmarking.run.BenchOptions`. With
    ``output`` the results are written there as JSON, CSV, Markdown and a plot. ``plan`` hears the
    runtimes about to run and an estimate of the seconds they will take, before they start (from
    this host's measured times: :class:`dgla_export.benchmarking.run.Estimate`); ``warn``
    hears of a file given that no chosen runtime uses. A graph exported with ``explain`` also has
    its maps compared with Grad-CAM of the PyTorch model; ``heatmaps`` (with ``output``) draws them,
    the reference's and each runtime's side by side per image.

    >>> bench("dgla.onnx", backends=["onnxruntime-cpu-fp32"]).failed   # doctest: +SKIP
    []
    """
    from dgla_export.artefacts.graph import check_graph_model, graph_metadata, load_graph
    from dgla_export.benchmarking.catalogue import OPTIONS, catalogue
    from dgla_export.benchmarking.report import write_results
    from dgla_export.benchmarking.run import BENCH_COMMAND, BenchOptions, run_bench
    from dgla_export.machine import provenance
    from dgla_export.models.cost import measure_cost

    options = options or BenchOptions()
    inputs, chosen_weights = ImageOptions.of(images), WeightOptions.of(weights)
    acceptance = inputs.acceptance
    drops = acceptance.drops()
    given = {"fp32": onnx, "fp16": onnx_fp16, "int8": onnx_int8}
    onnx_files = {k: Path(v) for k, v in given.items() if v is not None}
    engine = Path(engine) if engine is not None else None
    config = config_of(model)
    weights_file = chosen_weights.weights
    checkpoint = None if weights_file is None or str(weights_file) in ("demo", "random") else weights_file
    artefacts: dict[Path, dict[str, str]] = {}
    if output is not None:
        sources = (*onnx_files.values(), engine, inputs.folder, acceptance.labels, checkpoint)
        check_output_folder(output, force, command=BENCH_COMMAND, inputs=sources)
    for precision, path in onnx_files.items():
        metadata = artefacts[path] = graph_metadata(load_graph(path))
        check_graph_model(path, metadata, config)
        found = metadata.get("precision", "fp32")
        if found != precision:
            raise UserError(f"{OPTIONS[precision]} {path} is an {found} graph; pass it as {OPTIONS[found]}")
    if engine is not None:
        from dgla_export.artefacts.manifest import verify_engine_file

        artefacts[engine] = verify_engine_file(engine).onnx_metadata
    explain = any("explain" in metadata for metadata in artefacts.values())
    source = _bench_weights(artefacts, model, chosen_weights)
    import torch

    chosen = _choose_backends(
        catalogue(list(devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])), engine),
        backends,
        onnx_files,
        engine,
    )
    for precision, path in onnx_files.items():
        if not any(b.source == precision and not b.unavailable(onnx_files, engine) for b in chosen):
            warn(f"{OPTIONS[precision]} {path} is not used by any selected backend that can run here")
    engine_runs = [b for b in chosen if b.source == "engine"]
    why = (
        engine_runs[0].unavailable(onnx_files, engine) if engine_runs else "the tensorrt-engine backend is not selected"
    )
    if engine is not None and (not engine_runs or why):
        warn(f"--engine {engine} is not used: {why}")
    checked = inputs.load(config, warn)
    label_map = acceptance.read([name for name, _ in checked], config.class_names)
    for metadata in artefacts.values():
        check_held_out(metadata, checked)
    if heatmaps and (output is None or not explain):
        raise OptionError("heatmaps need an output folder and a graph exported with explain (--explain)")
    progress("loading the model")
    network = source.load(model)
    runners = [
        (b, b.runner(network, onnx_files, engine) if not b.unavailable(onnx_files, engine) else None) for b in chosen
    ]
    running = [b.name for b, r in runners if r is not None]
    result = run_bench(
        network,
        runners,
        checked,
        options=options,
        preprocess=inputs.preprocess,
        macs_per_pair=measure_cost(network).macs,
        labels=label_map,
        max_drop=drops,
        explain=explain,
        provenance=provenance(),
        progress=progress,
        estimated=lambda seconds: plan(running, seconds),
    )
    for backend, runner in runners:
        record = next(r for r in result.backends if r.backend == backend.name)
        record.serving_command = backend.serving_command(onnx_files, engine)
        if runner is None:
            record.skipped = backend.unavailable(onnx_files, engine)
    if output is not None:
        size = config.architecture.display_size
        write_results(result, Path(output), dict(checked) if heatmaps else None, heatmap_size=size)
    return result


def _bench_weights(
    artefacts: dict[Path, dict[str, str]], model: str | ResNet, weights: WeightOptions
) -> ArtefactWeights:
    """The weights every artefact of a bench run was made from: they must agree (a runtime compared
    with another checkpoint's reference would fail parity for no fault of its own)."""
    from dgla_export.models.identity import CheckpointIdentity

    if not artefacts:  # PyTorch backends only: the weights given, the demo by default
        demo = WeightOptions("demo") if weights.weights is None else weights
        return ArtefactWeights(Path("."), None, demo)
    digests = {path: getattr(CheckpointIdentity.from_metadata(m), "digest", None) for path, m in artefacts.items()}
    if len(set(digests.values())) > 1:
        listed = "; ".join(f"{path}: {digest}" for path, digest in digests.items())
        raise UserError(f"the artefacts were exported from different checkpoints ({listed}); bench one checkpoint's")
    first = next(iter(artefacts))
    return ArtefactWeights.of(first, artefacts[first], model, weights)


def _choose_backends(
    known: list[Backend], wanted: Sequence[str] | None, onnx_files: dict[str, Path], engine: Path | None
) -> list[Backend]:
    """The requested runtimes (each must be able to run), else the default ones that can."""
    if not wanted:
        return [b for b in known if b.default and not b.missing(onnx_files, engine)]
    unknown = sorted(set(wanted) - {b.name for b in known})
    if unknown:
        raise OptionError(f"backends: unknown {unknown}; known: {', '.join(b.name for b in known)}")
    chosen = [b for b in known if b.name in wanted]
    for backend in chosen:
        reason = backend.unavailable(onnx_files, engine)
        if reason:
            raise UserError(f"--backends: {backend.name} cannot run here: {reason}")
    return chosen
