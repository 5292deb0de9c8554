"""Named images preprocessed by the package, as torch tensors for the eager model and the reference."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dgla_export.preprocess import Recipe, preprocess_batch


def torch_inputs(images: Sequence[tuple[str, np.ndarray]], recipe: Recipe) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(a) for a in preprocess_batch([image for _, image in images], recipe))
