"""ONNX -> TensorRT engine, the same way on TensorRT 10.x and 11.x.

The network is always created STRONGLY_TYPED (required on 10.x for this behaviour, ignored on
11.x, where it is the only mode): precision comes from the ONNX graph's own types and Casts, so
an FP16 engine is built from the FP16 ONNX graph and an INT8 engine from the Q/DQ graph (explicit
quantization, the only INT8 TensorRT 11 has: no calibrator, no INT8 flag). There is deliberately no BuilderFlag.FP16
path: on 11.x that flag no longer exists, and probing for it would silently build FP32.
TensorRT is imported inside the functions; nothing here runs without it.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Callable
from pathlib import Path

import onnx

from dgla_export.artefacts.graph import graph_metadata
from dgla_export.artefacts.manifest import (
    BatchProfile,
    EngineManifest,
    ManifestError,
    RuntimeInfo,
    check_precision,
    manifest_path,
)
from dgla_export.errors import UserError
from dgla_export.io import atomic_path, sha256_file
from dgla_export.machine import tensorrt_info

__all__ = [
    "EngineBuildError",
    "GraphPrecisionError",
    "build_engine",
    "check_engine_graph",
    "layer_output_dtypes",
]


class EngineBuildError(RuntimeError):
    """TensorRT could not parse or build the graph."""


class GraphPrecisionError(UserError):
    """The graph's precision does not fit the engine asked for (a strongly typed build follows the graph)."""


def check_engine_graph(onnx_path: Path, metadata: dict[str, str], precision: str) -> None:
    """Refuse, before TensorRT is touched, a graph whose types cannot give a ``precision`` engine."""
    graph_precision = metadata.get("precision", "fp32")
    if graph_precision != precision:
        raise GraphPrecisionError(
            f"{onnx_path} is a {graph_precision} graph; a strongly typed {precision} engine needs a {precision} "
            f"graph: dgla-export onnx --precision {precision}"
        )
    if precision == "int8" and metadata.get("int8_target") != "tensorrt":
        raise GraphPrecisionError(
            f"{onnx_path} was quantized for --int8-target {metadata.get('int8_target')} (its Q/DQ form is not the "
            "signed symmetric one TensorRT builds); export it with --int8-target tensorrt"
        )


def _dtype_name(format_datatype: str) -> str:
    """Normalise the inspector's 'Format/Datatype' text, which varies across versions:
    'Half', 'Row major linear FP16 format', 'Float', 'Thirty-two wide channel vectorized row
    major Int8 format.', 'N/A due to dynamic shapes' (no execution context was attached)."""
    text = format_datatype.lower()
    for names, dtype in (
        (("bf16", "bfloat"), "BFloat16"),
        (("fp16", "half"), "Half"),
        (("fp32", "float"), "Float"),
        (("int8",), "Int8"),
        (("int32",), "Int32"),
        (("int64",), "Int64"),
        (("bool",), "Bool"),
    ):
        if any(name in text for name in names):
            return dtype
    return "unknown"


def layer_output_dtypes(engine_information: str) -> dict[str, int]:
    """Count layers per output dtype from the engine inspector's JSON (DETAILED verbosity)."""
    counts: collections.Counter[str] = collections.Counter()
    for layer in json.loads(engine_information).get("Layers", []):
        if isinstance(layer, dict):
            for output in layer.get("Outputs", []):
                counts[_dtype_name(str(output.get("Format/Datatype", "")))] += 1
    return dict(counts)


def build_engine(
    onnx_path: Path,
    output: Path,
    *,
    precision: str = "fp16",
    profile: BatchProfile | None = None,
    workspace: int = 8 << 30,
    timing_cache: Path | None = None,
    hardware_compatible: bool = False,
    version_compatible: bool = False,
    progress: Callable[[str], None] = print,
) -> EngineManifest:
    """Build ``output`` (.plan) and its manifest ``output.json``, both written atomically. The API
    builds into a staging folder and moves both into place only once the engine is validated."""
    import tensorrt as trt

    profile = profile or BatchProfile(1, 8, 32)
    graph = onnx.load(str(onnx_path), load_external_data=False)
    metadata = graph_metadata(graph)
    check_engine_graph(onnx_path, metadata, precision)
    inputs = {value.name: tuple(d.dim_value for d in value.type.tensor_type.shape.dim) for value in graph.graph.input}
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    progress(f"parsing {onnx_path}")
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # lets us read layer dtypes back
    optimization_profile = builder.create_optimization_profile()
    shapes = {}
    for name, shape in inputs.items():
        shapes[name] = {k: list(v) for k, v in profile.shapes(shape).items()}
        optimization_profile.set_shape(name, *(trt.Dims(v) for v in shapes[name].values()))
    config.add_optimization_profile(optimization_profile)
    if hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    progress(f"building a {precision} engine, batch {profile} (minutes)")
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError("TensorRT failed to build the engine (see its log above)")
    build_seconds = time.perf_counter() - started
    if timing_cache is not None:
        with atomic_path(timing_cache) as tmp:
            tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    engine = trt.Runtime(logger).deserialize_cuda_engine(bytes(serialized))
    # With a dynamic batch the inspector reports "N/A due to dynamic shapes" for every tensor
    # unless it sees an execution context whose input shapes are set.
    context = engine.create_execution_context()
    for name, shape in shapes.items():
        context.set_input_shape(name, tuple(shape["opt"]))
    inspector = engine.create_engine_inspector()
    inspector.execution_context = context
    dtypes = layer_output_dtypes(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    outputs = {
        engine.get_tensor_name(i): str(engine.get_tensor_dtype(engine.get_tensor_name(i)))
        for i in range(engine.num_io_tensors)
        if engine.get_tensor_mode(engine.get_tensor_name(i)) == trt.TensorIOMode.OUTPUT
    }
    with atomic_path(output) as tmp:
        tmp.write_bytes(bytes(serialized))
    manifest = EngineManifest(
        engine_file=output.name,
        engine_sha256=sha256_file(output),
        engine_bytes=output.stat().st_size,
        precision=precision,
        profile=str(profile),
        inputs=shapes,
        outputs=outputs,
        layer_dtypes=dtypes,
        runtime=RuntimeInfo(**tensorrt_info()),
        onnx_sha256=sha256_file(onnx_path),
        onnx_metadata=metadata,
        build_seconds=build_seconds,
        hardware_compatible=hardware_compatible,
        version_compatible=version_compatible,
    )
    try:
        check_precision(manifest)
    except ManifestError:
        output.unlink()
        raise
    manifest.write(manifest_path(output))
    progress(f"built the engine ({manifest.engine_bytes / 2**20:.0f} MiB) in {build_seconds:.0f} s, layers {dtypes}")
    return manifest
