"""One photo stored every way cameras, phones and clinics store it, and each file "as shown".

:func:`corpus` encodes an sRGB photo (uint8 RGB) in each encoding of :data:`ENCODINGS`; the
stored pixels are what that device would write (AdobeRGB pixels under an AdobeRGB profile, the
photo turned against its EXIF orientation, ...), so a viewer shows the photo itself. Every file
carries what identifies a patient where its container can carry it (:func:`markers_in` finds it):
JPEG EXIF (GPS position, capture time, serial number, artist), XMP, IPTC and comments, and MPO's
second picture; PNG tEXt, zTXt and iTXt XMP; WebP, AVIF and HEIC EXIF and XMP; TIFF tags; DICOM
patient, study and equipment elements, nested and private sequences, and inside the encapsulated
frame what a wrapped camera JPEG keeps (EXIF, XMP, IPTC, comments) or a JPEG 2000 comment and XML
and UUID boxes. :data:`CONTAINERS` adds the carriers no decoder here reads (JPEG-LS in DICOM): the
de-identification tests check their structure, not their pixels.

:func:`as_shown` is the independent reference: Pillow's ImageOps and ImageCms (pydicom's
``pixel_array`` and pillow-heif for their formats), not the package's decoder.
ICC profiles are made by LittleCMS through imagecodecs (AdobeRGB 1998, ProPhoto, Display P3).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageCms, ImageOps
from PIL.PngImagePlugin import PngInfo

# Markers of identity the tests look for in what is sent or written.
IDENTITY = (b"Jane Example", b"SN-4711-0815", b"2026:11:30 09:41:00", b"PATIENT^NAME", b"ID-0042")
TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
             5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_270}  # fmt: skip  # stored = shown turned by this; the viewer undoes it


def profile(name: str) -> bytes:
    """An ICC profile by LittleCMS: AdobeRGB (1998), ProPhoto RGB or Display P3 (sRGB's curve as gamma 2.2)."""
    import imagecodecs

    d65, d50 = (0.3127, 0.3290, 1.0), (0.3457, 0.3585, 1.0)
    spaces = {
        "adobergb": (d65, (0.64, 0.33, 1.0, 0.21, 0.71, 1.0, 0.15, 0.06, 1.0), 563 / 256),
        "prophoto": (d50, (0.7347, 0.2653, 1.0, 0.1596, 0.8404, 1.0, 0.0366, 0.0001, 1.0), 1.8),
        "displayp3": (d65, (0.680, 0.320, 1.0, 0.265, 0.690, 1.0, 0.150, 0.060, 1.0), 2.2),
    }
    white, primaries, gamma = spaces[name]
    return imagecodecs.cms_profile("rgb", whitepoint=white, primaries=primaries, gamma=gamma)


def _identifying_exif(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F], exif[0x0110], exif[0x0132] = "ClinicCam", "DermaScope 3", "2026:11:30 09:41:00"
    exif[0x013B] = "Jane Example"  # Artist
    exif.get_ifd(0x8769)[0xA431] = "SN-4711-0815"  # BodySerialNumber
    exif.get_ifd(0x8825).update({1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)})  # GPS
    return exif


XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><dc:creator>Jane Example</dc:creator></x:xmpmeta>'
COMMENT = b"PATIENT^NAME ID-0042"


def markers_in(data: bytes) -> list[bytes]:
    """The identity markers in ``data``, also inside PNG's compressed text chunks (zTXt, iTXt)."""
    import zlib

    texts = [data]
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        pos = 8
        while pos + 8 <= len(data):
            length, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
            body = data[pos + 8 : pos + 8 + length]
            if kind == b"zTXt":
                texts.append(zlib.decompress(body[body.index(b"\0") + 2 :]))
            elif kind == b"iTXt" and body[body.index(b"\0") + 1] == 1:  # compressed
                rest = body[body.index(b"\0") + 3 :]
                rest = rest[rest.index(b"\0") + 1 :]  # language tag
                texts.append(zlib.decompress(rest[rest.index(b"\0") + 1 :]))  # translated keyword
            pos += 12 + length
    return [m for m in IDENTITY if any(m in t for t in texts)]


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def _exif_with_thumbnail() -> bytes:
    """An EXIF payload as cameras write it, with a thumbnail: IFD0 names the artist, IFD1 points at a
    JPEG of its own (whose comment names the patient too). Little-endian TIFF, laid out by hand:
    Pillow writes no thumbnails."""
    import struct

    thumbnail = _save(Image.new("RGB", (16, 16), (200, 120, 90)), "JPEG", comment=b"thumbnail of Jane Example")
    artist = b"Jane Example\0"
    ifd0 = 8
    text = ifd0 + 2 + 12 + 4
    ifd1 = text + len(artist)
    data = ifd1 + 2 + 2 * 12 + 4
    tiff = b"II*\0" + struct.pack("<I", ifd0)
    tiff += struct.pack("<HHHII", 1, 0x013B, 2, len(artist), text) + struct.pack("<I", ifd1) + artist  # Artist
    tiff += struct.pack("<HHHII", 2, 0x0201, 4, 1, data) + struct.pack("<HHII", 0x0202, 4, 1, len(thumbnail))
    return b"Exif\0\0" + tiff + struct.pack("<I", 0) + thumbnail


def identity_segments() -> bytes:
    """What a camera JPEG carries and img2dcm keeps when it wraps one: EXIF with a thumbnail (APP1),
    XMP (APP1), IPTC (APP13: Photoshop's 8BIM resource with the IPTC by-line) and a comment."""
    iptc = b"\x1c\x02\x50" + len(b"Jane Example").to_bytes(2, "big") + b"Jane Example"  # 2:80 By-line
    resource = b"8BIM\x04\x04\x00\x00" + len(iptc).to_bytes(4, "big") + iptc
    return b"".join((
        _segment(0xE1, _exif_with_thumbnail()),
        _segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + XMP),
        _segment(0xED, b"Photoshop 3.0\x00" + resource),
        _segment(0xFE, COMMENT),
    ))  # fmt: skip


def with_identity(codestream: bytes) -> bytes:
    """A JPEG or JPEG-LS codestream with :func:`identity_segments` after its start of image."""
    assert codestream[:2] == b"\xff\xd8"
    return codestream[:2] + identity_segments() + codestream[2:]


def _j2k_with_comment(codestream: bytes) -> bytes:
    """A JPEG 2000 codestream with a comment segment after its SIZ (where encoders put theirs)."""
    siz_end = 4 + int.from_bytes(codestream[4:6], "big")
    return codestream[:siz_end] + _segment(0x64, b"\x00\x01" + COMMENT) + codestream[siz_end:]


def _jp2_with_boxes(jp2: bytes) -> bytes:
    """A JP2 file with an XML box (XMP) and a UUID box naming the patient, and a comment in its codestream."""
    at = jp2.index(b"jp2c") - 4
    codestream = _j2k_with_comment(jp2[at + 8 :])
    xml = (len(XMP) + 8).to_bytes(4, "big") + b"xml " + XMP
    uuid = (16 + len(COMMENT) + 8).to_bytes(4, "big") + b"uuid" + bytes(range(16)) + COMMENT
    return jp2[:at] + xml + uuid + (len(codestream) + 8).to_bytes(4, "big") + b"jp2c" + codestream


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _in_profile(rgb: np.ndarray, name: str) -> tuple[Image.Image, bytes]:
    icc = profile(name)
    source = ImageCms.createProfile("sRGB")
    target = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    stored = ImageCms.profileToProfile(Image.fromarray(rgb), source, target, ImageCms.Intent.RELATIVE_COLORIMETRIC)
    return stored, icc


def _jpeg(image: Image.Image, orientation: int = 1, **options) -> bytes:
    """Quality 92, 4:2:0, with the identifying EXIF (at ``orientation``), XMP, IPTC and comment of a camera."""
    encoded = _save(image, "JPEG", quality=92, exif=_identifying_exif(orientation), xmp=XMP, comment=COMMENT,
                    **options)  # fmt: skip
    iptc = b"\xff\xed" + identity_segments().split(b"\xff\xed", 1)[1].split(b"\xff\xfe", 1)[0]
    thumbnail = _segment(0xE1, _exif_with_thumbnail())  # after Pillow's EXIF, which readers take first
    return encoded[:2] + iptc + encoded[2:].replace(b"\xff\xdb", thumbnail + b"\xff\xdb", 1)  # IPTC, a thumbnail


def _png(image: Image.Image) -> bytes:
    """A PNG with what photo software writes: a tEXt author, a zTXt comment and a compressed iTXt XMP."""
    info = PngInfo()
    info.add_text("Author", "Jane Example")
    info.add_text("Comment", COMMENT.decode(), zip=True)
    info.add_itxt("XML:com.adobe.xmp", XMP.decode(), zip=True)
    return _save(image, "PNG", pnginfo=info)


def _oriented(rgb: np.ndarray, orientation: int) -> bytes:
    return _jpeg(Image.fromarray(rgb).transpose(TRANSPOSE[orientation]), orientation)


def _png_oriented(rgb: np.ndarray) -> bytes:
    pnginfo = PngInfo()
    pnginfo.add_text("Author", "Jane Example")
    return _save(Image.fromarray(rgb).transpose(TRANSPOSE[6]), "PNG", exif=_identifying_exif(6), pnginfo=pnginfo)


def _rgba(rgb: np.ndarray) -> bytes:
    height, width = rgb.shape[:2]
    alpha = np.full((height, width), 255, np.uint8)
    alpha[: height // 8], alpha[:, : width // 8] = 0, 128  # a transparent top band, a half-transparent left one
    return _png(Image.fromarray(np.dstack([rgb, alpha])))


def _nested_identity(ds) -> None:
    """Where archives keep identity out of sight: the attributes an edit replaced, the order's, a vendor's."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    modified = Dataset()
    modified.PatientName = "PATIENT^NAME"
    original = Dataset()
    original.ModifiedAttributesSequence = Sequence([modified])
    original.SourceOfPreviousValues, original.AttributeModificationDateTime = "Jane Example Clinic", "20261130094100"
    original.ModifyingSystem, original.ReasonForTheAttributeModification = "PACS", "CORRECT"
    ds.OriginalAttributesSequence = Sequence([original])
    request = Dataset()
    request.RequestedProcedureID, request.ScheduledProcedureStepID = "ID-0042", "SN-4711-0815"
    ds.RequestAttributesSequence = Sequence([request])
    vendor = Dataset()
    vendor.add_new(0x00091001, "LO", "Jane Example")
    ds.add_new(0x00090010, "LO", "DERMASCOPE VENDOR")
    ds.add_new(0x00091010, "SQ", Sequence([vendor]))


def _dicom(rgb: np.ndarray, syntax: str, icc: bytes | None = None) -> bytes:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        JPEG2000Lossless,
        JPEGBaseline8Bit,
        JPEGLSLossless,
        RLELossless,
        generate_uid,
    )

    ds = Dataset()
    _nested_identity(ds)
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "PATIENT^NAME", "ID-0042", "19700101"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.4"  # VL Photographic Image
    ds.Modality, ds.DeviceSerialNumber, ds.InstitutionName = "XC", "SN-4711-0815", "Jane Example Clinic"
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 3, 8, 8, 7, 0
    ds.PlanarConfiguration = 0
    if icc is not None:
        ds.ICCProfile = icc
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    if syntax == "jpeg":  # what cameras and archives write: baseline JPEG, 4:2:2 YCbCr, a camera's segments kept
        ds.PhotometricInterpretation = "YBR_FULL_422"
        frame = with_identity(_save(Image.fromarray(rgb), "JPEG", quality=92, subsampling=1))
        ds.PixelData = encapsulate([frame])
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    elif syntax == "jpegls":
        import imagecodecs

        ds.PhotometricInterpretation = "RGB"
        ds.PixelData = encapsulate([with_identity(imagecodecs.jpegls_encode(np.ascontiguousarray(rgb)))])
        ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    elif syntax in ("jpeg2000", "jp2"):
        ds.PhotometricInterpretation = "RGB"
        encoded = _save(Image.fromarray(rgb), "JPEG2000", irreversible=False, no_jp2=syntax == "jpeg2000")
        frame = _j2k_with_comment(encoded) if syntax == "jpeg2000" else _jp2_with_boxes(encoded)
        ds.PixelData = encapsulate([frame])
        ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    else:
        ds.PhotometricInterpretation = "RGB"
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PixelData = np.ascontiguousarray(rgb).tobytes()
        if syntax == "rle":
            ds.compress(RLELossless, np.ascontiguousarray(rgb))
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _heic(rgb: np.ndarray) -> bytes:
    import pillow_heif

    pillow_heif.register_heif_opener()
    stored, icc = _in_profile(rgb, "displayp3")  # an iPhone's: Display P3 in HEIC
    return _save(stored, "HEIF", quality=90, icc_profile=icc, exif=_identifying_exif(1))


_TIFF_TAGS = {315: "Jane Example", 270: COMMENT.decode()}  # Artist, ImageDescription

ENCODINGS: dict[str, Callable[[np.ndarray], bytes]] = {
    "jpeg": lambda rgb: _jpeg(Image.fromarray(rgb)),
    "jpeg_progressive": lambda rgb: _jpeg(Image.fromarray(rgb), progressive=True),
    **{f"jpeg_orientation_{o}": (lambda rgb, o=o: _oriented(rgb, o)) for o in range(2, 9)},
    "jpeg_adobergb": lambda rgb: _jpeg(_in_profile(rgb, "adobergb")[0], icc_profile=profile("adobergb")),
    "jpeg_prophoto": lambda rgb: _jpeg(_in_profile(rgb, "prophoto")[0], icc_profile=profile("prophoto")),
    "jpeg_displayp3": lambda rgb: _jpeg(_in_profile(rgb, "displayp3")[0], icc_profile=profile("displayp3")),
    "jpeg_adobergb_orientation_6": lambda rgb: _jpeg(
        _in_profile(rgb, "adobergb")[0].transpose(TRANSPOSE[6]), 6, icc_profile=profile("adobergb")
    ),
    "jpeg_cmyk": lambda rgb: _jpeg(Image.fromarray(rgb).convert("CMYK")),
    "mpo": lambda rgb: _save(
        Image.fromarray(rgb),
        "MPO",
        save_all=True,
        quality=92,
        exif=_identifying_exif(),
        comment=COMMENT,  # Pillow writes it into both pictures: the second must go whole
        append_images=[Image.fromarray(rgb[::4, ::4])],
    ),
    "png": lambda rgb: _png(Image.fromarray(rgb)),
    "png_orientation_6": _png_oriented,
    "png_rgba": _rgba,
    "png_palette": lambda rgb: _png(Image.fromarray(rgb).quantize(256)),
    "png_16bit_grey": lambda rgb: _png(Image.fromarray((rgb.mean(axis=2) * 257).astype(np.uint16))),
    "tiff": lambda rgb: _save(Image.fromarray(rgb), "TIFF", compression="tiff_deflate", tiffinfo=_TIFF_TAGS),
    "tiff_adobergb": lambda rgb: _save(
        _in_profile(rgb, "adobergb")[0], "TIFF", icc_profile=profile("adobergb"), tiffinfo=_TIFF_TAGS
    ),
    "tiff_float_grey": lambda rgb: _save(
        Image.fromarray(rgb.mean(axis=2).astype(np.float32) / 255), "TIFF", tiffinfo=_TIFF_TAGS
    ),
    "webp": lambda rgb: _save(Image.fromarray(rgb), "WEBP", quality=92, exif=_identifying_exif(1), xmp=XMP),
    "heic_displayp3": _heic,
    "avif": lambda rgb: _save(Image.fromarray(rgb), "AVIF", quality=90, speed=8, exif=_identifying_exif(1), xmp=XMP),
    "dicom_jpeg_ybr422": lambda rgb: _dicom(rgb, "jpeg"),
    "dicom_jpeg2000": lambda rgb: _dicom(rgb, "jpeg2000"),
    "dicom_jp2_boxes": lambda rgb: _dicom(rgb, "jp2"),
    "dicom_rle": lambda rgb: _dicom(rgb, "rle"),
    "dicom_adobergb": lambda rgb: _dicom(np.asarray(_in_profile(rgb, "adobergb")[0]), "native", profile("adobergb")),
}


# Carriers the package strips but no decoder here reads (pydicom needs pyjpegls for JPEG-LS).
CONTAINERS: dict[str, Callable[[np.ndarray], bytes]] = {"dicom_jpegls": lambda rgb: _dicom(rgb, "jpegls")}


def corpus(rgb: np.ndarray, names: tuple[str, ...] | None = None) -> dict[str, bytes]:
    return {name: ENCODINGS[name](rgb) for name in names or ENCODINGS}


def as_shown(data: bytes) -> np.ndarray:
    """The file as a colour-managed viewer shows it, as uint8 RGB: oriented, in sRGB, over white."""
    if data[128:132] == b"DICM":
        import pydicom

        ds = pydicom.dcmread(io.BytesIO(data))
        image = Image.fromarray(ds.pixel_array)
        icc = bytes(ds.ICCProfile) if "ICCProfile" in ds else None
    else:
        import pillow_heif

        pillow_heif.register_heif_opener()
        image = Image.open(io.BytesIO(data))
        image = ImageOps.exif_transpose(image)
        icc = image.info.get("icc_profile")
    if image.mode == "F":
        image = Image.fromarray((np.asarray(image) * 255 + 0.5).astype(np.uint8))
    elif image.mode.startswith("I;16"):
        image = Image.fromarray((np.asarray(image) / 257 + 0.5).astype(np.uint8))
    if icc:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        image = ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"),
                                          ImageCms.Intent.RELATIVE_COLORIMETRIC, outputMode="RGB")  # fmt: skip
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))


def as_shown_png(data: bytes) -> bytes:
    return _save(Image.fromarray(as_shown(data)), "PNG")


def mutations(data: bytes, rng: np.random.Generator, count: int):
    """``count`` damaged copies of ``data``: bytes flipped, runs overwritten, cut short, spliced in."""
    for _ in range(count):
        mutated = bytearray(data)
        kind = rng.integers(4)
        if kind == 0:  # a few random bytes anywhere, the headers included
            for position in rng.integers(0, len(mutated), rng.integers(1, 16)):
                mutated[position] = int(rng.integers(256))
        elif kind == 1:  # a run overwritten with one value (0x00 or 0xFF: lengths and markers)
            start = int(rng.integers(0, len(mutated)))
            mutated[start : start + int(rng.integers(1, 64))] = bytes([int(rng.choice([0, 255]))]) * 64
        elif kind == 2:  # cut short
            del mutated[int(rng.integers(1, len(mutated))) :]
        else:  # a slice of the file copied elsewhere (repeated segments, chunks, boxes)
            start, end = sorted(int(v) for v in rng.integers(0, len(mutated), 2))
            at = int(rng.integers(0, len(mutated)))
            mutated[at:at] = data[start : min(end, start + 4096)]
        yield bytes(mutated)
