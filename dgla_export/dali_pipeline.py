"""The preprocessing recipe as an NVIDIA DALI pipeline, for GPU servers (Triton's DALI backend).

Same recipe as :mod:`dgla_export.preprocess`'s exact path (centre square crop, antialiased linear
resize of the crop to each input size in float, the filter renormalised at the crop's edges,
ImageNet normalisation, planar float32), with DALI's operators:
on a GPU the decoder is ``mixed`` (nvJPEG, and the hardware JPEG decoder where the GPU has one;
formats it cannot decode fall back to the CPU) and everything after it runs on the GPU.

Standalone: it imports numpy and nvidia.dali only. ``dgla-export triton --preprocess dali``
serialises :func:`build` into ``dgla_preprocess/1/model.dali`` and copies this file beside it, so
that ``dgla-serve`` can run the same pipeline (with CPU operators where there is no GPU) on a
server without the DALI backend.

The pipeline has a second input, ``admitted``: one float per image, 1.0, from the ``dgla_guard``
step of the ensemble, which refuses an image whose header announces more pixels than the limit
before anything decodes it (DALI itself cannot refuse a single image). The outputs are multiplied
by it, which makes DALI wait for the guard.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

__all__ = ["ADMITTED", "INPUT", "build", "run", "serialize"]

INPUT, ADMITTED = "image", "admitted"
Device = Literal["gpu", "cpu"]


def build(
    input_sizes: Mapping[str, int],
    mean: Sequence[float],
    std: Sequence[float],
    *,
    batch_size: int,
    device: Device,
    device_id: int | None = None,
    num_threads: int = 4,
) -> Any:
    """The pipeline: ``image`` (encoded bytes as uint8) and ``admitted`` -> one (3, S, S) float32
    output per input size, in the order of ``input_sizes``."""
    from nvidia.dali import fn, math, pipeline_def, types

    @pipeline_def(
        batch_size=batch_size,
        num_threads=num_threads,
        device_id=device_id,
        prefetch_queue_depth=1,  # fed request by request: deeper prefetching waits for data that never comes
        output_dtype=[types.FLOAT] * len(input_sizes),
        output_ndim=[3] * len(input_sizes),
    )
    def dgla_preprocess() -> tuple[Any, ...]:
        encoded = fn.external_source(name=INPUT, dtype=types.UINT8, ndim=1, device="cpu")
        admitted = fn.external_source(name=ADMITTED, dtype=types.FLOAT, ndim=1, device="cpu")
        shape = fn.peek_image_shape(encoded)  # (H, W, C) from the header
        side = fn.cast(math.min(shape[0], shape[1]), dtype=types.INT32)
        images = fn.decoders.image(encoded, device="mixed" if device == "gpu" else "cpu", output_type=types.RGB)
        crop = fn.crop(images, crop_h=fn.cast(side, dtype=types.FLOAT), crop_w=fn.cast(side, dtype=types.FLOAT))
        # Where the filter runs off the crop, the spec's filter (Pillow's, the exact path's) drops the
        # missing taps and renormalises; DALI's resize replicates the edge instead (up to 14 grey
        # levels apart in the border pixels). So the crop is zero-padded by more than the filter's
        # reach, the crop's region of it is resized together with a mask of ones, and the one is
        # divided by the other: the renormalised filter, to 1.5e-4 grey levels of Pillow's.
        pad = side // min(input_sizes.values()) + 2
        window = {"start": fn.stack(-pad, -pad), "shape": fn.stack(side + 2 * pad, side + 2 * pad), "axes": [0, 1]}
        padded = fn.slice(crop, **window, out_of_bounds_policy="pad", fill_values=0)
        mask = fn.slice(crop[:, :, 0:1] * 0 + 1, **window, out_of_bounds_policy="pad", fill_values=0)
        start, stop = fn.cast(pad, dtype=types.FLOAT), fn.cast(pad + side, dtype=types.FLOAT)
        region = {"roi_start": fn.stack(start, start), "roi_end": fn.stack(stop, stop), "roi_relative": False}
        if device == "gpu":
            admitted = admitted.gpu()
        outputs = []
        for size in input_sizes.values():
            resize = {"size": [size, size], "antialias": True, "interp_type": types.INTERP_LINEAR, "dtype": types.FLOAT}
            weight = fn.resize(fn.cast(mask, dtype=types.FLOAT), **resize, **region)
            resized = fn.resize(padded, **resize, **region) / weight
            normalised = fn.crop_mirror_normalize(
                resized,
                dtype=types.FLOAT,
                output_layout="CHW",
                mean=[255.0 * m for m in mean],
                std=[255.0 * s for s in std],
            )
            outputs.append(normalised * admitted)
        return tuple(outputs)

    return dgla_preprocess()


def serialize(input_sizes: Mapping[str, int], mean: Sequence[float], std: Sequence[float], batch_size: int) -> bytes:
    """``model.dali`` for Triton's DALI backend: the GPU pipeline, serialised without a GPU (the
    backend creates it on each instance's own device)."""
    return build(input_sizes, mean, std, batch_size=batch_size, device="gpu").serialize()


def run(pipeline: Any, blobs: Sequence[bytes]) -> list[np.ndarray]:
    """Encoded images -> one (N, 3, S, S) float32 array per output (``pipeline`` built with
    ``batch_size >= len(blobs)``)."""
    pipeline.feed_input(INPUT, [np.frombuffer(blob, dtype=np.uint8) for blob in blobs])
    pipeline.feed_input(ADMITTED, [np.ones(1, dtype=np.float32) for _ in blobs])
    outputs = pipeline.run()
    return [np.stack([np.asarray(sample) for sample in _cpu(output)]) for output in outputs]


def _cpu(output: Any) -> Any:
    return output.as_cpu() if hasattr(output, "as_cpu") else output
