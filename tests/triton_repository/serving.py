"""`dgla-serve` in a subprocess on loopback ports, for the tests that need a real Triton server."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class Serve:
    """`dgla-serve REPO` in a subprocess; stop() by PID and report what is left behind."""

    def __init__(
        self,
        repository: Path,
        timeout: float = 180.0,
        ports: list[int] | None = None,
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.http, self.grpc, self.metrics = ports or free_ports(3)
        command = [
            sys.executable, "-m", "dgla_export.tools.serve", str(repository), "--http-port", str(self.http),
            "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics), "--timeout", str(timeout), *extra,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env=None if env is None else env,
        )
        self.server_pid: int | None = None
        self.lines: list[str] = []
        # Both pipes are drained as they are written: a server that runs through many tests would
        # otherwise block once a pipe's buffer is full.
        self._stderr: list[str] = []
        self._ready = threading.Event()
        self._drains = [
            threading.Thread(target=self._drain, args=(self.process.stdout, self.lines, True), daemon=True),
            threading.Thread(target=self._drain, args=(self.process.stderr, self._stderr, False), daemon=True),
        ]
        for drain in self._drains:
            drain.start()

    def _drain(self, pipe, into: list[str], stdout: bool) -> None:
        for line in pipe:
            into.append(line.rstrip("\n") if stdout else line)
            if stdout and line.startswith("ready"):
                self._ready.set()
        self._ready.set()  # the process closed its output: ready or not, waiting is over

    def stderr_so_far(self) -> str:
        return "".join(self._stderr)

    def wait_ready(self, timeout: float = 240.0) -> str:
        self._ready.wait(timeout)
        for index, line in enumerate(list(self.lines)):
            if line.startswith("ready"):
                return "\n".join(self.lines[: index + 1])
        self.stop()
        pytest.fail(f"dgla-serve did not get ready: {self.stderr_so_far()[-3000:]}")

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http}"

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for drain in self._drains:
            drain.join(timeout=10)
        stderr = self.stderr_so_far()
        found = re.search(r"tritonserver pid (\d+)", stderr)
        self.server_pid = int(found.group(1)) if found else None
        return stderr

    def leftovers(self) -> list[str]:
        left = []
        if self.server_pid is not None:
            for stat in Path("/proc").glob("[0-9]*/stat"):
                try:
                    fields = stat.read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                # A zombie is only an exit status; where PID 1 does not reap orphans, it stays.
                if int(fields[2]) == self.server_pid and fields[0] != "Z":
                    left.append(f"process {stat.parent.name} in the server's group")
        left += [f"/dev/shm/{p.name}" for p in Path("/dev/shm").glob(f"dgla_serve_{self.process.pid}_*")]
        return left
