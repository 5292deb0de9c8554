"""What dgla-client sends: the pixels as shown, nothing that identifies the patient."""

from __future__ import annotations

import io

import numpy as np
import pytest
from photo_encodings import CONTAINERS, ENCODINGS, IDENTITY, corpus, markers_in
from PIL import Image

from dgla_export.decode import ImageError, decode_image
from dgla_export.deidentify import deidentify, refuse_burned_in
from dgla_export.preprocess import to_rgb_float


@pytest.fixture(scope="module")
def encoded():
    import skimage.data

    rgb = np.ascontiguousarray(skimage.data.astronaut()[:, :400])  # 400x512: quick to encode
    return {**corpus(rgb), **{name: make(rgb) for name, make in CONTAINERS.items()}}


def _frames(data: bytes) -> list[bytes]:
    import pydicom
    from pydicom.encaps import generate_frames

    dataset = pydicom.dcmread(io.BytesIO(data))
    return [bytes(f) for f in generate_frames(dataset.PixelData, number_of_frames=1)]


def test_every_file_carries_identity_before_and_none_after(encoded) -> None:
    """The premise for every file of the corpus, each marker counted: present before stripping,
    absent after (in the file's own bytes and, for DICOM, inside each encapsulated frame)."""
    before, after = 0, 0
    for name, data in encoded.items():
        found = markers_in(data)
        assert found, f"{name}: the corpus file carries no identity marker, so the test could not fail"
        stripped = deidentify(data)
        left = markers_in(stripped)
        if name.startswith("dicom") and name != "dicom_adobergb":
            left += [m for frame in _frames(stripped) for m in markers_in(frame)]
        assert not left, f"{name}: {left} still in what is sent"
        before, after = before + len(found), after + len(left)
    print(f"identity markers in {len(encoded)} files: {before} before, {after} after (of {len(IDENTITY)} kinds)")


@pytest.mark.parametrize("name", list(ENCODINGS))
def test_stripped_files_keep_their_pixels(encoded, name) -> None:
    stripped = deidentify(encoded[name])
    before, after = decode_image(encoded[name]), decode_image(stripped)
    err = float(np.abs(to_rgb_float(before) - to_rgb_float(after)).max())
    assert err <= 1 / 65535, f"{name}: stripping changed the pixels by {err * 255:.3f} grey levels"
    assert before.shape == after.shape, f"{name}: {before.shape} -> {after.shape}"


def _entropy_coded(frame: bytes) -> bytes:
    """A JPEG(-LS) frame from its first scan header to its end of image: what a decoder decodes."""
    return frame[frame.index(b"\xff\xda") : frame.rindex(b"\xff\xd9") + 2]


@pytest.mark.parametrize("name", ["dicom_jpeg_ybr422", "dicom_jpegls", "dicom_jpeg2000", "dicom_jp2_boxes"])
def test_dicom_frames_lose_their_metadata_and_keep_their_coded_data(encoded, name) -> None:
    (original,), (stripped,) = _frames(encoded[name]), _frames(deidentify(encoded[name]))
    assert markers_in(original) and not markers_in(stripped), name
    if name in ("dicom_jpeg_ybr422", "dicom_jpegls"):
        # the original ends with the stripped frame's scans, byte for byte (its own first SOS may be its
        # EXIF thumbnail's)
        assert original.rstrip(b"\0").endswith(_entropy_coded(stripped)), f"{name}: the coded data changed"
        assert stripped[:2] == b"\xff\xd8" and b"\xff\xfe" not in stripped.split(b"\xff\xda")[0]
        assert not [m for m in (b"\xff\xe1", b"\xff\xed") if m in stripped.split(b"\xff\xda")[0]], name
    else:  # JPEG 2000: every tile-part byte for byte, only the comment and the JP2 boxes gone
        tiles = original[original.index(b"\xff\x90") :].rstrip(b"\0")  # fragments are padded to even lengths
        assert stripped.rstrip(b"\0").endswith(tiles), f"{name}: the tile data changed"
        assert b"xml " not in stripped and b"uuid" not in stripped and b"\xff\x64" not in stripped.split(b"\xff\x90")[0]
    print(f"{name}: frame {len(original)} -> {len(stripped)} bytes, coded data identical")


def _dicom_with(encoded, **attributes) -> bytes:
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(encoded["dicom_rle"]))
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def test_pixels_that_may_show_the_patient_are_not_sent(encoded) -> None:
    secondary_capture = "1.2.840.10008.5.1.4.1.1.7"
    refused = {
        "burned-in YES": (_dicom_with(encoded, BurnedInAnnotation="YES"), "BurnedInAnnotation YES"),
        "a Secondary Capture silent on it": (_dicom_with(encoded, SOPClassUID=secondary_capture), "Secondary Capture"),
    }
    for case, (data, reason) in refused.items():
        for check in (deidentify, refuse_burned_in):  # the image path, and the pixels path (which sends no file)
            with pytest.raises(ImageError) as caught:
                check(data)
            message = str(caught.value)
            assert reason in message and "not sent" in message and "\n" not in message, f"{case}: {message}"
    # the premise: a VL photograph (1.2.840.10008.5.1.4.1.1.77.1.4 shares the Secondary Capture's prefix) goes
    for fine in ({}, {"BurnedInAnnotation": "NO"}, {"SOPClassUID": secondary_capture, "BurnedInAnnotation": "NO"}):
        assert not markers_in(deidentify(_dicom_with(encoded, **fine))), fine
        refuse_burned_in(_dicom_with(encoded, **fine))


def test_without_pydicom_a_dicom_is_one_image_error(encoded, monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pydicom", None)  # as where the [formats] extra is not installed
    with pytest.raises(ImageError, match="DICOM images need pydicom"):
        refuse_burned_in(encoded["dicom_rle"])
    refuse_burned_in(encoded["jpeg"])  # any other image passes, pydicom or not


def test_jpeg_keeps_only_its_orientation_and_profile(encoded) -> None:
    for name, orientation in (("jpeg_orientation_6", 6), ("jpeg_adobergb", 1), ("mpo", 1)):
        with Image.open(io.BytesIO(deidentify(encoded[name]))) as img:
            assert dict(img.getexif()) == ({0x0112: orientation} if orientation != 1 else {}), name
            assert img.info.get("icc_profile") == Image.open(io.BytesIO(encoded[name])).info.get("icc_profile")
            assert "comment" not in img.info and "xmp" not in img.info and img.format == "JPEG", (name, img.info)


def test_dicom_keeps_the_pixel_module_only(encoded) -> None:
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(deidentify(encoded["dicom_adobergb"])))
    assert "PatientName" not in dataset and "StudyInstanceUID" not in dataset and "DeviceSerialNumber" not in dataset
    assert "OriginalAttributesSequence" not in dataset and "RequestAttributesSequence" not in dataset
    assert not [e for e in dataset if e.tag.is_private or e.VR == "SQ"], "a private element or sequence is sent"
    assert dataset.PatientIdentityRemoved == "YES" and "ICCProfile" in dataset


def test_what_hides_where_a_block_list_would_look_away(encoded) -> None:
    """Each a carrier the first version let through (found by review): kept or sent, each now
    refused or stripped; the premise (the marker is in the input) checked for each."""
    import pydicom
    from photo_encodings import COMMENT
    from pydicom.encaps import encapsulate

    def frame_dicom(frame: bytes, **attributes) -> bytes:
        dataset = pydicom.dcmread(io.BytesIO(encoded["dicom_jpeg2000"]))
        dataset.PixelData = encapsulate([frame])
        for keyword, value in attributes.items():
            setattr(dataset, keyword, value)
        buffer = io.BytesIO()
        dataset.save_as(buffer)
        return buffer.getvalue()

    (j2k,) = _frames(encoded["dicom_jpeg2000"])
    trailer = frame_dicom(j2k.rstrip(b"\0") + COMMENT)  # bytes after EOC
    assert COMMENT in trailer
    with pytest.raises(ImageError, match="after its last tile-part"):
        deidentify(trailer)
    (jp2,) = _frames(encoded["dicom_jp2_boxes"])
    at = jp2.index(b"jp2h") - 4
    size = int.from_bytes(jp2[at : at + 4], "big")
    inner = (len(COMMENT) + 8).to_bytes(4, "big") + b"xml " + COMMENT  # an XML box inside the header box
    nested = jp2[:at] + (size + len(inner)).to_bytes(4, "big") + jp2[at + 4 : at + size] + inner + jp2[at + size :]
    stripped = deidentify(frame_dicom(nested))
    assert COMMENT in nested and not markers_in(stripped) and not any(markers_in(f) for f in _frames(stripped))
    # a JPEG's reserved and JPGn segments, and an Adobe segment with a payload after its fixed fields
    jpeg = encoded["jpeg"]
    for marker, payload in ((0xF0, COMMENT), (0xEE, b"Adobe\x00\x64\x00\x00\x00\x00\x01" + COMMENT)):
        carrier = jpeg[:2] + bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]
        assert COMMENT in carrier
        out = deidentify(carrier)
        assert COMMENT not in out, hex(marker)
        assert np.array_equal(decode_image(out), decode_image(jpeg)), hex(marker)
    # a Secondary Capture that says so only in its file meta; a burned-in flag with two values
    import copy

    dataset = pydicom.dcmread(io.BytesIO(encoded["dicom_rle"]))
    meta_only = copy.deepcopy(dataset)
    del meta_only.SOPClassUID
    meta_only.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    two_values = copy.deepcopy(dataset)
    two_values.BurnedInAnnotation = ["NO", "YES"]
    for case, refused in (("file meta", meta_only), ("YES among values", two_values)):
        buffer = io.BytesIO()
        refused.save_as(buffer)
        with pytest.raises(ImageError, match="not sent"):
            deidentify(buffer.getvalue())
        print(f"refused: {case}")
