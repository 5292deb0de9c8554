"""One runner protocol for every runtime: validation, the bench, the INT8 search and the Triton
stand-ins all run a model through it, so a runtime is written once and every path exercises it.

``infer(feed)`` is ``fetch(run(stage(feed)))``: ``stage`` puts host inputs where the runtime reads
them (a GPU), ``run`` launches, ``fetch`` brings the outputs back as numpy. The bench times ``run``
(and ``sync``) between one ``stage`` and the ``fetch``; everyone else calls ``infer``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["Feed", "Outputs", "Runner"]

Feed = Mapping[str, np.ndarray]
Outputs = dict[str, np.ndarray]


class Runner(abc.ABC):
    """A loaded model: numpy in, numpy out (``logits``, and ``probs`` where the artefact has it).

    Construct cheaply (a runner is pickled into a fresh process before it loads), ``load`` once,
    ``release`` when done; also a context manager doing both."""

    name: str
    precision: str
    device: str = "cpu"  # "cpu" or "cuda"

    def unavailable(self) -> str | None:
        """None if this runner can run here, else why not (said before anything is tried)."""
        return None

    @abc.abstractmethod
    def load(self) -> None: ...

    def stage(self, feed: Feed) -> Any:
        """Host inputs -> where :meth:`run` reads them (timed apart from compute)."""
        return feed

    @abc.abstractmethod
    def run(self, staged: Any) -> Any: ...

    def fetch(self, outputs: Any) -> Outputs:
        """:meth:`run`'s outputs -> host numpy arrays."""
        return outputs

    def infer(self, feed: Feed) -> Outputs:
        return self.fetch(self.run(self.stage(feed)))

    def sync(self) -> None:  # noqa: B027  (a hook: nothing to wait for on the CPU)
        """Wait for launched work (a GPU's stream)."""

    def details(self) -> dict[str, Any]:
        """Facts about the loaded runtime worth recording beside its figures."""
        return {}

    def release(self) -> None:  # noqa: B027  (a hook: most runners hold nothing to drop)
        """Drop what :meth:`load` made, so the next runner's memory figures are its own."""

    def __enter__(self) -> Runner:
        self.load()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
