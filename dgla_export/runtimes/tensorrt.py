"""A checked TensorRT engine as a runner: torch owns the CUDA buffers and the stream, one CUDA
graph per batch size.

pycuda is not needed: torch's CUDA tensors are the buffers (zero-copy with the PyTorch
reference) and its stream the stream; TensorRT only sees their addresses. Everything before the
engine is deserialised (file vs manifest: size, SHA-256, precision; machine vs manifest: GPU and
TensorRT version) is plain Python that the CPU tests run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dgla_export.artefacts.manifest import ManifestError, RuntimeInfo, check_compatible, verify_engine_file
from dgla_export.runtimes.base import Feed, Outputs, Runner

__all__ = ["TensorRTRunner"]


class TensorRTRunner(Runner):
    """An engine from ``dgla-export trt``, checked against its manifest before it is deserialised."""

    device = "cuda"

    def __init__(self, engine: str | Path, *, cuda_graphs: bool = True) -> None:
        self.engine_path = Path(engine)
        self.name = "tensorrt-engine"
        self.manifest = verify_engine_file(self.engine_path)
        self.precision = self.manifest.precision
        self.cuda_graphs = cuda_graphs
        self.engine: Any = None

    def unavailable(self) -> str | None:
        from dgla_export.runtimes.availability import tensorrt_problem

        return tensorrt_problem()

    def load(self) -> None:
        import tensorrt as trt
        import torch

        from dgla_export.machine import tensorrt_info

        self.manifest = verify_engine_file(self.engine_path)  # again: the file may have changed since
        check_compatible(self.manifest, RuntimeInfo(**tensorrt_info()), self.engine_path)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            raise ManifestError(f"TensorRT could not deserialize {self.engine_path}; rebuild it on this machine")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._buffers: dict[int, dict[str, Any]] = {}
        self._graphs: dict[int, Any] = {}

    def stage(self, feed: Feed) -> Any:
        import torch

        return {name: torch.from_numpy(np.ascontiguousarray(feed[name])).cuda() for name in self.input_names}

    def _allocate(self, batch: int, like: dict[str, Any]) -> dict[str, Any]:
        """Static input/output buffers for one batch size (a CUDA graph replays fixed addresses)."""
        import torch

        buffers = {name: torch.empty_like(like[name]) for name in self.input_names}
        for name in self.output_names:
            shape = (batch, *tuple(self.engine.get_tensor_shape(name))[1:])
            buffers[name] = torch.empty(shape, dtype=torch.float32, device="cuda")
        return buffers

    def run(self, staged: Any) -> Any:
        import torch

        batch = int(next(iter(staged.values())).shape[0])
        self.manifest.batch_profile.check(batch)  # before launch: TensorRT would fail late
        if batch not in self._buffers:
            self._buffers[batch] = self._allocate(batch, staged)
        buffers = self._buffers[batch]
        for name in self.input_names:
            buffers[name].copy_(staged[name], non_blocking=True)
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            if self.cuda_graphs and batch in self._graphs:
                self._graphs[batch].replay()
            else:
                # Shapes and addresses are per batch: bind them, run once, then capture.
                for name in self.input_names:
                    self.context.set_input_shape(name, tuple(buffers[name].shape))
                for name, tensor in buffers.items():
                    self.context.set_tensor_address(name, tensor.data_ptr())
                if not self.context.execute_async_v3(self.stream.cuda_stream):
                    raise RuntimeError("TensorRT execute_async_v3 failed")
                if self.cuda_graphs:
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph, stream=self.stream):
                        self.context.execute_async_v3(self.stream.cuda_stream)
                    self._graphs[batch] = graph
        torch.cuda.current_stream().wait_stream(self.stream)
        return {name: buffers[name] for name in self.output_names}

    def fetch(self, outputs: Any) -> Outputs:
        return {name: tensor.float().cpu().numpy() for name, tensor in outputs.items()}

    def sync(self) -> None:
        import torch

        torch.cuda.synchronize()

    def details(self) -> dict[str, Any]:
        manifest = self.manifest
        return {
            "engine": {
                "build_seconds": manifest.build_seconds,
                "engine_bytes": manifest.engine_bytes,
                "profile": manifest.profile,
                "layer_dtypes": dict(manifest.layer_dtypes),
                "tensorrt_version": manifest.runtime.tensorrt_version,
            }
        }

    def release(self) -> None:
        self.engine = self.context = None
        self._buffers, self._graphs = {}, {}
