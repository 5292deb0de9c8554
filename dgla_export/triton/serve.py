"""``dgla-serve``: serve a repository from ``dgla-export triton`` with the pip-installed Triton.

The ``serve`` extra installs NVIDIA's PyTriton, which bundles ``tritonserver`` with its Python
backend and no other backend. This module runs that binary on a *serving copy* of the
repository (in a temporary folder, made of links): models the server can run as written
(Python, ensembles) are linked unchanged; a model whose backend it lacks runs under the Python
backend with the same runtime (``onnxruntime_onnx`` through ONNX Runtime; on a GPU with
TensorRT, a ``tensorrt_plan`` through this package's engine runner), with the same name, inputs,
outputs, batching and instances. The repository itself stays standard, for the official
container. The Python backend's stub takes its environment from this interpreter's.

Addresses default to loopback. The server runs in its own process group and is stopped by its
PID (SIGTERM, then SIGKILL for the group after a grace period); its shared-memory segments carry
a prefix of their own and are removed after it stops.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from dgla_export.errors import EXIT_BUG, UserError, run_command
from dgla_export.options import add_common, positive_int
from dgla_export.runtimes.availability import cuda_device_problem, tensorrt_problem

__all__ = ["Ports", "ServeError", "TritonInstall", "TritonServer", "main", "serving_repository"]

INSTALL_HINT = "pip install 'dgla-export[serve]'"
HERE = Path(__file__).parent
ONNXRUNTIME_MODEL = HERE / "onnxruntime_model.py"
TENSORRT_MODEL = HERE / "tensorrt_model.py"
DALI_MODEL = HERE / "dali_model.py"
SHM_ROOT = Path("/dev/shm")
# Log lines of a server without a GPU that say nothing about the repository.
_HARMLESS = ("CudaDriverHelper", "pinned memory pool", "CUDA memory pool", "Timeout ", "--strict-model-config")


class ServeError(UserError, RuntimeError):
    """Triton is missing, a port is taken, or the repository cannot be served here."""


@dataclasses.dataclass(frozen=True)
class TritonInstall:
    """The pieces of PyTriton's bundled server that this module runs."""

    server: Path
    python_backend: Path  # libtriton_python.so and triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub built for this interpreter's Python version
    libraries: Path

    @classmethod
    def find(cls) -> TritonInstall:
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise ServeError(f"Triton is not installed here; install it with: {INSTALL_HINT}")
        root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        install = cls(
            server=root / "bin" / "tritonserver",
            python_backend=root / "backends" / "python",
            stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
            libraries=root.parent.parent / "nvidia_pytriton.libs",
        )
        missing = [
            p for p in (install.server, install.python_backend, install.stub, install.libraries) if not p.exists()
        ]
        if missing:
            raise ServeError(f"PyTriton's server is incomplete (missing {missing[0]}); reinstall it: {INSTALL_HINT}")
        return install

    def backend_directory(self, folder: Path) -> Path:
        """A backend folder holding the Python backend with the stub for this interpreter."""
        python = folder / "python"
        python.mkdir(parents=True)
        for source in (
            self.python_backend / "libtriton_python.so",
            self.python_backend / "triton_python_backend_utils.py",
            self.stub,
        ):
            (python / source.name).symlink_to(source)
        return folder

    def environment(self) -> dict[str, str]:
        # The stub links a libpython of this version; this interpreter's must come first, and
        # its python3 first on PATH, which is where the stub finds its site-packages.
        env = dict(os.environ)
        libdirs = [sysconfig.get_config_var("LIBDIR") or "", str(self.libraries), env.get("LD_LIBRARY_PATH", "")]
        env["LD_LIBRARY_PATH"] = ":".join(p for p in libdirs if p)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env


@dataclasses.dataclass(frozen=True)
class Ports:
    host: str = "127.0.0.1"
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002

    def check_free(self) -> None:
        """Each port can be bound, as the server will bind it (SO_REUSEADDR): a port that only
        has connections of a server that just stopped (TIME_WAIT) is free; one with a listener is not."""
        for name in ("http", "grpc", "metrics"):
            port = getattr(self, name)
            with socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((self.host, port))
                except OSError as err:
                    raise ServeError(
                        f"{self.host}:{port} ({name}) cannot be used ({err.strerror}); "
                        f"stop what listens there or pick another with --{name}-port"
                    ) from err

    @property
    def urls(self) -> dict[str, str]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return {
            "http": f"http://{host}:{self.http}",
            "grpc": f"{host}:{self.grpc}",
            "metrics": f"http://{host}:{self.metrics}/metrics",
        }


def _pb():
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def _read_config(folder: Path):
    from google.protobuf import text_format

    try:
        return text_format.Parse((folder / "config.pbtxt").read_text(), _pb().ModelConfig())
    except text_format.ParseError as err:
        raise ServeError(f"{folder / 'config.pbtxt'} does not parse with Triton's schema: {err}") from err


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


def serving_repository(repository: Path, target: Path, *, gpu: bool | None = None) -> dict[str, str]:
    """Fill ``target`` with what this server can load; returns how each model runs."""
    gpu = cuda_device_problem() is None if gpu is None else gpu
    folders = sorted(p for p in repository.iterdir() if (p / "config.pbtxt").is_file())
    if not folders:
        raise ServeError(f"{repository} holds no model (no */config.pbtxt); write one with `dgla-export triton`")
    target.mkdir(parents=True)
    how: dict[str, str] = {}
    for folder in folders:
        config = _read_config(folder)
        kind = config.platform or config.backend
        if not gpu:
            for group in config.instance_group:
                if group.kind == _pb().ModelInstanceGroup.KIND_GPU:
                    group.kind = _pb().ModelInstanceGroup.KIND_CPU
                    group.ClearField("gpus")
        if kind in ("onnxruntime_onnx", "onnxruntime"):
            _as_python_model(folder, target / folder.name, config, "model.onnx", ONNXRUNTIME_MODEL)
            how[folder.name] = "ONNX Runtime (Python backend)"
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
                    "pip install 'dgla-export[dali]'"
                )
            _as_python_model(folder, target / folder.name, config, "model.dali", DALI_MODEL)
            how[folder.name] = f"DALI pipeline, {'GPU' if gpu else 'CPU'} operators (Python backend)"
        elif kind in ("python", "ensemble"):
            if gpu:
                (target / folder.name).symlink_to(folder.resolve())
            else:
                shutil.copytree(folder, target / folder.name, symlinks=True)
                _write_config(target / folder.name, config)
            how[folder.name] = "Python backend" if kind == "python" else "ensemble"
        else:
            raise ServeError(f"{folder.name}: backend {kind!r} is not one this server has or can stand in for")
    return how


def _request(url: str, data: bytes | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


class TritonServer:
    """One ``tritonserver`` process on a serving copy of ``repository``; a context manager."""

    def __init__(self, repository: Path, ports: Ports = Ports(), *, log_path: Path | None = None) -> None:
        self.repository, self.ports, self.log_path = Path(repository), ports, log_path
        self.process: subprocess.Popen | None = None
        self.how: dict[str, str] = {}
        self._workdir: Path | None = None
        self._shm_prefix = f"dgla_serve_{os.getpid()}_{secrets.token_hex(4)}_"

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        if not self.repository.is_dir():
            raise ServeError(f"repository {self.repository} does not exist; write one with `dgla-export triton`")
        install = TritonInstall.find()
        self.ports.check_free()
        self._workdir = Path(tempfile.mkdtemp(prefix="dgla-serve-"))
        try:
            self.how = serving_repository(self.repository, self._workdir / "models")
            backends = install.backend_directory(self._workdir / "backends")
        except BaseException:
            shutil.rmtree(self._workdir, ignore_errors=True)
            raise
        self.log_path = self.log_path or self._workdir / "tritonserver.log"
        command = [
            str(install.server),
            f"--model-repository={self._workdir / 'models'}",
            f"--backend-directory={backends}",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
            "--allow-gpu-metrics=false",
            f"--http-address={self.ports.host}",
            f"--http-port={self.ports.http}",
            f"--grpc-address={self.ports.host}",
            f"--grpc-port={self.ports.grpc}",
            f"--metrics-address={self.ports.host}",
            f"--metrics-port={self.ports.metrics}",
            "--disable-auto-complete-config",
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=install.environment(),
                start_new_session=True,
            )

    def log_errors(self, lines: int = 8) -> str:
        """The server log's error lines (Triton's ``E<date>`` lines), else its last lines."""
        try:
            log = self.log_path.read_text(errors="replace").splitlines() if self.log_path else []
        except OSError:
            return ""
        log = [line for line in log if line[:1] not in "+|" and not any(n in line for n in _HARMLESS)]
        errors = [line for line in log if (line[:1] == "E" and line[1:5].isdigit()) or line.startswith("error:")]
        return "\n".join((errors or log)[-lines:])

    def exit_reason(self) -> str:
        code = self.process.returncode if self.process else None
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            return f"tritonserver crashed ({name}); the last lines of its log:\n{self.log_errors()}"
        return f"tritonserver exited with code {code}:\n{self.log_errors()}"

    def model_states(self) -> list[dict[str, Any]]:
        """Every model of the repository with its state ("READY", "UNAVAILABLE", ...) and reason."""
        status, body = _request(f"{self.ports.urls['http']}/v2/repository/index", data=b"{}")
        if status != 200:
            raise ServeError(f"the server's repository index answered HTTP {status}")
        return json.loads(body)

    def wait_ready(self, timeout: float = 300.0) -> list[dict[str, Any]]:
        """Block until every model is ready; raise naming the models that are not."""
        assert self.process is not None, "start() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServeError(self.exit_reason())
            with contextlib.suppress(OSError):
                if _request(f"{self.ports.urls['http']}/v2/health/ready")[0] == 200:
                    states = self.model_states()
                    if all(s.get("state") == "READY" for s in states):
                        return states
            time.sleep(0.5)
        broken = []
        with contextlib.suppress(OSError, ServeError):  # the index itself may not answer
            broken = [f"{s['name']}: {s.get('state')} {s.get('reason', '')}".strip() for s in self.model_states()]
        if broken:
            raise ServeError(f"not every model was ready within {timeout:g} s: {'; '.join(broken)}")
        raise ServeError(f"tritonserver did not become ready within {timeout:g} s:\n{self.log_errors()}")

    def stop(self, grace: float = 30.0) -> None:
        """Stop the server by its PID, then anything left in its process group; remove its files."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=grace)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)  # stubs that outlived the server
            self.process.wait()
        for segment in SHM_ROOT.glob(f"{self._shm_prefix}*"):
            segment.unlink(missing_ok=True)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGINT and SIGTERM both stop the server, however this process was started: a background
    job of a non-interactive shell inherits an ignored SIGINT, which Python then leaves ignored."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dgla-serve",
        description="Serve a model repository written by `dgla-export triton` with the pip-installed Triton "
        f"Inference Server ({INSTALL_HINT}). Waits until every model is ready, prints the endpoints, and "
        "stops cleanly on Ctrl-C, SIGINT or SIGTERM (within about 15 s; the server is killed after 30 s). It can "
        "be started again on the same ports at once.",
    )
    parser.add_argument("repository", type=Path, help="folder written by `dgla-export triton`")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--http-port", type=positive_int, default=8000, help="HTTP/REST port (default 8000)")
    parser.add_argument("--grpc-port", type=positive_int, default=8001, help="gRPC port (default 8001)")
    parser.add_argument(
        "--metrics-port", type=positive_int, default=8002, help="Prometheus metrics port (default 8002)"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for every model (default 300)")
    parser.add_argument("--log", type=Path, help="append the server's log here (default: a temporary file)")
    add_common(parser, verbose=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("dgla-serve", lambda: _serve(args), debug=args.debug)


def _serve(args: argparse.Namespace) -> int:
    ports = Ports(args.host, args.http_port, args.grpc_port, args.metrics_port)
    server = TritonServer(args.repository, ports, log_path=args.log)
    with _signals_raise():
        try:
            server.start()
            print(
                f"dgla-serve: tritonserver pid {server.pid}, loading {args.repository} ...", file=sys.stderr, flush=True
            )
            states = server.wait_ready(args.timeout)
            for name, url in ports.urls.items():
                print(f"{name:8s} {url}")
            for state in states:
                name, version = state["name"], state.get("version", "?")
                print(f"model    {name} v{version}: {state['state']} ({server.how.get(name, '')})")
            print("ready; Ctrl-C or SIGTERM stops the server", flush=True)
            server.process.wait()  # type: ignore[union-attr]
            print(f"dgla-serve: error: {server.exit_reason()}", file=sys.stderr)
            return EXIT_BUG
        except KeyboardInterrupt:
            print("dgla-serve: stopping", file=sys.stderr, flush=True)
            return 0
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
