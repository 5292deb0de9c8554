"""One image in, the spec's normalised tensors out. Every entry point uses this module.

Recipe (spec, "Inputs"): centre square crop, then bilinear antialiased resize of that crop to
each input size, scale to [0, 1], normalise with the config's mean/std.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dgla_export.models.config import ModelConfig

__all__ = [
    "ImageError",
    "decode_image",
    "load_image",
    "preprocess",
    "preprocess_batch",
    "to_rgb_float",
]


class ImageError(ValueError):
    """An image this pipeline cannot turn into RGB."""


def to_rgb_float(image: np.ndarray) -> torch.Tensor:
    """(H, W[, C]) array -> (3, H, W) float32 RGB in [0, 1].

    uint8 is divided by 255 and uint16 by 65535; float input must already lie in [0, 1].
    Grayscale is replicated to three channels; RGBA is composited over white (a transparent
    background reads as blank skin-free paper, never as black lesion).
    """
    array = np.asarray(image)
    if array.dtype == np.uint8:
        scaled = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        scaled = array.astype(np.float32) / 65535.0
    elif np.issubdtype(array.dtype, np.floating):
        scaled = array.astype(np.float32)
        if scaled.size and (not np.isfinite(scaled).all() or scaled.min() < 0 or scaled.max() > 1):
            raise ImageError("float images must lie in [0, 1]; convert to uint8 or rescale first")
    else:
        raise ImageError(f"unsupported pixel type {array.dtype}; give uint8, uint16 or float")
    if scaled.ndim == 2:
        scaled = scaled[:, :, None]
    if scaled.ndim != 3 or scaled.shape[2] not in (1, 3, 4):
        raise ImageError(f"image of shape {array.shape} is not (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)")
    if min(scaled.shape[:2]) < 1:
        raise ImageError(f"empty image of shape {array.shape}")
    if scaled.shape[2] == 1:
        scaled = np.repeat(scaled, 3, axis=2)
    elif scaled.shape[2] == 4:
        alpha = scaled[:, :, 3:]
        scaled = scaled[:, :, :3] * alpha + (1.0 - alpha)
    return torch.from_numpy(np.ascontiguousarray(scaled.transpose(2, 0, 1)))


def _centre_square(rgb: torch.Tensor) -> torch.Tensor:
    height, width = rgb.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return rgb[:, top : top + side, left : left + side]


def preprocess(image: np.ndarray, config: ModelConfig) -> tuple[torch.Tensor, ...]:
    """One image -> one (3, S, S) normalised tensor per model input (224, then 448)."""
    crop = _centre_square(to_rgb_float(image))[None]
    mean = torch.tensor(config.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.std).view(1, 3, 1, 1)
    outputs = []
    for size in config.input_sizes.values():
        resized = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        outputs.append(((resized.clamp(0.0, 1.0) - mean) / std)[0])
    return tuple(outputs)


def preprocess_batch(images: Sequence[np.ndarray], config: ModelConfig) -> tuple[torch.Tensor, ...]:
    """Images -> one (N, 3, S, S) tensor per model input."""
    if not images:
        raise ImageError("no images to preprocess")
    per_image = [preprocess(image, config) for image in images]
    return tuple(torch.stack(column) for column in zip(*per_image, strict=True))


def decode_image(data: bytes) -> np.ndarray:
    """Encoded bytes (PNG, JPEG, TIFF, ...) -> array, keeping 16-bit depth where present."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                return np.asarray(img).astype(np.uint16)
            if img.mode not in ("L", "RGB", "RGBA"):
                img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
            return np.asarray(img)
    except (UnidentifiedImageError, OSError) as err:
        raise ImageError(f"cannot decode image ({len(data)} bytes): {err}") from err


def load_image(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image {path} does not exist")
    try:
        return decode_image(path.read_bytes())
    except ImageError as err:
        raise ImageError(f"{path}: {err}") from err
