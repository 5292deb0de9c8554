"""The DALI pipeline (CPU operators here) against the package's exact path, through a network."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from inputs import photo_jpeg

from dgla_export.preprocess import Preprocessing

pytestmark = [
    pytest.mark.dali,
    pytest.mark.skipif(importlib.util.find_spec("nvidia.dali") is None, reason="NVIDIA DALI is not installed"),
]


@pytest.fixture(scope="module")
def pipeline(tiny):
    from dgla_export import dali_pipeline

    config = tiny.config
    pipe = dali_pipeline.build(config.input_sizes, config.mean, config.std, batch_size=4, device="cpu")
    pipe.build()
    return pipe


def test_dali_tensors_match_the_exact_path_through_the_network(pipeline, tiny, images) -> None:
    """Photos of camera size, three at once and one alone (the batch varies per request): DALI's
    tensors equal the exact path's to float rounding, border pixels included (measured: 1.3e-4
    normalised units at most; without the renormalised edge filter, 0.24, which moved the tiny
    network's probabilities by 0.028), so the network gives the same probabilities."""
    from dgla_export.dali_pipeline import run

    blobs = [photo_jpeg(image, size, seed=i) for i, ((_, image), size) in
             enumerate(zip(images[:3], ((4000, 3000), (6000, 4000), (1024, 768)), strict=True))]  # fmt: skip
    exact = Preprocessing.of(tiny.config, "exact")
    for chunk in (blobs, blobs[1:2]):
        outputs = run(pipeline, chunk)
        assert [o.shape for o in outputs] == [(len(chunk), 3, s, s) for s in tiny.config.input_sizes.values()]
        assert all(o.dtype == np.float32 and o.flags.c_contiguous for o in outputs)
        reference = exact.batch([exact.decode(blob) for blob in chunk])
        error = max(float(np.abs(a - b).max()) for a, b in zip(outputs, reference, strict=True))
        assert error < 1e-3, f"DALI vs exact inputs differ by {error:.2e}"
        with torch.no_grad():
            dali_probs = tiny(*map(torch.from_numpy, outputs)).softmax(-1)
            exact_probs = tiny(*map(torch.from_numpy, reference)).softmax(-1)
        err = float((dali_probs - exact_probs).abs().max())
        assert err < 1e-4, f"DALI vs exact probabilities differ by {err:.2e}"


def test_the_gpu_pipeline_serialises_without_a_gpu(tiny) -> None:
    from dgla_export.dali_pipeline import serialize

    config = tiny.config
    serialized = serialize(config.input_sizes, config.mean, config.std, batch_size=8)
    assert b"mixed" in serialized and b"decoders__Image" in serialized.replace(b"Decoders", b"decoders"), serialized[
        :200
    ]
