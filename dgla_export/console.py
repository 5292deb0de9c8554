"""What a command prints while it works: results always; progress as a terminal or a log wants it.

On a terminal, progress is rich's spinner and timestamped steps. Anywhere else (a pipe, a CI log,
a file) it is plain lines: each long step announces itself, says it is still running every
``HEARTBEAT_SECONDS``, and the steps inside it are printed at most that often, so a 14-minute INT8
export is neither silent nor a flood.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

__all__ = [
    "HEARTBEAT_SECONDS",
    "Console",
    "format_duration",
    "library_chatter_muted",
    "quiet_libraries",
    "quiet_onnxruntime",
]

HEARTBEAT_SECONDS = 30.0


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


PLAIN_WIDTH = 120  # columns of tables written to a log or a pipe


class Console:
    """stderr for people: ``print`` results, ``log`` steps, ``status`` around long work."""

    def __init__(self, prog: str, *, heartbeat: float | None = None) -> None:
        from rich.console import Console as RichConsole

        self.prog = prog
        self.err = RichConsole(stderr=True)
        self.interactive = self.err.is_terminal
        if not self.interactive:  # rich assumes 80 columns, which would cut the figures of a wide table
            self.err = RichConsole(stderr=True, width=max(self.err.width, PLAIN_WIDTH))
        self.heartbeat = HEARTBEAT_SECONDS if heartbeat is None else heartbeat
        self._started = time.monotonic()
        self._last_plain = -float("inf")
        self._latest_step: str | None = None  # off a terminal: the step the next periodic line names
        self._lock = threading.Lock()

    def print(self, *objects: object, style: str | None = None) -> None:
        """Results for people: text as written (no markup: a hint's ``[openvino]`` stays), in
        ``style`` where given, never broken into lines (a hint copied from a terminal runs); rich
        objects (tables, styled text) as they are."""
        self.err.print(*objects, style=style, markup=False, soft_wrap=True)

    def _plain(self, message: str) -> None:
        """One step, within a log's width: a long one goes on over indented lines (words kept whole)."""
        with self._lock:
            self._last_plain = time.monotonic()
            elapsed = format_duration(self._last_plain - self._started)
            line = f"{self.prog}: [{elapsed}] {message}"
            wrapped = textwrap.wrap(line, PLAIN_WIDTH, subsequent_indent="  ", break_long_words=False)
            print("\n".join(wrapped or [line]), file=sys.stderr, flush=True)

    def log(self, message: str) -> None:
        """A step of the work: always on a terminal; elsewhere at most once per heartbeat, and
        the latest step is named by the next periodic line."""
        if self.interactive:
            self.err.log(message, markup=False)
        elif time.monotonic() - self._last_plain >= self.heartbeat:
            self._latest_step = None
            self._plain(message)
        else:
            self._latest_step = message

    @contextlib.contextmanager
    def status(self, message: str) -> Iterator[None]:
        """Around a long step: a spinner on a terminal; elsewhere a start line and a line per heartbeat."""
        if self.interactive:
            with self.err.status(message):
                yield
            return
        self._plain(message)
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self.heartbeat):
                if time.monotonic() - self._last_plain >= self.heartbeat * 0.99:
                    step, self._latest_step = self._latest_step, None
                    self._plain(f"still {message}" + (f": {step}" if step else ""))  # the line's prefix has the time

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()


@contextlib.contextmanager
def library_chatter_muted() -> Iterator[None]:
    """From Python, no third-party console noise: the exporter's loggers that nobody configured
    (level NOTSET) are raised to errors for the block (torch.onnx warned four lines about
    torchvision on every export); a level the caller or ``-v`` set is left as it is."""
    loggers = [logging.getLogger(name) for name in NOISY_LOGGERS]
    unset = [logger for logger in loggers if logger.level == logging.NOTSET]
    for logger in unset:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger in unset:
            logger.setLevel(logging.NOTSET)


def quiet_onnxruntime() -> None:
    """ONNX Runtime's default logger to errors only. Its graph optimisers log there, not through a
    session's options: an explained graph's constant folding warned that UnsqueezeElimination
    "cannot remove node", a remark about its own pass, never about the user's input."""
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)


NOISY_LOGGERS = ("torch.onnx", "torch._dynamo", "torch._inductor", "torch.export", "onnxscript")


def quiet_libraries(verbose: bool) -> None:
    """Third-party chatter (exporter, dynamo, Polygraphy, ONNX Runtime) only with -v."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    # torch sets its own loggers' levels when it is first imported: import it first, or a lazy
    # import later would undo the levels set here (the commands that call this run torch anyway).
    import torch  # noqa: F401

    for noisy in NOISY_LOGGERS:  # set either way: library_chatter_muted leaves a set level alone
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.ERROR)
    if verbose:
        return
    try:
        from polygraphy.logger import G_LOGGER
    except ImportError:
        return
    G_LOGGER.module_severity = G_LOGGER.ERROR
    G_LOGGER.colors = False  # else it warns once that the optional 'colored' module is missing
