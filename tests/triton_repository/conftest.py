"""One real Triton server for the served tests (``triton_server``): a repository holding every model
they need, each written with ``--add`` under a name of its own, started once a run by dgla-serve
with the admin APIs behind a key. New served tests add their model here (a name and the options
their test needs) instead of starting a server of their own; a server of their own is for what one
server cannot show (TLS, signals, a failing start, restarts).

The tests that use it run on one pytest-xdist worker (tests/conftest.py groups them), one at a
time, so a burst sent to one model meets no other test's load.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from built import once

from dgla_export.triton.repository import TritonOptions, write_repository
from dgla_export.triton.security import ADMIN_KEY_ENV

ADMIN = "shared-server-admin-key-0123456789"
MODELS = Path(__file__).with_name("models")
FAMILY = ("resnet50", "dbi_resnet50", "gla_resnet50", "dgla_resnet50", "arl_cnn50")


def models_of(name: str, runtime: str = "onnx") -> set[str]:
    """The models ``dgla-export triton`` writes for the ensemble ``name`` (no engine, no DALI)."""
    return {name, *(f"{name}_{role}" for role in (runtime, "preprocess", "normalise", "pixels"))}


@dataclasses.dataclass
class SharedServer:
    """The running server, its repository, the models each test module asked for, and its logs."""

    serve: object  # triton_repository.serving.Serve
    repository: Path
    output: str  # what dgla-serve printed up to "ready"
    log: Path  # the tritonserver log
    written: dict[str, set[str]]  # name -> the model folders writing it added
    admin_key: str = ADMIN

    def __getattr__(self, name: str):
        """The server's ports and URLs (grpc, http, metrics, grpc_url, http_url) are Serve's."""
        return getattr(self.serve, name)

    def said(self) -> str:
        """Everything the server and dgla-serve have printed so far."""
        return "\n".join(self.serve.lines) + self.serve.stderr_so_far() + self.log.read_text(errors="replace")


def _slow_and_bad_shape(repository: Path, config) -> None:
    """Two test-only models beside the real ones: a slow one, and one answering the wrong shape
    (each saying it serves ``config``, as a repository of dgla-export triton does)."""
    record = json.dumps(json.dumps(config.to_dict()))  # a JSON text as a quoted protobuf string
    for name, source in (("dgla_slow", "slow_model.py"), ("dgla_bad_shape", "bad_shape_model.py")):
        (repository / name / "1").mkdir(parents=True)
        shutil.copyfile(MODELS / source, repository / name / "1" / "model.py")
        (repository / name / "config.pbtxt").write_text(
            f'name: "{name}"\nbackend: "python"\nmax_batch_size: 8\n'
            'input { name: "image" data_type: TYPE_STRING dims: 1 }\n'
            'output { name: "probs" data_type: TYPE_FP32 dims: 7 }\n'
            "instance_group { kind: KIND_CPU count: 1 }\n"
            f'parameters {{ key: "model_config" value {{ string_value: {record} }} }}\n'
        )


@pytest.fixture(scope="session")
def family_graphs(tmp_path_factory) -> dict:
    """name -> (config, graph) of every architecture in its tiny configuration, exported with explain
    and validated (export's own validation, then dgla-export validate's)."""
    import dgla_export as dx
    from dgla_export.models import create_model
    from dgla_export.models.registry import TINY

    def build(folder: Path) -> dict:
        graphs = {}
        for name in FAMILY:
            model = create_model(name, weights="demo", **TINY)
            path = folder / f"{name}.onnx"
            exported = dx.export_onnx(path, model, explain=True, batch=(1, 8))
            assert exported.passed, exported.validation
            checked = dx.validate(path, model)
            assert checked.passed, checked
            graphs[name] = (model.config, path)
        return graphs

    return once(tmp_path_factory, "family", build)


# name -> (graph, options) of every model the served tests ask for.
def _models(tiny_explained, tiny_onnx, tiny_int8, family_graphs) -> dict[str, tuple[Path, TritonOptions]]:
    explained = tiny_explained["fp32"]
    models = {
        # test_serving: a 20 ms batching window (the tiny model answers in milliseconds) lets the
        # batcher see concurrent requests together; a 50 MP limit, so that the model parameter,
        # not the default, is what refuses large images
        "dgla": (explained, TritonOptions(max_queue_delay_us=20_000, max_pixels=50_000_000)),
        "dgla_int8": (tiny_int8["cpu"][0], TritonOptions(name="dgla_int8")),  # the Q/DQ graph, no maps, unvalidated
        "dgla_exact": (explained, TritonOptions(name="dgla_exact", preprocess="exact")),
        # test_overload: queues of 2 and one preprocessing instance, for a burst far beyond them
        "dgla_burst": (tiny_onnx["fp32"], TritonOptions(name="dgla_burst", max_queue_size=2, preprocess_instances=1)),
    }
    for name, (_, path) in family_graphs.items():  # test_family
        models[name] = (path, TritonOptions(name=name, preferred_batch_sizes=(4,)))
    if importlib.util.find_spec("nvidia.dali") is not None:  # test_serving: DALI behind its guard
        models["dgla_dali"] = (tiny_onnx["fp32"], TritonOptions(name="dgla_dali", preprocess="dali"))
    if importlib.util.find_spec("openvino") is not None:  # test_openvino_serving
        from dgla_export.runtimes.openvino import cpu_capabilities

        # where the CPU has BF16, OpenVINO (Triton's backend, and dgla-serve's stand-in) computes the FP32
        # graph in BF16: declared, or the self-check refuses it (test_selfcheck shows that)
        bf16 = "BF16" in cpu_capabilities()
        for precision, graph in (("fp32", tiny_onnx["fp32"]), ("int8", tiny_int8["cpu"][0])):
            name = f"ov_{precision}"
            options = TritonOptions(name=name, runtime="openvino", preferred_batch_sizes=(4,))
            models[name] = (graph, dataclasses.replace(options, openvino_bf16=bf16 and precision == "fp32"))
    return models


def _model_folders(repository: Path) -> set[str]:
    """The repository's model folders (not the output marker beside them)."""
    return {p.name for p in repository.iterdir() if p.is_dir()} if repository.is_dir() else set()


@pytest.fixture(scope="session")
def triton_server(tiny, tiny_explained, tiny_onnx, tiny_int8, family_graphs, tmp_path_factory):
    if importlib.util.find_spec("pytriton") is None:
        pytest.skip("Triton is not installed (pip install 'dgla-export[serve]')")
    from triton_repository.serving import Serve

    folder = tmp_path_factory.mktemp("shared-server")
    repository = folder / "repo"
    written: dict[str, set[str]] = {}
    for name, (graph, options) in _models(tiny_explained, tiny_onnx, tiny_int8, family_graphs).items():
        before = _model_folders(repository)
        # the INT8 graphs are quantized, not validated: written --unvalidated (no golden answers)
        write_repository(graph, repository, options=options, add=name != "dgla", unvalidated="int8" in name)
        written[name] = _model_folders(repository) - before
    _slow_and_bad_shape(repository, tiny.config)
    log = folder / "tritonserver.log"
    started = time.monotonic()
    server = Serve(repository, extra=["--log", str(log)], env={**os.environ, ADMIN_KEY_ENV: ADMIN})
    output = server.wait_ready()
    print(f"shared dgla-serve ready in {time.monotonic() - started:.1f} s")
    yield SharedServer(server, repository, output, log, written)
    stderr = server.stop()
    assert server.process.returncode == 0, f"dgla-serve exited {server.process.returncode} on SIGTERM:\n{stderr}"
    assert server.server_pid is not None, stderr
    assert not server.leftovers(), f"left behind after SIGTERM: {server.leftovers()}"
