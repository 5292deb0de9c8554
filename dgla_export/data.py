"""Real images for calibration and parity checks: scikit-image's bundled set, or a folder."""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from dgla_export.decode import HEAD_BYTES, looks_like_image
from dgla_export.errors import UserError, listed
from dgla_export.preprocess import ImageError, Preprocessing, load_image

__all__ = [
    "HELD_OUT_SEED",
    "IMAGE_SUFFIXES",
    "SAMPLE_IMAGE_NAMES",
    "Photos",
    "check_disjoint",
    "distinct",
    "file_names",
    "find_photos",
    "image_id",
    "image_key",
    "load_images",
    "pixels_digest",
    "sample_images",
    "split_held_out",
    "submission_keys",
    "unique_names",
]

# Offline in scikit-image 0.26 (others need a download). Mixed content on purpose:
# a fundus photograph and a stained micrograph are the closest to dermoscopy.
SAMPLE_IMAGE_NAMES = ("retina", "immunohistochemistry", "astronaut", "coffee", "chelsea", "rocket")
# A folder's files with these extensions are always read (one that does not decode is an error for
# that image, never a skip); any other file is read when its first bytes are an image's.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".heic", ".heif", ".avif", ".dcm", ".mpo")


def image_key(name: str) -> str:
    """An image's name without its image-file extension, as ground-truth CSVs (ISIC's) name images."""
    path = Path(name)
    return path.stem if path.suffix.lower() in IMAGE_SUFFIXES else name


def submission_keys(names: Sequence[str]) -> list[str]:
    """The ``image`` column of a prediction CSV for ``names`` (unique in the run): the name without
    its extension, as the ISIC scorer matches it against the ground truth (``ISIC_0024306``), except
    where two photos share that key (``skin.jpg`` and ``skin.png``): those keep their extension, so
    no two rows name the same image."""
    keys = [image_key(name) for name in names]
    counts = collections.Counter(key.casefold() for key in keys)
    keys = [name if counts[key.casefold()] > 1 else key for name, key in zip(names, keys, strict=True)]
    return file_names(keys)


def file_names(names: Sequence[str]) -> list[str]:
    """``names`` as file names in one folder: a folder's ``/`` as ``__``, and any that would then
    name one file twice, letter case aside (macOS and Windows disks), numbered (``x#2``)."""
    return distinct([name.strip("/").replace("/", "__") for name in names], fold=True)


def unique_names(files: Sequence[Path]) -> list[str]:
    """A name per file, unique among ``files``: its file name with the extension, and the folders
    above it, as few as tell it apart, where two folders hold the same name (``a/x.jpg``, ``b/x.jpg``);
    the same file given twice gets ``#2``."""
    names = [f.name for f in files]
    counts = collections.Counter(names)
    for name in {n for n in names if counts[n] > 1}:
        group = [i for i, n in enumerate(names) if n == name]
        parts = {i: Path(files[i]).absolute().parts for i in group}
        paths = set(parts.values())  # one file given twice is one path
        depth = next(k for k in range(2, max(map(len, paths)) + 1) if len({p[-k:] for p in paths}) == len(paths))
        for i in group:
            names[i] = "/".join(parts[i][-depth:])
    return distinct(names)


def distinct(names: Sequence[str], *, fold: bool = False) -> list[str]:
    """``names`` with each repeat numbered (``x``, ``x#2``), a number never taken by another name:
    one file given twice, or two files of the same bytes named by :func:`image_id`. ``fold``: names
    that differ in letter case only are repeats too (file names on macOS and Windows disks)."""
    used: set[str] = set()
    numbered = []
    for name in names:
        candidate, number = name, 1
        while (candidate.casefold() if fold else candidate) in used:
            number += 1
            candidate = f"{name}#{number}"
        used.add(candidate.casefold() if fold else candidate)
        numbered.append(candidate)
    return numbered


@dataclasses.dataclass(frozen=True)
class Photos:
    """The files of a run read as photos, each under a name unique in the run (:func:`unique_names`),
    and what the folders given held besides (nothing is passed over in silence)."""

    files: tuple[Path, ...]
    names: tuple[str, ...]
    skipped: tuple[str, ...] = ()

    def skipped_line(self, named: bool = True) -> str | None:
        """One line on what was not read (naming it unless ``named`` is False: file names can hold
        a patient's), or None."""
        if not self.skipped:
            return None
        count = len(self.skipped)
        what = "file that is not an image" if count == 1 else "files that are not images"
        return f"skipped {count} {what}" + (f": {listed(list(self.skipped), limit=8)}" if named else "")


def find_photos(paths: Sequence[str | Path], *, named: bool = True) -> Photos:
    """The photos of ``paths``: a file named is read whatever it is (a file that is no image is then
    an error for it); a folder's files (sorted by name, not its subfolders) are read when they have
    an image extension or, without an extension (or with a DICOM UID's numeric one), begin with an
    image format's bytes (:func:`~dgla_export.decode.looks_like_image`), and are listed as skipped
    otherwise, as are its subfolders (a camera's raw files too). ``named``: False keeps the names of
    what was skipped out of the errors (``--anonymise``)."""
    files: list[Path] = []
    skipped: list[str] = []
    for path in map(Path, paths):
        if path.is_dir():
            found, passed = _folder(path, _is_photo)
            if not found:
                only = f" (only {listed(passed) if named else len(passed)})" if passed else ""
                raise ImageError(f"{path} holds no images (JPEG, PNG, TIFF, WebP, HEIC, AVIF, DICOM){only}")
            files += found
            skipped += passed
        elif path.is_file():
            files.append(path)
        else:
            raise ImageError(f"{path} does not exist; give image files or folders of images")
    return Photos(tuple(files), tuple(unique_names(files)), tuple(skipped))


def _folder(folder: Path, is_photo: Callable[[Path], bool]) -> tuple[list[Path], list[str]]:
    """A folder's photos and the names of what else it holds (subfolders are not searched)."""
    found: list[Path] = []
    passed: list[str] = []
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and is_photo(entry):
            found.append(entry)
        else:
            passed.append(f"{entry.name}/ (a folder)" if entry.is_dir() else entry.name)
    return found, passed


def _is_photo(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return True
    if suffix and not suffix[1:].isdigit():  # notes.txt, ckpt.pt, skin.dng: their names say what they are
        return False
    try:
        with open(path, "rb") as handle:
            return looks_like_image(handle.read(HEAD_BYTES))
    except OSError:  # unreadable: read as a photo, so that its error says why
        return True


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
    folder: str | Path | None = None,
    *,
    preprocessing: Preprocessing | None = None,
    warn: Callable[[str], None] | None = None,
) -> list[tuple[str, np.ndarray]]:
    """Images of ``folder`` (sorted by name, named by their file names with the extension), or the
    bundled set when ``folder`` is None; ``warn`` hears what the folder held that is not an image.

    With ``preprocessing``, files are decoded as it would (its pixel limit; on the fast path a JPEG
    is decoded reduced): pass the same one to :func:`preprocess_batch` later."""
    if folder is None:
        return sample_images()
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"image folder {folder} does not exist")
    photos = find_photos([folder])
    if warn is not None and (line := photos.skipped_line()):
        warn(f"{folder}: {line}")
    load = preprocessing.load if preprocessing is not None else load_image
    return [(name, load(path)) for name, path in zip(photos.names, photos.files, strict=True)]


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
