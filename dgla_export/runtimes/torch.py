"""PyTorch as a runner: eager FP32 (the reference), channels_last, FP16/BF16 autocast, torch.compile."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from dgla_export.errors import OptionError
from dgla_export.runtimes.base import Feed, Outputs, Runner

__all__ = ["VARIANTS", "TorchRunner"]

VARIANTS = ("eager", "channels_last", "autocast-fp16", "autocast-bf16", "compile")
# torch.compile: the blocks both branches share see two input sizes, and the 16 GLA blocks share
# one forward's code, so dynamo's default limit (8 variants per code object) was hit and it fell
# back to eager with warnings. One variant per block and input size fits in this.
COMPILE_CACHE_LIMIT = 64


class TorchRunner(Runner):
    """A PyTorch model (a copy, on ``device``) in one of :data:`VARIANTS`."""

    def __init__(self, model: nn.Module, variant: str = "eager", device: str = "cpu") -> None:
        if variant not in VARIANTS:
            raise OptionError(f"torch variant must be one of {VARIANTS}, got {variant!r}")
        self.model, self.variant, self.device = model, variant, device
        self.precision = {"autocast-fp16": "fp16", "autocast-bf16": "bf16"}.get(variant, "fp32")
        self.name = f"torch-{variant}-{device}"
        self.net: nn.Module | None = None
        self.input_names = tuple(getattr(getattr(model, "config", None), "input_names", ()))

    def unavailable(self) -> str | None:
        if self.device == "cuda" and not torch.cuda.is_available():
            from dgla_export.runtimes.availability import cuda_device_problem

            if torch.version.cuda is None:
                return "this torch is a CPU build; install the CUDA build of torch for your CUDA version"
            return cuda_device_problem() or "no CUDA GPU visible to torch"
        if self.variant == "autocast-fp16" and self.device == "cpu":
            return "FP16 autocast on CPU is emulated (~20 s per pair); use ONNX Runtime for CPU FP16"
        return None

    def load(self) -> None:
        net = copy.deepcopy(self.model).to(self.device).eval()
        if self.variant == "channels_last":
            net = net.to(memory_format=torch.channels_last)
        if self.variant == "compile":
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
        if self.variant == "channels_last":
            staged = tuple(x.contiguous(memory_format=torch.channels_last) for x in staged)
        return staged

    def run(self, staged: Any) -> Any:
        assert self.net is not None, "load() first"
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        autocast = torch.autocast(self.device, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            return self.net(*staged)

    def fetch(self, outputs: Any) -> Outputs:
        return {"logits": outputs.float().cpu().numpy()}

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def release(self) -> None:
        self.net = None
        if self.device == "cuda":
            torch.cuda.empty_cache()
