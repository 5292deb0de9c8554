"""The objects filed for a DICOM photo: what the report states, what the heatmap shows, UIDs, and the
reference IOD checker's verdict (dciodvfy). The answers served by a real Triton are the served tests'
(tests/triton_repository/test_pacs.py); here the answer is given, to check every field against it."""

from __future__ import annotations

import io

import numpy as np
import pytest

from pacs.dermoscopy import PATIENT_ID, PATIENT_NAME, dermoscopy_dicom
from pacs.orthanc import dciodvfy, require_tools

pytest.importorskip("highdicom", reason="the pacs extra is not installed (pip install -e '.[pacs]')")

from dgla_export.pacs.report import CLASS_SCHEME
from dgla_export.pacs.results import PacsError, check_fileable, dicom_results, write_results
from dgla_export.triton.client import Prediction, ServedModel

PROBS = np.array([0.61, 0.2, 0.09, 0.04, 0.03, 0.02, 0.01], np.float32)
SERVED = ServedModel("dgla", "2", "dgla_tiny", "fp32", "c" * 64, "a" * 64, "dgla-export 1.0")


def _prediction(path, tiny, *, maps: bool = True, served: ServedModel | None = SERVED) -> Prediction:
    cam = np.zeros((6, 6), np.float32)
    cam[1, 4] = 1.0  # the hot cell
    return Prediction(path, PROBS, cam_top1=cam if maps else None, config=tiny.config, served=served)


def _read(dataset):
    import pydicom

    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def _items(container) -> list:
    """Every content item of an SR tree, depth first."""
    found = []
    for item in container.get("ContentSequence", []):
        found.append(item)
        found += _items(item)
    return found


def test_the_report_states_the_class_every_probability_and_the_algorithm(tiny, images, tmp_path) -> None:
    source = tmp_path / "lesion.dcm"
    source.write_bytes(dermoscopy_dicom(images[0][1]))
    import pydicom

    original = pydicom.dcmread(source)
    report = _read(dicom_results(_prediction(source, tiny)).report)
    assert report.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert (str(report.PatientName), report.PatientID) == (PATIENT_NAME, PATIENT_ID)
    assert report.StudyInstanceUID == original.StudyInstanceUID and report.StudyDate == "20261207"
    assert report.SeriesInstanceUID != original.SeriesInstanceUID and report.SOPInstanceUID != original.SOPInstanceUID
    assert (report.VerificationFlag, report.CompletionFlag, report.PreliminaryFlag) == (
        "UNVERIFIED",
        "COMPLETE",
        "PRELIMINARY",
    )
    assert "decision aid" in report.SeriesDescription and report.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    items = _items(report)
    probabilities = {
        i.ConceptNameCodeSequence[0].CodeValue: float(i.MeasuredValueSequence[0].NumericValue)
        for i in items
        if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodingSchemeDesignator == CLASS_SCHEME
    }
    expected = {f"P-{name}": float(p) for name, p in zip(tiny.config.class_names, PROBS, strict=True)}
    error = max(abs(probabilities[k] - v) for k, v in expected.items())
    print(f"probabilities in the report vs the answer: max error {error:.1e}")
    assert probabilities.keys() == expected.keys() and error < 1e-6
    [finding] = [i for i in items if i.ValueType == "CODE" and i.ConceptNameCodeSequence[0].CodeValue == "278201002"]
    assert (finding.ConceptCodeSequence[0].CodeValue, finding.ConceptCodeSequence[0].CodingSchemeDesignator) == (
        "MEL",
        CLASS_SCHEME,
    )
    texts = {i.TextValue for i in items if i.ValueType == "TEXT"}
    assert {f"checkpoint SHA-256 {'c' * 64}", f"graph SHA-256 {'a' * 64}", "precision fp32", "dgla_tiny"} <= texts
    observer = [i for i in items if i.ValueType == "UIDREF"]
    assert observer, "the observer is a device, identified by its UID"
    referenced = {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in items if i.ValueType == "IMAGE"} | {
        r.ReferencedSOPInstanceUID
        for s in report.CurrentRequestedProcedureEvidenceSequence
        for r in s.ReferencedSeriesSequence[0].ReferencedSOPSequence
    }
    assert referenced == {original.SOPInstanceUID}
    assert report.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == CLASS_SCHEME


def test_both_objects_pass_the_reference_checker_and_keep_their_uids(tiny, images, tmp_path) -> None:
    require_tools()
    source = tmp_path / "lesion.dcm"
    source.write_bytes(dermoscopy_dicom(images[1][1]))
    results = dicom_results(_prediction(source, tiny))
    paths = write_results(results, tmp_path, "lesion.dcm")
    assert [p.name for p in paths] == ["lesion.dcm.sr.dcm", "lesion.dcm.heatmap.dcm"]
    for path in paths:
        assert dciodvfy(path) == [], path
    import pydicom

    heatmap = pydicom.dcmread(paths[1])
    assert heatmap.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and heatmap.PhotometricInterpretation == "RGB"
    assert heatmap.SourceImageSequence[0].ReferencedSOPInstanceUID == pydicom.dcmread(source).SOPInstanceUID
    assert heatmap.StudyInstanceUID == pydicom.dcmread(source).StudyInstanceUID and heatmap.PatientID == PATIENT_ID
    panel = heatmap.pixel_array
    assert panel.shape[2] == 3 and panel.std() > 10  # a picture, not a blank
    again = dicom_results(_prediction(source, tiny))
    assert (again.report.SOPInstanceUID, again.heatmap.SOPInstanceUID) == (
        results.report.SOPInstanceUID,
        results.heatmap.SOPInstanceUID,
    ), "the same image and graph file under the same UIDs (a result filed again replaces itself)"
    other = tmp_path / "other.dcm"
    other.write_bytes(dermoscopy_dicom(images[1][1]))  # a new SOP Instance UID
    assert dicom_results(_prediction(other, tiny)).report.SOPInstanceUID != results.report.SOPInstanceUID


def test_no_maps_no_heatmap_and_what_cannot_be_filed_says_why(tiny, images, tmp_path) -> None:
    source = tmp_path / "lesion.dcm"
    source.write_bytes(dermoscopy_dicom(images[2][1]))
    assert dicom_results(_prediction(source, tiny, maps=False)).heatmap is None
    with pytest.raises(PacsError, match="does not record the graph"):
        dicom_results(_prediction(source, tiny, served=None))
    jpeg = tmp_path / "lesion.jpg"
    from PIL import Image

    Image.fromarray(images[2][1]).save(jpeg)
    with pytest.raises(PacsError, match="is not DICOM"):
        dicom_results(_prediction(jpeg, tiny))


@pytest.mark.parametrize(
    ("keyword", "value"), [("PatientBirthDate", "1970"), ("StudyTime", "9:41"), ("StudyDate", "2026-12-07")]
)
def test_a_header_no_report_could_be_filed_under_is_refused_without_its_value(images, keyword, value) -> None:
    good = dermoscopy_dicom(images[0][1])
    check_fileable(good)  # the premise: the same photo with a valid header passes
    with pytest.raises(PacsError, match="not valid DICOM") as caught:
        check_fileable(dermoscopy_dicom(images[0][1], **{keyword: value}))
    print(caught.value)
    assert value not in str(caught.value)
