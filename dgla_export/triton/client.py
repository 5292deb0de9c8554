"""Classify images through a running Triton (KServe v2 protocol) server.

Every image is its own request and up to ``concurrency`` are in flight at once: the server's
dynamic batcher merges them into batches, and an image that cannot be read fails alone while the
others are answered. The served model says what it is (its inputs, their sizes, its class names:
:func:`served_config`). What leaves this machine, by the model asked for:

- the ensemble NAME, by default (``send="pixels"``): its pixels-only entry point ``NAME_pixels``
  gets only what the model sees: the photo decoded, oriented and colour-managed here by the code
  the server's ``NAME_preprocess`` runs, its centre square resized to each input, as 16-bit pixels
  (no container, no metadata, no file name; a DICOM whose pixels may show the patient is not sent);
- with ``send="image"``, NAME itself gets the photo's bytes, de-identified first
  (:mod:`dgla_export.deidentify`: no EXIF, XMP, text chunks or DICOM patient module): the thin
  client's way, for servers that should see the photo as taken;
- raw models (NAME_onnx, NAME_trt) get the normalised float tensors.
"""

from __future__ import annotations

import dataclasses
import queue
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dgla_export.errors import UserError, option
from dgla_export.models.config import ModelConfig
from dgla_export.preprocess import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageError, ImageTooLargeError, Limits
from dgla_export.triton.normalise import PIXELS_METHOD
from dgla_export.triton.security import API_KEY_ENV, ClientSecurity

Headers = dict[str, str] | None  # sent with every request: the inference key, where one is asked for

__all__ = [
    "CONFIG_PARAMETER",
    "MAP_OUTPUTS",
    "SEND",
    "SERVED_PARAMETER",
    "ClientError",
    "Prediction",
    "ServedModel",
    "classify",
    "served_config",
    "served_model",
]

SEND = ("pixels", "image")  # what the client sends an ensemble: the model's pixels, or the photo's bytes
PIXELS_ENTRY = "_pixels"  # NAME_pixels: the ensemble NAME's entry point for 16-bit pixels
MAP_OUTPUTS = {"top1": ("cam_top1",), "all": ("cam_top1", "cam")}  # what classify(maps=...) asks for
# The parameter on a served model that holds its ModelConfig record (written by the repository
# writer; here, so that the client imports nothing of the writer's: no onnx on a reception PC)
CONFIG_PARAMETER = "model_config"
SERVED_PARAMETER = "served_graph"  # ... and the one that identifies the graph it runs (ServedModel)


class ClientError(UserError, RuntimeError):
    """The server is down, slow, missing the model, or answered with the wrong shape."""


@dataclasses.dataclass(frozen=True)
class ServedModel:
    """What answered, as the served repository records it: the model asked for (Triton's name and
    the version it serves) and the graph it runs (its digest, precision, the checkpoint it was
    exported from, the tool that wrote it). A result filed for a dermatologist names all of it."""

    name: str
    version: str
    model_name: str
    precision: str
    checkpoint_sha256: str
    graph_sha256: str
    tool: str

    @classmethod
    def from_parameter(cls, name: str, text: str) -> ServedModel:
        import json

        record = json.loads(text)
        return cls(name=name, **{field.name: str(record[field.name]) for field in dataclasses.fields(cls)[1:]})


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One image's answer: probabilities (and, when asked, class activation maps), or the reason
    it has none. Maps are raw: normalise each before showing it."""

    image: Path
    probs: np.ndarray | None
    error: str | None = None
    cam_top1: np.ndarray | None = None  # (h, w): the top-1 class's map (maps="top1" or "all")
    cam: np.ndarray | None = None  # (classes, h, w): every class's (maps="all")
    # The served model's config (class names, inputs and their sizes), as its repository records it
    config: ModelConfig | None = dataclasses.field(default=None, repr=False, compare=False)
    served: ServedModel | None = dataclasses.field(default=None, repr=False, compare=False)  # None: not recorded

    @property
    def classes(self) -> tuple[str, ...]:
        return self.config.class_names if self.config is not None else ()

    def labelled_maps(self, which: Literal["top1", "all"] = "top1") -> list[tuple[str, np.ndarray]]:
        """The maps to show, each with its label (class and probability): the predicted class's,
        then with ``all`` every other class's, most probable first."""
        if self.probs is None or self.cam_top1 is None or (which == "all" and self.cam is None):
            raise ClientError(f"{self.image}: no maps were answered (classify with maps={which!r})")
        top1 = int(np.argmax(self.probs))
        maps = [(top1, self.cam_top1)]
        if which == "all":
            maps += [(int(c), self.cam[c]) for c in np.argsort(self.probs)[::-1] if c != top1]  # type: ignore[index]
        return [(f"{self.classes[c]} {self.probs[c]:.2f}", cam) for c, cam in maps]


def _short(err: object, limit: int = 300) -> str:
    """Server errors can echo the request (megabytes of image bytes): keep the gist."""
    text = err.message() if hasattr(err, "message") and callable(err.message) else str(err)
    return text if len(text) <= limit else text[:limit] + " ..."


def _client(url: str, protocol: str, timeout: float, concurrency: int, security: ClientSecurity) -> tuple[Any, Any]:
    security.check_destination(url)
    if protocol == "grpc":
        import tritonclient.grpc as module

        return module.InferenceServerClient(url=url, **security.grpc_options()), module  # type: ignore[arg-type]
    if security.ssl:
        raise ClientError("Triton's HTTP endpoint has no TLS: use gRPC (--protocol grpc) for --ssl")
    try:
        import tritonclient.http as module
    except ImportError as err:  # tritonclient without its [http] extra
        raise ClientError(f"the HTTP client is not installed ({err}); pip install 'tritonclient[http]'") from err
    client = module.InferenceServerClient(
        url=url, connection_timeout=timeout, network_timeout=timeout, concurrency=concurrency
    )
    return client, module


def _input_specs(client: Any, model: str, protocol: str, headers: Headers) -> dict[str, tuple[str, list[int]]]:
    """Input name -> (Triton datatype, shape)."""
    metadata = client.get_model_metadata(model, headers=headers)
    if protocol == "grpc":
        return {i.name: (i.datatype, [int(d) for d in i.shape]) for i in metadata.inputs}
    return {i["name"]: (i["datatype"], [int(d) for d in i["shape"]]) for i in metadata["inputs"]}


def _parameters(client: Any, model: str, protocol: str, headers: Headers = None) -> dict[str, str]:
    """The string parameters of ``model``'s config, as the server reports them."""
    answer = client.get_model_config(model, headers=headers)
    if protocol == "grpc":
        return {key: value.string_value for key, value in answer.config.parameters.items()}
    return {key: value.get("string_value", "") for key, value in answer.get("parameters", {}).items()}


def served_config(client: Any, model: str, protocol: str, url: str, headers: Headers = None) -> ModelConfig:
    """The config record the repository wrote on ``model`` (class names, inputs and sizes)."""
    import json

    text = _parameters(client, model, protocol, headers).get(CONFIG_PARAMETER)
    if not text:
        raise ClientError(
            f"{model} on {url} does not say which model it serves (no {CONFIG_PARAMETER!r} parameter); "
            "rewrite its repository with this version's `dgla-export triton`"
        )
    return ModelConfig.from_dict(json.loads(text))


def _request_builder(
    module: Any,
    specs: dict[str, tuple[str, list[int]]],
    model: str,
    config: ModelConfig,
    protocol: str,
    preprocess: str = "fast",
    limits: Limits | None = None,
) -> Callable[[Path], list[Any]]:
    """A function: image path -> the request's inputs (one image, batch 1)."""
    from dgla_export.deidentify import deidentify, refuse_burned_in
    from dgla_export.preprocess import Preprocessing, image_size

    limits = limits or Limits()

    if not specs:
        raise ClientError(f"the server reports no inputs for {model}; is it a dgla model?")
    if "image" in specs:  # the ensemble: encoded bytes, preprocessed by the server

        def encoded(path: Path) -> list[Any]:
            limits.check_bytes(path.stat().st_size)
            data = path.read_bytes()
            try:
                width, height = image_size(data)  # an image bomb is refused here, before it is sent
            except ImageError:
                width = height = 0  # no header: deidentify (or, for JPEG, PNG, WebP, the server) says what is wrong
            if width * height > limits.max_pixels:
                megapixels = width * height / 1e6
                raise ImageTooLargeError(
                    f"{width}x{height} pixels ({megapixels:.1f} MP) exceeds --max-pixels {limits.max_pixels:,}"
                )
            data = deidentify(data, limits)
            # Over HTTP, encoded images are not UTF-8 text: they must travel as binary data.
            options = {"binary_data": True} if protocol == "http" else {}
            if specs["image"][0] == "UINT8":  # a DALI ensemble: the bytes as a uint8 vector
                tensor = module.InferInput("image", [1, len(data)], "UINT8")
                tensor.set_data_from_numpy(np.frombuffer(data, dtype=np.uint8)[None], **options)
            else:
                tensor = module.InferInput("image", [1, 1], "BYTES")
                tensor.set_data_from_numpy(np.array([[data]], dtype=np.object_), **options)
            return [tensor]

        return encoded
    recipe = Preprocessing.of(config, preprocess, limits.max_pixels, limits.max_bytes)  # type: ignore[arg-type]

    def shown(path: Path) -> bytes:
        """The file's bytes, for the pixels made of them here: refused over the size limit, and where
        a DICOM says its pixels may show the patient (they would leave as pixels or tensors)."""
        limits.check_bytes(path.stat().st_size)
        data = path.read_bytes()
        refuse_burned_in(data)
        return data

    if all(dtype == "UINT16" for dtype, _ in specs.values()):  # NAME_pixels: only what the model sees
        wanted = {name: [-1, size, size, 3] for name, size in config.input_sizes.items()}
        if {name: [-1, *dims[1:]] for name, (_, dims) in specs.items()} != wanted:
            raise ClientError(f"{model} takes {specs}, not the 16-bit pixels of its config's inputs {wanted}")

        def pixels(path: Path) -> list[Any]:
            inputs = []
            for name, array in zip(config.input_names, recipe.pixels(recipe.decode(shown(path))), strict=True):
                item = module.InferInput(name, [1, *array.shape], "UINT16")
                item.set_data_from_numpy(array[None], **({"binary_data": True} if protocol == "http" else {}))
                inputs.append(item)
            return inputs

        return pixels
    shapes = {name: dims[-1] for name, (_, dims) in specs.items()}
    if shapes != config.input_sizes:
        raise ClientError(f"{model} takes {shapes}, not the inputs its config records {config.input_sizes}")

    def tensors(path: Path) -> list[Any]:
        inputs = []
        for name, array in zip(config.input_names, recipe.apply(recipe.decode(shown(path))), strict=True):
            item = module.InferInput(name, [1, *array.shape], "FP32")
            item.set_data_from_numpy(array[None])
            inputs.append(item)
        return inputs

    return tensors


def _check_server(client: Any, url: str, protocol: str, model: str, security: ClientSecurity) -> None:
    from tritonclient.utils import InferenceServerException

    try:
        client.is_server_live(headers=security.headers(protocol))
    except Exception as err:  # InferenceServerException over gRPC, socket errors over HTTP
        other = "http" if protocol == "grpc" else "grpc"
        tls = (
            "; with TLS: --root-cert for a private CA, --client-cert and --client-key under mutual TLS"
            if security.ssl
            else "; a server with TLS needs --ssl"
        )
        raise ClientError(
            f"no Triton server answers at {url} over {protocol} ({_short(err, 160)}); is it running, and does that "
            f"port speak {protocol}? Triton listens for gRPC on 8001 and HTTP on 8000 by default (--protocol {other})"
            + (tls if protocol == "grpc" else "")
        ) from err
    try:
        ready = client.is_model_ready(model, headers=security.headers(protocol))
    except InferenceServerException as err:  # some servers answer an unknown model with an error
        raise ClientError(f"model {model!r} is not ready on {url}: {_short(err)}") from err
    if not ready:
        raise ClientError(f"model {model!r} is not ready on {url}; check the repository and the server log")


def classify(
    images: Sequence[Path],
    *,
    url: str,
    model: str = "dgla",
    protocol: str = "grpc",
    timeout: float = 30.0,
    concurrency: int = 8,
    preprocess: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    maps: Literal["top1", "all"] | None = None,
    maps_optional: bool = False,
    security: ClientSecurity | None = None,
    send: Literal["pixels", "image"] = "pixels",
) -> list[Prediction]:
    """One :class:`Prediction` per image, in order, from ``model`` on the server at ``url``.

    ``send``, for an ensemble: ``pixels`` (the default) sends its entry point ``NAME_pixels`` only
    the 16-bit pixels the model sees, made here; ``image``, the photo's bytes without their
    metadata, preprocessed on the server as its config says. ``preprocess`` is how images become
    pixels or tensors here (None: as the served repository reads photos, else ``fast``). An image
    above ``max_pixels`` or ``max_bytes`` is refused before it is sent.
    ``maps`` also asks for class activation maps (a repository of a graph exported with
    ``--explain``): the top-1 class's, or every class's too; with ``maps_optional``, only where the
    served graph answers them (else none, without an error). The model's inputs, their sizes and
    its class names come from the repository (each prediction carries that ``config``).
    ``security``: TLS and the inference key (:class:`dgla_export.triton.security.ClientSecurity`).

    Raises :class:`ClientError` for what concerns every image (server down or slow, model
    missing, answers of the wrong shape); an image that cannot be read or decoded gets its error.
    """
    from tritonclient.utils import InferenceServerException

    if send not in SEND:
        raise ClientError(f"send must be one of {', '.join(SEND)}, got {send!r}")
    security = security or ClientSecurity()
    headers = security.headers(protocol)
    asked = model  # what a filed result names (an ensemble's pixels entry point runs the same graph)
    client, module = _client(url, protocol, timeout, concurrency, security)
    try:
        _check_server(client, url, protocol, model, security)
        try:
            specs = _input_specs(client, model, protocol, headers)
            if "image" in specs and send == "pixels":  # the ensemble: only what the model sees, to its entry point
                model = _pixels_entry(client, url, model, headers)
                specs = _input_specs(client, model, protocol, headers)
                if any(dtype != "UINT16" for dtype, _ in specs.values()):  # never the photo under that name
                    raise ClientError(f"{model} on {url} takes {specs}, not 16-bit pixels: it is no pixels entry point")
                # the pixels as the server's image entry point would read the photo (its repository's --preprocess)
                preprocess = preprocess or _parameters(client, model, protocol, headers).get(PIXELS_METHOD, "fast")
            config = served_config(client, model, protocol, url, headers)
            served = _served_model(client, model, protocol, headers, name=asked)
        except InferenceServerException as err:
            if "restricted" not in _short(err).lower():
                raise
            raise ClientError(
                f"{model} on {url} needs its inference key ({_short(err, 160)}): --api-key-file FILE or ${API_KEY_ENV}"
            ) from err
        limits = Limits(max_pixels, max_bytes)
        build = _request_builder(module, specs, model, config, protocol, preprocess or "fast", limits)
        names = ["probs", *MAP_OUTPUTS.get(maps or "", ())]
        names = _check_outputs(client, model, protocol, url, names, headers, maps_optional)
        outputs = [module.InferRequestedOutput(name) for name in names]
        predictions: list[Prediction] = []
        for start in range(0, len(images), concurrency):  # bounded: a folder of images is not sent at once
            chunk = [Path(p) for p in images[start : start + concurrency]]
            predictions += _infer_chunk(client, protocol, model, chunk, build, outputs, timeout, url, headers)
    finally:
        client.close()
    return [dataclasses.replace(p, config=config, served=served) for p in predictions]


def served_model(
    url: str,
    *,
    model: str = "dgla",
    protocol: str = "grpc",
    timeout: float = 30.0,
    security: ClientSecurity | None = None,
) -> ServedModel:
    """What ``model`` on the server at ``url`` runs, as its repository records it: for a caller that
    must name it in what it files (dgla-gateway, before it accepts any photo). Raises
    :class:`ClientError` where the server, the model or the record is missing."""
    security = security or ClientSecurity()
    client, _ = _client(url, protocol, timeout, 1, security)
    try:
        _check_server(client, url, protocol, model, security)
        served = _served_model(client, model, protocol, security.headers(protocol))
    finally:
        client.close()
    if served is None:
        raise ClientError(
            f"{model} on {url} does not record the graph it runs (checkpoint and graph SHA-256), which a filed result "
            "must name: serve a repository written by this version's `dgla-export triton`"
        )
    return served


def _served_model(client: Any, model: str, protocol: str, headers: Headers, name: str = "") -> ServedModel | None:
    """What the repository records of the graph ``model`` runs and of the version it serves; None for a
    repository written before it was recorded."""
    text = _parameters(client, model, protocol, headers).get(SERVED_PARAMETER)
    if not text:
        return None
    return ServedModel.from_parameter(name or model, text)


def _pixels_entry(client: Any, url: str, model: str, headers: Headers) -> str:
    """The ensemble ``model``'s pixels-only entry point, ready on the server."""
    from tritonclient.utils import InferenceServerException

    entry = model + PIXELS_ENTRY
    try:
        ready = client.is_model_ready(entry, headers=headers)
    except InferenceServerException:
        ready = False
    if not ready:
        raise ClientError(
            f"{model} on {url} has no pixels-only entry point ({entry} is not ready): serve a repository written by "
            f"this version's `dgla-export triton`, or send the photo's de-identified bytes with "
            + option("--send image", "send='image'")
        )
    return entry


def _infer_chunk(client, protocol, model, paths, build, outputs, timeout, url, headers) -> list[Prediction]:

    answers: dict[int, Any] = {}  # index -> error text, exception or result
    http_requests: dict[int, Any] = {}
    grpc_answers: queue.Queue = queue.Queue()  # (index, result, error) from the callbacks
    for index, path in enumerate(paths):
        try:
            inputs = build(path)
        except (ImageError, OSError) as err:
            answers[index] = f"cannot read image: {err}"
            continue
        if protocol == "grpc":
            client.async_infer(
                model,
                inputs,
                callback=lambda result, error, i=index: grpc_answers.put((i, result, error)),
                outputs=outputs,
                client_timeout=timeout,
                headers=headers,
            )
        else:
            http_requests[index] = client.async_infer(model, inputs, outputs=outputs, headers=headers)
    for index, request in http_requests.items():
        try:
            answers[index] = request.get_result()
        except Exception as err:  # InferenceServerException, or a socket timeout
            answers[index] = err
    while len(answers) < len(paths):  # gRPC: one callback per request sent
        try:
            index, result, error = grpc_answers.get(timeout=timeout + 5)
        except queue.Empty as err:
            raise ClientError(f"{model} on {url} did not answer within {timeout:g} s") from err
        answers[index] = error if error is not None else result
    return [_prediction(path, answers[i], model, url, timeout) for i, path in enumerate(paths)]


def _prediction(path: Path, answer: Any, model: str, url: str, timeout: float) -> Prediction:
    if isinstance(answer, str):
        return Prediction(path, None, answer)
    if isinstance(answer, Exception):
        text = _short(answer)
        if "deadline" in text.lower() or "timed out" in text.lower() or isinstance(answer, TimeoutError):
            raise ClientError(f"{model} on {url} did not answer within {timeout:g} s") from answer
        if "unavailable" in text.lower() or "connect" in text.lower():
            raise ClientError(f"{model} on {url} failed: {text}") from answer
        return Prediction(path, None, text)
    probs = answer.as_numpy("probs")
    if probs is None or probs.ndim != 2 or probs.shape[0] != 1:
        shape = None if probs is None else probs.shape
        raise ClientError(f"{model} answered probs of shape {shape} for one image, expected (1, classes)")
    maps = {name: answer.as_numpy(name) for name in ("cam_top1", "cam")}
    return Prediction(path, probs[0], **{name: None if m is None else m[0] for name, m in maps.items()})


def _check_outputs(
    client: Any, model: str, protocol: str, url: str, names: Sequence[str], headers: Headers, maps_optional: bool
) -> list[str]:
    """Before any image is sent: ``model`` has every output asked for (the maps, unless optional).
    Returns the outputs to ask for."""
    metadata = client.get_model_metadata(model, headers=headers)
    outputs = [o.name for o in metadata.outputs] if protocol == "grpc" else [o["name"] for o in metadata["outputs"]]
    if maps_optional and not all(name in outputs for name in names):
        names = [name for name in names if not name.startswith("cam")]
    missing = [name for name in names if name not in outputs]
    if missing and missing[0].startswith("cam"):
        raise ClientError(
            f"{model} on {url} answers no class activation maps (outputs {outputs}); serve a repository of a graph "
            "exported with `dgla-export onnx --explain`"
        )
    if missing:
        raise ClientError(f"{model} on {url} has no output {', '.join(missing)} (outputs {outputs})")
    return list(names)
