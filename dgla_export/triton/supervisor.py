"""dgla-serve's watch over the Python backend's stub processes.

Measured on the pip Triton 2.51: when one stub of a model dies (killed, out of memory), Triton does
not restart it; the instance stays, and every request the scheduler routes to it fails ("Stub
process 'dgla_preprocess_0_1' is not healthy", after about 1.3 s) for as long as the server runs.
The supervisor notices the missing process within a second and reloads that model through the
repository API (behind the admin key only dgla-serve holds, so model control stays closed to
everyone else): Triton starts fresh stubs, swaps them in, and retires the broken instance.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dgla_export.triton.server import TritonServer

__all__ = ["Reload", "StubSupervisor", "process_group", "stub_processes"]

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
class Reload:
    """One recovery: the model whose stub died, when it was noticed, how long the reload took."""

    model: str
    noticed_at: float  # time.monotonic()
    seconds: float
    status: int


class StubSupervisor(threading.Thread):
    """Polls the server's stubs every ``interval`` seconds; reloads a model that lost one."""

    def __init__(self, server: TritonServer, interval: float = 0.5, say: Callable[[str], None] = print) -> None:
        super().__init__(daemon=True, name="dgla-serve-supervisor")
        self.server, self.interval, self.say = server, interval, say
        self.reloads: list[Reload] = []
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout=30)

    def run(self) -> None:
        group = self.server.pid
        assert group is not None
        known = stub_processes(group)
        retired: set[int] = set()  # the old instance's stubs of a reloaded model: they exit after the swap
        while not self._halt.wait(self.interval):
            if self.server.process is None or self.server.process.poll() is not None:
                return
            alive = stub_processes(group)
            dead = {model for pid, model in known.items() if pid not in alive}
            for model in sorted(dead):
                retired |= {pid for pid, name in alive.items() if name == model}
                noticed = time.monotonic()
                status = self.server.load_model(model)
                seconds = time.monotonic() - noticed
                self.reloads.append(Reload(model, noticed, seconds, status))
                verdict = "reloaded" if status == 200 else f"could not be reloaded (HTTP {status})"
                self.say(f"a stub process of {model} died; {verdict} in {seconds:.1f} s")
            if dead:
                alive = stub_processes(group)
            retired &= set(alive)
            known = {pid: name for pid, name in alive.items() if pid not in retired}
