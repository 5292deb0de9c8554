"""Write a Triton model repository for an exported graph (and optionally a TensorRT engine).

Configs are built as Triton's own protobuf (``tritonclient``'s ``model_config_pb2``), written as
text, parsed back with the same schema, and cross-checked against the ONNX file and the engine
manifest before anything is written. The whole repository is written to a temporary folder
and renamed into place.
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
from dgla_export.artefacts.manifest import EngineManifest, manifest_path, verify_engine_file
from dgla_export.errors import UserError, option
from dgla_export.io import check_output_folder, replace_folder, sha256_file
from dgla_export.models.config import ModelConfig
from dgla_export.preprocess import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, Preprocessing
from dgla_export.runtimes.openvino import HINTS
from dgla_export.triton.admission import admit, served_precision, write_golden
from dgla_export.triton.client import CONFIG_PARAMETER
from dgla_export.triton.versions import active_version, next_version, read_version, versions, write_version

__all__ = ["RepositoryError", "TritonOptions", "write_repository"]

_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "string": "TYPE_STRING", "uint8": "TYPE_UINT8"}
PREPROCESS_MODEL = Path(__file__).parent / "models" / "preprocess_model.py"
GUARD_MODEL = Path(__file__).parent / "models" / "guard_model.py"
PREPROCESS_LIBRARY = tuple(Path(__file__).parent.parent / n for n in ("preprocess.py", "decode.py"))  # both models
DALI_PIPELINE = Path(__file__).parent.parent / "dali_pipeline.py"  # beside model.dali, for dgla-serve
SELFCHECK = Path(__file__).with_name("selfcheck.py")  # standalone: the stdlib and numpy
PREPROCESS_CHOICES = ("fast", "exact", "dali")
COMMAND = "dgla-export triton"
WARMUP_IMAGE = "sample_image"  # in MODEL/warmup/, where Triton looks for warm-up data
WARMUP_ADMITTED = "admitted"
NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
ROLES = ("", "onnx", "openvino", "trt", "preprocess", "guard")  # the models one ensemble owns
RUNTIMES = ("onnxruntime", "openvino")
AUTO_NAME = "auto"  # the ensemble named after the graph (graph_name)


DALI_INSTALL_HINT = "pip install 'dgla-export[dali]'"


class RepositoryError(UserError, ValueError):
    """Inputs that would give Triton a repository it cannot serve correctly."""


@dataclasses.dataclass(frozen=True)
class TritonOptions:
    """Defaults for one H100: dynamic batching towards 8-16, one instance per model.

    ``name`` names the ensemble; the models it runs are ``NAME_onnx`` (or ``NAME_openvino``),
    ``NAME_trt``, ``NAME_preprocess`` and ``NAME_guard``. Models of other names already in the
    repository stay (a repository holds several models: ``add``).

    ``runtime`` ``openvino`` serves the graph with Triton's OpenVINO backend on the CPU instead of
    ONNX Runtime, with OpenVINO's ``openvino_hint`` and, with ``openvino_bf16``, BF16 compute (for a
    CPU with native BF16: AVX512_BF16 or AMX)."""

    name: str = "dgla"
    runtime: str = "onnxruntime"
    openvino_hint: str = "latency"
    openvino_bf16: bool = False

    max_batch_size: int | None = None  # default: the ONNX graph's (or the engine's) maximum batch
    preferred_batch_sizes: tuple[int, ...] = (8, 16)
    max_queue_delay_us: int = 200
    # Overload: a request that waited queue_timeout_s, or found max_queue_size requests ahead of it,
    # is rejected with a status the client reports, instead of piling up in memory. Given the
    # measured capacity and the clients' deadline, ``sized`` sets queue, timeout and batch instead.
    max_queue_size: int = 16
    queue_timeout_s: float = 10.0
    capacity_pairs_s: float | None = None
    deadline_s: float | None = None
    instances: int = 1
    kind: str = "KIND_GPU"
    preprocess_instances: int = 4
    ort_tensorrt_fp16: bool = False
    preprocess: str = "fast"  # fast or exact (Python backend), or dali (DALI backend, behind dgla_guard)
    max_pixels: int = DEFAULT_MAX_PIXELS  # images announcing more are refused before decoding
    max_bytes: int = DEFAULT_MAX_BYTES  # larger encoded images are refused unread

    def __post_init__(self) -> None:
        if not NAME.fullmatch(self.name):
            raise RepositoryError(
                f"model name {self.name!r}: use lower-case letters, digits and _, starting with a letter"
            )
        if (self.capacity_pairs_s is None) != (self.deadline_s is None):
            raise RepositoryError(
                f"sizing the queue needs both {option('--capacity', 'capacity_pairs_s')} and "
                f"{option('--deadline', 'deadline_s')}"
            )
        if self.capacity_pairs_s is not None and (self.capacity_pairs_s <= 0 or self.deadline_s <= 0):
            raise RepositoryError(
                f"capacity and deadline must be > 0, got {self.capacity_pairs_s} and {self.deadline_s}"
            )
        if self.max_queue_size < 1 or self.queue_timeout_s <= 0:
            raise RepositoryError(
                f"the queue needs a size >= 1 and a timeout > 0 s, got {self.max_queue_size} and {self.queue_timeout_s}"
            )
        if self.runtime not in RUNTIMES:
            raise RepositoryError(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if self.openvino_hint not in HINTS:
            raise RepositoryError(f"the OpenVINO hint must be one of {', '.join(HINTS)}, got {self.openvino_hint!r}")
        if self.runtime != "openvino" and (self.openvino_bf16 or self.openvino_hint != "latency"):
            raise RepositoryError(
                f"the OpenVINO settings need {option('--runtime openvino', 'runtime=' + repr('openvino'))}"
            )

    def sized(self, graph_max: int) -> TritonOptions:
        """With a measured capacity ``R`` (answered pairs per second) and the clients' deadline ``D``:
        the batch and queue that keep every request inside the deadline. A request waits at most the
        queue timeout ``T``, then for the batch in flight and its own (``B / R`` each), so
        ``T = 0.9 D - 2 B / R`` (a tenth of the deadline left for preprocessing and the network);
        a batch takes at most a quarter of the deadline (``B <= R D / 4``); the queue holds what
        drains within ``T`` (``Q = R T``). Without them, these options as they are."""
        if self.capacity_pairs_s is None or self.deadline_s is None:
            return self
        rate, deadline = self.capacity_pairs_s, self.deadline_s
        batch = max(1, min(self.max_batch_size or graph_max, int(rate * deadline / 4)))
        timeout = 0.9 * deadline - 2 * batch / rate
        if timeout <= 0:
            raise RepositoryError(
                f"at {rate:g} pairs/s one pair takes {1 / rate:.1f} s: no queue keeps a {deadline:g} s deadline; "
                "give the clients a longer --deadline or serve on faster hardware"
            )
        return dataclasses.replace(
            self, max_batch_size=batch, max_queue_size=max(1, int(rate * timeout)), queue_timeout_s=round(timeout, 3)
        )

    def model(self, role: str) -> str:
        """The name of the ensemble (role ``""``) or of one of its models (:data:`ROLES`)."""
        return f"{self.name}_{role}" if role else self.name


def _graph_io(path: Path) -> tuple[dict[str, tuple[str, list[int]]], dict[str, tuple[str, list[int]]], dict[str, str]]:
    """Inputs and outputs as name -> (dtype, dims without batch), and the metadata."""
    report = inspect_graph(load_graph(path))

    def specs(tensors) -> dict[str, tuple[str, list[int]]]:
        return {t.name: (t.dtype, [int(d) for d in t.shape[1:]]) for t in tensors}

    return specs(report.inputs), specs(report.outputs), report.metadata


def _tensor(message, name: str, dtype: str, dims: list[int]):
    message.name = name
    message.data_type = _data_type(dtype)
    message.dims.extend(dims)
    return message


def _data_type(dtype: str) -> int:
    """Triton's DataType for a graph dtype name (or "string" for encoded bytes)."""
    return getattr(_pb(), _DTYPES[dtype])


def _pb():
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def _runtime_config(
    name: str, platform: str, filename: str, inputs, outputs, max_batch: int, options: TritonOptions, int8: bool = False
):
    pb = _pb()
    config = pb.ModelConfig(name=name, max_batch_size=max_batch, default_model_filename=filename)
    if platform == "openvino":  # a backend, not a platform
        config.backend = platform
        config.parameters["PERFORMANCE_HINT"].string_value = options.openvino_hint.upper()
        if options.openvino_bf16:
            config.parameters["HINT_BF16"].string_value = "YES"
    else:
        config.platform = platform
    for input_name, (dtype, dims) in inputs.items():
        _tensor(config.input.add(), input_name, dtype, dims)
    for output_name, (dtype, dims) in outputs.items():
        tensor = _tensor(config.output.add(), output_name, dtype, dims)
        if output_name == "probs":
            tensor.label_filename = "labels.txt"
    config.dynamic_batching.preferred_batch_size.extend(b for b in options.preferred_batch_sizes if b <= max_batch)
    _bounded_queue(config, options, options.max_queue_delay_us)
    kind = "KIND_CPU" if platform == "openvino" else options.kind
    config.instance_group.add(count=options.instances, kind=getattr(pb.ModelInstanceGroup, kind))
    warmup = config.model_warmup.add(name="one_pair", batch_size=1)
    for input_name, (dtype, dims) in inputs.items():
        data = warmup.inputs[input_name]
        data.data_type = _data_type(dtype)
        data.dims.extend(dims)
        data.random_data = True
    if platform == "onnxruntime_onnx" and options.ort_tensorrt_fp16:
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        # A Q/DQ graph carries its scales: TensorRT runs it in INT8 (float layers in FP16).
        accelerator.parameters["precision_mode"] = "INT8" if int8 else "FP16"
    return config


def _image_input(message, dali: bool, warmup_bytes: int):
    """The encoded image: one BYTES element for the Python backend, a uint8 vector for DALI's."""
    dtype, dims = ("uint8", [-1]) if dali else ("string", [1])
    _tensor(message.input.add(), "image", dtype, dims)
    warmup = message.model_warmup.add(name="one_image", batch_size=1)
    image = warmup.inputs["image"]
    image.data_type = _data_type(dtype)
    image.dims.append(warmup_bytes if dali else 1)
    image.input_data_file = WARMUP_IMAGE
    return warmup


def _bounded_queue(config, options: TritonOptions, delay_us: int) -> None:
    """A queue that rejects, with a status the client reports, what finds it full or waits too long:
    on the runtime model (where requests wait for the model) and on the ensemble's first step (so a
    flood is turned away at the door instead of piling up there)."""
    config.dynamic_batching.max_queue_delay_microseconds = delay_us
    policy = config.dynamic_batching.default_queue_policy
    policy.timeout_action = _pb().ModelQueuePolicy.REJECT
    policy.default_timeout_microseconds = round(options.queue_timeout_s * 1e6)
    policy.max_queue_size = options.max_queue_size


def _preprocess_config(inputs, max_batch: int, options: TritonOptions, metadata: dict[str, str], warmup_bytes: int):
    pb = _pb()
    dali = options.preprocess == "dali"
    config = pb.ModelConfig(
        name=options.model("preprocess"), backend="dali" if dali else "python", max_batch_size=max_batch
    )
    # An ensemble cannot be warmed up itself; warming its preprocessing step with a real encoded
    # image loads the decoder before the first request instead of during it.
    warmup = _image_input(config, dali, warmup_bytes)
    for input_name, (dtype, dims) in inputs.items():
        _tensor(config.output.add(), input_name, dtype, dims)
    recipe = Preprocessing.of(
        ModelConfig.from_dict(json.loads(metadata["config"])),
        "fast" if dali else options.preprocess,
        options.max_pixels,
        options.max_bytes,
    )
    for key, value in recipe.to_parameters().items():
        config.parameters[key].string_value = value
    if dali:  # the recipe stays in the parameters for dgla-serve's stand-in; the limit is dgla_guard's
        config.parameters["method"].string_value = "dali"
        del config.parameters["max_pixels"], config.parameters["max_bytes"]
        _tensor(config.input.add(), "admitted", "float32", [1])
        admitted = warmup.inputs["admitted"]
        admitted.data_type, admitted.input_data_file = _data_type("float32"), WARMUP_ADMITTED
        admitted.dims.append(1)
        config.instance_group.add(count=1, kind=getattr(pb.ModelInstanceGroup, options.kind))
    else:
        config.instance_group.add(count=options.preprocess_instances, kind=pb.ModelInstanceGroup.KIND_CPU)
        _bounded_queue(config, options, 0)  # the ensemble's door (behind dgla_guard with DALI)
    return config


def _guard_config(max_batch: int, options: TritonOptions, warmup_bytes: int):
    """``dgla_guard``: refuses, before DALI decodes it, an image over a limit or one DALI would read differently."""
    pb = _pb()
    config = pb.ModelConfig(name=options.model("guard"), backend="python", max_batch_size=max_batch)
    _image_input(config, True, warmup_bytes)
    _tensor(config.output.add(), "admitted", "float32", [1])
    config.instance_group.add(count=2, kind=pb.ModelInstanceGroup.KIND_CPU)
    _bounded_queue(config, options, 0)  # the ensemble's door
    config.parameters["max_pixels"].string_value = str(options.max_pixels)
    config.parameters["max_bytes"].string_value = str(options.max_bytes)
    return config


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


def _ensemble_config(runtime: str, inputs, outputs, max_batch: int, options: TritonOptions):
    pb = _pb()
    dali = options.preprocess == "dali"
    config = pb.ModelConfig(name=options.model(""), platform="ensemble", max_batch_size=max_batch)
    _tensor(config.input.add(), "image", *(("uint8", [-1]) if dali else ("string", [1])))
    for output_name, (dtype, dims) in outputs.items():
        tensor = _tensor(config.output.add(), output_name, dtype, dims)
        if output_name == "probs":
            tensor.label_filename = "labels.txt"
    if dali:
        guard = config.ensemble_scheduling.step.add(model_name=options.model("guard"), model_version=-1)
        guard.input_map["image"] = "image"
        guard.output_map["admitted"] = "_admitted"
    pre = config.ensemble_scheduling.step.add(model_name=options.model("preprocess"), model_version=-1)
    pre.input_map["image"] = "image"
    if dali:
        pre.input_map["admitted"] = "_admitted"
    run = config.ensemble_scheduling.step.add(model_name=runtime, model_version=-1)
    for input_name in inputs:
        pre.output_map[input_name] = f"_{input_name}"
        run.input_map[input_name] = f"_{input_name}"
    for output_name in outputs:
        run.output_map[output_name] = output_name
    return config


def _check_engine(manifest: EngineManifest, inputs, max_batch: int) -> None:
    if set(manifest.inputs) != set(inputs):
        raise RepositoryError(f"engine inputs {sorted(manifest.inputs)} differ from the ONNX graph's {sorted(inputs)}")
    for name, (_, dims) in inputs.items():
        if list(manifest.inputs[name]["max"][1:]) != dims:
            raise RepositoryError(f"engine input {name} has dims {manifest.inputs[name]['max'][1:]}, the graph {dims}")
    if max_batch > manifest.batch_profile.max:
        raise RepositoryError(
            f"max_batch_size {max_batch} exceeds the engine profile's maximum {manifest.batch_profile.max}; "
            "lower --max-batch-size or rebuild the engine with a larger --batch"
        )


def _parse_back(text: str):
    from google.protobuf import text_format

    try:
        return text_format.Parse(text, _pb().ModelConfig())
    except text_format.ParseError as err:
        raise RepositoryError(f"generated config does not parse with Triton's schema: {err}") from err


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
    options: TritonOptions = TritonOptions(),
    validation: Path | None = None,
    unvalidated: bool = False,
    force: bool = False,
    add: bool = False,
) -> tuple[int, dict[str, str], bool]:
    """Write ``output`` (NAME_onnx, or NAME_openvino with ``options.runtime`` openvino,
    NAME_preprocess, NAME, and NAME_trt given an engine; NAME is ``options.name``, or with ``auto``
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
        onnx_name: _runtime_config(
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
        _check_engine(manifest, inputs, trt_max)
        runtime, max_batch = options.model("trt"), trt_max
        configs[runtime] = _runtime_config(runtime, "tensorrt_plan", "model.plan", inputs, outputs, trt_max, options)
    warmup_image = _warmup_image()
    preprocess, guard, ensemble = options.model("preprocess"), options.model("guard"), options.model("")
    configs[preprocess] = _preprocess_config(inputs, max_batch, options, metadata, len(warmup_image))
    if dali:
        configs[guard] = _guard_config(max_batch, options, len(warmup_image))
    configs[ensemble] = _ensemble_config(runtime, inputs, outputs, max_batch, options)
    for name in (onnx_name, options.model("trt"), ensemble):  # what a client needs to know of the model
        if name in configs:
            configs[name].parameters[CONFIG_PARAMETER].string_value = metadata["config"]
    admission = admit(onnx_path, digest, validation, unvalidated=unvalidated)
    kept, version = _kept_models(output, options.model(""), set(configs), force) if add else ([], 1)
    _serve_version(configs, version)
    from google.protobuf import text_format

    texts = {name: text_format.MessageToString(config) for name, config in configs.items()}
    for name, text in texts.items():
        if _parse_back(text) != configs[name]:
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
        for name in (onnx_name, options.model("trt"), ensemble):
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
            precision=served_precision(metadata, options.openvino_bf16),
            tolerances=json.loads(metadata["config"])["tolerances"],
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


def _serve_version(configs: dict, version: int) -> None:
    """Every model of the ensemble loads exactly ``version``, and the ensemble's steps ask for it."""
    for config in configs.values():
        config.version_policy.specific.versions.append(version)
        for step in config.ensemble_scheduling.step:
            step.model_version = version


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
    if before != new:
        raise RepositoryError(
            f"version {served} of {ensemble} is served by {', '.join(sorted(before))}, this graph by "
            f"{', '.join(sorted(new))}: a version changes files, not models; use another "
            f"{option('--name', 'TritonOptions(name=...)')}, or {option('--force', 'force=True')} to replace it"
        )
    return present, next_version(output, ensemble)
