"""The gateway's intake, without a network: what it acknowledges, refuses and keeps, and what its
spool and its log may hold. (Against a real PACS and Triton: tests/triton_repository/test_pacs.py.)"""

from __future__ import annotations

import io
import types

import pytest

from pacs.dermoscopy import dermoscopy_dicom

pytest.importorskip("pynetdicom", reason="the pacs extra is not installed (pip install -e '.[pacs]')")

from dgla_export.errors import UserError
from dgla_export.pacs.destination import CStoreDestination, StowDestination, parse_destination
from dgla_export.pacs.gateway import (
    CANNOT_UNDERSTAND,
    OUT_OF_RESOURCES,
    Gateway,
    GatewayOptions,
    _prepare_spool,
    _safe,
)


def _event(data: bytes):
    """What pynetdicom hands a C-STORE handler: the dataset and its file meta."""
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(data))
    return types.SimpleNamespace(dataset=dataset, file_meta=dataset.file_meta)


def _gateway(tmp_path, queue_size: int = 1) -> Gateway:
    options = GatewayOptions(
        port=1, ae_title="DGLAGW", url="127.0.0.1:1", send_to=parse_destination("PACS@127.0.0.1:1"),
        spool=tmp_path / "spool", queue_size=queue_size,
    )  # fmt: skip
    _prepare_spool(options.spool)
    return Gateway(options)  # not started: nothing takes from its queue


def _status(answer) -> int:
    return int(answer.Status) if not isinstance(answer, int) else answer


def test_a_full_queue_answers_out_of_resources_and_keeps_nothing_it_did_not_acknowledge(images, tmp_path) -> None:
    gateway = _gateway(tmp_path, queue_size=1)
    first, second = (dermoscopy_dicom(images[i][1]) for i in (0, 1))
    assert _status(gateway._on_store(_event(first))) == 0x0000
    assert len(list(gateway.incoming.glob("*.dcm"))) == 1
    assert _status(gateway._on_store(_event(first))) == 0x0000, "the same image again, while in hand: one answer"
    full = gateway._on_store(_event(second))
    print(f"full queue: {_status(full):#06x} {full.ErrorComment}")
    assert _status(full) == OUT_OF_RESOURCES and len(list(gateway.incoming.glob("*.dcm"))) == 1
    assert all(p.stat().st_mode & 0o077 == 0 for p in gateway.incoming.iterdir())


@pytest.mark.parametrize(
    ("attributes", "secret"),
    [
        ({"PatientBirthDate": "1970"}, "1970"),
        ({"StudyDate": "2026-12-07"}, "2026-12-07"),
        ({"BurnedInAnnotation": "YES"}, None),
        ({"NumberOfFrames": 2}, None),
    ],
)
def test_an_object_that_could_not_be_filed_is_refused_without_its_values(images, tmp_path, attributes, secret) -> None:
    gateway = _gateway(tmp_path)
    answer = gateway._on_store(_event(dermoscopy_dicom(images[2][1], **attributes)))
    print(f"{attributes}: {_status(answer):#06x} {answer.ErrorComment}")
    assert _status(answer) == CANNOT_UNDERSTAND and not list(gateway.incoming.glob("*.dcm"))
    if secret is not None:
        assert secret not in answer.ErrorComment


def test_the_log_keeps_a_librarys_words_not_the_values_it_quotes() -> None:
    said = _safe(ValueError("Unable to convert '19700101' to 'DA' object for 1.2.826.0.1.3680043.8.498.1234"))
    print(said)
    assert "19700101" not in said and "1.2.826" not in said and "Unable to convert" in said
    assert _safe("PACS@127.0.0.1:104 did not answer") == "PACS@127.0.0.1:104 did not answer"  # an address stays


def test_a_spool_is_a_folder_of_its_own(tmp_path) -> None:
    tmp_path.chmod(0o755)  # a folder of the user's, readable by others
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a dgla-gateway spool"):
        _prepare_spool(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path.stat().st_mode & 0o777) == 0o755
    _prepare_spool(tmp_path / "new")
    _prepare_spool(tmp_path / "new")  # an earlier spool is taken again
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700


def test_destinations_are_read_or_refused_in_one_line() -> None:
    expected = CStoreDestination("ORTHANC", "127.0.0.1", 4242, "DGLA")
    assert parse_destination("ORTHANC@127.0.0.1:4242", "DGLA") == expected
    assert parse_destination("http://127.0.0.1:8042/dicom-web/") == StowDestination("http://127.0.0.1:8042/dicom-web")
    for bad in ("ORTHANC@127.0.0.1", "127.0.0.1:4242", "A@host:99999", "TOO-LONG-AE-TITLE-X@h:1"):
        with pytest.raises(UserError, match="neither AE@HOST:PORT"):
            parse_destination(bad)
