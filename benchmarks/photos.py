"""Photos of the sizes users send (12-24 MP JPEGs), made from real images that no test uses.

No licence-free dermoscopy photo is reachable here, so each photo is one of scikit-image's
offline images (none of the six the tests use) or a quadrant of the fundus and micrograph photos,
upscaled to a camera's size, with noise at two scales: per pixel (sensor noise) and at a quarter of
the resolution (texture between the network's 448 px and the camera's pixels, exactly where a
reduced JPEG decode and the exact filter part ways), then JPEG-encoded as a camera would (4:2:0,
quality 90). Written once into the cache; the same seed gives the same bytes.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from dgla_export.io import cache_dir

__all__ = ["CAMERA_SIZES", "heldout_photos", "photo_bytes", "sized_jpeg", "sized_png", "sources"]

# (width, height): 12 MP phone, 4000x3000, 18 MP DSLR, 20 MP, 24 MP: the sizes dermatoscopes and
# the ISIC archive hold.
CAMERA_SIZES = ((4032, 3024), (4000, 3000), (5184, 3456), (5472, 3648), (6000, 4000))
SOURCES = ("hubble_deep_field", "colorwheel", "logo", "camera", "coins", "grass", "gravel", "moon", "brick", "cell")


def sources() -> list[tuple[str, np.ndarray]]:
    import skimage.data

    def rgb(image: np.ndarray) -> np.ndarray:
        image = image.astype(np.uint8) * 255 if image.dtype == bool else image
        image = np.stack([image] * 3, axis=-1) if image.ndim == 2 else image
        return np.ascontiguousarray(image[..., :3])

    images = [(name, rgb(getattr(skimage.data, name)())) for name in SOURCES]
    for name in ("retina", "immunohistochemistry"):
        image = getattr(skimage.data, name)()
        h, w = image.shape[0] // 2, image.shape[1] // 2
        images += [(f"{name}_q{i}", np.ascontiguousarray(image[y : y + h, x : x + w])) for i, (y, x) in
                   enumerate(((0, 0), (h, w)))]  # fmt: skip
    return images


def photo_array(image: np.ndarray, size: tuple[int, int], seed: int) -> np.ndarray:
    """``image`` upscaled to ``size`` (width, height) with sensor and mid-scale noise, as uint8 RGB."""
    rng = np.random.default_rng(seed)
    width, height = size
    big = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
    coarse = rng.normal(0, 6.0, (height // 4, width // 4, 3)).astype(np.float32)
    for channel in range(3):  # one plane at a time: a 24 MP float image is 288 MB
        plane = Image.fromarray(coarse[:, :, channel]).resize(size, Image.Resampling.BILINEAR)
        big[:, :, channel] += np.asarray(plane)
        big[:, :, channel] += rng.normal(0, 3.0, (height, width)).astype(np.float32)
    return np.clip(big + 0.5, 0, 255).astype(np.uint8)


def photo_bytes(image: np.ndarray, size: tuple[int, int], seed: int, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    options = {"quality": 90, "subsampling": "4:2:0"} if fmt == "JPEG" else {"compress_level": 1}
    Image.fromarray(photo_array(image, size, seed)).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def heldout_photos(count: int = 14) -> list[Path]:
    """``count`` JPEG photos of camera sizes (cycling through :data:`CAMERA_SIZES`), cached."""
    folder = cache_dir() / "heldout-photos"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (name, image) in enumerate(sources()[:count]):
        size = CAMERA_SIZES[index % len(CAMERA_SIZES)]
        path = folder / f"{name}_{size[0]}x{size[1]}.jpg"
        if not path.is_file():
            path.write_bytes(photo_bytes(image, size, seed=index))
        paths.append(path)
    return paths


def sized_jpeg(size: tuple[int, int], seed: int = 0) -> bytes:
    """A photo of ``size`` made from the hubble image (one of the held-out sources)."""
    return photo_bytes(sources()[0][1], size, seed)


def sized_png(size: tuple[int, int], seed: int = 0) -> bytes:
    return photo_bytes(sources()[0][1], size, seed, fmt="PNG")
