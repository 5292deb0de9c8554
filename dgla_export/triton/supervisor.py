"""dgla-serve's watch over the Python backend's stub processes.

Measured on the pip Triton 2.51: when one stub of a model dies (killed, out of memory), Triton does
not restart it; the instance stays, and every request the scheduler routes to it fails ("Stub
process 'dgla_preprocess_0_1' is not healthy", after about 1.3 s) for as long as the server runs.
The supervisor notices the missing process within a second and restarts the server on the same
serving copy and ports, then checks it again as at start (the files, then the answers). Reloading
just that model would be quicker, but it needs Triton's repository API, and that API loads code
sent in the request (model control is ``none``: nobody, dgla-serve included, can load a model into
a running server). Requests in flight or sent while it restarts fail with a clear error; every one
after it is answered. A failed restart or check, or a sixth death, stops the server.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dgla_export.errors import ServeError

if TYPE_CHECKING:
    from dgla_export.triton.server import TritonServer

__all__ = ["Recovery", "StubSupervisor", "process_group", "stub_processes"]

STUB = "triton_python_backend_stub"


def process_group(group: int) -> list[Path]:
    """The /proc entries of the processes in process group ``group``: a server started in a session
    of its own, and everything it started (the Python backend's stubs)."""
    members = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) == group:
                members.append(proc)
        except (OSError, ValueError, IndexError):
            continue
    return members


def stub_processes(group: int) -> dict[int, str]:
    """PID -> model name of the Python-backend stubs in process group ``group`` (the server's)."""
    found = {}
    for proc in process_group(group):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 1 and argv[0].decode(errors="replace").endswith(STUB):
            found[int(proc.name)] = Path(argv[1].decode(errors="replace")).parts[-3]  # models/NAME/1/model.py
    return found


@dataclasses.dataclass(frozen=True)
class Recovery:
    """One recovery: the model whose stub died, when it was noticed, how long the restart took until
    every model was ready again, and the error if it did not come back."""

    model: str
    noticed_at: float  # time.monotonic()
    seconds: float
    error: str | None = None


class StubSupervisor(threading.Thread):
    """Polls the server's stubs every ``interval`` seconds; restarts the server when one died, then
    runs ``after_restart`` (dgla-serve's self-check: the files and the answers, as at start). A
    restart that fails, a check that fails, or more than ``max_restarts`` restarts stop the server:
    it must not run unchecked, nor flap."""

    def __init__(
        self,
        server: TritonServer,
        interval: float = 0.5,
        say: Callable[[str], None] = print,
        timeout: float = 300.0,
        *,
        after_restart: Callable[[], object] | None = None,
        max_restarts: int = 5,
    ) -> None:
        super().__init__(daemon=True, name="dgla-serve-supervisor")
        self.server, self.interval, self.say, self.timeout = server, interval, say, timeout
        self.after_restart, self.max_restarts = after_restart, max_restarts
        self.recoveries: list[Recovery] = []
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout=60)

    @property
    def failure(self) -> str | None:
        """Why the supervisor stopped the server, if it did."""
        return next((r.error for r in self.recoveries if r.error), None)

    def run(self) -> None:
        known = stub_processes(self._group())
        while not self._halt.wait(self.interval):
            if self.server.process is None or self.server.process.poll() is not None:
                return
            alive = stub_processes(self._group())
            dead = sorted({model for pid, model in known.items() if pid not in alive})
            if dead:
                noticed, error = time.monotonic(), None
                try:
                    if len(self.recoveries) >= self.max_restarts:
                        raise ServeError(f"stub processes died {len(self.recoveries) + 1} times; not restarting again")
                    self.server.restart()
                    self.server.wait_ready(self.timeout)
                    if self.after_restart is not None:
                        self.after_restart()
                except Exception as err:  # whatever it was, the server must not go on unchecked
                    error = str(err).splitlines()[0] if str(err) else type(err).__name__
                seconds = time.monotonic() - noticed
                self.recoveries.append(Recovery(", ".join(dead), noticed, seconds, error))
                verdict = f"stopping the server: {error}" if error else f"the server restarted in {seconds:.1f} s"
                self.say(f"a stub process of {', '.join(dead)} died; {verdict}")
                if error:
                    self.server.terminate()  # dgla-serve's wait() returns, and it exits naming this
                    return
                alive = stub_processes(self._group())
            known = alive

    def _group(self) -> int:
        group = self.server.pid
        assert group is not None
        return group
