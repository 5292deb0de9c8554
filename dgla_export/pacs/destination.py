"""Where the gateway files its results: a PACS by DICOM C-STORE (``AE@HOST:PORT``) or by DICOMweb
STOW-RS (a URL). Both store a list of datasets or raise :class:`SendError`; both are retried by the
caller (:mod:`dgla_export.pacs.gateway`), which keeps what was not stored in its spool."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

from dgla_export.errors import UserError

__all__ = ["CStoreDestination", "Destination", "SendError", "StowDestination", "parse_destination"]

# Statuses a storage SCP answers for an object it stored (0000 success; B000, B007, B006: stored with
# a warning: coerced, elements discarded)
STORED = {0x0000, 0xB000, 0xB007, 0xB006}


class SendError(RuntimeError):
    """The archive did not store an object. ``refused``: it answered, and said no (a failure status,
    no presentation context for the object's class, a STOW-RS failure list): sending again will not
    help; else it did not answer (down, unreachable, timed out)."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


@dataclasses.dataclass(frozen=True)
class CStoreDestination:
    """A storage SCP: its AE title, host and port; ``calling``: the AE title this node calls as."""

    ae_title: str
    host: str
    port: int
    calling: str = "DGLA"
    timeout: float = 30.0

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    def store(self, datasets: Sequence[Any]) -> None:
        from pynetdicom import AE

        ae = AE(ae_title=self.calling)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = self.timeout
        for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
            ae.add_requested_context(sop_class, sorted({str(ds.file_meta.TransferSyntaxUID) for ds in datasets}))
        association = ae.associate(self.host, self.port, ae_title=self.ae_title)
        # What concerns every object (no answer, an association rejected, a SOP class not taken: a
        # configuration to mend at the archive) keeps them for the next offer; only an object's own
        # failure status refuses it.
        if not association.is_established:
            why = (
                f"rejected the association (is {self.calling} known to it?)"
                if association.is_rejected
                else "did not answer"
            )
            raise SendError(f"{self} {why}")
        try:
            accepted = {str(context.abstract_syntax) for context in association.accepted_contexts}
            if missing := sorted({str(ds.SOPClassUID) for ds in datasets} - accepted):
                raise SendError(f"{self} does not take the SOP class {', '.join(missing)}; configure it to")
            for dataset in datasets:
                try:
                    status = association.send_c_store(dataset)
                except (OSError, RuntimeError, ValueError) as err:
                    raise SendError(f"{self}: the association failed ({type(err).__name__})") from err
                code = int(status.get("Status", -1)) if status else -1
                if code == -1:
                    raise SendError(f"{self} did not answer a C-STORE")
                if code not in STORED:
                    raise SendError(
                        f"{self} did not store a {dataset.Modality} object (status {code:#06x})", refused=True
                    )
        finally:
            if association.is_established:
                association.release()


@dataclasses.dataclass(frozen=True)
class StowDestination:
    """A DICOMweb service root (e.g. Orthanc's ``http://host:8042/dicom-web``), stored by STOW-RS."""

    url: str

    def __str__(self) -> str:
        return self.url

    def store(self, datasets: Sequence[Any]) -> None:
        import requests
        from dicomweb_client.api import DICOMwebClient

        try:
            answer = DICOMwebClient(url=self.url).store_instances(list(datasets))
        except requests.HTTPError as err:  # it answered: 4xx refuses, 5xx may pass
            status = err.response.status_code if err.response is not None else 0
            raise SendError(f"{self} answered HTTP {status}", refused=400 <= status < 500) from err
        except (requests.RequestException, OSError) as err:
            raise SendError(f"{self} did not answer ({type(err).__name__})") from err
        failed = answer.get("FailedSOPSequence") if answer is not None else None
        if failed:
            raise SendError(f"{self} refused {len(failed)} of {len(datasets)} objects", refused=True)


Destination = CStoreDestination | StowDestination


def parse_destination(text: str, calling: str = "DGLA") -> Destination:
    """``AE@HOST:PORT`` (C-STORE) or ``http(s)://...`` (STOW-RS), or a one-line error naming the forms."""
    if text.startswith(("http://", "https://")):
        return StowDestination(text.rstrip("/"))
    match = re.fullmatch(r"([^@]{1,16})@(\[[^\]]+\]|[^:@]+):(\d{1,5})", text)
    if not match or not 0 < int(match[3]) < 65536:
        raise UserError(
            f"--send-to {text!r} is neither AE@HOST:PORT (a PACS's AE title, e.g. ORTHANC@127.0.0.1:4242) nor a "
            "DICOMweb URL (e.g. http://127.0.0.1:8042/dicom-web)"
        )
    return CStoreDestination(match[1], match[2].strip("[]"), int(match[3]), calling)
