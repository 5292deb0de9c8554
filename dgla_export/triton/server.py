"""The pip-installed Triton server (PyTriton's ``tritonserver``) run on a repository of ``dgla-export triton``.

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

tritonserver takes its keys only as arguments, and every local user can read a process's arguments
(``/proc/PID/cmdline``, ``ps``). Once the server has read them (its first log line), this module
overwrites them in the server's own memory (``/proc/PID/mem``, which only the server's parent and
its user's root may write): the command line then shows ``*`` where each key was. What remains is
the moment between the two (measured: ``keys_visible_s``); docs/serving.md names the limit and
what closes it (``/proc`` mounted ``hidepid=invisible``, or a container of its own).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from dgla_export.errors import ServeError
from dgla_export.install import install_command
from dgla_export.triton.security import ADMIN_HEADER, ADMIN_KEY_ENV, API_KEY_ENV, ServerSecurity

__all__ = ["INSTALL_HINT", "Ports", "ServeError", "TritonInstall", "TritonServer", "wipe_arguments"]

INSTALL_HINT = install_command("serve")
SHM_ROOT = Path("/dev/shm")
# Log lines of a server without a GPU that say nothing about the repository.
_TRITON_LINE = re.compile(rb"(?m)^[IWE]\d{4} ")  # Triton's own log lines: severity, month and day
_HARMLESS = ("CudaDriverHelper", "pinned memory pool", "CUDA memory pool", "Timeout ", "--strict-model-config")


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
            if sys.version_info >= (3, 13):
                raise ServeError(
                    "Triton is not installed here, and cannot be on Python 3.13 (PyTriton needs numpy<2, which has "
                    f"no 3.13 wheels); run dgla-serve with Python 3.11 or 3.12 ({INSTALL_HINT})"
                )
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
        env = {k: v for k, v in os.environ.items() if k not in (API_KEY_ENV, ADMIN_KEY_ENV)}  # the server needs neither
        libdirs = [sysconfig.get_config_var("LIBDIR") or "", str(self.libraries), env.get("LD_LIBRARY_PATH", "")]
        env["LD_LIBRARY_PATH"] = ":".join(p for p in libdirs if p)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env


@dataclasses.dataclass(frozen=True)
class Ports:
    """Where each endpoint listens: gRPC on ``host``, HTTP there too unless ``http_host`` says
    otherwise (loopback, when gRPC speaks TLS and HTTP cannot), metrics on ``metrics_host``."""

    host: str = "127.0.0.1"
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002
    http_host: str | None = None
    metrics_host: str = "127.0.0.1"

    def address(self, name: str) -> str:
        return {"http": self.http_host or self.host, "grpc": self.host, "metrics": self.metrics_host}[name]

    def check_free(self) -> None:
        """Each port can be bound, as the server will bind it (SO_REUSEADDR): a port that only
        has connections of a server that just stopped (TIME_WAIT) is free; one with a listener is not."""
        for name in ("http", "grpc", "metrics"):
            host, port = self.address(name), getattr(self, name)
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((host, port))
                except OSError as err:
                    raise ServeError(
                        f"{host}:{port} ({name}) cannot be used ({err.strerror}); "
                        f"stop what listens there or pick another with --{name}-port"
                    ) from err

    @property
    def urls(self) -> dict[str, str]:
        def host(name: str) -> str:
            address = self.address(name)
            return f"[{address}]" if ":" in address else address

        return {
            "http": f"http://{host('http')}:{self.http}",
            "grpc": f"{host('grpc')}:{self.grpc}",
            "metrics": f"http://{host('metrics')}:{self.metrics}/metrics",
        }


def _request(
    url: str, data: bytes | None = None, timeout: float = 2.0, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    try:
        request = urllib.request.Request(url, data=data, headers=headers or {})
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


class TritonServer:
    """One ``tritonserver`` process on a serving copy of ``repository``; a context manager.
    ``versions`` serves ensembles at other versions than the repository's configs name."""

    def __init__(
        self,
        repository: Path,
        ports: Ports = Ports(),
        *,
        log_path: Path | None = None,
        security: ServerSecurity | None = None,
        versions: dict[str, int] | None = None,
    ) -> None:
        self.security = security or ServerSecurity()
        self.versions = dict(versions or {})  # ensembles served at another version than their configs name
        if self.security.tls and ports.http_host is None:  # Triton's HTTP has no TLS: loopback only
            ports = dataclasses.replace(ports, http_host="::1" if ":" in ports.host else "127.0.0.1")
        self.repository, self.ports, self.log_path = Path(repository), ports, log_path
        self.process: subprocess.Popen | None = None
        self.how: dict[str, str] = {}
        self._workdir: Path | None = None
        self._command: list[str] = []
        self._environment: dict[str, str] = {}
        self._restarting = threading.Lock()
        self.keys_visible_s: float | None = None  # how long the keys stood on the command line (None: not wiped)
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
        from dgla_export.triton.serving_copy import serving_repository

        self._workdir = Path(tempfile.mkdtemp(prefix="dgla-serve-"))
        try:
            self.how = serving_repository(self.repository, self._workdir / "models", versions=self.versions)
            backends = install.backend_directory(self._workdir / "backends")
        except BaseException:
            shutil.rmtree(self._workdir, ignore_errors=True)
            raise
        self.log_path = self.log_path or self._workdir / "tritonserver.log"
        if self.log_path.exists() and not self.log_path.is_file():  # the keys are wiped once the log shows a line
            shutil.rmtree(self._workdir, ignore_errors=True)
            raise ServeError(f"--log {self.log_path}: not a regular file; give a file path (it is appended to)")
        self._command = [
            str(install.server),
            f"--model-repository={self._workdir / 'models'}",
            f"--backend-directory={backends}",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
            "--allow-gpu-metrics=false",
            f"--http-address={self.ports.address('http')}",
            f"--http-port={self.ports.http}",
            f"--grpc-address={self.ports.address('grpc')}",
            f"--grpc-port={self.ports.grpc}",
            f"--metrics-address={self.ports.address('metrics')}",
            f"--metrics-port={self.ports.metrics}",
            "--disable-auto-complete-config",
            *self.security.triton_arguments(),
        ]
        self._environment = install.environment()
        self._launch()

    def _launch(self) -> None:
        assert self.log_path is not None
        with open(self.log_path, "ab") as log:
            logged = log.tell()
            self.process = subprocess.Popen(
                self._command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._environment,
                start_new_session=True,
            )
        started = time.monotonic()
        self.keys_visible_s = None
        if self._wait_for_log(logged) and wipe_arguments(self.process.pid, self.security.secrets):
            self.keys_visible_s = time.monotonic() - started

    def _wait_for_log(self, logged: int, timeout: float = 30.0) -> bool:
        """Wait for the server's first log line of its own (``I1207 ...``: not a loader's warning),
        which it writes only after it has parsed its arguments."""
        assert self.process is not None and self.log_path is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            with contextlib.suppress(OSError), open(self.log_path, "rb") as log:
                log.seek(logged)
                if _TRITON_LINE.search(log.read(1 << 16)):
                    return True
            time.sleep(0.001)
        return False

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
        admin = {ADMIN_HEADER: self.security.admin_key}
        status, body = _request(f"{self.ports.urls['http']}/v2/repository/index", data=b"{}", headers=admin)
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

    def restart(self, grace: float = 1.0) -> None:
        """Stop the server and everything it started, and start it again on the same serving copy
        and ports: how a model whose Python-backend stub died comes back when no request may load
        one (model control none). Wait for it with :meth:`wait_ready`. The grace is short: with a
        dead stub, Triton's own shutdown waits about 6 s (measured) for requests that fail anyway."""
        with self._restarting:
            self._terminate(grace)
            self._launch()

    def wait(self) -> int:
        """Block until the server exits other than by :meth:`restart`; its exit code."""
        while True:
            process = self.process
            assert process is not None, "start() first"
            code = process.wait()
            with self._restarting:  # a restart in progress ends before this looks
                if self.process is process:
                    return code

    def terminate(self, grace: float = 10.0) -> None:
        """Stop the server and everything it started, keeping its serving copy (``stop`` removes it)."""
        self._terminate(grace)

    def _terminate(self, grace: float) -> None:
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

    def stop(self, grace: float = 30.0) -> None:
        """Stop the server by its PID, then anything left in its process group; remove its files."""
        self._terminate(grace)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


def wipe_arguments(pid: int, secrets: tuple[str, ...]) -> bool:
    """Overwrite every occurrence of each secret in process ``pid``'s arguments with ``*``, in its
    memory, so that ``/proc/PID/cmdline`` no longer shows it; whether that succeeded (the kernel lets
    a process's parent write its memory; a hardened one may refuse). The process must have copied
    its arguments first: tritonserver parses them into its own strings before it logs a line."""
    proc = Path("/proc") / str(pid)
    try:
        fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end: stat's fields 48 and 49
        with open(proc / "mem", "r+b", buffering=0) as memory:
            memory.seek(start)
            arguments = memory.read(end - start)
            for secret in (s.encode() for s in secrets):
                at = arguments.find(secret)
                while at >= 0:
                    memory.seek(start + at)
                    memory.write(b"*" * len(secret))
                    at = arguments.find(secret, at + len(secret))
        shown = (proc / "cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return False
    return not any(s.encode() in shown for s in secrets)
