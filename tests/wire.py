"""What crosses the wire: a loopback relay that keeps every byte a client sends, for the tests that
check what leaves the clinic PC and for the benchmark that counts it (benchmarks/pixels_path.py)."""

from __future__ import annotations

import contextlib
import socket
import threading

__all__ = ["Recorder"]


class Recorder:
    """A loopback TCP relay to ``port`` that keeps every byte the client sends: what would cross the
    network. Bounded: one test's connections, closed with it."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sent = bytearray()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, record: bool) -> None:
        try:
            while data := source.recv(1 << 16):
                if record:
                    with self.lock:
                        self.sent += data
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
