"""Encoded bytes -> the pixels a colour-managed viewer shows: the one decoder of every path.

A photo must give the same answer however the camera stored it, so every path (the API, every
``--images``, ``dgla-client``, the served ``dgla_preprocess`` and the DALI ensemble's guard) reads
images here, with a viewer's semantics:

- the format is found from the bytes, never the file name, among the formats cameras and clinics
  write (JPEG and MPO, PNG, TIFF, WebP, BMP, GIF, AVIF; HEIC/HEIF with pillow-heif; DICOM with
  pydicom): Pillow's other decoders (EPS runs Ghostscript, FITS, PSD, ...) are never offered bytes;
- the EXIF orientation is applied (all eight values; a HEIC's own rotation and mirroring are
  libheif's, which then resets the EXIF orientation, so nothing turns twice);
- an embedded ICC profile (the DICOM's too) is converted to sRGB by LittleCMS (Pillow's ImageCms)
  with the relative colorimetric intent: matrix profiles (AdobeRGB, ProPhoto, Display P3) carry no
  perceptual table, so LittleCMS would use the colorimetric one anyway; in-gamut colours stay exact
  and out-of-gamut ones are clipped to the nearest sRGB colour, as browsers show them. CMYK goes
  through its profile too (Pillow's own conversion where it has none; Adobe's inverted CMYK JPEGs
  are read by Pillow's JPEG plugin);
- palette, grey+alpha and RGBA images keep their alpha, which preprocessing composites over white;
- 16-bit images stay 16-bit, 32-bit integer images are scaled by their full range and float
  images must lie in [0, 1] (returned as float32): never wrapped or truncated.

Standalone (numpy and Pillow; pillow-heif and pydicom imported when bytes need them): ``dgla-export
triton`` copies this file beside the served models, as it does ``preprocess.py``.

Limits, checked before anything is decoded: the encoded size (``max_bytes``) and the pixel count
from the header (``max_pixels``). Pillow holds at most 4 bytes per pixel (its widest modes: RGBA,
CMYK, 32-bit integer and float), so a decode takes at most 4 x ``max_pixels`` bytes (256 MB at
the default) before the reduction of the fast path. Any failure of a decoder, whatever its
exception, is the one :class:`ImageError`.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import warnings
from typing import Any

import numpy as np
from PIL import Image, ImageCms, ImageOps

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "FORMATS",
    "HEAD_BYTES",
    "INTENT",
    "ImageError",
    "ImageTooLargeError",
    "Limits",
    "PreprocessingError",
    "centre_box",
    "dali_problem",
    "decode_image",
    "image_size",
    "looks_like_image",
    "open_image",
    "sniff",
]

# The largest photos a clinic sends: 24 MP dermatoscopes and phones, 45-61 MP clinical cameras
# (a 61 MP full-frame camera writes 9504x6336 = 60.2 MP). A bomb announcing more is refused unread.
DEFAULT_MAX_PIXELS = 64_000_000
# A 61 MP camera's JPEG is about 30 MB; its uncompressed 8-bit TIFF 181 MB; a 24 MP DICOM 72 MB.
DEFAULT_MAX_BYTES = 200_000_000
INTENT = ImageCms.Intent.RELATIVE_COLORIMETRIC
FORMATS = ("JPEG", "MPO", "PNG", "TIFF", "WEBP", "BMP", "GIF", "AVIF", "HEIF")
HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}


class PreprocessingError(ValueError):
    """Bad input to preprocessing: the user's to fix (exit code 2 on the command line)."""

    user_facing = True  # read by dgla_export.errors, which this standalone module cannot import


class ImageError(PreprocessingError):
    """An image this pipeline cannot turn into the pixels a viewer shows."""


class ImageTooLargeError(ImageError):
    """An image over a limit (encoded bytes or pixels), refused before decoding."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """What an image may cost before it is decoded."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self) -> None:
        if self.max_pixels < 1 or self.max_bytes < 1:
            raise PreprocessingError(f"image limits must be positive, got {self}")

    def check_bytes(self, size: int) -> None:
        if size > self.max_bytes:
            raise ImageTooLargeError(
                f"image of {size / 1e6:.1f} MB exceeds the limit of {self.max_bytes / 1e6:g} MB of encoded data; "
                "a 61 MP camera's JPEG is about 30 MB (raise the limit with --max-bytes if this really is one photo)"
            )

    def check_pixels(self, width: int, height: int) -> None:
        if width * height > self.max_pixels:
            raise ImageTooLargeError(
                f"image of {width}x{height} pixels ({width * height / 1e6:.1f} MP) exceeds the limit of "
                f"{self.max_pixels / 1e6:g} MP; a dermatoscope photo has at most about 24 MP and a clinical camera's "
                "61 MP (raise the limit with --max-pixels if this really is one image)"
            )


def sniff(data: bytes) -> str | None:
    """DICOM, HEIF or AVIF, found from the bytes (the formats Pillow may not know); None: Pillow decides."""
    if data[128:132] == b"DICM":
        return "DICOM"
    if data[4:8] == b"ftyp" and (data[8:12] in HEIF_BRANDS or HEIF_BRANDS & _brands(data)):
        return "AVIF" if data[8:12] in (b"avif", b"avis") else "HEIF"
    return None


# The first bytes of each format read here (DICOM and HEIF/AVIF: :func:`sniff`). MPO is a JPEG.
MAGIC = (
    b"\xff\xd8\xff",  # JPEG, MPO
    b"\x89PNG\r\n\x1a\n",
    b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+",  # TIFF, BigTIFF
    b"GIF87a", b"GIF89a",
)  # fmt: skip
HEAD_BYTES = 132  # enough for DICOM's preamble and its "DICM"


def looks_like_image(head: bytes) -> bool:
    """Whether a file's first :data:`HEAD_BYTES` bytes are those of a format read here: how a folder's
    files are recognised when their name has no image extension (a PACS export's DICOM files often
    have none). Whether the rest decodes is for :func:`decode_image` to say."""
    webp = head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    # BMP's "BM" begins many a text: its reserved bytes must be 0 and its header one of BMP's sizes
    bmp = head[:2] == b"BM" and head[6:10] == bytes(4) and int.from_bytes(head[14:18], "little") in _BMP_HEADERS
    return webp or bmp or head.startswith(MAGIC) or sniff(head) is not None


_BMP_HEADERS = {12, 40, 52, 56, 108, 124}


def _brands(data: bytes) -> set[bytes]:
    size = int.from_bytes(data[:4], "big")
    return {data[i : i + 4] for i in range(16, min(size, 64), 4)}


@functools.cache
def _register_heif() -> None:
    try:
        from pillow_heif import register_heif_opener
    except ImportError as err:
        raise ImageError(
            "HEIC/HEIF images need pillow-heif: pip install pillow-heif (or convert the photo to JPEG)"
        ) from err
    register_heif_opener()


def open_image(data: bytes) -> Image.Image:
    """Pillow's lazy open of ``data``, offered only the formats above, without Pillow's bomb warning."""
    Image.init()  # Pillow registers its plugins lazily: the formats below exist only after this
    kind = sniff(data)
    if kind == "HEIF" or (kind == "AVIF" and "AVIF" not in Image.OPEN):
        _register_heif()
    with warnings.catch_warnings():  # the limits are ours (checked next), not Pillow's warning
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data), formats=[f for f in FORMATS if f in Image.OPEN])  # MPO: via JPEG


def _failed(data: bytes, err: BaseException) -> ImageError:
    if isinstance(err, ImageError):
        return err
    if isinstance(err, Image.DecompressionBombError):  # above Pillow's own hard limit
        return ImageTooLargeError(f"image refused before decoding: {err}")
    if type(err).__name__ == "UnidentifiedImageError":
        return ImageError(
            f"cannot decode image ({len(data)} bytes): not a known image format; give JPEG, PNG, TIFF, WebP, "
            "HEIC, AVIF or DICOM"
        )
    detail = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
    return ImageError(f"cannot decode image ({len(data)} bytes): damaged or unsupported data ({detail})")


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the header alone (as stored: before the EXIF orientation)."""
    try:
        if sniff(data) == "DICOM":
            dataset = _read_dicom(data)
            return int(dataset.Columns), int(dataset.Rows)
        with open_image(data) as img:
            return img.size
    except Exception as err:
        raise _failed(data, err) from err


def centre_box(height: int, width: int) -> tuple[int, int, int]:
    """(top, left, side) of the centre square the model sees of a ``height`` x ``width`` image."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


def decode_image(
    data: bytes, limits: Limits | None = None, *, min_side: int | None = None, square: bool = False
) -> np.ndarray:
    """Encoded bytes -> the viewer's pixels: (H, W) or (H, W, 3|4) uint8 or uint16, or float32 in [0, 1].

    With ``min_side`` (the fast path), the image is reduced by 2, 4 or 8 while its short side stays
    >= ``min_side``: a JPEG inside libjpeg's DCT (Pillow's ``draft``), any other format by Pillow's
    box ``reduce`` after decoding. Orientation and colour are applied to the reduced image.
    ``square``: only the upright image's centre square (:func:`centre_box`: what the model sees),
    cut before the colour conversion, which then costs the square's pixels, not the photo's."""
    limits = limits or Limits()
    if not data:
        raise ImageError("cannot decode image: no bytes")
    limits.check_bytes(len(data))
    try:
        if sniff(data) == "DICOM":
            img, profile = _dicom_image(data, limits, min_side)
            return _as_shown(img, profile, min_side, square)
        with open_image(data) as img:
            limits.check_pixels(*img.size)
            if min_side is not None and img.format in ("JPEG", "MPO"):
                _draft(img, min_side)
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
            return _as_shown(img, img.info.get("icc_profile"), min_side, square)
    except Exception as err:
        raise _failed(data, err) from err


def _scale(min_side: int, size: tuple[int, int]) -> int:
    return next((s for s in (8, 4, 2) if min(size) // s >= min_side), 1)


def _draft(img: Image.Image, min_side: int) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale, keeping the short side >= ``min_side``."""
    scale = _scale(min_side, img.size)
    if scale > 1:
        img.draft(None, (img.size[0] // scale, img.size[1] // scale))


def _as_shown(img: Image.Image, profile: bytes | None, min_side: int | None, square: bool = False) -> np.ndarray:
    """A decoded image -> its sRGB pixels (alpha kept), reduced to ``min_side`` where given, its
    centre square only with ``square``."""
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA" if img.has_transparency_data else "RGB")
    elif img.mode in ("LA", "La", "RGBa"):
        img = img.convert("RGBA")
    elif img.mode in ("1", "YCbCr", "HSV"):
        img = img.convert("L" if img.mode == "1" else "RGB")
    elif img.mode == "LAB":
        raise ImageError("CIELAB images are not supported; export the photo as sRGB")
    sixteen = img.mode.startswith("I;16")
    top = _integer_top(img) if img.mode == "I" else None  # read before a reduction drops the header
    scale = _scale(min_side, img.size) if min_side is not None else 1
    if scale > 1:
        if sixteen:  # Pillow reduces 32-bit, not 16-bit, integers
            img = img.convert("I")
        elif top is not None and top > 65535:  # 32-bit values: their box sums overflow Pillow's integer filter
            img = img.convert("F")
        img = img.reduce(scale)
    if square:
        y, x, side = centre_box(img.height, img.width)
        img = img.crop((x, y, x + side, y + side))
    if sixteen:
        return np.asarray(img).astype(np.uint16)  # through mode I when reduced: still 0..65535
    if top is not None:  # mode I (or F, reduced from it)
        values = np.asarray(img)
        if values.size and values.min() < 0:
            raise ImageError("a signed integer image holds negative values; export the photo as 8 or 16 bits")
        if top == 65535:
            return values.clip(0, top).astype(np.uint16)
        return (values / float(top)).clip(0, 1).astype(np.float32)
    if img.mode == "F":
        values = np.asarray(img, dtype=np.float32)
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise ImageError("a float image's values must lie in [0, 1]; export the photo as 8 or 16 bits")
        return values
    if profile:
        img = _to_srgb(img, profile)
    elif img.mode == "CMYK":
        img = img.convert("RGB")
    return np.asarray(img)


def _integer_top(img: Image.Image) -> int:
    """The largest value of a mode-I image's type, from its header: a PNG's 16-bit grey (some Pillow
    versions read it as mode I), or a TIFF's 32-bit unsigned or signed integers."""
    if img.format != "TIFF":
        return 65535
    return 2**31 - 1 if getattr(img, "tag_v2", {}).get(339, 1) in (2, (2,)) else 2**32 - 1


@functools.lru_cache(maxsize=16)
def _transform(profile: bytes, mode: str) -> Any:
    source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    output = "RGBA" if mode == "RGBA" else "RGB"
    return ImageCms.buildTransform(source, ImageCms.createProfile("sRGB"), mode, output, INTENT)


def _to_srgb(img: Image.Image, profile: bytes) -> Image.Image:
    try:
        return ImageCms.applyTransform(img, _transform(bytes(profile), img.mode))
    except (ImageCms.PyCMSError, OSError, ValueError) as err:
        raise ImageError(
            f"the image's embedded colour profile cannot be used ({err}); export the photo as sRGB"
        ) from err


def _read_dicom(data: bytes, *, pixels: bool = False) -> Any:
    """The DICOM dataset; with ``pixels``, its pixel data too, as encoded (decoded by ``pixel_array``)."""
    try:
        import pydicom
    except ImportError as err:
        raise ImageError("DICOM images need pydicom: pip install pydicom") from err
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=not pixels)


def _dicom_image(data: bytes, limits: Limits, min_side: int | None = None) -> tuple[Image.Image, bytes | None]:
    """One DICOM frame as a Pillow image (YBR read as RGB by pydicom) and its ICC profile. With
    ``min_side`` (the fast path), a camera's JPEG frame is decoded at reduced scale as the same JPEG
    file would be (:func:`_camera_frame`)."""
    dataset = _read_dicom(data, pixels=True)
    if "Rows" not in dataset:
        raise ImageError("the DICOM file holds no image (no pixel data)")
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageError(f"the DICOM file holds {frames} frames; give one photograph per file (one frame)")
    limits.check_pixels(int(dataset.Columns), int(dataset.Rows))  # before pixel_array decodes anything
    profile = dataset.get("ICCProfile")
    if min_side is not None and (frame := _camera_frame(dataset)) is not None:
        img = open_image(frame)
        if img.format == "JPEG" and img.mode == "RGB" and img.size == (int(dataset.Columns), int(dataset.Rows)):
            _draft(img, min_side)
            img.load()
            return img, bytes(profile) if profile else None
    photometric = str(dataset.PhotometricInterpretation)
    pixels = dataset.pixel_array  # pydicom 3 converts YBR_FULL(_422) to RGB
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        pixels = apply_color_lut(pixels, dataset)
    bits = int(dataset.BitsStored)
    if pixels.dtype != np.uint8 or bits != 8:
        if int(dataset.get("PixelRepresentation", 0)) or (pixels.ndim == 3 and pixels.dtype != np.uint8):
            raise ImageError(f"DICOM pixels of {bits} bits ({pixels.dtype}) are not a photograph's; give 8-bit RGB")
        pixels = (pixels.astype(np.uint32) << (16 - bits)).astype(np.uint16)
    if photometric == "MONOCHROME1":
        pixels = np.iinfo(pixels.dtype).max - pixels
    img = Image.fromarray(np.ascontiguousarray(pixels))
    profile = dataset.get("ICCProfile")
    return img, bytes(profile) if profile else None


def _camera_frame(dataset: Any) -> bytes | None:
    """The frame of a DICOM that wraps a camera's JPEG (JPEG Baseline, 8-bit YCbCr, what cameras and
    most archives write), for libjpeg to decode at reduced scale as it does the JPEG file: pydicom
    decodes every pixel (1.6 s for a 24 MP frame here, against 61 ms for the JPEG at 1/8). None for
    any other encoding, decoded by pydicom. Its APP segments (EXIF orientation too) are not read:
    the DICOM's attributes say what the frame is."""
    if str(dataset.file_meta.get("TransferSyntaxUID", "")) != "1.2.840.10008.1.2.4.50":
        return None
    if str(dataset.get("PhotometricInterpretation", "")) not in ("YBR_FULL_422", "YBR_FULL"):
        return None
    if int(dataset.get("SamplesPerPixel", 0)) != 3 or int(dataset.get("BitsAllocated", 0)) != 8:
        return None
    from pydicom.encaps import generate_frames

    return next(generate_frames(dataset.PixelData, number_of_frames=1), None)


def dali_problem(data: bytes, limits: Limits | None = None) -> str | None:
    """Why the DALI pipeline would not read ``data`` as :func:`decode_image` does, or None.

    DALI decodes JPEG, PNG, TIFF, BMP and WebP to RGB with no colour management: an ICC profile
    other than sRGB, CMYK, transparency, more than 8 bits, an EXIF orientation and the formats it
    does not read (HEIC, AVIF, DICOM) would be a silently different answer, so the guard refuses
    them, naming the fix."""
    fix = "serve with --preprocess fast or exact (the package's decoder), or send an upright 8-bit sRGB JPEG"
    try:
        kind = sniff(data)
        if kind:
            return f"{kind} is not read by the DALI pipeline; {fix}"
        with open_image(data) as img:
            (limits or Limits()).check_pixels(*img.size)
            if img.format not in ("JPEG", "PNG", "TIFF", "BMP", "WEBP"):
                return f"{img.format} is not read by the DALI pipeline; {fix}"
            if img.mode not in ("L", "RGB") or img.has_transparency_data:
                what = "alpha, palette, CMYK or more than 8 bits"
                return f"an image in mode {img.mode} ({what}) would be read differently by DALI; {fix}"
            if img.getexif().get(0x0112, 1) not in (0, 1):
                return f"an image with an EXIF orientation would be drawn unrotated by DALI; {fix}"
            profile = img.info.get("icc_profile")
            if profile and not _is_srgb(profile):
                return f"an image with a colour profile other than sRGB would be read without it by DALI; {fix}"
    except ImageTooLargeError:
        raise
    except Exception:
        return None
    return None


@functools.lru_cache(maxsize=16)
def _is_srgb(profile: bytes) -> bool:
    """A profile whose primaries and white are sRGB's (to 0.002) and that calls itself sRGB."""
    try:
        given = ImageCms.ImageCmsProfile(io.BytesIO(profile)).profile
        srgb = ImageCms.createProfile("sRGB")
        colorants = ("red_colorant", "green_colorant", "blue_colorant")
        close = all(
            np.allclose(np.asarray(getattr(given, c)[0]), np.asarray(getattr(srgb, c)[0]), atol=2e-3) for c in colorants
        )
        return close and "srgb" in (given.profile_description or "").lower().replace(" ", "")
    except Exception:
        return False
