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
  pixel data), the ICC profile and the SOP class, with a new instance UID and "patient identity
  removed": no patient, study, series, equipment, private element or sequence (nested ones such as
  OriginalAttributesSequence go with their parent). Each encapsulated frame is stripped as its own
  container: a JPEG or JPEG-LS frame loses every APPn and comment (a wrapped camera JPEG keeps its
  EXIF, XMP, IPTC and comments), a JPEG 2000 frame its comments and its JP2 boxes other than the
  image's (XML, UUID, ...); the entropy-coded data stays byte for byte. An image whose pixels may
  show the patient (``BurnedInAnnotation`` YES, or a Secondary Capture, a screenshot's class,
  without ``NO``) is not sent.
- Anything else (TIFF, HEIC, AVIF, BMP, GIF): decoded as shown (:mod:`dgla_export.decode`:
  orientation and profile applied) and sent as a lossless PNG of those pixels.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from dgla_export.decode import ImageError, Limits, decode_image, open_image, sniff

__all__ = ["deidentify", "refuse_burned_in"]

ORIENTATION = 0x0112
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_KEPT = {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND", b"iCCP", b"sRGB", b"gAMA", b"cHRM", b"sBIT", b"cICP"}
WEBP_KEPT = {b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ICCP", b"ANIM", b"ANMF"}
JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
JP2_KEPT = {b"jP  ", b"ftyp"}  # and jp2h (rebuilt) and jp2c (stripped of its comments)
JP2H_KEPT = {b"ihdr", b"bpcc", b"colr", b"pclr", b"cmap", b"cdef", b"res "}  # the header's image boxes
# The segments a JPEG decoder reads: SOF0-3, 5-7, 9-11, 13-15, DHT, DAC, DNL, DRI, DQT, SOS (its scans
# are copied as they are) and JPEG-LS's SOF55 and LSE.
JPEG_DECODED = {*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0), 0xC4, 0xCC,
                0xDB, 0xDC, 0xDD, 0xDA, 0xF7, 0xF8}  # fmt: skip
JPEG_SYNTAXES = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"}
JPEG_LS_SYNTAXES = {"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}
J2K_SYNTAXES = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
                "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"}  # fmt: skip  # JPEG 2000 and HTJ2K
RLE_SYNTAX = "1.2.840.10008.1.2.5"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # and its multi-frame classes, .7.1 to .7.4
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


def _jpeg(data: bytes, *, orientation: bool = True, jpeg_ls: bool = False) -> bytes:
    """The JPEG without APPn (but ICC and Adobe) and comments, up to its first end of image;
    ``orientation``: a camera file's EXIF orientation written back (not inside DICOM, which has none).
    ``jpeg_ls``: the scans are JPEG-LS's, where 0xFF before a byte below 0x80 is data."""
    out = [b"\xff\xd8"]
    exif = _orientation_exif(data) if orientation else None
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
            end = _scan_end(data, end, jpeg_ls)
            out.append(data[pos:end])
        elif marker == 0xEE and _kept_jpeg_segment(marker, data[pos + 4 : pos + 18]):
            out.append(b"\xff\xee\x00\x0e" + data[pos + 4 : pos + 16])  # "Adobe", version, flags, transform
        elif _kept_jpeg_segment(marker, data[pos + 4 : pos + 18]):
            out.append(data[pos:end])
        pos = end
    return b"".join(out)


def _scan_end(data: bytes, pos: int, jpeg_ls: bool = False) -> int:
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return len(data)
        follower = data[pos + 1]
        if (jpeg_ls and follower < 0x80) or follower == 0x00 or 0xD0 <= follower <= 0xD7:  # data or restart
            pos += 2
        elif follower == 0xFF:  # fill before a marker
            pos += 1
        else:
            return pos


def _kept_jpeg_segment(marker: int, head: bytes) -> bool:
    """What a decoder reads (frame, tables, restart interval, scans; JPEG-LS's SOF55 and LSE) and the
    ICC profile and Adobe colour transform; every other segment (APPn, comments, JPGn, reserved) goes."""
    if marker == 0xE2:
        return head.startswith(b"ICC_PROFILE\x00")
    if marker == 0xEE:
        return head.startswith(b"Adobe")  # cut to its fixed 12 bytes by the caller
    return marker in JPEG_DECODED


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


def refuse_burned_in(data: bytes) -> None:
    """For a pixels-only client, which sends no container at all: a DICOM whose pixels may show the
    patient (see :func:`deidentify`) raises :class:`ImageError`; any other image passes."""
    if sniff(data) != "DICOM":
        return
    try:
        import pydicom
    except ImportError as err:
        raise ImageError("DICOM images need pydicom: pip install pydicom") from err
    try:
        source = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except Exception as err:
        raise ImageError(f"cannot read the DICOM's header ({len(data)} bytes): {err}") from err
    _refuse_burned_in(source)


def _dicom(data: bytes) -> bytes:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate, generate_frames
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, generate_uid

    source = pydicom.dcmread(io.BytesIO(data))
    _refuse_burned_in(source)
    kept = Dataset()
    for keyword in DICOM_KEPT:
        if keyword in source:
            kept[keyword] = source[keyword]
    syntax = source.file_meta.TransferSyntaxUID
    if syntax.is_encapsulated and "PixelData" in source:
        count = int(source.get("NumberOfFrames", 1) or 1)
        frames = [_frame(bytes(f), str(syntax)) for f in generate_frames(source.PixelData, number_of_frames=count)]
        kept.PixelData = encapsulate(frames)
        kept["PixelData"].VR, kept["PixelData"].is_undefined_length = "OB", True
    kept.SOPInstanceUID = generate_uid()
    kept.PatientIdentityRemoved = "YES"
    kept.file_meta = FileMetaDataset()
    kept.file_meta.TransferSyntaxUID = syntax
    kept.file_meta.MediaStorageSOPClassUID = source.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.77.1.4")
    kept.file_meta.MediaStorageSOPInstanceUID = kept.SOPInstanceUID
    kept.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    buffer = io.BytesIO()
    kept.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _refuse_burned_in(source: Any) -> None:
    """Pixels that may show the patient's name are not sent: DICOM's own flag says so, or the
    image is a Secondary Capture (screenshots, scanned documents) that does not say it is free of it."""
    flag = source.get("BurnedInAnnotation", "")
    values = [
        str(v).strip().upper() for v in (flag if isinstance(flag, Sequence) and not isinstance(flag, str) else [flag])
    ]
    burned = "YES" if "YES" in values else (values[0] if values else "")  # YES\NO says YES
    if burned == "YES":
        raise ImageError(
            "the DICOM says its pixels carry burned-in text (BurnedInAnnotation YES), which may name the patient; "
            "not sent: give the photograph without the annotation"
        )
    meta = getattr(source, "file_meta", None)
    sop_class = str(source.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else ""))
    if (sop_class == SECONDARY_CAPTURE or sop_class.startswith(SECONDARY_CAPTURE + ".")) and burned != "NO":
        raise ImageError(
            "the DICOM is a Secondary Capture (a screenshot or scan) that does not say BurnedInAnnotation NO, so its "
            "pixels may show the patient's name; not sent: give the original photograph"
        )


def _frame(data: bytes, syntax: str) -> bytes:
    """One encapsulated frame without the metadata its own container can carry."""
    if syntax in JPEG_SYNTAXES:
        return _jpeg(data, orientation=False)
    if syntax in JPEG_LS_SYNTAXES:
        return _jpeg(data, orientation=False, jpeg_ls=True)
    if syntax in J2K_SYNTAXES:
        return _jp2(data) if data.startswith(JP2_SIGNATURE) else _j2k_codestream(data)
    if syntax == RLE_SYNTAX:  # segments of run-length bytes: nothing but pixels
        return data
    raise ImageError(f"DICOM pixels in transfer syntax {syntax} are not a photograph's; give JPEG, JPEG 2000 or RLE")


def _jp2(data: bytes) -> bytes:
    """A JP2 file's boxes that make the image (signature, file type, header, codestream), the
    codestream without comments; XML, UUID, UUID-info and every other box dropped."""
    out = []
    for kind, body in _boxes(data):
        if kind == b"jp2c":
            out.append(_box(b"jp2c", _j2k_codestream(body)))
        elif kind == b"jp2h":  # its image boxes only: an XML or UUID box may hide inside it too
            out.append(_box(b"jp2h", b"".join(_box(k, b) for k, b in _boxes(body) if k in JP2H_KEPT)))
        elif kind in JP2_KEPT:
            out.append(_box(kind, body))
    return b"".join(out)


def _boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (type, contents) of each box of a JP2 file or superbox."""
    boxes, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        head = 8
        if size == 1:  # a 64-bit length follows
            size, head = int.from_bytes(data[pos + 8 : pos + 16], "big"), 16
        end = len(data) if size == 0 else pos + size
        if end > len(data) or end < pos + head:
            raise ImageError(f"damaged JPEG 2000: a box runs past the end at byte {pos}")
        boxes.append((kind, data[pos + head : end]))
        pos = end
    return boxes


def _box(kind: bytes, body: bytes) -> bytes:
    return (len(body) + 8).to_bytes(4, "big") + kind + body


def _j2k_codestream(data: bytes) -> bytes:
    """A JPEG 2000 codestream without its comment (COM) segments, in the main header and in each
    tile-part header (whose length, Psot, shrinks by what went); the tile data byte for byte."""
    if data[:2] != b"\xff\x4f":
        raise ImageError("damaged JPEG 2000: the codestream does not start with SOC")
    out, pos, tlm = [data[:2]], 2, False
    while pos + 4 <= len(data) and data[pos : pos + 2] != b"\xff\x90":  # main header, up to the first SOT
        marker, end = data[pos + 1], pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        tlm |= marker == 0x55
        if marker != 0x64:
            out.append(data[pos:end])
        pos = end
    while pos + 12 <= len(data) and data[pos : pos + 2] == b"\xff\x90":  # tile-parts
        length = int.from_bytes(data[pos + 6 : pos + 10], "big")  # Psot: the whole tile-part, 0: to EOC
        part_end = len(data) - 2 if length == 0 else pos + length
        header, at = [], pos + 12
        while data[at : at + 2] != b"\xff\x93":  # tile-part header, up to SOD
            marker, end = data[at + 1], at + 2 + int.from_bytes(data[at + 2 : at + 4], "big")
            if marker != 0x64:
                header.append(data[at:end])
            at = end
            if at + 2 > part_end:
                raise ImageError("damaged JPEG 2000: a tile-part header has no SOD")
        dropped = (at - pos - 12) - sum(map(len, header))
        if dropped and tlm:
            raise ImageError("a JPEG 2000 frame with comments inside a tile and a TLM index cannot be stripped safely")
        psot = (length - dropped if length else 0).to_bytes(4, "big")
        out += [data[pos : pos + 6], psot, data[pos + 10 : pos + 12], *header, data[at:part_end]]
        pos = part_end
    if data[pos : pos + 2] != b"\xff\xd9" or data[pos + 2 :].strip(b"\0"):
        raise ImageError("a JPEG 2000 frame holds bytes after its last tile-part other than its end (EOC); not sent")
    out.append(b"\xff\xd9")
    return b"".join(out)


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
