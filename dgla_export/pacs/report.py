"""The classification of one dermoscopic photo as a DICOM structured report a PACS files and a viewer opens.

The template is TID 1500 (Measurement Report), as IHE's AI Results profile asks of an algorithm's
results, in a Comprehensive SR (highdicom builds it valid by construction): it has no 3D coordinates,
and more archives accept Comprehensive SR than Comprehensive 3D SR. One measurement group
(TID 1501, not tied to a region: the model classifies the whole centre square) holds

- the finding: a skin lesion (SCT 95324001), and as its qualitative evaluation "Classification"
  (SCT 278201002) the predicted class;
- every class's probability as a measurement (unit UCUM "1": a fraction of 1);
- the algorithm (TID 4019): the model's name, the served version and tool, and as its parameters the
  checkpoint's and the graph's SHA-256 and the precision that computed the answer;
- the source image, referenced as the image the group was measured on (and in the Image Library).

The observer is a device (the server's model, not a person); the report is complete but PRELIMINARY
and UNVERIFIED: a decision aid until a dermatologist verifies it, as its series description says.
Classes are coded in this toolkit's private coding scheme ``99DGLA`` (the code value is the model's
class name, declared in the report's Coding Scheme Identification): the model's classes are its
configuration's, and a SNOMED CT code beside them would be a guess on the hospital's behalf.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from dgla_export.pacs.uids import ResultUids

__all__ = ["CLASS_SCHEME", "DECISION_AID", "ISIC_MEANINGS", "class_code", "classification_report"]

CLASS_SCHEME = "99DGLA"  # private coding scheme (DICOM PS3.16 8.2: "99" prefix) of the model's class names
# What ISIC 2018's class abbreviations (DGLA's default classes) stand for, as a viewer shows them
ISIC_MEANINGS = {
    "MEL": "Melanoma",
    "NV": "Melanocytic nevus",
    "BCC": "Basal cell carcinoma",
    "AKIEC": "Actinic keratosis or intraepithelial carcinoma",
    "BKL": "Benign keratosis-like lesion",
    "DF": "Dermatofibroma",
    "VASC": "Vascular lesion",
}
# Every object's series description (LO, 64 characters at most): what a worklist shows first
DECISION_AID = "AI decision aid, unverified: for review by a dermatologist"
MANUFACTURER = "dgla-export"


def class_code(index: int, name: str) -> Any:
    """The model's class ``name`` as a code of :data:`CLASS_SCHEME` (its value at most 16 characters:
    the name, or ``CLASS<index>`` for a longer one)."""
    from highdicom.sr import CodedConcept

    value = name if len(name) <= 16 else f"CLASS{index}"
    return CodedConcept(value=value, scheme_designator=CLASS_SCHEME, meaning=ISIC_MEANINGS.get(name, name))


def _probability_code(index: int, name: str) -> Any:
    from highdicom.sr import CodedConcept

    meaning = f"Probability of {ISIC_MEANINGS.get(name, name)}"
    return CodedConcept(value=f"P-{class_code(index, name).value}", scheme_designator=CLASS_SCHEME, meaning=meaning)


@dataclasses.dataclass(frozen=True)
class Classification:
    """What the report states: the classes in the model's order, their probabilities, and what answered."""

    classes: tuple[str, ...]
    probabilities: tuple[float, ...]
    model_name: str  # the architecture's name (dgla_resnet50)
    served_as: str  # the served model and version (dgla 1)
    precision: str
    checkpoint_sha256: str
    graph_sha256: str
    tool: str

    @property
    def top1(self) -> int:
        return max(range(len(self.probabilities)), key=self.probabilities.__getitem__)


def classification_report(source: Any, result: Classification, uids: ResultUids) -> Any:
    """The TID 1500 report of ``result`` for the image ``source`` (a pydicom Dataset, pixels not
    needed): patient, study and the source's reference copied from it, UIDs from ``uids``."""
    from highdicom import coding_schemes
    from highdicom.sr import (
        AlgorithmIdentification,
        ComprehensiveSR,
        DeviceObserverIdentifyingAttributes,
        Measurement,
        MeasurementReport,
        MeasurementsAndQualitativeEvaluations,
        ObservationContext,
        ObserverContext,
        QualitativeEvaluation,
        SourceImageForMeasurementGroup,
        TrackingIdentifier,
    )
    from pydicom.sr.codedict import codes

    algorithm = AlgorithmIdentification(
        name=result.model_name,
        version=f"{result.served_as}; {result.tool}"[:64],
        parameters=[
            f"checkpoint SHA-256 {result.checkpoint_sha256}",
            f"graph SHA-256 {result.graph_sha256}",
            f"precision {result.precision}",
        ],
    )  # (its manufacturer row is highdicom 0.28's: the device observer names the manufacturer instead)
    device = DeviceObserverIdentifyingAttributes(
        uid=uids.device, name=result.model_name, manufacturer_name=MANUFACTURER, model_name=result.model_name
    )
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=uids.tracking, identifier="lesion classification"),
        finding_type=codes.SCT.SkinLesion,
        algorithm_id=algorithm,
        qualitative_evaluations=[
            QualitativeEvaluation(codes.SCT.Classification, class_code(result.top1, result.classes[result.top1]))
        ],
        measurements=[
            Measurement(
                name=_probability_code(i, name), value=float(p), unit=codes.UCUM.NoUnits, algorithm_id=algorithm
            )
            for i, (name, p) in enumerate(zip(result.classes, result.probabilities, strict=True))
        ],
        source_images=[SourceImageForMeasurementGroup.from_source_image(source)],
    )
    report = MeasurementReport(
        observation_context=ObservationContext(
            observer_device_context=ObserverContext(
                observer_type=codes.cid270.Device, observer_identifying_attributes=device
            )
        ),
        procedure_reported=codes.SCT.DermoscopicPhotography,
        imaging_measurements=[group],
        referenced_images=[source],
    )
    return ComprehensiveSR(
        evidence=[source],
        content=report,
        series_instance_uid=uids.report_series,
        series_number=uids.report_series_number,
        sop_instance_uid=uids.report,
        instance_number=int(source.get("InstanceNumber") or 1),
        manufacturer=MANUFACTURER,
        manufacturer_model_name=result.model_name,
        software_versions=result.tool,
        series_description=DECISION_AID,
        is_complete=True,
        is_final=False,
        is_verified=False,
        coding_schemes=[
            coding_schemes.CodingSchemeIdentificationItem(
                designator=CLASS_SCHEME, name="dgla-export model classes", responsible_organization=MANUFACTURER
            )
        ],
    )
