"""Back to the PACS, against a real one: Orthanc (OS packages) on loopback, the shared Triton server,
dgla-gateway as a user starts it, the reference IOD checker on what Orthanc stored.

File mode (dgla-client --dicom-out) and network mode (C-STORE in; C-STORE or STOW-RS out; TLS) file a
report whose probabilities are the served answer's and a heatmap, in the photo's patient and study;
the gateway refuses a malformed object and keeps serving, keeps what a PACS that is down did not
take and files it when the PACS is back, finishes what it holds on SIGTERM, and logs nothing of the
patient.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pacs.dermoscopy import PATIENT_ID, PATIENT_NAME, dermoscopy_dicom
from pacs.orthanc import Orthanc, dciodvfy, free_port, require_tools

pytest.importorskip("pynetdicom", reason="the pacs extra is not installed (pip install -e '.[pacs]')")

from dgla_export.pacs.gateway import image_key
from dgla_export.pacs.report import CLASS_SCHEME
from dgla_export.triton.client import classify

pytestmark = pytest.mark.slow
GATEWAY_AET = "DGLAGW"
FILE_NAME = "Jane_Example_ID-0042.dcm"  # a file name that identifies (dgla-client names its results after it)
BAD_DATE = "1970"  # a birth date no DICOM DA reads: the library's error quotes it


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    require_tools()
    pacs = Orthanc(tmp_path_factory.mktemp("orthanc"))
    pacs.start()
    yield pacs
    pacs.stop()


def _source(images, index: int, folder: Path) -> Path:
    path = folder / FILE_NAME
    path.write_bytes(dermoscopy_dicom(images[index][1]))
    return path


def _study(pacs: Orthanc, study_uid: str, count: int, timeout: float = 60) -> list[dict]:
    """The instances of ``study_uid`` in the PACS, once there are ``count`` (or after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        found = pacs.study(study_uid)
        if len(found) >= count or time.monotonic() > deadline:
            return [pacs.get(f"/instances/{i}/simplified-tags") | {"ID": i} for i in found]
        time.sleep(0.25)


def _probabilities(report) -> dict[str, float]:
    found = {}

    def walk(container) -> None:
        for item in container.get("ContentSequence", []):
            name = item.ConceptNameCodeSequence[0]
            if item.ValueType == "NUM" and name.CodingSchemeDesignator == CLASS_SCHEME:
                found[name.CodeValue.removeprefix("P-")] = float(item.MeasuredValueSequence[0].NumericValue)
            walk(item)

    walk(report)
    return found


def _check_filed(pacs: Orthanc, source: Path, served, folder: Path) -> None:
    """The report and the heatmap of ``source`` are in the PACS, in its patient and study, referencing
    it, with the served answer's probabilities, and pass dciodvfy."""
    import pydicom

    original = pydicom.dcmread(source)
    filed = _study(pacs, original.StudyInstanceUID, 2)
    assert sorted(i["Modality"] for i in filed) == ["OT", "SR"], filed
    for instance in filed:
        path = folder / f"{instance['ID']}.dcm"
        path.write_bytes(pacs.file(instance["ID"]))
        assert dciodvfy(path) == [], instance["Modality"]
        dataset = pydicom.dcmread(path)
        assert (str(dataset.PatientName), dataset.PatientID) == (PATIENT_NAME, PATIENT_ID)
        if dataset.Modality == "SR":
            probabilities = _probabilities(dataset)
            expected = dict(zip(served.classes, map(float, served.probs), strict=True))
            error = max(abs(probabilities[k] - v) for k, v in expected.items())
            print(f"report in the PACS vs the served answer: max probability error {error:.1e}")
            assert probabilities.keys() == expected.keys() and error < 1e-6
            evidence = dataset.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
            assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == original.SOPInstanceUID
        else:
            assert dataset.SourceImageSequence[0].ReferencedSOPInstanceUID == original.SOPInstanceUID


def test_file_mode_writes_a_report_and_a_heatmap_each_passing_dciodvfy(triton_server, images, tmp_path, capsys) -> None:
    require_tools()
    from dgla_export.tools.client import main

    inputs = tmp_path / "in"
    inputs.mkdir()
    source = _source(images, 0, inputs)
    out = tmp_path / "results"
    assert main([str(source), "--url", triton_server.grpc_url, "--dicom-out", str(out), "--json"]) == 0
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    assert [Path(p).name for p in record["dicom"]] == [f"{FILE_NAME}.sr.dcm", f"{FILE_NAME}.heatmap.dcm"]
    import pydicom

    [served] = classify([source], url=triton_server.grpc_url)
    for path in map(Path, record["dicom"]):
        assert dciodvfy(path) == [], path
    report = pydicom.dcmread(out / f"{FILE_NAME}.sr.dcm")
    probabilities = _probabilities(report)
    error = max(abs(probabilities[c] - float(p)) for c, p in zip(served.classes, served.probs, strict=True))
    print(f"--dicom-out report vs classify: max probability error {error:.1e}")
    assert error < 1e-6 and report.StudyInstanceUID == pydicom.dcmread(source).StudyInstanceUID
    texts = [str(getattr(i, "TextValue", "")) for i in report.ContentSequence[-1].ContentSequence[0].ContentSequence]
    assert any(t.startswith("checkpoint SHA-256 ") and len(t) > 40 for t in texts), texts
    assert any(t.startswith("dgla version 1; dgla-export ") for t in texts), texts  # the model asked for, served
    # a JPEG among the photos: refused before anything is sent, naming it
    jpeg = inputs / "skin.jpg"
    jpeg.write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 200)
    assert main([str(inputs), "--url", triton_server.grpc_url, "--dicom-out", str(tmp_path / "other")]) != 0
    assert "not DICOM: " in capsys.readouterr().err and not (tmp_path / "other").exists()


class Gateway:
    """dgla-gateway as a user starts it, its output kept."""

    def __init__(self, folder: Path, triton_url: str, send_to: str, *extra: str) -> None:
        self.port = free_port()
        self.log = folder / "gateway.log"
        command = [
            sys.executable, "-m", "dgla_export.tools.gateway", "--port", str(self.port), "--ae-title", GATEWAY_AET,
            "--host", "127.0.0.1", "--url", triton_url, "--send-to", send_to, "--spool", str(folder / "spool"),
            "--retries", "2", "--retry-wait", "0.2", "--resend-every", "1", *extra,
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=open(self.log, "wb"), text=True)  # noqa: SIM115
        line = self.process.stdout.readline()
        assert "listening on" in line, line + self.log.read_text()

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(timeout=120)

    def said(self) -> str:
        return self.log.read_text()


def store(port: int, data: bytes, tls=None) -> int | None:
    """C-STORE ``data`` as a modality would; the status, or None where no association was made."""
    import pydicom
    from pynetdicom import AE

    dataset = pydicom.dcmread(io.BytesIO(data))
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
    association = ae.associate("127.0.0.1", port, ae_title=GATEWAY_AET, tls_args=tls)
    if not association.is_established:
        return None
    try:
        return int(association.send_c_store(dataset).Status)
    finally:
        association.release()


def _malformed(images) -> bytes:
    """A VL Photographic object whose JPEG frame is cut after its header: no decoder reads it."""
    import pydicom
    from pydicom.encaps import encapsulate, generate_frames

    dataset = pydicom.dcmread(io.BytesIO(dermoscopy_dicom(images[3][1])))
    frame = next(generate_frames(dataset.PixelData, number_of_frames=1))
    dataset.PixelData = encapsulate([frame[:300]])
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_the_gateway_files_to_the_pacs_survives_bad_objects_and_outages_and_logs_no_patient(
    triton_server, orthanc, images, tmp_path
) -> None:
    for index in range(3):
        (tmp_path / str(index)).mkdir()
    first, second, third = (_source(images, i, tmp_path / str(i)) for i in range(3))
    assert PATIENT_NAME.encode() in first.read_bytes() and PATIENT_ID.encode() in first.read_bytes()  # the premise
    gateway = Gateway(tmp_path, triton_server.grpc_url, orthanc.send_to)
    try:
        assert store(gateway.port, first.read_bytes()) == 0x0000
        [served] = classify([first], url=triton_server.grpc_url)
        _check_filed(orthanc, first, served, tmp_path)

        status = store(gateway.port, _malformed(images))
        print(f"malformed object: status {status:#06x}")
        assert status is not None and 0xC000 <= status <= 0xCFFF
        status = store(gateway.port, dermoscopy_dicom(images[3][1], PatientBirthDate=BAD_DATE))
        print(f"a header no report could be filed under: status {status:#06x}")
        assert status is not None and 0xC000 <= status <= 0xCFFF

        orthanc.stop()  # the PACS goes down: the image is taken, its results wait in the spool
        assert store(gateway.port, second.read_bytes()) == 0x0000
        outgoing = tmp_path / "spool" / "outgoing"
        deadline = time.monotonic() + 60
        while len(list(outgoing.glob("*.dcm"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(list(outgoing.glob("*.dcm"))) == 2, gateway.said()
        assert all(p.stat().st_mode & 0o077 == 0 for p in outgoing.iterdir()), "the spool is the user's alone"
        while "kept in the spool" not in gateway.said() and time.monotonic() < deadline:  # every retry spent
            time.sleep(0.2)
        assert "kept in the spool" in gateway.said() and len(list(outgoing.glob("*.dcm"))) == 2
        orthanc.start()
        [served] = classify([second], url=triton_server.grpc_url)
        _check_filed(orthanc, second, served, tmp_path)
        assert not list(outgoing.glob("*.dcm"))

        assert store(gateway.port, third.read_bytes()) == 0x0000  # then the stop: the image in hand is finished
    finally:
        code = gateway.stop()
    assert code == 0, gateway.said()
    import pydicom

    assert len(_study(orthanc, pydicom.dcmread(third).StudyInstanceUID, 2, timeout=5)) == 2, gateway.said()
    said = gateway.said()
    print(said)
    uids = [str(pydicom.dcmread(p).SOPInstanceUID) for p in (first, second, third)]
    for secret in (PATIENT_NAME, PATIENT_ID, "Jane Example", BAD_DATE, *uids):
        assert secret not in said, secret
    assert said.count("refused image") == 2 and "filed to" in said and "Traceback" not in said
    # the premise of the stop: the third image was still in hand when the signal came
    assert said.index("stopping") < said.index(f"classified image {image_key(uids[2])}"), said
    assert not list((tmp_path / "spool" / "failed").iterdir())


def test_the_gateway_stores_by_stow_rs_and_speaks_tls(triton_server, orthanc, images, tmp_path) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    certificate = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    certificate.private_key_and_cert_chain_pem.write_to_path(cert)
    certificate.private_key_pem.write_to_path(key)
    (tmp_path / "s").mkdir()
    source = _source(images, 4, tmp_path / "s")
    stow = f"{orthanc.url}/dicom-web"
    gateway = Gateway(tmp_path, triton_server.grpc_url, stow, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        assert store(gateway.port, source.read_bytes()) is None, "a caller without TLS gets no association"
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ca.configure_trust(context)
        assert store(gateway.port, source.read_bytes(), tls=(context, "127.0.0.1")) == 0x0000
        [served] = classify([source], url=triton_server.grpc_url)
        _check_filed(orthanc, source, served, tmp_path)
    finally:
        assert gateway.stop() == 0, gateway.said()
    assert "filed to " + stow in gateway.said()
