"""One image in, the spec's normalised arrays out: the single preprocessing source.

It imports numpy and Pillow only, never torch or the rest of this package: ``dgla-export triton``
copies this very file beside the Triton Python-backend model, so the server runs the same code
in a light process (see ``dgla_export/triton/preprocess_model.py``).

Recipe (spec, "Inputs"): centre square crop, bilinear antialiased resize of that crop to each
input size, scale to [0, 1], normalise with the model's mean/std. The resize is Pillow's
BILINEAR on float32 planes (the filter that torch's ``antialias=True`` reproduces), so no
rounding to 8 bits happens between decoding and the network.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "ImageError",
    "Preprocessing",
    "Recipe",
    "decode_image",
    "load_image",
    "preprocess",
    "preprocess_batch",
    "to_rgb_float",
]


class ImageError(ValueError):
    """An image this pipeline cannot turn into RGB."""


class Recipe(Protocol):
    """What preprocessing needs to know of a model (``ModelConfig`` is one)."""

    @property
    def input_sizes(self) -> Mapping[str, int]: ...
    @property
    def mean(self) -> Sequence[float]: ...
    @property
    def std(self) -> Sequence[float]: ...


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """A :class:`Recipe` as plain data: what the Triton model reads from its config."""

    input_sizes: Mapping[str, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def of(cls, recipe: Recipe) -> Preprocessing:
        return cls(dict(recipe.input_sizes), tuple(recipe.mean), tuple(recipe.std))  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Preprocessing:
        return cls(dict(record["input_sizes"]), tuple(record["mean"]), tuple(record["std"]))

    def to_dict(self) -> dict[str, Any]:
        return {"input_sizes": dict(self.input_sizes), "mean": list(self.mean), "std": list(self.std)}


def to_rgb_float(image: np.ndarray) -> np.ndarray:
    """(H, W[, C]) array -> (H, W, 3) float32 RGB in [0, 1].

    uint8 is divided by 255 and uint16 by 65535; float input must already lie in [0, 1].
    Grayscale is replicated to three channels; RGBA is composited over white (a transparent
    background reads as blank skin-free paper, never as black lesion).
    """
    array = np.asarray(image)
    if array.dtype == np.uint8:
        scaled = array.astype(np.float32) / np.float32(255.0)
    elif array.dtype == np.uint16:
        scaled = array.astype(np.float32) / np.float32(65535.0)
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
        scaled = scaled[:, :, :3] * alpha + (np.float32(1.0) - alpha)
    return scaled


def _centre_square(rgb: np.ndarray) -> np.ndarray:
    height, width = rgb.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return rgb[top : top + side, left : left + side]


def _resize(plane: np.ndarray, size: int) -> np.ndarray:
    resized = Image.fromarray(np.ascontiguousarray(plane)).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def preprocess(image: np.ndarray, recipe: Recipe) -> tuple[np.ndarray, ...]:
    """One image -> one (3, S, S) float32 normalised array per model input (224, then 448)."""
    crop = _centre_square(to_rgb_float(image))
    planes = [crop[:, :, channel] for channel in range(3)]
    mean = np.asarray(recipe.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(recipe.std, dtype=np.float32).reshape(3, 1, 1)
    outputs = []
    for size in recipe.input_sizes.values():
        resized = np.stack([_resize(plane, size) for plane in planes])
        outputs.append((np.clip(resized, 0.0, 1.0) - mean) / std)
    return tuple(outputs)


def preprocess_batch(images: Sequence[np.ndarray], recipe: Recipe) -> tuple[np.ndarray, ...]:
    """Images -> one (N, 3, S, S) float32 array per model input."""
    if not len(images):
        raise ImageError("no images to preprocess")
    per_image = [preprocess(image, recipe) for image in images]
    return tuple(np.stack(column) for column in zip(*per_image, strict=True))


def decode_image(data: bytes) -> np.ndarray:
    """Encoded bytes (PNG, JPEG, TIFF, ...) -> array, keeping 16-bit depth where present."""
    if not data:
        raise ImageError("cannot decode image: no bytes")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                return np.asarray(img).astype(np.uint16)
            if img.mode not in ("L", "RGB", "RGBA"):
                img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
            return np.asarray(img)
    except UnidentifiedImageError as err:
        raise ImageError(
            f"cannot decode image ({len(data)} bytes): not a known image format; give PNG, JPEG, TIFF or BMP"
        ) from err
    except (OSError, Image.DecompressionBombError) as err:  # truncated or damaged data, absurd size
        raise ImageError(f"cannot decode image ({len(data)} bytes): {err}") from err


def load_image(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image {path} does not exist")
    try:
        return decode_image(path.read_bytes())
    except ImageError as err:
        raise ImageError(f"{path}: {err}") from err
