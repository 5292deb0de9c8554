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


def camera_dicom(jpeg: bytes, index: int = 0) -> bytes:
    """A camera's JPEG as an archive wraps it: a VL Photographic Image whose one frame is the JPEG
    as written (YBR_FULL_422, JPEG Baseline; no re-encoding), patient ``BENCH^<index>``."""
    import pydicom
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit, VLPhotographicImageStorage, generate_uid

    with Image.open(io.BytesIO(jpeg)) as image:
        width, height = image.size
    ds = Dataset()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = f"BENCH^{index}", f"B{index}", "", ""
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20261207", "1200", "1"
    ds.AccessionNumber, ds.ReferringPhysicianName = "", ""
    ds.SOPClassUID, ds.Modality, ds.InstanceNumber = VLPhotographicImageStorage, "XC", 1
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = height, width, 3, "YBR_FULL_422"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation, ds.PlanarConfiguration = 8, 8, 7, 0, 0
    ds.PixelData = encapsulate([jpeg])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()
