"""Checks on an exported ONNX graph: the contract TensorRT, ONNX Runtime and Triton rely on."""

from __future__ import annotations

import collections
import copy
import dataclasses
import functools
import json
import math
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import onnx
from google.protobuf.message import DecodeError

from dgla_export.errors import UserError

if TYPE_CHECKING:
    from dgla_export.models.config import ModelConfig

__all__ = [
    "FORBIDDEN_OPS",
    "GraphContractError",
    "GraphFileError",
    "GraphReport",
    "check_graph_model",
    "graph_macs",
    "graph_metadata",
    "inspect_graph",
    "load_graph",
    "tensorrt_support",
]

# Ops that mean the export went wrong for this model: unrolled or control-flow attention
# (Loop/If/Einsum/Resize with computed sizes), run-time size arithmetic, unfolded BN.
FORBIDDEN_OPS = frozenset(
    {
        "Loop",
        "If",
        "Scan",
        "Einsum",
        "Resize",
        "Shape",
        "Gather",
        "ConstantOfShape",
        "BatchNormalization",
        "Expand",
        "Range",
    }
)


class GraphContractError(ValueError):
    """An ONNX graph that breaks the export contract (names, shapes, ops)."""


class GraphFileError(UserError):
    """A file given as an exported graph that is missing, damaged or not from ``dgla-export onnx``."""


def load_graph(path: str | Path) -> onnx.ModelProto:
    """An exported graph, checked before any slow work: it exists, parses, passes onnx's checker
    and carries dgla-export's metadata (without it no runtime knows the model's contract)."""
    path = Path(path)
    again = "export it again with `dgla-export onnx`"
    if path.is_dir():
        raise GraphFileError(f"{path} is a folder; give the .onnx file inside it that `dgla-export onnx` wrote")
    if not path.is_file():
        raise GraphFileError(f"ONNX file {path} does not exist; {again}")
    if _is_checkpoint(path):
        quoted = shlex.quote(str(path))
        raise GraphFileError(
            f"{path} is a PyTorch checkpoint, not an ONNX graph: export a graph from it with "
            f"`dgla-export onnx --weights {quoted} --output dgla.onnx`, or give it as --weights {quoted} (weights=) "
            "where a command takes the weights"
        )
    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except DecodeError as err:
        raise GraphFileError(f"{path} is not a readable ONNX file (truncated or not ONNX: {err}); {again}") from err
    except onnx.checker.ValidationError as err:
        first = str(err).strip().splitlines()[0]
        raise GraphFileError(f"{path} fails onnx's checker ({first}); {again}") from err
    if "config" not in graph_metadata(model):
        raise GraphFileError(f"{path} lacks dgla-export's metadata (model config, classes); {again}")
    return model


def _is_checkpoint(path: Path) -> bool:
    """torch.save's zip (``*/data.pkl``), its legacy pickle, or safetensors (a little-endian header
    length, then JSON): what a user passes where a graph is asked when they hold a checkpoint."""
    import zipfile

    with open(path, "rb") as handle:
        head = handle.read(16)
    if head[:1] == b"\x80" or (head[8:10] == b'{"' and int.from_bytes(head[:8], "little") > 0):
        return True
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/data.pkl") or name == "data.pkl" for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):  # no zip (an ONNX file), or a damaged one: not a checkpoint
        return False


def graph_metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def check_graph_model(path: str | Path, metadata: dict[str, str], config: ModelConfig) -> None:
    """The graph was exported from a model of ``config``'s name, inputs and classes: checked before
    any slow work, since a runtime would only fail on the first batch (or, worse, run)."""
    graph = json.loads(metadata["config"])
    if graph["name"] != config.name:
        raise GraphFileError(f"{path} is a {graph['name']} graph, not {config.name}; pass --model {graph['name']}")
    sizes = json.loads(metadata.get("input_sizes", "{}"))
    if sizes != config.input_sizes:
        raise GraphFileError(f"{path} takes inputs {sizes}, but {config.name} takes {config.input_sizes}")
    classes = tuple(json.loads(metadata.get("class_names", "[]")))
    if classes != tuple(config.class_names):
        raise GraphFileError(f"{path} predicts {list(classes)}, but {config.name} {list(config.class_names)}")


@functools.lru_cache(maxsize=1)
def tensorrt_support() -> dict:
    return json.loads((Path(__file__).with_name("tensorrt_onnx_ops.json")).read_text())


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclasses.dataclass(frozen=True)
class GraphReport:
    opset: int
    ir_version: int
    node_count: int
    op_counts: dict[str, int]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    metadata: dict[str, str]
    problems: tuple[str, ...]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _specs(values: list[onnx.ValueInfoProto]) -> tuple[TensorSpec, ...]:
    specs = []
    for value in values:
        tensor = value.type.tensor_type
        dims = tuple(d.dim_param or d.dim_value for d in tensor.shape.dim)
        specs.append(TensorSpec(value.name, onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name, dims))
    return tuple(specs)


def inspect_graph(
    model: onnx.ModelProto,
    *,
    expected_inputs: dict[str, tuple[int | str, ...]] | None = None,
    expected_outputs: dict[str, tuple[int | str, ...]] | None = None,
    tensorrt_major: str = "10",
) -> GraphReport:
    """Report the graph's contract and list every way it breaks the export rules.

    Names and shapes are checked before ops, as a consumer would meet them.
    """
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    inputs, outputs = _specs(list(graph.input)), _specs(list(graph.output))
    problems: list[str] = []
    for label, specs, expected in (("input", inputs, expected_inputs), ("output", outputs, expected_outputs)):
        if expected is None:
            continue
        found = {s.name: s.shape for s in specs}
        if list(found) != list(expected):
            problems.append(f"{label} names {list(found)} != expected {list(expected)}")
            continue
        for name, shape in expected.items():
            if found[name] != tuple(shape):
                problems.append(f"{label} {name} has shape {found[name]}, expected {tuple(shape)}")
    batch_symbols = {s.shape[0] for s in inputs + outputs if s.shape}
    if len(batch_symbols) != 1 or not all(isinstance(b, str) for b in batch_symbols):
        problems.append(f"inputs and outputs must share one symbolic batch dimension, found {batch_symbols}")
    for spec in inputs + outputs:
        if any(not isinstance(d, int) or d <= 0 for d in spec.shape[1:]):
            problems.append(f"{spec.name}: only the batch dimension may be dynamic, got {spec.shape}")

    counts = collections.Counter(node.op_type for node in graph.node)
    foreign = sorted({node.domain for node in graph.node if node.domain not in ("", "ai.onnx")})
    if foreign or model.functions:
        problems.append(f"custom domains or functions in the graph: {foreign or [f.name for f in model.functions]}")
    forbidden = sorted(op for op in counts if op in FORBIDDEN_OPS)
    if forbidden:
        problems.append(
            "ops that this export must not contain: " + ", ".join(f"{op} x{counts[op]}" for op in forbidden)
        )
    support = tensorrt_support()
    unsupported = sorted(op for op in counts if op not in support["supported"])
    if unsupported:
        problems.append(f"ops not on TensorRT's ONNX parser support list: {unsupported}")
    limits = support["tensorrt_versions"][tensorrt_major]
    if not limits["min_opset"] <= opset <= limits["max_opset"]:
        problems.append(f"opset {opset} outside TensorRT {tensorrt_major}.x's range {limits}")
    metadata = graph_metadata(model)
    return GraphReport(
        opset=opset,
        ir_version=model.ir_version,
        node_count=len(graph.node),
        op_counts=dict(sorted(counts.items(), key=lambda kv: -kv[1])),
        inputs=inputs,
        outputs=outputs,
        metadata=metadata,
        problems=tuple(problems),
    )


def graph_macs(model: onnx.ModelProto) -> dict[str, int]:
    """Multiply-accumulates per Conv, Gemm and MatMul node for one sample (batch 1), from
    onnx's shape inference: the denominator of a graph's INT8 share."""
    model = copy.deepcopy(model)
    for value in model.graph.input:
        value.type.tensor_type.shape.dim[0].dim_value = 1
    del model.graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)
    }
    shapes.update({t.name: list(t.dims) for t in model.graph.initializer})
    macs = {}
    for node in inferred.graph.node:
        if node.op_type == "Conv":  # every output element: in_channels/groups * kernel MACs
            macs[node.name] = math.prod(shapes[node.output[0]]) * math.prod(shapes[node.input[1]][1:])
        elif node.op_type in ("Gemm", "MatMul"):
            a = shapes[node.input[0]]
            transposed = node.op_type == "Gemm" and any(x.name == "transA" and x.i for x in node.attribute)
            macs[node.name] = math.prod(shapes[node.output[0]]) * (a[-2] if transposed else a[-1])
    return macs
