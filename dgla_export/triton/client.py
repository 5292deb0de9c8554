"""``dgla-client``: classify images through a running Triton (KServe v2 protocol) server.

Raw models (dgla_onnx, dgla_trt) get tensors preprocessed here; the ensemble (dgla) gets the
encoded bytes and preprocesses on the server.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ClientError", "classify", "main"]


class ClientError(RuntimeError):
    """The server is down, slow, missing the model, or answered with the wrong shape."""


def _short(err: object, limit: int = 300) -> str:
    """Server errors can echo the request (megabytes of image bytes): keep the gist."""
    text = err.message() if hasattr(err, "message") and callable(err.message) else str(err)
    return text if len(text) <= limit else text[:limit] + " ..."


def _client(url: str, protocol: str, timeout: float) -> tuple[Any, Any]:
    if protocol == "grpc":
        import tritonclient.grpc as module

        return module.InferenceServerClient(url=url), module
    import tritonclient.http as module

    return module.InferenceServerClient(url=url, connection_timeout=timeout, network_timeout=timeout), module


def classify(
    images: Sequence[Path],
    *,
    url: str,
    model: str = "dgla",
    protocol: str = "grpc",
    timeout: float = 30.0,
    base_model: str = "dgla_resnet50",
) -> np.ndarray:
    """Probabilities (N, classes) for ``images`` from ``model`` on the server at ``url``."""
    from tritonclient.utils import InferenceServerException

    client, module = _client(url, protocol, timeout)
    try:
        try:
            client.is_server_live()
        except Exception as err:  # InferenceServerException over gRPC, socket errors over HTTP
            raise ClientError(f"no Triton server answers at {url} ({protocol}): {_short(err)}") from err
        try:
            ready = client.is_model_ready(model)
        except InferenceServerException as err:  # some servers answer an unknown model with an error
            raise ClientError(f"model {model!r} is not ready on {url}: {_short(err)}") from err
        if not ready:
            raise ClientError(f"model {model!r} is not ready on {url}; check the repository and the server log")
        inputs = _inputs(client, module, model, images, base_model, protocol)
        kwargs: dict[str, Any] = {"client_timeout": timeout} if protocol == "grpc" else {}
        try:
            result = client.infer(model, inputs, outputs=[module.InferRequestedOutput("probs")], **kwargs)
        except InferenceServerException as err:
            if "Deadline" in str(err) or "timed out" in str(err).lower():
                raise ClientError(f"{model} on {url} did not answer within {timeout:g} s") from err
            raise ClientError(f"{model} on {url} failed: {_short(err)}") from err
    finally:
        client.close()
    probs = result.as_numpy("probs")
    if probs is None or probs.ndim != 2 or probs.shape[0] != len(images):
        shape = None if probs is None else probs.shape
        raise ClientError(f"{model} answered probs of shape {shape}, expected ({len(images)}, classes)")
    return probs


def _inputs(client: Any, module: Any, model: str, images: Sequence[Path], base_model: str, protocol: str) -> list[Any]:
    metadata = client.get_model_metadata(model)
    if protocol == "grpc":
        specs = {i.name: [int(d) for d in i.shape] for i in metadata.inputs}
    else:
        specs = {i["name"]: [int(d) for d in i["shape"]] for i in metadata["inputs"]}
    if not specs:
        raise ClientError(f"the server reports no inputs for {model}; is it a dgla model?")
    if "image" in specs:  # the ensemble: encoded bytes, one per row
        blobs = np.array([[Path(p).read_bytes()] for p in images], dtype=np.object_)
        tensor = module.InferInput("image", list(blobs.shape), "BYTES")
        # Over HTTP, encoded images are not UTF-8 text: they must travel as binary data.
        tensor.set_data_from_numpy(blobs, **({"binary_data": True} if protocol == "http" else {}))
        return [tensor]
    from dgla_export.models.registry import get_config
    from dgla_export.preprocess import load_image, preprocess_batch

    sides = [dims[-1] for dims in specs.values()]
    config = get_config(base_model, input_size=sides[0], **({"aux_input_size": sides[1]} if len(sides) > 1 else {}))
    if list(specs) != list(config.input_names):
        raise ClientError(f"{model} takes {list(specs)}, not the inputs of {base_model} {list(config.input_names)}")
    tensors = preprocess_batch([load_image(p) for p in images], config)
    inputs = []
    for name, tensor in zip(config.input_names, tensors, strict=True):
        item = module.InferInput(name, list(tensor.shape), "FP32")
        item.set_data_from_numpy(tensor.numpy())
        inputs.append(item)
    return inputs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dgla-client", description=__doc__)
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--url", default="localhost:8001", help="server address (gRPC 8001, HTTP 8000 by default)")
    parser.add_argument("--model", default="dgla", choices=["dgla", "dgla_onnx", "dgla_trt"])
    parser.add_argument("--protocol", default="grpc", choices=["grpc", "http"])
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    args = parser.parse_args(argv)
    from dgla_export.models.config import ISIC2018_CLASSES

    try:
        probs = classify(args.images, url=args.url, model=args.model, protocol=args.protocol, timeout=args.timeout)
    except (ClientError, OSError, ValueError) as err:
        print(f"dgla-client: error: {err}", file=sys.stderr)
        return 2
    for path, row in zip(args.images, probs, strict=True):
        order = np.argsort(row)[::-1][: args.top_k]
        top = [(ISIC2018_CLASSES[i], float(row[i])) for i in order]
        if args.json:
            print(json.dumps({"image": str(path), "class": top[0][0], "probability": top[0][1], "top_k": top}))
        else:
            print(f"{path}: {top[0][0]} {top[0][1]:.3f}  (" + ", ".join(f"{c} {p:.3f}" for c, p in top[1:]) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
