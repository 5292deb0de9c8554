"""A dermoscopy DICOM as a hospital's archive holds it: a VL Photographic Image of a real photo, its
JPEG frame still carrying the camera's segments, the patient's name and ID in its header."""

from __future__ import annotations

import io

import numpy as np
from photo_encodings import ENCODINGS

PATIENT_NAME, PATIENT_ID = "PATIENT^NAME", "ID-0042"  # what photo_encodings writes into every DICOM


def dermoscopy_dicom(rgb: np.ndarray, **attributes: object) -> bytes:
    """``rgb`` as a camera's JPEG in a VL Photographic Image, with ``attributes`` set (keyword: value)."""
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(ENCODINGS["dicom_jpeg_ybr422"](rgb)))
    dataset.StudyDate, dataset.StudyTime, dataset.StudyID, dataset.AccessionNumber = "20261207", "094100", "S1", "A1"
    dataset.PatientSex, dataset.ReferringPhysicianName, dataset.InstanceNumber = "F", "", 3
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
