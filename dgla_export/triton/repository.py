"""Write a Triton model repository for an exported graph (and optionally a TensorRT engine).

The graph goes in only with a passing report of itself (:mod:`.admission`); configs are built as
Triton's own protobuf and parsed back with its schema (:mod:`.configs`), cross-checked against the
ONNX file and the engine manifest before anything is written; the options are :mod:`.options`'.
The whole repository is written to a temporary folder and renamed into place.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import re
import shutil
import struct
from pathlib import Path

from dgla_export._version import __version__
from dgla_export.artefacts.graph import inspect_graph, load_graph
from dgla_export.artefacts.manifest import manifest_path, verify_engine_file
from dgla_export.errors import option
from dgla_export.install import install_command
from dgla_export.io import check_output_folder, replace_folder, sha256_file
from dgla_export.models.config import ModelConfig
from dgla_export.triton.admission import admit, served_precision, write_golden
from dgla_export.triton.client import CONFIG_PARAMETER, SERVED_PARAMETER
from dgla_export.triton.configs import (
    WARMUP_ADMITTED,
    WARMUP_IMAGE,
    check_engine,
    ensemble_config,
    guard_config,
    normalise_config,
    parse_back,
    pixels_config,
    preprocess_config,
    runtime_config,
    serve_version,
)
from dgla_export.triton.normalise import normalise_graph
from dgla_export.triton.options import AUTO_NAME, PREPROCESS_CHOICES, ROLES, RepositoryError, TritonOptions
from dgla_export.triton.versions import active_version, next_version, read_version, versions, write_version

__all__ = ["RepositoryError", "TritonOptions", "write_repository"]

PREPROCESS_MODEL = Path(__file__).parent / "models" / "preprocess_model.py"
GUARD_MODEL = Path(__file__).parent / "models" / "guard_model.py"
PREPROCESS_LIBRARY = tuple(Path(__file__).parent.parent / n for n in ("preprocess.py", "decode.py"))  # both models
DALI_PIPELINE = Path(__file__).parent.parent / "dali_pipeline.py"  # beside model.dali, for dgla-serve
SELFCHECK = Path(__file__).with_name("selfcheck.py")  # standalone: the stdlib and numpy
COMMAND = "dgla-export triton"
DALI_INSTALL_HINT = install_command("dali")


def _graph_io(path: Path) -> tuple[dict[str, tuple[str, list[int]]], dict[str, tuple[str, list[int]]], dict[str, str]]:
    """Inputs and outputs as name -> (dtype, dims without batch), and the metadata."""
    report = inspect_graph(load_graph(path))

    def specs(tensors) -> dict[str, tuple[str, list[int]]]:
        return {t.name: (t.dtype, [int(d) for d in t.shape[1:]]) for t in tensors}

    return specs(report.inputs), specs(report.outputs), report.metadata


def _warmup_image() -> bytes:
    """A bundled image as PNG."""
    from PIL import Image

    from dgla_export.data import sample_images

    _, pixels = sample_images(1)[0]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _warmup_file(image: bytes, dali: bool) -> bytes:
    """As Triton reads a warm-up input from a file: raw for a uint8 vector; for one TYPE_STRING
    element, a 4-byte little-endian length, then the bytes."""
    return image if dali else struct.pack("<I", len(image)) + image


def _dali_model(inputs, metadata: dict[str, str], max_batch: int) -> bytes:
    from dgla_export.dali_pipeline import serialize

    config = ModelConfig.from_dict(json.loads(metadata["config"]))
    if list(config.input_sizes) != list(inputs):
        raise RepositoryError(f"the graph's inputs {list(inputs)} are not its config's {list(config.input_sizes)}")
    return serialize(config.input_sizes, config.mean, config.std, max_batch)


def write_repository(
    onnx_path: Path,
    output: Path,
    *,
    engine: Path | None = None,
    options: TritonOptions | None = None,
    validation: Path | None = None,
    unvalidated: bool = False,
    force: bool = False,
    add: bool = False,
) -> tuple[int, dict[str, str], bool]:
    """Write ``output`` (NAME_onnx, or NAME_openvino with ``options.runtime`` openvino,
    NAME_preprocess, NAME, NAME_normalise and NAME_pixels (the pixels-only clients' entry point),
    and NAME_trt given an engine; NAME is ``options.name``, or with ``auto``
    the graph's model name and precision).

    ``force`` replaces an earlier repository of this command, nothing else (:mod:`dgla_export.io`);
    ``add`` keeps its models of other names beside the new ones, and when NAME is there already,
    writes the graph as NAME's next version, served from now on, the earlier ones kept for a
    rollback (:mod:`dgla_export.triton.versions`); ``force`` then replaces NAME's models whole.
    ``validation``: the graph's report (default: the one ``dgla-export onnx``/``validate`` wrote beside
    it), which must be of this graph and passed, unless ``unvalidated`` (:mod:`.admission`); it goes
    into the version's manifest with the golden answers the self-check at every start holds the
    server to. The whole folder is swapped in one step either way.
    Returns the version written, each of its models' config.pbtxt text, and whether it went in
    unvalidated.
    """
    options = options or TritonOptions()
    if options.preprocess not in PREPROCESS_CHOICES:
        raise RepositoryError(f"preprocess must be one of {PREPROCESS_CHOICES}, got {options.preprocess!r}")
    dali = options.preprocess == "dali"
    if dali and importlib.util.find_spec("nvidia.dali") is None:
        raise RepositoryError(f"--preprocess dali needs NVIDIA DALI to write the pipeline: {DALI_INSTALL_HINT}")
    inputs = (onnx_path, engine, manifest_path(engine) if engine is not None else None)
    check_output_folder(output, force or add, command=COMMAND, inputs=inputs)
    inputs, outputs, metadata = _graph_io(onnx_path)
    if "class_names" not in metadata:
        raise RepositoryError(f"{onnx_path} lacks dgla-export metadata; export it with `dgla-export onnx`")
    if options.name == AUTO_NAME:
        options = dataclasses.replace(options, name=graph_name(metadata))
    digest = sha256_file(onnx_path)  # the graph's identity in the version's manifest, and its report's
    graph_max = int(metadata.get("batch_range", "1:8").split(":")[1])
    if (options.max_batch_size or graph_max) > graph_max:
        raise RepositoryError(
            f"max_batch_size {options.max_batch_size} exceeds the ONNX graph's batch range {metadata['batch_range']}"
        )
    options = options.sized(graph_max)
    max_batch = options.max_batch_size or graph_max
    openvino = options.runtime == "openvino"
    if openvino and engine is not None:
        raise RepositoryError("--engine serves TensorRT on a GPU; OpenVINO serves the graph on the CPU: choose one")
    if openvino and metadata.get("precision", "fp32") not in ("fp32", "int8"):
        raise RepositoryError(f"OpenVINO serves the FP32 and INT8 graphs, not an {metadata['precision']} graph")
    if options.openvino_bf16 and metadata.get("precision", "fp32") != "fp32":
        raise RepositoryError("BF16 compute is for the FP32 graph; an INT8 graph keeps its float layers in FP32")
    onnx_name = options.model("openvino" if openvino else "onnx")
    configs = {
        onnx_name: runtime_config(
            onnx_name,
            "openvino" if openvino else "onnxruntime_onnx",
            "model.onnx",
            inputs,
            outputs,
            max_batch,
            options,
            int8=metadata.get("precision") == "int8",
        )
    }
    runtime = onnx_name
    manifest = None
    if engine is not None:
        manifest = verify_engine_file(engine)  # the file is the engine its manifest describes
        trt_max = min(max_batch, manifest.batch_profile.max) if options.max_batch_size is None else max_batch
        check_engine(manifest, inputs, trt_max)
        runtime, max_batch = options.model("trt"), trt_max
        configs[runtime] = runtime_config(runtime, "tensorrt_plan", "model.plan", inputs, outputs, trt_max, options)
    warmup_image = _warmup_image()
    preprocess, guard, ensemble = options.model("preprocess"), options.model("guard"), options.model("")
    configs[preprocess] = preprocess_config(inputs, max_batch, options, metadata, len(warmup_image))
    if dali:
        configs[guard] = guard_config(max_batch, options, len(warmup_image))
    configs[ensemble] = ensemble_config(runtime, inputs, outputs, max_batch, options)
    normalise, pixels = options.model("normalise"), options.model("pixels")
    configs[normalise] = normalise_config(inputs, max_batch, options)
    configs[pixels] = pixels_config(runtime, inputs, outputs, max_batch, options)
    entry_points = (onnx_name, options.model("trt"), ensemble, pixels)
    served_on = None if engine is not None else options.runtime  # an engine is judged by its own manifest
    admission = admit(onnx_path, digest, validation, unvalidated=unvalidated, runtime=served_on)
    kept, version = _kept_models(output, options.model(""), set(configs), force) if add else ([], 1)
    serve_version(configs, version)
    served = {  # what answers, for the results a client files (dgla_export.triton.client.ServedModel)
        "version": str(version), "model_name": metadata["model_name"],
        "precision": served_precision(metadata, options.openvino_bf16), "graph_sha256": digest,
        "checkpoint_sha256": metadata.get("checkpoint_sha256") or "unrecorded", "tool": f"dgla-export {__version__}",
    }  # fmt: skip
    for name in entry_points:  # what a client needs to know of the model, and of what answers
        if name in configs:
            configs[name].parameters[CONFIG_PARAMETER].string_value = metadata["config"]
            configs[name].parameters[SERVED_PARAMETER].string_value = json.dumps(served)
    from google.protobuf import text_format

    texts = {name: text_format.MessageToString(config) for name, config in configs.items()}
    for name, text in texts.items():
        if parse_back(text) != configs[name]:
            raise RepositoryError(f"{name}: config.pbtxt does not round-trip through Triton's schema")
    labels = "\n".join(json.loads(metadata["class_names"])) + "\n"
    with replace_folder(output, command=COMMAND) as tmp:
        for folder in kept:
            shutil.copytree(folder, tmp / folder.name)
        v = str(version)
        for name, text in texts.items():
            (tmp / name / v).mkdir(parents=True)
            (tmp / name / "config.pbtxt").write_text(text)
        shutil.copyfile(onnx_path, tmp / onnx_name / v / "model.onnx")
        model_config = ModelConfig.from_dict(json.loads(metadata["config"]))
        (tmp / normalise / v / "model.onnx").write_bytes(
            normalise_graph(model_config.input_sizes, model_config.mean, model_config.std)
        )
        if sha256_file(tmp / onnx_name / v / "model.onnx") != digest:  # the graph changed while this ran
            raise RepositoryError(f"{onnx_path} changed while the repository was written; write it again")
        if engine is not None:
            shutil.copyfile(engine, tmp / runtime / v / "model.plan")
            shutil.copyfile(manifest_path(engine), manifest_path(tmp / runtime / v / "model.plan"))
        python_models = {guard: GUARD_MODEL} if dali else {preprocess: PREPROCESS_MODEL}
        for name, source in python_models.items():
            shutil.copyfile(source, tmp / name / v / "model.py")
            for library in PREPROCESS_LIBRARY:
                shutil.copyfile(library, tmp / name / v / library.name)
        if dali:
            (tmp / preprocess / v / "model.dali").write_bytes(_dali_model(inputs, metadata, max_batch))
            shutil.copyfile(DALI_PIPELINE, tmp / preprocess / v / DALI_PIPELINE.name)
            (tmp / preprocess / "warmup").mkdir(exist_ok=True)
            (tmp / preprocess / "warmup" / WARMUP_ADMITTED).write_bytes(struct.pack("<f", 1.0))
        for name in (guard, preprocess) if dali else (preprocess,):  # warmed up on an image
            (tmp / name / "warmup").mkdir(exist_ok=True)
            (tmp / name / "warmup" / WARMUP_IMAGE).write_bytes(_warmup_file(warmup_image, dali))
        for name in entry_points:
            if name in texts:
                (tmp / name / "labels.txt").write_text(labels)
        shutil.copyfile(SELFCHECK, tmp / ensemble / SELFCHECK.name)  # for any Triton deployment's startup check
        graph = {
            "file": f"{onnx_name}/{v}/model.onnx",
            "sha256": digest,
            **{key: metadata.get(key) for key in ("model_name", "precision", "checkpoint_sha256", "tool")},
        }
        golden = write_golden(
            admission, tmp / ensemble / v, f"{ensemble}/{v}", method=options.preprocess,
            precision=served["precision"],
            tolerances=json.loads(metadata["config"])["tolerances"], pixels=(pixels, model_config),
        )  # fmt: skip
        write_version(
            tmp, ensemble, version, graph=graph, configs=texts, labels=labels, validation=admission.report,
            tool=f"dgla-export {__version__}", golden=golden,
        )  # fmt: skip
    return version, texts, admission.unvalidated


def graph_name(metadata: dict[str, str]) -> str:
    """The ensemble's name from the graph: its model, and its precision unless FP32 (``dgla_resnet50_fp16``)."""
    precision = metadata.get("precision", "fp32")
    name = metadata["model_name"] + ("" if precision == "fp32" else f"_{precision}")
    return re.sub(r"[^a-z0-9_]", "_", name.lower())[:63]


def _kept_models(output: Path, ensemble: str, new: set[str], force: bool) -> tuple[list[Path], int]:
    """The model folders of an existing repository that stay beside the new models, and the
    version to write: the ensemble's next when it is there already (its folders stay, for a
    rollback), else 1. ``force`` replaces the ensemble's models (a DALI guard included) whole."""
    if not output.is_dir():
        return [], 1
    present = [p for p in sorted(output.iterdir()) if p.is_dir()]  # the marker is a file
    ours = {f"{ensemble}_{role}" if role else ensemble for role in ROLES}
    clash = sorted(p.name for p in present if p.name in ours)
    if not clash or force:
        return [p for p in present if p.name not in ours], 1
    served = active_version(output, ensemble)
    if served is None or not versions(output, ensemble):
        raise RepositoryError(
            f"{output} holds {', '.join(clash)} written without versions; pass {option('--force', 'force=True')} "
            f"to replace them, or {option('--name', 'TritonOptions(name=...)')} another name"
        )
    before = set(read_version(output, ensemble, served).models)
    if before < new and new - before == {f"{ensemble}_normalise", f"{ensemble}_pixels"}:
        raise RepositoryError(
            f"version {served} of {ensemble} was written before repositories had the pixels-only entry point "
            f"({ensemble}_pixels, which dgla-client uses by default), and a version changes files, not models (a "
            "rollback could not unserve it): write this graph under another "
            f"{option('--name', 'TritonOptions(name=...)')}, or pass {option('--force', 'force=True')} to replace "
            f"{ensemble} (its earlier versions go)"
        )
    if before != new:
        raise RepositoryError(
            f"version {served} of {ensemble} is served by {', '.join(sorted(before))}, this graph by "
            f"{', '.join(sorted(new))}: a version changes files, not models; use another "
            f"{option('--name', 'TritonOptions(name=...)')}, or {option('--force', 'force=True')} to replace it"
        )
    return present, next_version(output, ensemble)
