"""Triton loads a repository from S3, as `dgla-export kubernetes` deploys it: a local S3-compatible
server (moto's server mode, on loopback), the repository URL and the credentials' environment taken
from the written Deployment, the pip-installed tritonserver (the same Triton core's S3 filesystem
as the official container's), and the served answers held to ONNX Runtime's on the same images."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from inputs import as_sent
from PIL import Image

from dgla_export.deploy.manifests import KubernetesOptions, manifests
from dgla_export.triton.client import classify
from dgla_export.triton.repository import TritonOptions, write_repository
from dgla_export.triton.server import SHM_ROOT, TritonInstall
from dgla_export.triton.serving_copy import serving_repository
from triton_repository.serving import free_ports

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("pytriton") is None, reason="needs Triton (pip install '.[serve]')"),
    pytest.mark.skipif(importlib.util.find_spec("moto") is None, reason="needs moto[server] and boto3 (test extra)"),
]
CREDENTIALS = {"access-key-id": "dgla-test-access", "secret-access-key": "dgla-test-secret"}  # the Secret's keys
TOLERANCE = 1e-5


def _wait(url: str, process: subprocess.Popen, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=45)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _environment(options: KubernetesOptions) -> dict[str, str]:
    """The S3 variables of the Deployment's container, the Secret's values filled in."""
    container = manifests(options)["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]
    env = {}
    for variable in container["env"]:
        if variable["name"].startswith("AWS_"):
            secret = variable.get("valueFrom", {}).get("secretKeyRef")
            env[variable["name"]] = CREDENTIALS[secret["key"]] if secret else variable["value"]
    return env


def test_triton_serves_the_repository_from_s3_as_the_deployment_names_it(tiny, tiny_onnx, images, tmp_path) -> None:
    import boto3

    from dgla_export.preprocess import Preprocessing
    from dgla_export.runtimes.onnxruntime import create_session

    repository, copy = tmp_path / "repo", tmp_path / "copy"
    write_repository(tiny_onnx["fp16"], repository, options=TritonOptions(preferred_batch_sizes=(4,)))
    write_repository(tiny_onnx["fp32"], repository, options=TritonOptions(preferred_batch_sizes=(4,)), add=True)
    # what the pip server can run (ONNX Runtime under the Python backend), every link resolved
    serving_repository(repository, tmp_path / "serving", gpu=False)
    shutil.copytree(tmp_path / "serving", copy, symlinks=False)

    s3_port, http, grpc, metrics = free_ports(4)
    endpoint = f"http://127.0.0.1:{s3_port}"
    store = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    server = None
    prefix = f"dgla_s3_test_{os.getpid()}_"
    try:
        assert _wait(f"{endpoint}/moto-api/", store, 30), "moto's S3 server did not start"
        options = KubernetesOptions(storage="s3://clinic-models/dgla/repo", s3_endpoint=endpoint)
        env = _environment(options)
        assert set(env) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}, env
        s3 = boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env["AWS_DEFAULT_REGION"],
        )  # fmt: skip
        s3.create_bucket(Bucket="clinic-models")
        files = [p for p in copy.rglob("*") if p.is_file()]
        for path in files:
            s3.upload_file(str(path), "clinic-models", f"dgla/repo/{path.relative_to(copy)}")

        install = TritonInstall.find()
        backends = install.backend_directory(tmp_path / "backends")
        url = options.repository_url()
        assert url == f"s3://{endpoint}/clinic-models/dgla/repo"
        command = [
            str(install.server), f"--model-repository={url}", f"--backend-directory={backends}",
            f"--backend-config=python,shm-region-prefix-name={prefix}", "--allow-gpu-metrics=false",
            "--http-address=127.0.0.1", f"--http-port={http}", "--grpc-address=127.0.0.1", f"--grpc-port={grpc}",
            "--metrics-address=127.0.0.1", f"--metrics-port={metrics}", "--disable-auto-complete-config",
            "--model-control-mode=none", "--strict-readiness=true",
        ]  # fmt: skip
        log = tmp_path / "tritonserver.log"
        with open(log, "wb") as out:
            server = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env={**install.environment(), **env},
                start_new_session=True,
            )  # fmt: skip
        ready = _wait(f"http://127.0.0.1:{http}/v2/health/ready", server, 240)
        said = log.read_text(errors="replace")
        errors = "\n".join(line for line in said.splitlines() if line.startswith("E"))  # Triton's error lines
        assert ready, f"Triton did not load the repository from S3:\n{errors}\n{said[-2000:]}"
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/models/dgla_onnx", timeout=10) as answer:
            served = json.loads(answer.read())["versions"]
        assert served == ["2"], f"versions served: {served}; the repository's configs name version 2 alone"

        paths = []
        for name, pixels in images[:3]:
            paths.append(tmp_path / f"{name}.png")
            Image.fromarray(pixels).save(paths[-1])
        answers = classify(paths, url=f"127.0.0.1:{grpc}")
        assert all(a.error is None for a in answers), [a.error for a in answers]
        inputs = as_sent(Preprocessing.of(tiny.config, "fast"), paths)  # the client's default: the pixels
        session = create_session(tiny_onnx["fp32"], "cpu")  # version 2, the one served, is the FP32 graph
        local = session.run(["probs"], dict(zip(tiny.config.input_names, inputs, strict=True)))[0]
        err = float(np.abs(np.stack([a.probs for a in answers]) - local).max())
        assert err < TOLERANCE, f"served from S3 vs local ONNX Runtime: {err:.2e}"
        print(f"{len(files)} files from S3; served version 2 answered within {err:.1e} of ONNX Runtime")
    finally:
        if server is not None:
            _stop(server)
        _stop(store)
        for region in Path(SHM_ROOT).glob(f"{prefix}*"):
            region.unlink(missing_ok=True)
