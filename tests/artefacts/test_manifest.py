"""TensorRT engine manifests, profiles and refusals: everything that needs no TensorRT."""

from __future__ import annotations

import json
import re

import pytest

from dgla_export.artefacts.manifest import (
    BatchProfile,
    EngineManifest,
    EngineMismatchError,
    ManifestError,
    RuntimeInfo,
    check_compatible,
    check_precision,
    load_build_profiles,
    manifest_path,
    parse_size,
    verify_engine_file,
)
from dgla_export.io import sha256_file
from dgla_export.tools.export import main as export_main

H100 = RuntimeInfo("10.13.0.35", "NVIDIA H100 80GB HBM3", "90", "13.0", "580.65")


def _manifest(engine_bytes: bytes = b"plan", **changes) -> EngineManifest:
    # Field values as a build on an H100 would record them (layer counts illustrative).
    record = dict(
        engine_file="dgla.plan",
        engine_sha256="0" * 64,
        engine_bytes=len(engine_bytes),
        precision="fp16",
        profile="1:8:32",
        inputs={"image_224": {"min": [1, 3, 224, 224], "opt": [8, 3, 224, 224], "max": [32, 3, 224, 224]}},
        outputs={"logits": "DataType.FLOAT", "probs": "DataType.FLOAT"},
        layer_dtypes={"Half": 410, "Float": 236},
        runtime=H100,
        onnx_sha256="a" * 64,
        onnx_metadata={"model_name": "dgla_resnet50"},
        build_seconds=301.5,
    )
    record.update(changes)
    return EngineManifest(**record)


@pytest.mark.parametrize(("text", "expected"), [("1:8:32", BatchProfile(1, 8, 32)), ("4:4:4", BatchProfile(4, 4, 4))])
def test_batch_profile_parses(text, expected) -> None:
    assert BatchProfile.parse(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize("text", ["8", "1:8", "0:1:2", "1:16:8", "a:b:c", "1:2:3:4"])
def test_bad_batch_profile_is_refused(text) -> None:
    with pytest.raises(ValueError, match="MIN"):
        BatchProfile.parse(text)


def test_profile_shapes_share_the_batch_range() -> None:
    shapes = BatchProfile(1, 8, 32).shapes((0, 3, 448, 448))
    assert shapes == {"min": (1, 3, 448, 448), "opt": (8, 3, 448, 448), "max": (32, 3, 448, 448)}
    with pytest.raises(ValueError, match="outside"):
        BatchProfile(1, 8, 32).check(33)


def test_sizes_and_build_profiles_as_data() -> None:
    assert parse_size("8GiB") == 8 << 30 and parse_size("512MiB") == 512 << 20 and parse_size("1024") == 1024
    with pytest.raises(ValueError):
        parse_size("lots")
    profiles = load_build_profiles()
    assert "h100" in profiles and BatchProfile.parse(profiles["h100"]["batch"]).max >= 8


def test_manifest_round_trip(tmp_path) -> None:
    manifest = _manifest()
    manifest.write(tmp_path / "m.json")
    assert EngineManifest.read(tmp_path / "m.json") == manifest
    (tmp_path / "bad.json").write_text('{"format": "something-else"}')
    with pytest.raises(ManifestError, match="format"):
        EngineManifest.read(tmp_path / "bad.json")


def test_fp16_claim_is_checked_against_layer_dtypes() -> None:
    check_precision(_manifest())
    with pytest.raises(ManifestError, match="no FP16 layer"):
        check_precision(_manifest(layer_dtypes={"Float": 646}))
    check_precision(_manifest(precision="fp32", layer_dtypes={"Float": 646}))


def test_int8_engine_without_int8_layers_is_an_error() -> None:
    check_precision(_manifest(precision="int8", layer_dtypes={"Int8": 120, "Half": 40, "Float": 300}))
    with pytest.raises(ManifestError, match=r"claims int8 but has no INT8 layer.*--int8-target tensorrt"):
        check_precision(_manifest(precision="int8", layer_dtypes={"Half": 160, "Float": 300}))


@pytest.mark.slow  # the INT8 search behind the fixture takes a minute
def test_trt_cli_refuses_an_int8_graph_it_cannot_build_before_needing_tensorrt(tiny_onnx, tiny_int8, tmp_path, capsys):
    engine = str(tmp_path / "e.plan")
    cpu_graph = str(tiny_int8["cpu"][0])
    assert export_main(["trt", "--onnx", cpu_graph, "--output", engine, "--precision", "int8"]) == 2
    assert "--int8-target tensorrt" in capsys.readouterr().err
    assert export_main(["trt", "--onnx", str(tiny_onnx["fp16"]), "--output", engine, "--precision", "int8"]) == 2
    assert "is a fp16 graph" in capsys.readouterr().err
    # validating on its own calibration images (the bundled ones) is refused, before TensorRT is asked for
    trt_graph = str(tiny_int8["tensorrt"][0])
    assert export_main(["trt", "--onnx", trt_graph, "--output", engine, "--precision", "int8"]) == 2
    assert "are also calibration images" in " ".join(capsys.readouterr().err.split())
    # on held-out images the graph passes every check; only the missing TensorRT stops it here
    from PIL import Image
    from skimage import data

    held_out = tmp_path / "held_out"
    held_out.mkdir()
    for name in ("coins", "moon"):
        Image.fromarray(getattr(data, name)()).convert("RGB").save(held_out / f"{name}.png")
    argv = ["trt", "--onnx", trt_graph, "--output", engine, "--precision", "int8", "--images", str(held_out)]
    assert export_main(argv) == 2
    assert "cannot build an engine here" in capsys.readouterr().err


def test_mismatched_gpu_or_tensorrt_is_refused_with_rebuild_hint() -> None:
    manifest = _manifest()
    check_compatible(manifest, H100, "dgla.plan")
    l4 = RuntimeInfo("10.13.0.35", "NVIDIA L4", "89")
    with pytest.raises(EngineMismatchError, match=r"sm_90.*sm_89.*dgla-export trt"):
        check_compatible(manifest, l4, "dgla.plan")
    with pytest.raises(EngineMismatchError, match=re.escape("TensorRT 10.13.0.35 built it, 11.4.0 is running")):
        check_compatible(manifest, RuntimeInfo("11.4.0", H100.gpu_name, "90"), "dgla.plan")
    compatible = _manifest(hardware_compatible=True, version_compatible=True)
    check_compatible(compatible, RuntimeInfo("11.4.0", "NVIDIA L4", "89"), "dgla.plan")


def test_truncated_or_foreign_engine_is_refused(tmp_path) -> None:
    engine = tmp_path / "dgla.plan"
    engine.write_bytes(b"serialized engine bytes")
    manifest = _manifest(engine_bytes=engine.read_bytes(), engine_sha256=sha256_file(engine))
    manifest.write(manifest_path(engine))
    assert verify_engine_file(engine) == manifest
    engine.write_bytes(b"serialized engine")  # truncated
    with pytest.raises(ManifestError, match="truncated"):
        verify_engine_file(engine)
    engine.write_bytes(b"serialized engine BYTES")  # same size, other content
    with pytest.raises(ManifestError, match="SHA-256"):
        verify_engine_file(engine)
    manifest_path(engine).unlink()
    with pytest.raises(ManifestError, match="no manifest"):
        verify_engine_file(engine)


def test_trt_cli_refuses_bad_arguments_before_needing_tensorrt(tmp_path, capsys) -> None:
    onnx_file = tmp_path / "x.onnx"
    onnx_file.write_bytes(b"")
    assert export_main(["trt", "--onnx", str(onnx_file), "--output", str(tmp_path / "e.plan"), "--batch", "8:1:4"]) == 2
    assert "MIN <= OPT <= MAX" in capsys.readouterr().err
    assert export_main(["trt", "--onnx", str(onnx_file), "--output", str(tmp_path / "e.plan"), "--target", "x"]) == 2
    assert "h100" in capsys.readouterr().err


def test_layer_dtypes_read_every_documented_inspector_spelling() -> None:
    from dgla_export.export.tensorrt_build import layer_output_dtypes

    def layer(fmt: str) -> dict:
        return {"Name": "l", "Outputs": [{"Name": "t", "Format/Datatype": fmt}]}

    spellings = [
        "Row major linear FP16 format", "Half", "Two wide channel vectorized row major FP16 format",
        "Row major linear FP32", "Float", "Thirty-two wide channel vectorized row major Int8 format.",
        "Row major linear BF16 format", "N/A due to dynamic shapes",
    ]  # fmt: skip
    info = json.dumps({"Layers": [layer(f) for f in spellings] + ["a layer given by name only"]})
    assert layer_output_dtypes(info) == {"Half": 3, "Float": 2, "Int8": 1, "BFloat16": 1, "unknown": 1}
