"""The exported graph's contract, hygiene and numerics, on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import reference
from inputs import torch_inputs

from dgla_export.artefacts.graph import FORBIDDEN_OPS, inspect_graph, tensorrt_support
from dgla_export.export.onnx_export import ExportOptions, export_onnx
from dgla_export.io import OutputExistsError
from dgla_export.models.identity import CheckpointIdentity
from dgla_export.models.weights import state_dict_sha256


def _load(path) -> onnx.ModelProto:
    return onnx.load(str(path))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_io_contract_is_read_from_the_file(tiny_onnx, precision) -> None:
    model = _load(tiny_onnx[precision])
    report = inspect_graph(model)
    shapes = {s.name: (s.dtype, s.shape) for s in report.inputs + report.outputs}
    assert shapes == {
        "image_224": ("float32", ("batch", 3, 96, 96)),
        "image_448": ("float32", ("batch", 3, 192, 192)),
        "logits": ("float32", ("batch", 7)),
        "probs": ("float32", ("batch", 7)),
    }
    assert not report.problems, report.problems
    onnx.checker.check_model(model, full_check=True)
    assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_graph_hygiene(tiny_onnx, precision) -> None:
    model = _load(tiny_onnx[precision])
    ops = {node.op_type for node in model.graph.node}
    assert not ops & FORBIDDEN_OPS
    assert ops <= set(tensorrt_support()["supported"])
    assert "AveragePool" in ops and "Softmax" in ops and "MatMul" in ops
    # Every Reshape's target shape is a constant in the file, not computed at run time.
    constants = {init.name for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ("Reshape", "Slice", "Unsqueeze"):
            assert all(name in constants for name in node.input[1:] if name), node.name
    # Concat only joins the two DBI branches (3 fusions), never shape pieces.
    assert sum(node.op_type == "Concat" for node in model.graph.node) == 3
    assert model.ir_version <= 10  # onnxruntime-gpu 1.31 rejects onnx 1.23's default IR 14


@pytest.mark.slow
def test_node_count_does_not_depend_on_input_size(tiny_onnx, tiny, tmp_path) -> None:
    from dgla_export import create_model

    bigger = create_model("dgla_tiny", input_size=128, aux_input_size=256)
    bigger.load_state_dict(tiny.state_dict())
    path = tmp_path / "bigger.onnx"
    report = export_onnx(bigger, path, options=ExportOptions(max_batch=2), checkpoint=CheckpointIdentity("x", "model"))
    assert report.node_count == len(_load(tiny_onnx["fp32"]).graph.node)


def test_metadata_props(tiny_onnx, tiny) -> None:
    metadata = {p.key: p.value for p in _load(tiny_onnx["fp16"]).metadata_props}
    assert metadata["model_name"] == "dgla_tiny"
    assert json.loads(metadata["class_names"]) == ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    assert json.loads(metadata["mean"]) == [0.485, 0.456, 0.406]
    assert json.loads(metadata["std"]) == [0.229, 0.224, 0.225]
    assert json.loads(metadata["input_sizes"]) == {"image_224": 96, "image_448": 192}
    assert metadata["checkpoint_sha256"] == f"state_dict:{state_dict_sha256(tiny)}"
    assert CheckpointIdentity.from_metadata(metadata) == CheckpointIdentity(state_dict_sha256(tiny), "demo")
    assert metadata["precision"] == "fp16"
    assert metadata["spec_version"] and metadata["tool"].startswith("dgla-export")


def test_fp16_graph_keeps_fp32_islands(tiny_onnx) -> None:
    model = onnx.shape_inference.infer_shapes(_load(tiny_onnx["fp16"]))
    dtypes = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.value_info) + list(model.graph.output)}
    fp16_conv_weights = [
        init for init in model.graph.initializer if init.data_type == onnx.TensorProto.FLOAT16 and len(init.dims) == 4
    ]
    assert fp16_conv_weights, "no FP16 convolution weights"
    softmax_types = {dtypes[node.output[0]] for node in model.graph.node if node.op_type == "Softmax"}
    assert softmax_types == {onnx.TensorProto.FLOAT}, "every softmax must run in FP32"
    energies = [
        n
        for n in model.graph.node
        if n.op_type == "MatMul" and any(c.op_type == "Softmax" and c.input[0] == n.output[0] for c in model.graph.node)
    ]
    assert energies and all(dtypes[n.output[0]] == onnx.TensorProto.FLOAT for n in energies)
    assert sum(n.op_type == "Cast" for n in model.graph.node) > 0


def _ort_logits(path, inputs) -> np.ndarray:
    from dgla_export.runtimes.onnxruntime import create_session

    session = create_session(path, "cpu")
    feed = {name: t.numpy() for name, t in zip(("image_224", "image_448"), inputs, strict=True)}
    return session.run(["logits"], feed)[0]


def test_fp32_graph_equals_independent_reference(tiny_onnx, tiny, images) -> None:
    inputs = torch_inputs(images, tiny.config)
    actual = _ort_logits(tiny_onnx["fp32"], inputs)
    expected = reference.forward(tiny.state_dict(), *inputs).numpy()
    err = np.abs(actual - expected).max() / np.abs(expected).max()
    assert err < 1e-4, f"ONNX Runtime vs spec reference: max rel error {err:.2e}"


def test_validation_passes_and_detects_tampering(tiny_onnx, tiny, images, tmp_path) -> None:
    from dgla_export.runtimes.onnxruntime import OnnxRuntimeRunner
    from dgla_export.validation import validate_runner

    def validate(path, precision):
        with OnnxRuntimeRunner(path, "cpu", precision) as runner:
            return validate_runner(runner, tiny, images, batches=(1, 3, 8))

    for precision in ("fp32", "fp16"):
        report = validate(tiny_onnx[precision], precision)
        worst = max(c.comparison.probs.max_abs for c in report.checks)
        assert report.passed, f"{precision}: {[c.comparison.failures for c in report.checks]}"
        assert all(not c.comparison.flips for c in report.checks)
        assert report.position_spread < 1e-3
        print(f"{precision}: max |prob diff| {worst:.2e}, max energy {report.max_attention_energy:.1f}")
    tampered = _load(tiny_onnx["fp32"])
    fc = next(init for init in tampered.graph.initializer if list(init.dims) == [7, 16 * 4])
    weights = onnx.numpy_helper.to_array(fc)
    fc.CopyFrom(onnx.numpy_helper.from_array(weights[::-1].copy(), fc.name))  # swap the class rows
    onnx.save(tampered, str(tmp_path / "tampered.onnx"))
    report = validate(tmp_path / "tampered.onnx", "fp32")
    assert not report.passed and report.checks[0].comparison.flips


def test_existing_output_needs_force(tiny_onnx, tiny) -> None:
    before = tiny_onnx["fp32"].read_bytes()
    with pytest.raises(OutputExistsError, match="force=True"):  # from Python, the keyword
        export_onnx(tiny, tiny_onnx["fp32"], checkpoint=CheckpointIdentity("x", "model"))
    assert tiny_onnx["fp32"].read_bytes() == before


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="opset"):
        ExportOptions(opset=11)
    with pytest.raises(ValueError, match="min_batch"):
        ExportOptions(min_batch=4, max_batch=2)
    with pytest.raises(ValueError, match="dynamic dimension"):  # torch.export raised an AssertionError (exit 1)
        ExportOptions(min_batch=1, max_batch=1)


def test_fp32_islands_hold_the_exact_fp32_weights(tiny_onnx) -> None:
    """An island's weights were once sent through FP16 and back: rounded to FP16 precision, and Inf
    beyond 65504 (found by `dgla-export debug`)."""
    fp32 = {i.name: onnx.numpy_helper.to_array(i) for i in _load(tiny_onnx["fp32"]).graph.initializer}
    fp16 = _load(tiny_onnx["fp16"]).graph.initializer
    islands = [
        i for i in fp16 if i.data_type == onnx.TensorProto.FLOAT and i.name in fp32 and i.name.endswith("weight")
    ]
    assert any(".query." in i.name for i in islands) and any("fc" in i.name for i in islands), [i.name for i in islands]
    for init in islands:
        assert np.array_equal(onnx.numpy_helper.to_array(init), fp32[init.name]), f"{init.name} is not FP32 exact"
