"""The DICOM objects filed for one answered DICOM photo: its structured report and, where the served
graph answers maps, its heatmap; made the same way by ``dgla-client --dicom-out``, ``dgla-gateway``
and Python code (:func:`dicom_results`, :func:`write_results`)."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dgla_export.errors import UserError
from dgla_export.pacs.capture import heatmap_capture
from dgla_export.pacs.report import Classification, classification_report
from dgla_export.pacs.uids import ResultUids
from dgla_export.preprocess import Limits
from dgla_export.triton.client import Prediction

__all__ = [
    "DicomResults",
    "PacsError",
    "check_fileable",
    "check_pacs_extra",
    "check_sources",
    "dicom_results",
    "read_source",
    "write_results",
]

# The patient and study attributes a filed object must carry (Type 2: present, possibly empty)
TYPE_2 = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "ReferringPhysicianName",
    "StudyID", "AccessionNumber",
)  # fmt: skip


class PacsError(UserError):
    """A result cannot be filed: the photo is no DICOM, the served model does not say what it is, or
    highdicom and pynetdicom are not installed."""


def check_pacs_extra() -> None:
    """highdicom, pynetdicom and dicomweb-client are there (the ``pacs`` extra), or one line saying how."""
    try:
        import dicomweb_client  # noqa: F401
        import highdicom  # noqa: F401
        import pynetdicom  # noqa: F401
    except ImportError as err:
        from dgla_export.install import install_command

        raise PacsError(f"DICOM results need highdicom and pynetdicom: {install_command('pacs')}") from err


def read_source(data: bytes, name: str = "the image") -> Any:
    """The DICOM header of the photo a result is filed for (its patient, study and UIDs)."""
    import pydicom

    from dgla_export.decode import sniff

    if sniff(data) != "DICOM":
        raise PacsError(f"{name} is not DICOM: a result is filed under a DICOM photo's patient and study")
    source = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    missing = [k for k in ("StudyInstanceUID", "SOPInstanceUID", "SOPClassUID") if not source.get(k)]
    if missing:
        raise PacsError(f"{name} has no {', '.join(missing)}: the archive could not file a result under it")
    for keyword in TYPE_2:  # present, empty where the source leaves them out (as Type 2 allows)
        if keyword not in source:
            setattr(source, keyword, "")
    return source


def check_sources(paths: Sequence[Path], shown: Sequence[str] | None = None) -> None:
    """Before anything is sent: results can be filed for every photo (each a DICOM with the UIDs a
    result is filed under) and the pacs extra is installed. ``shown``: the names to print (None:
    the files' count only, for names that may identify a patient)."""
    check_pacs_extra()
    from dgla_export.decode import sniff
    from dgla_export.errors import listed

    problems = []
    for index, path in enumerate(paths):
        name = shown[index] if shown is not None else f"photo {index + 1}"
        with open(path, "rb") as file:  # the header only: the pixels are read when the photo is sent
            head = file.read(132)
        if sniff(head) != "DICOM":
            problems.append(name)
    if problems:
        raise PacsError(
            f"--dicom-out files results under a DICOM photo's patient and study; not DICOM: {listed(problems)}. "
            "Classify those without --dicom-out"
        )


@dataclasses.dataclass(frozen=True)
class DicomResults:
    """The report (always) and the heatmap (a graph exported with ``--explain``, asked for maps)."""

    report: Any  # highdicom ComprehensiveSR
    heatmap: Any | None  # highdicom SCImage

    @property
    def datasets(self) -> list[Any]:
        return [self.report] + ([self.heatmap] if self.heatmap is not None else [])


def check_fileable(data: bytes) -> None:
    """Raise :class:`PacsError` where no report could be filed for the DICOM photo ``data``: UIDs
    missing, or patient and study attributes a report copies that are not valid DICOM (a report is
    built from the header, with placeholder answers). The reason names no value of the photo."""
    check_pacs_extra()
    source = read_source(data)
    trial = Classification(("X",), (1.0,), "check", "check", "fp32", "0" * 64, "0" * 64, "check")
    try:
        classification_report(source, trial, ResultUids.of(source, "0" * 64))
    except (ValueError, TypeError, AttributeError) as err:
        raise PacsError(
            f"its patient or study attributes are not valid DICOM ({type(err).__name__}: a malformed date, time, "
            "name or UID): no report could be filed under it"
        ) from err


def dicom_results(prediction: Prediction, data: bytes | None = None, *, limits: Limits | None = None) -> DicomResults:
    """The objects for ``prediction`` of a DICOM photo (``data``: its bytes, else read from its path;
    ``limits``: what the photo may be, decoded again for the heatmap; the classification's)."""
    check_pacs_extra()
    if prediction.probs is None:
        raise PacsError(f"{prediction.image}: no answer to file ({prediction.error})")
    served = prediction.served
    if served is None:
        raise PacsError(
            "the served model does not record the graph it runs (checkpoint and graph SHA-256), which a filed result "
            "must name: serve a repository written by this version's `dgla-export triton`"
        )
    data = prediction.image.read_bytes() if data is None else data
    source = read_source(data, str(prediction.image))
    result = Classification(
        classes=prediction.classes,
        probabilities=tuple(float(p) for p in prediction.probs),
        model_name=served.model_name,
        served_as=f"{served.name} version {served.version}",
        precision=served.precision,
        checkpoint_sha256=served.checkpoint_sha256,
        graph_sha256=served.graph_sha256,
        tool=served.tool,
    )
    uids = ResultUids.of(source, served.graph_sha256)
    heatmap = None
    if prediction.cam_top1 is not None:
        from dgla_export.overlay import SHOWN_SIDE, heatmap_panel
        from dgla_export.preprocess import decode_image

        image = decode_image(data, limits, min_side=SHOWN_SIDE)
        maps = prediction.labelled_maps("all" if prediction.cam is not None else "top1")
        panel = heatmap_panel(image, maps, prediction.config.architecture.display_size)  # type: ignore[union-attr]
        heatmap = heatmap_capture(
            source, np.asarray(panel.convert("RGB")), uids, model_name=served.model_name, tool=served.tool
        )
    return DicomResults(classification_report(source, result, uids), heatmap)


def write_results(results: DicomResults, folder: Path, name: str) -> list[Path]:
    """``folder/NAME.sr.dcm`` and ``folder/NAME.heatmap.dcm`` (DICOM files with their file meta)."""
    written = []
    for suffix, dataset in (("sr", results.report), ("heatmap", results.heatmap)):
        if dataset is not None:
            path = folder / f"{name}.{suffix}.dcm"
            dataset.save_as(path, enforce_file_format=True)
            written.append(path)
    return written
