"""The config.pbtxt of each model of a repository, built as Triton's own protobuf
(``tritonclient``'s ``model_config_pb2``) and parsed back with the same schema: the runtime model,
the preprocessing model (and DALI's guard), the ensemble, each with its batching, bounded queue,
instances and warm-up; and the version every model of an ensemble serves."""

from __future__ import annotations

import json

from dgla_export.artefacts.manifest import EngineManifest
from dgla_export.models.config import ModelConfig
from dgla_export.preprocess import Preprocessing
from dgla_export.triton.normalise import NORMALISED, PIXELS_METHOD
from dgla_export.triton.options import RepositoryError, TritonOptions

__all__ = [
    "WARMUP_ADMITTED",
    "WARMUP_IMAGE",
    "check_engine",
    "ensemble_config",
    "guard_config",
    "normalise_config",
    "parse_back",
    "pixel_inputs",
    "pixels_config",
    "preprocess_config",
    "runtime_config",
    "serve_version",
]

_DTYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "string": "TYPE_STRING",
    "uint8": "TYPE_UINT8",
    "uint16": "TYPE_UINT16",
}
WARMUP_IMAGE = "sample_image"  # in MODEL/warmup/, where Triton looks for warm-up data
WARMUP_ADMITTED = "admitted"


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


def runtime_config(
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


def preprocess_config(inputs, max_batch: int, options: TritonOptions, metadata: dict[str, str], warmup_bytes: int):
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


def guard_config(max_batch: int, options: TritonOptions, warmup_bytes: int):
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


def _ensemble(name: str, image_inputs, outputs, max_batch: int):
    """An ensemble's config without steps: its inputs (name -> (dtype, dims)) and the network's outputs."""
    config = _pb().ModelConfig(name=name, platform="ensemble", max_batch_size=max_batch)
    for input_name, (dtype, dims) in image_inputs.items():
        _tensor(config.input.add(), input_name, dtype, dims)
    for output_name, (dtype, dims) in outputs.items():
        tensor = _tensor(config.output.add(), output_name, dtype, dims)
        if output_name == "probs":
            tensor.label_filename = "labels.txt"
    return config


def _network_step(config, runtime: str, inputs, outputs, first, suffix: str = ""):
    """The ensemble's last step: ``runtime`` reads what ``first`` wrote (each input's name and
    ``suffix``), and answers the ensemble's outputs."""
    run = config.ensemble_scheduling.step.add(model_name=runtime, model_version=-1)
    for input_name in inputs:
        first.output_map[f"{input_name}{suffix}"] = f"_{input_name}"
        run.input_map[input_name] = f"_{input_name}"
    for output_name in outputs:
        run.output_map[output_name] = output_name


def ensemble_config(runtime: str, inputs, outputs, max_batch: int, options: TritonOptions):
    """``NAME``: an encoded image in (the thin client's way), preprocessed on the server, then the network."""
    dali = options.preprocess == "dali"
    config = _ensemble(options.model(""), {"image": ("uint8", [-1]) if dali else ("string", [1])}, outputs, max_batch)
    if dali:
        guard = config.ensemble_scheduling.step.add(model_name=options.model("guard"), model_version=-1)
        guard.input_map["image"] = "image"
        guard.output_map["admitted"] = "_admitted"
    pre = config.ensemble_scheduling.step.add(model_name=options.model("preprocess"), model_version=-1)
    pre.input_map["image"] = "image"
    if dali:
        pre.input_map["admitted"] = "_admitted"
    _network_step(config, runtime, inputs, outputs, pre)
    return config


def pixel_inputs(inputs) -> dict[str, tuple[str, list[int]]]:
    """The network's (3, S, S) float inputs as the (S, S, 3) 16-bit pixels a pixels-only client sends."""
    return {name: ("uint16", [dims[1], dims[2], dims[0]]) for name, (_, dims) in inputs.items()}


def normalise_config(inputs, max_batch: int, options: TritonOptions):
    """``NAME_normalise`` (:mod:`.normalise`): 16-bit pixels -> the network's inputs; the door of
    ``NAME_pixels`` (a bounded queue), batched as the network is."""
    pb = _pb()
    config = pb.ModelConfig(
        name=options.model("normalise"), platform="onnxruntime_onnx", max_batch_size=max_batch,
        default_model_filename="model.onnx",
    )  # fmt: skip
    for name, (dtype, dims) in pixel_inputs(inputs).items():
        _tensor(config.input.add(), name, dtype, dims)
    for name, (dtype, dims) in inputs.items():
        _tensor(config.output.add(), f"{name}{NORMALISED}", dtype, dims)
    config.dynamic_batching.preferred_batch_size.extend(b for b in options.preferred_batch_sizes if b <= max_batch)
    _bounded_queue(config, options, options.max_queue_delay_us)
    kind = "KIND_CPU" if options.runtime == "openvino" else options.kind  # beside the network it feeds
    config.instance_group.add(count=1, kind=getattr(pb.ModelInstanceGroup, kind))
    warmup = config.model_warmup.add(name="one_photo", batch_size=1)
    for name, (dtype, dims) in pixel_inputs(inputs).items():
        data = warmup.inputs[name]
        data.data_type, data.random_data = _data_type(dtype), True
        data.dims.extend(dims)
    return config


def pixels_config(runtime: str, inputs, outputs, max_batch: int, options: TritonOptions):
    """``NAME_pixels``: the model's inputs as 16-bit pixels in (nothing else of the photo), normalised
    by ``NAME_normalise``, then the network."""
    config = _ensemble(options.model("pixels"), pixel_inputs(inputs), outputs, max_batch)
    # how its clients make the pixels: as the image entry point's preprocessing reads a photo (DALI's equals exact)
    config.parameters[PIXELS_METHOD].string_value = "fast" if options.preprocess == "fast" else "exact"
    normalise = config.ensemble_scheduling.step.add(model_name=options.model("normalise"), model_version=-1)
    for name in inputs:
        normalise.input_map[name] = name
    _network_step(config, runtime, inputs, outputs, normalise, NORMALISED)
    return config


def check_engine(manifest: EngineManifest, inputs, max_batch: int) -> None:
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


def parse_back(text: str):
    from google.protobuf import text_format

    try:
        return text_format.Parse(text, _pb().ModelConfig())
    except text_format.ParseError as err:
        raise RepositoryError(f"generated config does not parse with Triton's schema: {err}") from err


def serve_version(configs: dict, version: int) -> None:
    """Every model of the ensemble loads exactly ``version``, and the ensemble's steps ask for it."""
    for config in configs.values():
        config.version_policy.specific.versions.append(version)
        for step in config.ensemble_scheduling.step:
            step.model_version = version
