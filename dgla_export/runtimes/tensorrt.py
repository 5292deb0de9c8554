"""Load a checked TensorRT engine and run it on torch CUDA tensors, one CUDA graph per batch.

pycuda is not needed: torch owns the device buffers (zero-copy with the PyTorch reference) and
the stream; TensorRT only sees their addresses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dgla_export.export.manifest import (
    EngineManifest,
    ManifestError,
    check_compatible,
    check_precision,
    manifest_path,
)
from dgla_export.io import sha256_file

__all__ = ["TensorRTRunner", "verify_engine_file"]


def verify_engine_file(engine: Path) -> EngineManifest:
    """The engine's manifest, after checking that the file is the one the manifest describes
    (a truncated or foreign file is refused before TensorRT sees it)."""
    if not engine.is_file():
        raise ManifestError(f"engine {engine} does not exist")
    manifest = EngineManifest.read(manifest_path(engine))
    size = engine.stat().st_size
    if size != manifest.engine_bytes:
        raise ManifestError(
            f"{engine} is {size} bytes, its manifest says {manifest.engine_bytes}: truncated or replaced; rebuild it"
        )
    if sha256_file(engine) != manifest.engine_sha256:
        raise ManifestError(
            f"{engine} does not match its manifest's SHA-256: not the engine that was built; rebuild it"
        )
    check_precision(manifest)
    return manifest


class TensorRTRunner:
    """``infer({name: cuda tensor}) -> {"logits": ..., "probs": ...}`` on a private stream."""

    def __init__(self, engine_path: Path, *, cuda_graphs: bool = True) -> None:
        import tensorrt as trt
        import torch

        from dgla_export.export.tensorrt_build import running_info

        self.manifest = verify_engine_file(engine_path)
        check_compatible(self.manifest, running_info(), engine_path)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise ManifestError(f"TensorRT could not deserialize {engine_path}; rebuild it on this machine")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.cuda_graphs = cuda_graphs
        self._buffers: dict[int, dict[str, Any]] = {}
        self._graphs: dict[int, Any] = {}

    def _allocate(self, batch: int, like: dict[str, Any]) -> dict[str, Any]:
        """Static input/output buffers for one batch size (a CUDA graph replays fixed addresses)."""
        import torch

        buffers = {name: torch.empty_like(like[name]) for name in self.input_names}
        for name in self.output_names:
            shape = (batch, *tuple(self.engine.get_tensor_shape(name))[1:])
            buffers[name] = torch.empty(shape, dtype=torch.float32, device="cuda")
        return buffers

    def infer(self, inputs: dict[str, Any]) -> dict[str, Any]:
        import torch

        batch = int(next(iter(inputs.values())).shape[0])
        self.manifest.batch_profile.check(batch)  # before launch: TensorRT would fail late
        if batch not in self._buffers:
            self._buffers[batch] = self._allocate(batch, inputs)
        buffers = self._buffers[batch]
        for name in self.input_names:
            buffers[name].copy_(inputs[name], non_blocking=True)
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
