"""The Triton repository: configs parsed independently with Triton's schema, cross-checks, refusals."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from dgla_export import preprocess
from dgla_export.artefacts.manifest import BatchProfile, EngineManifest, ManifestError, RuntimeInfo, manifest_path
from dgla_export.io import OutputExistsError, sha256_file
from dgla_export.models.config import ModelConfig
from dgla_export.preprocess import Preprocessing, decode_image
from dgla_export.tools.export import main as export_main
from dgla_export.triton.repository import RepositoryError, TritonOptions, write_repository
from triton_repository.conftest import models_of


def _parse(path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _metadata(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _engine(tmp_path, profile: str, dims: int = 96, precision: str = "fp16"):
    engine = tmp_path / "e.plan"
    engine.write_bytes(b"engine")
    shapes = {
        name: {k: list(v) for k, v in BatchProfile.parse(profile).shapes((0, 3, size, size)).items()}
        for name, size in (("image_224", dims), ("image_448", 2 * dims))
    }
    EngineManifest(
        engine_file="e.plan", engine_sha256=sha256_file(engine), engine_bytes=6, precision=precision, profile=profile,
        inputs=shapes, outputs={"logits": "FLOAT", "probs": "FLOAT"},
        layer_dtypes={"Half": 10, **({"Int8": 20} if precision == "int8" else {})},
        runtime=RuntimeInfo("10.13.0.35", "NVIDIA H100", "90"), onnx_sha256="x", onnx_metadata={}, build_seconds=1.0,
    ).write(manifest_path(engine))  # fmt: skip
    return engine


def test_repository_layout_and_configs(tiny_onnx, tmp_path) -> None:
    repo = tmp_path / "repo"
    assert export_main(["triton", "--onnx", str(tiny_onnx["fp32"]), "--output", str(repo)]) == 0
    for model in ("dgla_onnx", "dgla_preprocess", "dgla"):
        assert (repo / model / "1").is_dir() and (repo / model / "config.pbtxt").is_file()
    onnx_config = _parse(repo / "dgla_onnx" / "config.pbtxt")
    assert onnx_config.platform == "onnxruntime_onnx" and onnx_config.max_batch_size == 8
    assert {i.name: list(i.dims) for i in onnx_config.input} == {"image_224": [3, 96, 96], "image_448": [3, 192, 192]}
    assert {o.name: list(o.dims) for o in onnx_config.output} == {"logits": [7], "probs": [7]}
    assert list(onnx_config.dynamic_batching.preferred_batch_size) == [8]  # 16 > max batch is dropped
    assert onnx_config.model_warmup[0].inputs["image_448"].dims == [3, 192, 192]
    assert (repo / "dgla_onnx" / "labels.txt").read_text().split() == ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    ensemble = _parse(repo / "dgla" / "config.pbtxt")
    assert ensemble.platform == "ensemble" and ensemble.input[0].data_type == model_config_pb2.TYPE_STRING
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == ["dgla_preprocess", "dgla_onnx"]
    pre = _parse(repo / "dgla_preprocess" / "config.pbtxt")
    recipe = Preprocessing.from_parameters({k: v.string_value for k, v in pre.parameters.items()})
    assert recipe == Preprocessing.of(ModelConfig.from_dict(json.loads(_metadata(tiny_onnx["fp32"])["config"])))
    assert (pre.parameters["method"].string_value, pre.parameters["max_pixels"].string_value) == ("fast", "64000000")
    assert recipe.input_sizes == {"image_224": 96, "image_448": 192}
    assert (repo / "dgla_preprocess" / "1" / "model.py").read_text().count("TritonPythonModel") == 1
    # the server runs the package's own preprocessing source, byte for byte
    assert (repo / "dgla_preprocess" / "1" / "preprocess.py").read_bytes() == Path(preprocess.__file__).read_bytes()


def test_preprocess_warmup_is_a_real_image_in_tritons_string_layout(tiny_onnx, tmp_path, images) -> None:
    repo = tmp_path / "repo"
    write_repository(tiny_onnx["fp32"], repo)
    warmup = _parse(repo / "dgla_preprocess" / "config.pbtxt").model_warmup[0].inputs["image"]
    assert warmup.data_type == model_config_pb2.TYPE_STRING and list(warmup.dims) == [1]
    data = (repo / "dgla_preprocess" / "warmup" / warmup.input_data_file).read_bytes()
    (length,) = struct.unpack("<I", data[:4])
    assert length == len(data) - 4, f"length prefix {length}, payload {len(data) - 4} bytes"
    np.testing.assert_array_equal(decode_image(data[4:]), images[0][1])  # PNG: lossless
    assert not _parse(repo / "dgla" / "config.pbtxt").model_warmup  # Triton refuses warm-up on ensembles


def test_engine_adds_trt_model_within_its_profile(tiny_onnx, tmp_path) -> None:
    _, texts, _ = write_repository(tiny_onnx["fp16"], tmp_path / "repo", engine=_engine(tmp_path, "1:4:6"))
    trt = text_format.Parse(texts["dgla_trt"], model_config_pb2.ModelConfig())
    assert trt.platform == "tensorrt_plan" and trt.max_batch_size == 6
    assert (tmp_path / "repo" / "dgla_trt" / "1" / "model.plan").read_bytes() == b"engine"
    assert EngineManifest.read(tmp_path / "repo" / "dgla_trt" / "1" / "model.plan.json").engine_bytes == 6
    assert (
        text_format.Parse(texts["dgla"], model_config_pb2.ModelConfig()).ensemble_scheduling.step[1].model_name
        == "dgla_trt"
    )


def test_an_engine_is_checked_against_its_manifest_before_it_is_copied(tiny_onnx, tmp_path) -> None:
    engine = _engine(tmp_path, "1:4:6")
    engine.write_bytes(b"enginX")  # same size, other bytes: not the engine that was built
    with pytest.raises(ManifestError, match="SHA-256"):
        write_repository(tiny_onnx["fp16"], tmp_path / "repo", engine=engine)
    assert not (tmp_path / "repo").exists()


@pytest.mark.slow  # the INT8 search behind the fixture
def test_int8_graph_and_engine_go_into_the_repository(tiny_int8, tmp_path) -> None:
    graph = tiny_int8["tensorrt"][0]
    options = TritonOptions(ort_tensorrt_fp16=True)
    engine = _engine(tmp_path, "1:4:8", precision="int8")
    _, texts, _ = write_repository(graph, tmp_path / "repo", engine=engine, options=options, unvalidated=True)
    onnx_config = text_format.Parse(texts["dgla_onnx"], model_config_pb2.ModelConfig())
    accelerator = onnx_config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.parameters["precision_mode"] == "INT8"  # the graph's Q/DQ scales, not FP16
    assert (tmp_path / "repo" / "dgla_onnx" / "1" / "model.onnx").read_bytes() == graph.read_bytes()
    assert EngineManifest.read(tmp_path / "repo" / "dgla_trt" / "1" / "model.plan.json").precision == "int8"


def test_bad_inputs_are_refused_before_writing(tiny_onnx, tmp_path) -> None:
    repo = tmp_path / "repo"
    with pytest.raises(RepositoryError, match="exceeds the engine profile"):
        write_repository(
            tiny_onnx["fp16"], repo, engine=_engine(tmp_path, "1:2:4"), options=TritonOptions(max_batch_size=8)
        )
    with pytest.raises(RepositoryError, match="dims"):
        write_repository(tiny_onnx["fp16"], repo, engine=_engine(tmp_path, "1:4:8", dims=128))
    with pytest.raises(RepositoryError, match="batch range"):
        write_repository(tiny_onnx["fp32"], repo, options=TritonOptions(max_batch_size=64))
    assert not repo.exists()
    repo.mkdir()
    (repo / "notes.txt").write_text("the user's")
    with pytest.raises(OutputExistsError, match="force=True"):  # from Python, the keyword
        write_repository(tiny_onnx["fp32"], repo)
    assert sorted(p.name for p in repo.iterdir()) == ["notes.txt"]


def test_config_dict_round_trip(tiny) -> None:
    assert ModelConfig.from_dict(json.loads(json.dumps(tiny.config.to_dict()))) == tiny.config


def test_serving_copy_stands_in_for_missing_backends(tiny_onnx, tmp_path) -> None:
    """dgla-serve's copy: ONNX Runtime under the Python backend, same I/O and batching, GPU groups
    on CPU when no GPU is used, the accelerator carried as a parameter; the user's repository untouched."""
    from dgla_export.triton.server import ServeError
    from dgla_export.triton.serving_copy import serving_repository

    repo = tmp_path / "repo"
    write_repository(tiny_onnx["fp32"], repo, options=TritonOptions(ort_tensorrt_fp16=True))
    before = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    how = serving_repository(repo, tmp_path / "serving", gpu=False)
    assert how == {
        "dgla": "ensemble",
        "dgla_normalise": "ONNX Runtime (Python backend)",
        "dgla_onnx": "ONNX Runtime (Python backend)",
        "dgla_pixels": "ensemble",
        "dgla_preprocess": "Python backend",
    }
    original, served = (
        _parse(repo / "dgla_onnx" / "config.pbtxt"),
        _parse(tmp_path / "serving" / "dgla_onnx" / "config.pbtxt"),
    )
    assert served.backend == "python" and not served.platform and not served.HasField("optimization")
    assert served.input == original.input and served.output == original.output
    assert served.dynamic_batching == original.dynamic_batching and served.max_batch_size == original.max_batch_size
    assert [g.kind for g in served.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    assert json.loads(served.parameters["gpu_execution_accelerator"].string_value)[0]["name"] == "tensorrt"
    version = tmp_path / "serving" / "dgla_onnx" / "1"
    assert (version / "model.onnx").resolve() == (repo / "dgla_onnx" / "1" / "model.onnx").resolve()
    assert "onnxruntime" in (version / "model.py").read_text()
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before
    with_engine = tmp_path / "with-engine"
    write_repository(tiny_onnx["fp16"], with_engine, engine=_engine(tmp_path, "1:4:8"))
    with pytest.raises(ServeError, match="dgla_trt is a TensorRT engine, which cannot run here"):
        serving_repository(with_engine, tmp_path / "serving-2", gpu=False)


def test_preprocessing_path_and_pixel_limit_are_recorded_in_the_config(tiny_onnx, tmp_path) -> None:
    repo = tmp_path / "repo"
    argv = ["triton", "--onnx", str(tiny_onnx["fp32"]), "--output", str(repo), "--preprocess", "exact"]
    assert export_main([*argv, "--max-pixels", "50M"]) == 0
    pre = _parse(repo / "dgla_preprocess" / "config.pbtxt")
    recipe = Preprocessing.from_parameters({k: v.string_value for k, v in pre.parameters.items()})
    assert (recipe.method, recipe.max_pixels) == ("exact", 50_000_000)


@pytest.mark.dali
@pytest.mark.skipif(importlib.util.find_spec("nvidia.dali") is None, reason="NVIDIA DALI is not installed")
def test_dali_repository_layout(tiny_onnx, tmp_path) -> None:
    """--preprocess dali: the DALI model (serialised GPU pipeline, its source beside it for
    dgla-serve), the guard in front of it, and an ensemble taking the image as uint8 bytes."""
    repo = tmp_path / "repo"
    assert export_main(["triton", "--onnx", str(tiny_onnx["fp32"]), "--output", str(repo), "--preprocess", "dali"]) == 0
    pre = _parse(repo / "dgla_preprocess" / "config.pbtxt")
    assert pre.backend == "dali" and [i.name for i in pre.input] == ["image", "admitted"]
    assert pre.input[0].data_type == model_config_pb2.TYPE_UINT8 and list(pre.input[0].dims) == [-1]
    assert [o.name for o in pre.output] == ["image_224", "image_448"]
    assert (repo / "dgla_preprocess" / "1" / "model.dali").stat().st_size > 1000
    assert (repo / "dgla_preprocess" / "1" / "dali_pipeline.py").is_file()
    guard = _parse(repo / "dgla_guard" / "config.pbtxt")
    assert guard.backend == "python" and guard.parameters["max_pixels"].string_value == "64000000"
    ensemble = _parse(repo / "dgla" / "config.pbtxt")
    assert ensemble.input[0].data_type == model_config_pb2.TYPE_UINT8
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == ["dgla_guard", "dgla_preprocess", "dgla_onnx"]


def test_several_models_in_one_repository(tiny_onnx, tmp_path) -> None:
    """--name prefixes a model's folders; --add keeps the others (a name already there gets a new
    version: test_versions.py), --force replaces it; every runtime model and the ensemble record the
    config the client reads."""
    repo = tmp_path / "repo"
    base = ["triton", "--onnx", str(tiny_onnx["fp32"]), "--output", str(repo)]
    assert export_main(base) == 0
    assert export_main([*base, "--name", "second", "--add"]) == 0
    assert {p.name for p in repo.iterdir() if p.is_dir()} == models_of("dgla") | models_of("second")
    ensemble = _parse(repo / "second" / "config.pbtxt")
    assert [step.model_name for step in ensemble.ensemble_scheduling.step] == ["second_preprocess", "second_onnx"]
    for model in ("second", "second_onnx"):
        record = _parse(repo / model / "config.pbtxt").parameters["model_config"].string_value
        assert ModelConfig.from_dict(json.loads(record)).input_sizes == {"image_224": 96, "image_448": 192}
    before = (repo / "dgla_onnx" / "1" / "model.onnx").read_bytes()
    assert write_repository(tiny_onnx["fp16"], repo, options=TritonOptions(name="second"), add=True, force=True)[0] == 1
    assert (repo / "dgla_onnx" / "1" / "model.onnx").read_bytes() == before  # the other model is untouched
    assert _metadata(repo / "second_onnx" / "1" / "model.onnx")["precision"] == "fp16"
    with pytest.raises(RepositoryError, match="model name 'Bad-Name'"):
        TritonOptions(name="Bad-Name")


def test_openvino_runtime_writes_the_openvino_backend(tiny_onnx, tiny_int8, tmp_path) -> None:
    """--runtime openvino: NAME_openvino on Triton's OpenVINO backend, CPU instances, the hint and BF16
    as that backend's parameters, the ensemble running it; what it cannot serve is refused unwritten."""
    repo = tmp_path / "repo"
    argv = ["triton", "--onnx", str(tiny_onnx["fp32"]), "--output", str(repo), "--runtime", "openvino"]
    assert export_main([*argv, "--openvino-hint", "throughput", "--openvino-bf16"]) == 0
    assert {p.name for p in repo.iterdir() if p.is_dir()} == models_of("dgla", "openvino")
    config = _parse(repo / "dgla_openvino" / "config.pbtxt")
    normalise = _parse(repo / "dgla_normalise" / "config.pbtxt")  # on the CPU, beside the network it feeds
    assert [g.kind for g in normalise.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    assert (config.backend, config.platform, config.default_model_filename) == ("openvino", "", "model.onnx")
    assert {k: v.string_value for k, v in config.parameters.items() if k not in ("model_config", "served_graph")} == {
        "PERFORMANCE_HINT": "THROUGHPUT",
        "HINT_BF16": "YES",
    }
    assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    assert config.max_batch_size == 8 and list(config.dynamic_batching.preferred_batch_size) == [8]
    assert (repo / "dgla_openvino" / "1" / "model.onnx").read_bytes() == tiny_onnx["fp32"].read_bytes()
    ensemble = _parse(repo / "dgla" / "config.pbtxt")
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == ["dgla_preprocess", "dgla_openvino"]
    int8 = tmp_path / "int8"
    write_repository(tiny_int8["cpu"][0], int8, options=TritonOptions(runtime="openvino"), unvalidated=True)
    assert "HINT_BF16" not in _parse(int8 / "dgla_openvino" / "config.pbtxt").parameters
    refusals = [
        (tiny_onnx["fp16"], {}, "not an fp16 graph"),
        (tiny_int8["cpu"][0], {"openvino_bf16": True}, "BF16 compute is for the FP32 graph"),
    ]
    for graph, extra, message in refusals:
        with pytest.raises(RepositoryError, match=message):
            write_repository(graph, tmp_path / "refused", options=TritonOptions(runtime="openvino", **extra))
        assert not (tmp_path / "refused").exists()
    with pytest.raises(RepositoryError, match="the OpenVINO settings need runtime="):
        TritonOptions(openvino_bf16=True)
