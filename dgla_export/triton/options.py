"""How a repository is written: its names and the options of its models (batching, queues,
instances, preprocessing, the runtime), as one frozen dataclass, and the error for what cannot be served."""

from __future__ import annotations

import dataclasses
import re

from dgla_export.errors import UserError, option
from dgla_export.preprocess import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from dgla_export.runtimes.openvino import HINTS

__all__ = ["AUTO_NAME", "NAME", "PREPROCESS_CHOICES", "ROLES", "RUNTIMES", "RepositoryError", "TritonOptions"]

PREPROCESS_CHOICES = ("fast", "exact", "dali")
NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
ROLES = ("", "onnx", "openvino", "trt", "preprocess", "guard", "normalise", "pixels")  # the models one ensemble owns
RUNTIMES = ("onnxruntime", "openvino")
AUTO_NAME = "auto"  # the ensemble named after the graph (graph_name)


class RepositoryError(UserError, ValueError):
    """Inputs that would give Triton a repository it cannot serve correctly."""


@dataclasses.dataclass(frozen=True)
class TritonOptions:
    """Defaults for one H100: dynamic batching towards 8-16, one instance per model.

    ``name`` names the ensemble; the models it runs are ``NAME_onnx`` (or ``NAME_openvino``),
    ``NAME_trt``, ``NAME_preprocess`` and ``NAME_guard``; ``NAME_pixels`` is the entry point of
    pixels-only clients (``NAME_normalise``, then the network). Models of other names already in the
    repository stay (a repository holds several models: ``add``).

    ``runtime`` ``openvino`` serves the graph with Triton's OpenVINO backend on the CPU instead of
    ONNX Runtime, with OpenVINO's ``openvino_hint`` and, with ``openvino_bf16``, BF16 compute (for a
    CPU with native BF16: AVX512_BF16 or AMX)."""

    name: str = "dgla"
    runtime: str = "onnxruntime"
    openvino_hint: str = "latency"
    openvino_bf16: bool = False

    max_batch_size: int | None = None  # default: the ONNX graph's (or the engine's) maximum batch
    preferred_batch_sizes: tuple[int, ...] = (8, 16)
    max_queue_delay_us: int = 200
    # Overload: a request that waited queue_timeout_s, or found max_queue_size requests ahead of it,
    # is rejected with a status the client reports, instead of piling up in memory. Given the
    # measured capacity and the clients' deadline, ``sized`` sets queue, timeout and batch instead.
    max_queue_size: int = 16
    queue_timeout_s: float = 10.0
    capacity_pairs_s: float | None = None
    deadline_s: float | None = None
    instances: int = 1
    kind: str = "KIND_GPU"
    preprocess_instances: int = 4
    ort_tensorrt_fp16: bool = False
    preprocess: str = "fast"  # fast or exact (Python backend), or dali (DALI backend, behind dgla_guard)
    max_pixels: int = DEFAULT_MAX_PIXELS  # images announcing more are refused before decoding
    max_bytes: int = DEFAULT_MAX_BYTES  # larger encoded images are refused unread

    def __post_init__(self) -> None:
        if not NAME.fullmatch(self.name):
            raise RepositoryError(
                f"model name {self.name!r}: use lower-case letters, digits and _, starting with a letter"
            )
        if (self.capacity_pairs_s is None) != (self.deadline_s is None):
            raise RepositoryError(
                f"sizing the queue needs both {option('--capacity', 'capacity_pairs_s')} and "
                f"{option('--deadline', 'deadline_s')}"
            )
        if self.capacity_pairs_s is not None and (self.capacity_pairs_s <= 0 or self.deadline_s <= 0):
            raise RepositoryError(
                f"capacity and deadline must be > 0, got {self.capacity_pairs_s} and {self.deadline_s}"
            )
        if self.max_queue_size < 1 or self.queue_timeout_s <= 0:
            raise RepositoryError(
                f"the queue needs a size >= 1 and a timeout > 0 s, got {self.max_queue_size} and {self.queue_timeout_s}"
            )
        if self.runtime not in RUNTIMES:
            raise RepositoryError(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if self.openvino_hint not in HINTS:
            raise RepositoryError(f"the OpenVINO hint must be one of {', '.join(HINTS)}, got {self.openvino_hint!r}")
        if self.runtime != "openvino" and (self.openvino_bf16 or self.openvino_hint != "latency"):
            raise RepositoryError(
                f"the OpenVINO settings need {option('--runtime openvino', 'runtime=' + repr('openvino'))}"
            )

    def sized(self, graph_max: int) -> TritonOptions:
        """With a measured capacity ``R`` (answered pairs per second) and the clients' deadline ``D``:
        the batch and queue that keep every request inside the deadline. A request waits at most the
        queue timeout ``T``, then for the batch in flight and its own (``B / R`` each), so
        ``T = 0.9 D - 2 B / R`` (a tenth of the deadline left for preprocessing and the network);
        a batch takes at most a quarter of the deadline (``B <= R D / 4``); the queue holds what
        drains within ``T`` (``Q = R T``). Without them, these options as they are."""
        if self.capacity_pairs_s is None or self.deadline_s is None:
            return self
        rate, deadline = self.capacity_pairs_s, self.deadline_s
        batch = max(1, min(self.max_batch_size or graph_max, int(rate * deadline / 4)))
        timeout = 0.9 * deadline - 2 * batch / rate
        if timeout <= 0:
            raise RepositoryError(
                f"at {rate:g} pairs/s one pair takes {1 / rate:.1f} s: no queue keeps a {deadline:g} s deadline; "
                "give the clients a longer --deadline or serve on faster hardware"
            )
        return dataclasses.replace(
            self, max_batch_size=batch, max_queue_size=max(1, int(rate * timeout)), queue_timeout_s=round(timeout, 3)
        )

    def model(self, role: str) -> str:
        """The name of the ensemble (role ``""``) or of one of its models (:data:`ROLES`)."""
        return f"{self.name}_{role}" if role else self.name
