"""The heatmap a dermatologist is shown, as a DICOM image in the source's study.

A Secondary Capture Image (highdicom's ``SCImage``), RGB, in its own series derived from the source:
every PACS viewer shows a Secondary Capture as the picture it is. The alternatives were weighed: a
colour blending presentation state would overlay the map on the original in the viewers that
implement blending (few do, and none show the label or the scale), and a parametric map carries the
numbers without the picture. The panel is exactly what ``dgla-client --heatmap`` writes: the photo
with the square the model saw outlined, that square under the predicted class's map (labelled with
class and probability), and the colour scale.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dgla_export.pacs.report import DECISION_AID, MANUFACTURER
from dgla_export.pacs.uids import ResultUids

__all__ = ["heatmap_capture"]

# Copied from the source where it has them and highdicom did not: what the photo shows, and the
# patient's and study's identifiers and descriptions a worklist matches on
SOURCE_ATTRIBUTES = (
    "BurnedInAnnotation", "RecognizableVisualFeatures", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence",
    "OtherPatientIDsSequence", "StudyDescription", "PatientAge",
)  # fmt: skip


def heatmap_capture(source: Any, panel: np.ndarray, uids: ResultUids, *, model_name: str, tool: str) -> Any:
    """``panel`` ((H, W, 3) uint8 RGB) as a Secondary Capture of ``source``'s patient and study,
    referencing ``source`` as the image it was derived from."""
    from highdicom.sc import SCImage
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    capture = SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=np.ascontiguousarray(panel, dtype=np.uint8),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        patient_orientation=("L", "F"),  # highdicom asks for one; replaced below by the source's (or empty: unknown)
        series_instance_uid=uids.heatmap_series,
        series_number=uids.heatmap_series_number,
        sop_instance_uid=uids.heatmap,
        instance_number=int(source.get("InstanceNumber") or 1),
        manufacturer=MANUFACTURER,
        manufacturer_model_name=model_name,
        software_versions=tool,
        series_description=DECISION_AID,
    )
    capture.PatientOrientation = source.get("PatientOrientation", "")  # a photo's is seldom known: Type 2, empty
    capture.Laterality = source.get("Laterality", "")  # the source's side (R, L), else unknown: Type 2C, empty
    capture.ImageType = ["DERIVED", "SECONDARY"]
    capture.DerivationDescription = f"Grad-CAM class activation map of {model_name} over the photo's centre square"
    reference = Dataset()
    reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID = source.SOPClassUID, source.SOPInstanceUID
    capture.SourceImageSequence = Sequence([reference])
    # The drawn text is the classes and probabilities, nothing of the patient; what the photo shows
    # is the source's, as the source says (a photo that says YES is not classified at all).
    for keyword in SOURCE_ATTRIBUTES:
        if keyword in source and keyword not in capture:
            capture[keyword] = source[keyword]
    capture.ImageComments = DECISION_AID
    return capture
