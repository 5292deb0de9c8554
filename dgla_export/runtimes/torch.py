"""PyTorch as a runner: eager FP32 (the reference), TF32, FP16/BF16 autocast, channels_last,
torch.compile and CUDA-graph replay, alone or combined (``autocast-fp16+channels_last+cuda-graph``).

On a GPU "FP32" is strict FP32: PyTorch's default lets cuDNN run FP32 convolutions in TF32 (10-bit
mantissa), so an unqualified "FP32" on CUDA would not be FP32. TF32 is its own variant, held to
the tolerance of its mantissa."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from dgla_export.errors import OptionError
from dgla_export.runtimes.base import Feed, Outputs, Runner

__all__ = ["HALF_DTYPES", "VARIANTS", "TorchRunner", "fp32_math", "variant_parts", "variant_precision"]

# The parts a variant is made of; "eager" alone is the FP32 reference. At most one numeric part.
NUMERICS = {"autocast-fp16": "fp16", "autocast-bf16": "bf16", "tf32": "tf32"}
HALF_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}  # the precisions computed in a 16-bit type
VARIANTS = ("eager", "channels_last", *NUMERICS, "compile", "cuda-graph")
# torch.compile: the blocks both branches share see two input sizes, and the 16 GLA blocks share
# one forward's code, so dynamo's default limit (8 variants per code object) was hit and it fell
# back to eager with warnings. One variant per block and input size fits in this.
COMPILE_CACHE_LIMIT = 64
_Shapes = tuple[tuple[int, ...], ...]  # a feed's input shapes: one CUDA graph each


def variant_parts(variant: str) -> tuple[str, ...]:
    """The parts of ``variant`` (``+``-joined), checked: known, at most one numeric, not compile with
    a CUDA graph (torch.compile's mode="reduce-overhead" is that combination, made by torch)."""
    parts = tuple(variant.split("+"))
    unknown = [p for p in parts if p not in VARIANTS]
    if unknown or len(set(parts)) != len(parts) or ("eager" in parts and len(parts) > 1):
        raise OptionError(f"torch variant must be one of {VARIANTS} or several joined by '+', got {variant!r}")
    if sum(p in NUMERICS for p in parts) > 1:
        raise OptionError(f"torch variant {variant!r}: at most one of {', '.join(NUMERICS)}")
    if {"compile", "cuda-graph"} <= set(parts):
        raise OptionError(f"torch variant {variant!r}: compile and cuda-graph do not combine here")
    return parts


def variant_precision(variant: str) -> str:
    """The arithmetic a variant computes in: fp16, bf16, tf32 or fp32."""
    return next((NUMERICS[p] for p in variant_parts(variant) if p in NUMERICS), "fp32")


@contextlib.contextmanager
def fp32_math(tf32: bool) -> Iterator[None]:
    """FP32 matrix products and convolutions in TF32 or not, restored after (they are global)."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (matmul.allow_tf32, cudnn.allow_tf32)
    matmul.allow_tf32 = cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


class TorchRunner(Runner):
    """A PyTorch model (a copy, on ``device``) in a variant: see :data:`VARIANTS`."""

    def __init__(self, model: nn.Module, variant: str = "eager", device: str = "cpu") -> None:
        self.parts = variant_parts(variant)
        self.model, self.variant, self.device = model, variant, device
        self.precision = variant_precision(variant)
        self.name = f"torch-{variant}-{device}"
        self.net: nn.Module | None = None
        self.static: dict[_Shapes, tuple[torch.Tensor, ...]] = {}  # cuda-graph: the inputs each graph reads
        self.graphs: dict[_Shapes, tuple[Any, torch.Tensor]] = {}
        self.input_names = tuple(getattr(getattr(model, "config", None), "input_names", ()))

    def unavailable(self) -> str | None:
        if self.device == "cuda" and not torch.cuda.is_available():
            from dgla_export.runtimes.availability import cuda_device_problem

            if torch.version.cuda is None:
                return "this torch is a CPU build; install the CUDA build of torch for your CUDA version"
            return cuda_device_problem() or "no CUDA GPU visible to torch"
        if self.device == "cpu":
            if "cuda-graph" in self.parts:
                return "CUDA graphs need a GPU"
            if "tf32" in self.parts:
                return "TF32 is a format of NVIDIA tensor cores (Ampere and later); a CPU has no TF32"
            if "autocast-fp16" in self.parts:
                return "FP16 autocast on CPU is emulated (~20 s per pair); use ONNX Runtime for CPU FP16"
        return None

    @contextlib.contextmanager
    def numerics(self) -> Iterator[None]:
        """The arithmetic of this variant: autocast to FP16/BF16, or FP32 in TF32 or strictly."""
        dtype = HALF_DTYPES.get(self.precision)
        # autocast's cache of cast weights must not outlive a CUDA graph's capture (PyTorch's rule)
        cache = "cuda-graph" not in self.parts
        autocast = torch.autocast(self.device, dtype=dtype, cache_enabled=cache) if dtype else contextlib.nullcontext()
        with fp32_math(self.precision == "tf32"), autocast:
            yield

    def load(self) -> None:
        net = copy.deepcopy(self.model).to(self.device).eval()
        if "channels_last" in self.parts:
            net = net.to(memory_format=torch.channels_last)
        if "compile" in self.parts:
            from torch import _dynamo

            config = _dynamo.config
            for limit in ("recompile_limit", "cache_size_limit"):  # renamed across torch versions
                if hasattr(config, limit):
                    setattr(config, limit, max(getattr(config, limit), COMPILE_CACHE_LIMIT))
            net = torch.compile(net, dynamic=False)
        self.net = net

    def stage(self, feed: Feed) -> Any:
        names = self.input_names or tuple(feed)
        staged = tuple(torch.from_numpy(np.ascontiguousarray(feed[name])).to(self.device) for name in names)
        if "channels_last" in self.parts:
            staged = tuple(x.contiguous(memory_format=torch.channels_last) for x in staged)
        if "cuda-graph" in self.parts:
            return self._into_static(staged)
        return staged

    def _into_static(self, staged: tuple[torch.Tensor, ...]) -> _Shapes:
        """Copy a feed into the inputs a CUDA graph of its shape reads (made on first sight)."""
        shapes = tuple(tuple(x.shape) for x in staged)
        if shapes not in self.static:
            self.static[shapes] = tuple(torch.empty_like(x) for x in staged)
        for target, source in zip(self.static[shapes], staged, strict=True):
            target.copy_(source)
        return shapes

    def _capture(self, shapes: _Shapes) -> None:
        """Record the forward pass for one input shape (after a warm-up, in which cuDNN picks its
        kernels); replays then launch the whole network at once."""
        assert self.net is not None, "load() first"
        inputs = self.static[shapes]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode(), self.numerics():
            for _ in range(2):
                self.net(*inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.inference_mode(), self.numerics():
            output = self.net(*inputs)
        self.graphs[shapes] = (graph, output)

    def run(self, staged: Any) -> Any:
        assert self.net is not None, "load() first"
        if "cuda-graph" in self.parts:
            if staged not in self.graphs:
                self._capture(staged)
            graph, output = self.graphs[staged]
            graph.replay()
            return output
        with torch.inference_mode(), self.numerics():
            return self.net(*staged)

    def fetch(self, outputs: Any) -> Outputs:
        return {"logits": outputs.float().cpu().numpy()}

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def details(self) -> dict[str, Any]:
        if self.device != "cuda":
            return {}
        return {"tf32": self.precision == "tf32", "cudnn": torch.backends.cudnn.version()}

    def release(self) -> None:
        self.net = None
        self.graphs.clear()
        self.static.clear()
        if self.device == "cuda":
            torch.cuda.empty_cache()
