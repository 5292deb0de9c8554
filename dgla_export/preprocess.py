"""One image in, the spec's normalised arrays out: the single preprocessing source.

It imports numpy, Pillow and :mod:`dgla_export.decode` only, never torch or the rest of this
package: ``dgla-export triton`` copies this very file and ``decode.py`` beside the Triton
Python-backend model, so the server runs the same code in a light process (see
``dgla_export/triton/preprocess_model.py``).

Recipe (spec, "Inputs"): centre square crop, bilinear antialiased resize of that crop to each
input size, scale to [0, 1], normalise with the model's mean/std. Two ways to compute it:

- ``exact``: the whole image is decoded, the crop is converted to float32 and each plane goes
  through Pillow's BILINEAR filter in float (equal to an exact float64 evaluation of the
  antialiased triangle filter to 2e-6). A 24 MP photo costs about as much as the network.
- ``fast`` (the default): a JPEG is decoded at 1/2, 1/4 or 1/8 scale inside libjpeg's DCT
  (Pillow's ``draft``), keeping at least :data:`FAST` ``.draft_factor`` x the largest input side
  across the crop (any other format is reduced by the same factor with Pillow's box ``reduce``
  after decoding, which bounds the float planes' memory); then the crop is resized as
  :class:`FastSettings` says. Chosen by measurement
  (docs/preprocessing.md): the fastest setting whose probabilities stay within the FP16 tolerance
  of the exact path.

Images are decoded by :mod:`dgla_export.decode` (orientation, colour profile, formats and limits:
what a colour-managed viewer shows). An image whose short side is below the model's smallest
input is refused: it would be upsampled, and no dermatoscope writes one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from PIL import Image

if __package__:
    from dgla_export import decode as _decode
else:  # copied beside a Triton model, with decode.py
    import decode as _decode  # type: ignore[no-redef]

DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, Limits = _decode.DEFAULT_MAX_BYTES, _decode.DEFAULT_MAX_PIXELS, _decode.Limits
ImageError, ImageTooLargeError, PreprocessingError = (
    _decode.ImageError,
    _decode.ImageTooLargeError,
    _decode.PreprocessingError,
)
centre_box, decode_image, image_size = _decode.centre_box, _decode.decode_image, _decode.image_size

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "FAST",
    "METHODS",
    "PIXEL_LEVELS",
    "FastSettings",
    "ImageError",
    "ImageTooLargeError",
    "Limits",
    "Method",
    "Preprocessing",
    "PreprocessingError",
    "Recipe",
    "centre_box",
    "decode_image",
    "draft_side",
    "from_pixels",
    "image_size",
    "load_image",
    "preprocess",
    "preprocess_batch",
    "to_pixels",
    "to_rgb_float",
]

Method = Literal["fast", "exact"]
PIXEL_LEVELS = 65535  # the largest 16-bit pixel value: what a pixels-only client's 1.0 becomes
METHODS: tuple[Method, ...] = ("fast", "exact")


@dataclasses.dataclass(frozen=True)
class FastSettings:
    """How the fast path trades fidelity for speed. The default, :data:`FAST`, is the fastest
    setting of ``benchmarks/preprocess_curve.py`` that meets the README's rule."""

    draft_factor: int | None = 2  # a JPEG decode keeps >= this x the largest input side across the crop; None: whole
    eight_bit: bool = False  # resize the 8-bit RGB crop (one pass for all channels) instead of float planes
    reducing_gap: float | None = None  # first an integer box reduction to >= gap x the largest side (Pillow's reduce)

    def __post_init__(self) -> None:
        if self.draft_factor is not None and self.draft_factor < 1:
            raise PreprocessingError(f"draft_factor must be >= 1 or None, got {self.draft_factor}")
        if self.reducing_gap is not None and self.reducing_gap < 1:
            raise PreprocessingError(f"reducing_gap must be >= 1 or None, got {self.reducing_gap}")


FAST = FastSettings()


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
    """A :class:`Recipe` with the method and the image limits, as plain data: what the Triton model
    reads from its config and what every report records."""

    input_sizes: Mapping[str, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    method: Method = "fast"
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise PreprocessingError(f"preprocessing method must be one of {METHODS}, got {self.method!r}")
        Limits(self.max_pixels, self.max_bytes)  # checks both

    @property
    def limits(self) -> Limits:
        return Limits(self.max_pixels, self.max_bytes)

    @classmethod
    def of(
        cls,
        recipe: Recipe,
        method: Method = "fast",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> Preprocessing:
        sizes, mean, std = dict(recipe.input_sizes), tuple(recipe.mean), tuple(recipe.std)
        return cls(sizes, mean, std, method, max_pixels, max_bytes)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Preprocessing:
        return cls(
            dict(record["input_sizes"]),
            tuple(record["mean"]),  # type: ignore[arg-type]
            tuple(record["std"]),  # type: ignore[arg-type]
            record.get("method", "exact"),  # repositories written before the fast path ran the exact one
            int(record.get("max_pixels", DEFAULT_MAX_PIXELS)),
            int(record.get("max_bytes", DEFAULT_MAX_BYTES)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_sizes": dict(self.input_sizes),
            "mean": list(self.mean),
            "std": list(self.std),
            "method": self.method,
            "max_pixels": self.max_pixels,
            "max_bytes": self.max_bytes,
        }

    def to_parameters(self) -> dict[str, str]:
        """As Triton model parameters: the recipe as JSON, and the method and the limits as plain
        values an operator can change in config.pbtxt."""
        recipe = {"input_sizes": dict(self.input_sizes), "mean": list(self.mean), "std": list(self.std)}
        limits = {"max_pixels": str(self.max_pixels), "max_bytes": str(self.max_bytes)}
        return {"preprocessing": json.dumps(recipe), "method": self.method, **limits}

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str]) -> Preprocessing:
        """Inverse of :meth:`to_parameters` (``method`` and the limits may be absent)."""
        record = json.loads(parameters["preprocessing"])
        record.update({key: parameters[key] for key in ("method", "max_pixels", "max_bytes") if key in parameters})
        return cls.from_dict(record)

    def decode(self, data: bytes) -> np.ndarray:
        """Encoded bytes -> the array :meth:`apply` needs: the centre square (its colour converted
        alone), reduced while decoding on the fast path."""
        return decode_image(data, self.limits, min_side=draft_side(self, self.method), square=True)

    def load(self, path: str | Path) -> np.ndarray:
        return load_image(path, self.limits, min_side=draft_side(self, self.method), square=True)

    def apply(self, image: np.ndarray) -> tuple[np.ndarray, ...]:
        return preprocess(image, self, method=self.method)

    def batch(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        return preprocess_batch(images, self, method=self.method)

    def pixels(self, image: np.ndarray) -> tuple[np.ndarray, ...]:
        return to_pixels(image, self, method=self.method)


def draft_side(recipe: Recipe, method: Method = "fast", fast: FastSettings = FAST) -> int | None:
    """The side below which a reduced JPEG decode must not go; None where the whole image is decoded."""
    if method == "exact" or fast.draft_factor is None:
        return None
    return fast.draft_factor * max(recipe.input_sizes.values())


def _planes_of(image: np.ndarray) -> Iterator[np.ndarray]:
    """(H, W[, C]) array -> its R, G and B planes as float32 in [0, 1], one at a time.

    uint8 is divided by 255 and uint16 by 65535; float input must already lie in [0, 1].
    Grayscale is one plane served three times; RGBA is composited over white (a transparent
    background reads as blank skin-free paper, never as black lesion). One plane at a time keeps
    a 24 MP photo's float copy at 96 MB instead of 288 MB."""
    array = np.asarray(image)
    if array.dtype == np.uint8:
        scale = np.float32(255.0)
    elif array.dtype == np.uint16:
        scale = np.float32(65535.0)
    elif np.issubdtype(array.dtype, np.floating):
        scale = None
        if array.size and (not np.isfinite(array).all() or array.min() < 0 or array.max() > 1):
            raise ImageError("float images must lie in [0, 1]; convert to uint8 or rescale first")
    else:
        raise ImageError(f"unsupported pixel type {array.dtype}; give uint8, uint16 or float")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageError(f"image of shape {image.shape} is not (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)")
    if min(array.shape[:2]) < 1:
        raise ImageError(f"empty image of shape {image.shape}")

    def plane(channel: int) -> np.ndarray:
        values = array[:, :, channel].astype(np.float32)
        if scale is not None:
            values /= scale  # in place: the same quotient, one plane of memory fewer
        return values

    if array.shape[2] == 1:
        grey = plane(0)
        yield from (grey, grey, grey)
        return
    alpha = plane(3) if array.shape[2] == 4 else None
    for channel in range(3):
        yield plane(channel) if alpha is None else plane(channel) * alpha + (np.float32(1.0) - alpha)


def to_rgb_float(image: np.ndarray) -> np.ndarray:
    """(H, W[, C]) array -> (H, W, 3) float32 RGB in [0, 1] (see :func:`_planes_of`)."""
    return np.stack(list(_planes_of(image)), axis=2)


def _centre_square(image: np.ndarray) -> np.ndarray:
    top, left, side = centre_box(*image.shape[:2])
    return image[top : top + side, left : left + side]


def _resize(plane: np.ndarray, size: int) -> np.ndarray:
    resized = Image.fromarray(np.ascontiguousarray(plane)).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def _reduce(image: Image.Image, sizes: Sequence[int], gap: float | None) -> Image.Image:
    """One integer box reduction serving every size (Pillow's ``reduce``), keeping >= gap x the largest."""
    factor = int(min(image.size) // (gap * max(sizes))) if gap else 1
    return image.reduce(factor) if factor > 1 else image


def _resized_8bit(crop: np.ndarray, sizes: Sequence[int], fast: FastSettings) -> list[np.ndarray]:
    """(S, S, 3) float32 in [0, 1] per size, from one 8-bit resize of all channels at once."""
    source = _reduce(Image.fromarray(crop), sizes, fast.reducing_gap)
    outputs = []
    for size in sizes:
        resized = np.asarray(source.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
        outputs.append(np.repeat(resized[:, :, None], 3, axis=2) if resized.ndim == 2 else resized)
    return [array * np.float32(1 / 255) for array in outputs]


def _resized_float(crop: np.ndarray, sizes: Sequence[int], gap: float | None) -> list[np.ndarray]:
    """(S, S, 3) float32 in [0, 1] per size, each plane through the float filter, one plane at a time."""
    per_plane: list[list[np.ndarray]] = []
    previous = None
    for plane in _planes_of(crop):
        if plane is previous:  # a grey image serves one plane three times: resized once
            per_plane.append(per_plane[-1])
            continue
        source = _reduce(Image.fromarray(plane), sizes, gap)
        per_plane.append([np.asarray(source.resize((s, s), Image.Resampling.BILINEAR), np.float32) for s in sizes])
        previous = plane
    return [np.stack([outputs[i] for outputs in per_plane], axis=2) for i in range(len(sizes))]


def _resized(image: np.ndarray, recipe: Recipe, method: Method, fast: FastSettings) -> list[np.ndarray]:
    """One image -> one (S, S, 3) float32 array in [0, 1] per model input: the centre crop, resized.

    The crop is taken before any conversion, so memory follows the crop, not the photo."""
    if method not in METHODS:
        raise PreprocessingError(f"preprocessing method must be one of {METHODS}, got {method!r}")
    crop = _centre_square(np.asarray(image))
    sizes = list(recipe.input_sizes.values())
    if crop.ndim >= 2 and 0 < crop.shape[0] < min(sizes):
        raise ImageError(
            f"the image's short side ({crop.shape[0]} px) is smaller than the model's {min(sizes)} px input: its "
            "centre square would be upsampled; give the original photo"
        )
    eight_bit = crop.dtype == np.uint8 and (crop.ndim == 2 or crop.shape[2] == 3)
    if method == "fast" and fast.eight_bit and eight_bit:
        resized = _resized_8bit(np.ascontiguousarray(crop), sizes, fast)
    else:
        resized = _resized_float(crop, sizes, fast.reducing_gap if method == "fast" else None)
    return [np.clip(array, 0.0, 1.0) for array in resized]


def _normalised(resized: Sequence[np.ndarray], recipe: Recipe) -> tuple[np.ndarray, ...]:
    """(S, S, 3) float32 in [0, 1] -> (3, S, S) float32, less the mean, over the deviation."""
    mean = np.asarray(recipe.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(recipe.std, dtype=np.float32).reshape(3, 1, 1)
    planar = (np.ascontiguousarray(array.transpose(2, 0, 1)) for array in resized)
    return tuple((array - mean) / std for array in planar)


def preprocess(
    image: np.ndarray, recipe: Recipe, *, method: Method = "fast", fast: FastSettings = FAST
) -> tuple[np.ndarray, ...]:
    """One image -> one (3, S, S) float32 normalised array per model input (224, then 448)."""
    return _normalised(_resized(image, recipe, method, fast), recipe)


def to_pixels(
    image: np.ndarray, recipe: Recipe, *, method: Method = "fast", fast: FastSettings = FAST
) -> tuple[np.ndarray, ...]:
    """One image -> one (S, S, 3) uint16 array per model input: what the model sees, as 16-bit
    pixels (the resized crop, rounded to the nearest of 65536 levels). This is all a pixels-only
    client sends; the server's ``NAME_normalise`` computes :func:`from_pixels` of it.

    Sixteen bits, not eight: rounding to 8 bits alone moves the demo network's probabilities by
    0.013 (docs/preprocessing.md), more than the 0.01 the served answers must keep to the server's
    own reading of the photo; at 16 bits the rounding is 256 times finer, for twice the bytes."""
    resized = _resized(image, recipe, method, fast)
    return tuple(np.rint(array * np.float32(PIXEL_LEVELS)).astype(np.uint16) for array in resized)


def from_pixels(pixels: Sequence[np.ndarray], recipe: Recipe) -> tuple[np.ndarray, ...]:
    """(N, S, S, 3) or (S, S, 3) uint16 per input -> the normalised float32 arrays, (N, 3, S, S) or
    (3, S, S): the numbers ``NAME_normalise``'s graph computes, in the same order of operations."""
    mean = np.asarray(recipe.mean, dtype=np.float32)
    std = np.asarray(recipe.std, dtype=np.float32)
    normalised = ((np.asarray(p).astype(np.float32) / np.float32(PIXEL_LEVELS) - mean) / std for p in pixels)
    return tuple(np.ascontiguousarray(np.moveaxis(array, -1, -3)) for array in normalised)


def preprocess_batch(
    images: Sequence[np.ndarray], recipe: Recipe, *, method: Method = "fast", fast: FastSettings = FAST
) -> tuple[np.ndarray, ...]:
    """Images -> one (N, 3, S, S) float32 array per model input."""
    if not len(images):
        raise ImageError("no images to preprocess")
    per_image = [preprocess(image, recipe, method=method, fast=fast) for image in images]
    return tuple(np.stack(column) for column in zip(*per_image, strict=True))


def load_image(
    path: str | Path, limits: Limits | None = None, *, min_side: int | None = None, square: bool = False
) -> np.ndarray:
    """A file's pixels as shown (:func:`decode_image`); its size is checked before it is read."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image {path} does not exist")
    try:
        (limits or Limits()).check_bytes(path.stat().st_size)
        return decode_image(path.read_bytes(), limits, min_side=min_side, square=square)
    except ImageError as err:
        raise type(err)(f"{path}: {err}") from err
