"""Real images for calibration and parity checks: scikit-image's bundled set, or a folder."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from dgla_export.errors import UserError, listed
from dgla_export.preprocess import ImageError, Preprocessing, load_image

__all__ = [
    "HELD_OUT_SEED",
    "IMAGE_SUFFIXES",
    "SAMPLE_IMAGE_NAMES",
    "check_disjoint",
    "image_id",
    "image_key",
    "load_images",
    "pixels_digest",
    "sample_images",
    "split_held_out",
]

# Offline in scikit-image 0.26 (others need a download). Mixed content on purpose:
# a fundus photograph and a stained micrograph are the closest to dermoscopy.
SAMPLE_IMAGE_NAMES = ("retina", "immunohistochemistry", "astronaut", "coffee", "chelsea", "rocket")
# A folder's images, by extension (the format itself is read from the bytes).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".heic", ".heif", ".avif", ".dcm", ".mpo")


def image_key(name: str) -> str:
    """An image's name without its image-file extension, as ground-truth CSVs (ISIC's) name images."""
    path = Path(name)
    return path.stem if path.suffix.lower() in IMAGE_SUFFIXES else name


def image_id(data: bytes) -> str:
    """A stable name for an image that says nothing of the patient: ``img-`` and 12 hex digits of the
    SHA-256 of its bytes (the same file, the same name, on every machine)."""
    import hashlib

    return "img-" + hashlib.sha256(data).hexdigest()[:12]


def pixels_digest(image: np.ndarray) -> str:
    """SHA-256 of an image's shape and pixels: the same image under any name or file format."""
    import hashlib

    return hashlib.sha256(str(image.shape).encode() + np.ascontiguousarray(image).tobytes()).hexdigest()


@functools.lru_cache(maxsize=1)
def _bundled() -> tuple[tuple[str, np.ndarray], ...]:
    import skimage.data

    images = []
    for name in SAMPLE_IMAGE_NAMES:
        image = getattr(skimage.data, name)()
        image.setflags(write=False)
        images.append((name, image))
    return tuple(images)


def sample_images(count: int | None = None) -> list[tuple[str, np.ndarray]]:
    """(name, RGB uint8 array) pairs of the bundled images, in a fixed order."""
    return list(_bundled()[:count])


def load_images(
    folder: str | Path | None = None, *, preprocessing: Preprocessing | None = None
) -> list[tuple[str, np.ndarray]]:
    """Images of ``folder`` (sorted by name), or the bundled set when ``folder`` is None.

    With ``preprocessing``, files are decoded as it would (its pixel limit; on the fast path a JPEG
    is decoded reduced): pass the same one to :func:`preprocess_batch` later."""
    if folder is None:
        return sample_images()
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"image folder {folder} does not exist")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ImageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    load = preprocessing.load if preprocessing is not None else load_image
    return [(p.name, load(p)) for p in paths]


HELD_OUT_SEED = 2018  # the split of one image set into calibration and validation halves


def check_disjoint(images: Sequence[tuple[str, np.ndarray]], calibration_digests: set[str]) -> None:
    """Refuse validation images that are calibration images (by pixels, whatever their names): an
    INT8 graph judged on its own calibration images is judged on what it was fitted to."""
    shared = [name for name, image in images if pixels_digest(image) in calibration_digests]
    if shared:
        raise UserError(
            f"{len(shared)} validation images are also calibration images ({listed(shared)}): an INT8 "
            "graph must be judged on images it was not calibrated on; give --images (images=) without them"
        )


def split_held_out(
    calibration: list[tuple[str, np.ndarray]],
    validation: list[tuple[str, np.ndarray]],
    both_default: bool,
    warn: Callable[[str], None],
) -> tuple[list[tuple[str, np.ndarray]], list[tuple[str, np.ndarray]]]:
    """Calibration and validation images with no image in both. Where both are the default set it is
    split in two with a stated seed; otherwise an overlap is refused (:func:`check_disjoint`)."""
    digests = {pixels_digest(image) for _, image in calibration}
    if not both_default or not any(pixels_digest(image) in digests for _, image in validation):
        check_disjoint(validation, digests)
        return calibration, validation
    order = np.random.default_rng(HELD_OUT_SEED).permutation(len(calibration))
    half = len(order) // 2
    calibrate, hold = [calibration[i] for i in sorted(order[:half])], [calibration[i] for i in sorted(order[half:])]
    warn(
        f"the bundled photos serve both INT8 calibration and validation: split in two (seed {HELD_OUT_SEED}), "
        f"calibrated on {', '.join(n for n, _ in calibrate)}, validated on {', '.join(n for n, _ in hold)}"
    )
    return calibrate, hold
