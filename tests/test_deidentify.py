"""What dgla-client sends: the pixels as shown, nothing that identifies the patient."""

from __future__ import annotations

import io

import numpy as np
import pytest
from photo_encodings import ENCODINGS, IDENTITY, corpus
from PIL import Image

from dgla_export.decode import decode_image
from dgla_export.deidentify import deidentify
from dgla_export.preprocess import to_rgb_float


@pytest.fixture(scope="module")
def encoded():
    import skimage.data

    return corpus(np.ascontiguousarray(skimage.data.astronaut()[:, :400]))  # 400x512: quick to encode


def test_the_corpus_carries_identity(encoded) -> None:
    """The test's premise: before stripping, the camera files and DICOMs name the patient."""
    for name in ("jpeg", "jpeg_orientation_6", "mpo", "dicom_rle", "png_orientation_6"):
        assert any(marker in encoded[name] for marker in IDENTITY), name


@pytest.mark.parametrize("name", list(ENCODINGS))
def test_stripped_files_keep_their_pixels_and_lose_the_patient(encoded, name) -> None:
    stripped = deidentify(encoded[name])
    found = [marker for marker in IDENTITY if marker in stripped]
    assert not found, f"{name}: {found} still in what is sent"
    before, after = decode_image(encoded[name]), decode_image(stripped)
    err = float(np.abs(to_rgb_float(before) - to_rgb_float(after)).max())
    assert err <= 1 / 65535, f"{name}: stripping changed the pixels by {err * 255:.3f} grey levels"
    assert before.shape == after.shape, f"{name}: {before.shape} -> {after.shape}"


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
    assert dataset.PatientIdentityRemoved == "YES" and "ICCProfile" in dataset
