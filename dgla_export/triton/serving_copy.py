"""The serving copy: a repository as the pip-installed Triton can load it.

That Triton has the Python backend and no other. Models it can run as written (Python models,
ensembles) are linked unchanged; a model whose backend it lacks runs under the Python backend with
the same runtime, name, inputs, outputs, batching and instances (``onnxruntime_onnx`` through ONNX
Runtime; ``openvino`` through OpenVINO; on a GPU with TensorRT, a ``tensorrt_plan`` through this
package's engine runner; a ``dali`` pipeline through DALI, with CPU operators where there is no
GPU). The user's repository stays standard, for the official container.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

from dgla_export.errors import ServeError
from dgla_export.install import install_command
from dgla_export.runtimes.availability import cuda_device_problem, tensorrt_problem
from dgla_export.runtimes.openvino import openvino_problem
from dgla_export.triton.versions import (
    LABELS,
    Version,
    VersionError,
    active_version,
    ensembles,
    read_version,
    verify,
)

__all__ = ["serving_repository"]

MODELS = Path(__file__).parent / "models"
ONNXRUNTIME_MODEL = MODELS / "onnxruntime_model.py"
TENSORRT_MODEL = MODELS / "tensorrt_model.py"
OPENVINO_MODEL = MODELS / "openvino_model.py"
DALI_MODEL = MODELS / "dali_model.py"


def _pb():
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def _read_config(folder: Path, text: str | None = None):
    """``folder``'s config, or ``text`` (an earlier version's, from its manifest) in its place."""
    from google.protobuf import text_format

    try:
        return text_format.Parse(text or (folder / "config.pbtxt").read_text(), _pb().ModelConfig())
    except (text_format.ParseError, UnicodeDecodeError) as err:
        raise ServeError(f"{folder / 'config.pbtxt'} does not parse with Triton's schema: {err}") from err


def _served_versions(repository: Path, chosen: dict[str, int]) -> list[Version]:
    """Every version to serve (those ``chosen``, else the one each ensemble's config pins), its files
    checked against its manifest (and, served as the configs say, its configs and labels): what
    Triton loads is what was written. An ensemble neither with a version manifest nor of a served
    version is refused. The chosen
    ones are returned."""
    picked = []
    try:
        held = set(ensembles(repository))
        unknown = sorted(set(chosen) - held)
        if unknown:
            raise ServeError(
                f"{repository} has no versioned ensemble {unknown[0]!r} (it has: {', '.join(sorted(held))})"
            )
        owned: set[str] = set()  # the models of the versions served (NAME_pixels is NAME's)
        for name in sorted(held):
            number = chosen.get(name) or active_version(repository, name)
            if number is None:
                raise ServeError(f"{name}'s config pins no version; `dgla-export versions {repository}` lists them")
            version = read_version(repository, name, number)
            verify(repository, version, configs=name not in chosen)
            owned.update(version.configs)
            if name in chosen:
                picked.append(version)
        for folder in sorted(repository.glob("*/config.pbtxt")):
            if 'platform: "ensemble"' in folder.read_text(errors="replace") and folder.parent.name not in owned:
                raise ServeError(
                    f"{folder.parent.name} has no version manifest, so nothing says its files are those written: write "
                    "it again with `dgla-export triton`"
                )
    except VersionError as err:
        raise ServeError(str(err)) from err
    return picked


def _write_config(folder: Path, config) -> None:
    from google.protobuf import text_format

    (folder / "config.pbtxt").write_text(text_format.MessageToString(config))


def _as_python_model(source: Path, target: Path, config, model_file: str, runner: Path) -> None:
    """``target``: the model in ``source`` served by the Python backend running ``runner``."""
    accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    if accelerators:
        from google.protobuf import json_format

        listed = [json_format.MessageToDict(a, preserving_proto_field_name=True) for a in accelerators]
        config.parameters["gpu_execution_accelerator"].string_value = json.dumps(listed)
    config.ClearField("optimization")
    default_file = config.default_model_filename or model_file
    config.platform, config.backend, config.default_model_filename = "", "python", ""
    target.mkdir()
    for entry in source.iterdir():
        if entry.is_dir() and entry.name.isdigit():
            (target / entry.name).mkdir()
            for file in entry.iterdir():  # the model file under the name the runner reads, and what lies beside it
                name = model_file + file.name[len(default_file) :] if file.name.startswith(default_file) else file.name
                (target / entry.name / name).symlink_to(file.resolve())
            shutil.copyfile(runner, target / entry.name / "model.py")
        elif entry.name != "config.pbtxt":
            (target / entry.name).symlink_to(entry.resolve())
    _write_config(target, config)


def serving_repository(
    repository: Path, target: Path, *, gpu: bool | None = None, versions: dict[str, int] | None = None
) -> dict[str, str]:
    """Fill ``target`` with what this server can load; returns how each model runs. ``versions``:
    ensembles to serve at another version than the repository's configs name (the repository is
    left as it is)."""
    gpu = cuda_device_problem() is None if gpu is None else gpu
    chosen = _served_versions(repository, versions or {})
    replaced = {model: text for version in chosen for model, text in version.configs.items()}
    folders = sorted(p for p in repository.iterdir() if (p / "config.pbtxt").is_file())
    if not folders:
        raise ServeError(f"{repository} holds no model (no */config.pbtxt); write one with `dgla-export triton`")
    target.mkdir(parents=True)
    how: dict[str, str] = {}
    for folder in folders:
        config = _read_config(folder, replaced.get(folder.name))
        kind = config.platform or config.backend
        if not gpu:
            for group in config.instance_group:
                if group.kind == _pb().ModelInstanceGroup.KIND_GPU:
                    group.kind = _pb().ModelInstanceGroup.KIND_CPU
                    group.ClearField("gpus")
        if kind in ("onnxruntime_onnx", "onnxruntime"):
            _as_python_model(folder, target / folder.name, config, "model.onnx", ONNXRUNTIME_MODEL)
            how[folder.name] = "ONNX Runtime (Python backend)"
        elif kind == "openvino":
            problem = openvino_problem()
            if problem:
                raise ServeError(f"{folder.name} is served by OpenVINO, which cannot run here: {problem}")
            _as_python_model(folder, target / folder.name, config, "model.onnx", OPENVINO_MODEL)
            how[folder.name] = "OpenVINO, CPU (Python backend)"
        elif kind in ("tensorrt_plan", "tensorrt"):
            problem = tensorrt_problem() if gpu else "no CUDA GPU is used"
            if problem:
                raise ServeError(
                    f"{folder.name} is a TensorRT engine, which cannot run here ({problem}); serve a repository "
                    "written without --engine, or run this on the GPU machine the engine was built for"
                )
            _as_python_model(folder, target / folder.name, config, "model.plan", TENSORRT_MODEL)
            how[folder.name] = "TensorRT engine (Python backend)"
        elif kind == "dali":
            if importlib.util.find_spec("nvidia.dali") is None:
                raise ServeError(
                    f"{folder.name} is a DALI pipeline, and NVIDIA DALI is not installed here: "
                    + install_command("dali")
                )
            _as_python_model(folder, target / folder.name, config, "model.dali", DALI_MODEL)
            how[folder.name] = f"DALI pipeline, {'GPU' if gpu else 'CPU'} operators (Python backend)"
        elif kind in ("python", "ensemble"):
            if gpu and folder.name not in replaced:
                (target / folder.name).symlink_to(folder.resolve())
            else:
                shutil.copytree(folder, target / folder.name, symlinks=True)
                _write_config(target / folder.name, config)
            how[folder.name] = "Python backend" if kind == "python" else "ensemble"
        else:
            raise ServeError(f"{folder.name}: backend {kind!r} is not one this server has or can stand in for")
    for version in chosen:  # the class names it was written with
        for model in version.configs:
            labels = target / model / LABELS
            if labels.exists() or labels.is_symlink():
                labels.unlink()
                labels.write_text(version.labels)
    return how
