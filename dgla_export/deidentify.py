"""What leaves the machine: a photo's pixels, orientation and colour profile, nothing of the patient.

``dgla-client`` sends every image through :func:`deidentify` before it reaches the network. Camera
files carry GPS positions, capture times, serial numbers and names (EXIF, XMP, IPTC, PNG text
chunks, MPO's second pictures, maker notes, thumbnails); DICOM files carry the patient and study
modules. What the pixels need is kept, byte for byte, so the server reads the very pixels the
original holds (tests check equality):

- JPEG (and MPO: its first picture): the segments a decoder reads (tables, frame, scans) and the
  ICC profile and Adobe colour-transform segments; every other APPn and comment is dropped. An EXIF
  orientation other than 1 is written back as a minimal EXIF holding that one tag.
- PNG: the image and colour chunks (IHDR, PLTE, tRNS, IDAT, IEND, iCCP, sRGB, gAMA, cHRM, sBIT,
  cICP); text, time and EXIF chunks are dropped (the orientation kept as above).
- WebP: the image, alpha, animation and ICC chunks; EXIF and XMP dropped (orientation kept).
- DICOM: a new file of the Image Pixel module (rows, columns, photometric interpretation, bits,
  pixel data as encoded), the ICC profile and the SOP class, with a new instance UID and
  "patient identity removed": no patient, study, series, equipment or private element.
- Anything else (TIFF, HEIC, AVIF, BMP, GIF): decoded as shown (:mod:`dgla_export.decode`:
  orientation and profile applied) and sent as a lossless PNG of those pixels.
"""

from __future__ import annotations

import io
import zlib

import numpy as np
from PIL import Image

from dgla_export.decode import ImageError, Limits, decode_image, open_image, sniff

__all__ = ["deidentify"]

ORIENTATION = 0x0112
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_KEPT = {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND", b"iCCP", b"sRGB", b"gAMA", b"cHRM", b"sBIT", b"cICP"}
WEBP_KEPT = {b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ICCP", b"ANIM", b"ANMF"}
DICOM_KEPT = (
    "SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration", "Rows", "Columns", "BitsAllocated",
    "BitsStored", "HighBit", "PixelRepresentation", "NumberOfFrames", "PixelAspectRatio", "ICCProfile", "ColorSpace",
    "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor", "RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData", "LossyImageCompression", "LossyImageCompressionRatio",
    "LossyImageCompressionMethod", "SOPClassUID", "PixelData",
)  # fmt: skip


def deidentify(data: bytes, limits: Limits | None = None) -> bytes:
    """``data`` without identifying metadata, the pixels as the original shows them (see above)."""
    try:
        if sniff(data) == "DICOM":
            return _dicom(data)
        if data[:2] == b"\xff\xd8":
            return _jpeg(data)
        if data[:8] == PNG_SIGNATURE:
            return _png(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp(data)
    except ImageError:
        raise
    except Exception as err:
        raise ImageError(f"cannot read the image's structure to strip its metadata ({len(data)} bytes): {err}") from err
    return _as_png(data, limits)


def _orientation_exif(data: bytes) -> bytes | None:
    """A minimal EXIF (TIFF header and one tag) with the image's orientation, or None for upright."""
    try:
        with open_image(data) as img:
            orientation = img.getexif().get(ORIENTATION, 1)
    except Exception:
        return None
    if orientation in (0, 1) or not isinstance(orientation, int) or not 1 <= orientation <= 8:
        return None
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return exif.tobytes()[6:]  # without the "Exif\0\0" of a JPEG APP1


def _jpeg(data: bytes) -> bytes:
    out = [b"\xff\xd8"]
    exif = _orientation_exif(data)
    if exif is not None:
        payload = b"Exif\x00\x00" + exif
        out.append(b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload)
    pos = 2
    while pos + 1 < len(data):
        if data[pos] != 0xFF:
            raise ImageError(f"damaged JPEG: no marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # end of image: MPO's further pictures and any trailer stay behind
            out.append(b"\xff\xd9")
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            out.append(data[pos : pos + 2])
            pos += 2
            continue
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # a scan: its header, then entropy-coded data up to the next real marker
            end = _scan_end(data, end)
            out.append(data[pos:end])
        elif _kept_jpeg_segment(marker, data[pos + 4 : pos + 18]):
            out.append(data[pos:end])
        pos = end
    return b"".join(out)


def _scan_end(data: bytes, pos: int) -> int:
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return len(data)
        follower = data[pos + 1]
        if follower == 0x00 or 0xD0 <= follower <= 0xD7:  # stuffed byte or restart marker: still the scan
            pos += 2
        elif follower == 0xFF:  # fill before a marker
            pos += 1
        else:
            return pos


def _kept_jpeg_segment(marker: int, head: bytes) -> bool:
    if marker == 0xE2:
        return head.startswith(b"ICC_PROFILE\x00")
    if marker == 0xEE:
        return head.startswith(b"Adobe")  # the colour transform of CMYK/YCCK and Adobe RGB JPEGs
    return not (0xE0 <= marker <= 0xEF or marker == 0xFE)  # APPn and comments go


def _png(data: bytes) -> bytes:
    out = [PNG_SIGNATURE]
    exif = _orientation_exif(data)
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if kind == b"IDAT" and exif is not None:  # the orientation, before the image data
            out.append(len(exif).to_bytes(4, "big") + b"eXIf" + exif + zlib.crc32(b"eXIf" + exif).to_bytes(4, "big"))
            exif = None
        if kind in PNG_KEPT:
            out.append(data[pos:end])
        if kind == b"IEND":
            break
        pos = end
    return b"".join(out)


def _webp(data: bytes) -> bytes:
    chunks = []
    exif = _orientation_exif(data)
    pos = 12
    while pos + 8 <= len(data):
        kind, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        end = pos + 8 + size + (size & 1)
        if kind == b"VP8X":
            flags = data[pos + 8] & ~0x0C | (0x08 if exif is not None else 0)  # EXIF and XMP bits
            chunks.append(data[pos : pos + 8] + bytes([flags]) + data[pos + 9 : end])
        elif kind in WEBP_KEPT:
            chunks.append(data[pos:end])
        pos = end
    if exif is not None:
        chunks.append(b"EXIF" + len(exif).to_bytes(4, "little") + exif + b"\x00" * (len(exif) & 1))
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def _dicom(data: bytes) -> bytes:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, generate_uid

    source = pydicom.dcmread(io.BytesIO(data))
    kept = Dataset()
    for keyword in DICOM_KEPT:
        if keyword in source:
            kept[keyword] = source[keyword]
    kept.SOPInstanceUID = generate_uid()
    kept.PatientIdentityRemoved = "YES"
    kept.file_meta = FileMetaDataset()
    kept.file_meta.TransferSyntaxUID = source.file_meta.TransferSyntaxUID
    kept.file_meta.MediaStorageSOPClassUID = source.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.77.1.4")
    kept.file_meta.MediaStorageSOPInstanceUID = kept.SOPInstanceUID
    kept.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    buffer = io.BytesIO()
    kept.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _as_png(data: bytes, limits: Limits | None) -> bytes:
    pixels = decode_image(data, limits)
    if pixels.dtype == np.float32:  # 32-bit sources: 16-bit grey, or 8-bit colour (a PNG's RGB is 8 or 16 bits)
        pixels = (pixels * (65535 if pixels.ndim == 2 else 255) + 0.5).astype(
            np.uint16 if pixels.ndim == 2 else np.uint8
        )
    elif pixels.dtype == np.uint16 and pixels.ndim == 3:
        pixels = (pixels >> 8).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
