"""dgla-client against a real KServe-v2 server on loopback (no mocked server)."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dgla_export.triton.client import ClientError, classify, main

# kserve and tritonclient register the same `inference.*` protobuf symbols: the server runs in
# its own process, so this one only checks that kserve is installed.
if importlib.util.find_spec("kserve") is None:
    pytest.skip("kserve (test-only v2 server) is not installed", allow_module_level=True)

SERVER = Path(__file__).with_name("v2_server.py")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_onnx):
    http_port, grpc_port = _free_port(), _free_port()
    process = subprocess.Popen(
        [sys.executable, str(SERVER), str(tiny_onnx["fp32"]), str(http_port), str(grpc_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"v2 server exited: {process.stderr.read()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", grpc_port), timeout=1):
                break
        except OSError:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("v2 server did not open its gRPC port within 60 s")
    time.sleep(1.0)
    yield f"127.0.0.1:{grpc_port}", f"127.0.0.1:{http_port}"
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture(scope="module")
def image_files(images, tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    paths = []
    for name, image in images[:4]:
        paths.append(folder / f"{name}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


def _local_probs(tiny_onnx, image_files, tiny) -> np.ndarray:
    from dgla_export.preprocess import load_image, preprocess_batch
    from dgla_export.runtimes.onnxruntime import create_session

    tensors = preprocess_batch([load_image(p) for p in image_files], tiny.config)
    feed = dict(zip(tiny.config.input_names, (t.numpy() for t in tensors), strict=True))
    return create_session(tiny_onnx["fp32"], "cpu").run(["probs"], feed)[0]


@pytest.mark.parametrize("model", ["dgla_onnx", "dgla"])
def test_serving_parity_over_grpc(server, tiny_onnx, image_files, tiny, model) -> None:
    served = classify(image_files, url=server[0], model=model, protocol="grpc", base_model="dgla_tiny")
    local = _local_probs(tiny_onnx, image_files, tiny)
    err = np.abs(served - local).max()
    assert err <= 1e-6, f"{model}: served vs local ONNX Runtime probs differ by {err:.2e}"


def test_cli_prints_class_and_top_k(server, image_files, capsys) -> None:
    assert main([*map(str, image_files[:2]), "--url", server[0], "--model", "dgla", "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(line.count("(") == 1 for line in lines)


def test_clear_errors(server, image_files) -> None:
    with pytest.raises(ClientError, match=r"not ready|failed"):
        classify(image_files[:1], url=server[0], model="dgla_trt", protocol="grpc")
    with pytest.raises(ClientError, match="did not answer within 1 s"):
        classify(image_files[:1], url=server[0], model="dgla_slow", protocol="grpc", timeout=1)
    with pytest.raises(ClientError, match=r"answered probs of shape \(6,\)"):
        classify(image_files[:2], url=server[0], model="dgla_bad_shape", protocol="grpc")
    with pytest.raises(ClientError, match="no Triton server answers"):
        classify(image_files[:1], url=f"127.0.0.1:{_free_port()}", model="dgla", protocol="grpc", timeout=3)
