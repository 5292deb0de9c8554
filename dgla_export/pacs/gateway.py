"""A DICOM node that classifies the photos a modality or a PACS sends it and files the results back.

It accepts C-STORE of photographs (VL Photographic, Dermoscopic Photography, Secondary Capture) and
answers each at once: success once the object is in its spool, a failure status for an object it
cannot classify (no pixels, several frames, pixels that may show the patient, a decoder's error),
"out of resources" (A700) while its queue is full. The intake check decodes the pixels and builds a
report from the header, so that what is acknowledged can be filed. A worker takes the spool's images
in order and classifies each through Triton sending only the pixels the model sees (:func:`classify`,
as ``dgla-client`` does); an image stays in the spool while the server is down, and one it answers
with an error is tried again (``MAX_TRIES`` times, then set aside in ``failed/``). A filer offers
the reports and heatmaps (:mod:`dgla_export.pacs.results`) to the archive, C-STORE or STOW-RS, with
bounded retries; what the archive did not take stays in the spool and is offered again every
``resend_every`` seconds and at the next start; an object it refuses with a failure status is set
aside in ``failed/``. Nothing acknowledged is deleted before the archive took its results. A stop
(Ctrl-C, SIGTERM) refuses new associations, classifies the images in hand, offers their results
once, then returns.

The spool holds patient data: its folders are the user's alone (0700, files 0600), written durably
(fsync, rename). The log names images by 12 hex digits of their SOP Instance UID's SHA-256
(``image 3f2a91c4e0b1``), never by patient, file or UID; values a library quotes in an error are
replaced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import queue
import re
import threading
from pathlib import Path
from typing import Any

from dgla_export.errors import UserError
from dgla_export.pacs.destination import Destination, SendError
from dgla_export.triton.security import ClientSecurity

__all__ = ["ACCEPTED", "Gateway", "GatewayOptions", "image_key"]

log = logging.getLogger("dgla.gateway")

# The storage SOP classes a dermoscopy photo arrives as (and the transfer syntaxes decode reads)
ACCEPTED = {
    "1.2.840.10008.5.1.4.1.1.77.1.4": "VL Photographic",
    "1.2.840.10008.5.1.4.1.1.77.1.7": "Dermoscopic Photography",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture",
}
SYNTAXES = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (what cameras and most archives write)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
]
VERIFICATION = "1.2.840.10008.1.1"
OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0xA700, 0xC000
SPOOL_FOLDERS = ("incoming", "outgoing", "failed")
KEY_DIGITS = 12  # of an image's digest in the log (its spool file carries all 64)
MAX_TRIES = 5  # classifications of one image the server answered with an error before it is set aside
MAX_ASSOCIATIONS = 4  # at once: each holds a photo in memory while it arrives
INTAKE_SIDE = 448  # the intake decodes at reduced scale (a JPEG inside its DCT): a check, not the pixels sent


def image_key(sop_instance_uid: str) -> str:
    """How the log names an image: 12 hex digits of its SOP Instance UID's SHA-256 (no UID, no name)."""
    return hashlib.sha256(sop_instance_uid.encode()).hexdigest()[:KEY_DIGITS]


@dataclasses.dataclass(frozen=True)
class GatewayOptions:
    """Where the gateway listens, what it asks, where it files (see ``dgla-gateway --help``)."""

    port: int
    ae_title: str
    url: str  # Triton's address
    send_to: Destination
    spool: Path
    host: str = "0.0.0.0"
    model: str = "dgla"
    protocol: str = "grpc"
    timeout: float = 30.0
    queue_size: int = 16
    retries: int = 3  # tries per filing, the waits between them doubling from retry_wait
    retry_wait: float = 2.0
    resend_every: float = 30.0  # seconds between offers of what the spool still holds
    allowed: tuple[str, ...] = ()  # calling AE titles accepted; empty: any
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # mutual TLS: callers must show a certificate of this CA
    security: ClientSecurity = dataclasses.field(default_factory=ClientSecurity)
    max_pixels: int | None = None
    max_bytes: int | None = None


class Gateway:
    """The node: :meth:`start` listens and works, :meth:`stop` finishes what is in hand."""

    def __init__(self, options: GatewayOptions) -> None:
        self.options = options
        self.incoming, self.outgoing, self.failed = (options.spool / name for name in SPOOL_FOLDERS)
        self._queue: queue.Queue[Path | None] = queue.Queue(maxsize=options.queue_size)
        self._pending: set[Path] = set()  # queued or in hand
        self._tries: dict[Path, int] = {}  # classification attempts of an image the server did not answer
        self._lock = threading.Lock()  # guards _pending
        self._wake = threading.Event()  # results are waiting: the filer need not wait for its next round
        self._stopping = threading.Event()
        self._server: Any = None
        self._threads: list[threading.Thread] = []
        self.counts = {"received": 0, "refused": 0, "classified": 0, "filed": 0, "failed": 0}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        from pynetdicom import AE, evt

        _prepare_spool(self.options.spool)
        ae = AE(ae_title=self.options.ae_title)
        ae.require_calling_aet = list(self.options.allowed)
        ae.maximum_associations = MAX_ASSOCIATIONS
        for sop_class in ACCEPTED:
            ae.add_supported_context(sop_class, SYNTAXES)
        ae.add_supported_context(VERIFICATION)
        try:
            self._server = ae.start_server(
                (self.options.host, self.options.port),
                block=False,
                ssl_context=self._ssl_context(),
                evt_handlers=[(evt.EVT_C_STORE, self._on_store)],
            )
        except OSError as err:
            where = f"{self.options.host}:{self.options.port}"
            raise UserError(f"cannot listen on {where} ({err.strerror or err}); is another node on that port?") from err
        for target, name in ((self._work, "classify"), (self._file, "file")):
            thread = threading.Thread(target=target, name=f"dgla-gateway-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._requeue()  # what an earlier run left in the spool
        self._wake.set()

    def stop(self) -> None:
        """Refuse new associations, classify what is queued, offer the archive every result once, return."""
        if self._server is not None:
            self._server.shutdown()
        self._stopping.set()
        self._queue.put(None)  # after the images in hand: the worker ends there
        for thread in self._threads:
            thread.join()
        self._file_spooled()  # the last offer (no waits: stopping)

    def _ssl_context(self) -> Any:
        if self.options.tls_cert is None:
            return None
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.options.tls_cert, self.options.tls_key)
            if self.options.tls_client_ca is not None:
                context.load_verify_locations(self.options.tls_client_ca)
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as err:
            raise UserError(f"cannot use --tls-cert/--tls-key/--tls-client-ca: {err}") from err
        return context

    # -- receiving -----------------------------------------------------------------------------

    def _on_store(self, event: Any) -> Any:
        """C-STORE: the object checked and spooled, then acknowledged (or refused with a status)."""
        from pydicom.dataset import Dataset

        self.counts["received"] += 1
        try:
            dataset = event.dataset
            dataset.file_meta = event.file_meta
            digest = hashlib.sha256(str(dataset.SOPInstanceUID).encode()).hexdigest()
        except Exception:  # not even its UIDs parse
            return self._refuse(CANNOT_UNDERSTAND, "the object cannot be parsed", "an object")
        key = image_key(str(dataset.SOPInstanceUID))
        try:
            data = _encoded(dataset)
        except Exception:
            return self._refuse(CANNOT_UNDERSTAND, "the object cannot be written as a DICOM file", f"image {key}")
        if problem := self._problem(data):
            return self._refuse(CANNOT_UNDERSTAND, problem, f"image {key}")
        path = self.incoming / f"{digest}.dcm"
        with self._lock:
            if path in self._pending:  # sent again while in hand: one classification answers both
                return 0x0000
            if self._stopping.is_set() or self._queue.full():
                return self._refuse(OUT_OF_RESOURCES, "the queue is full; send it again later", f"image {key}")
            _write_private(path, data)
            self._pending.add(path)
            self._queue.put_nowait(path)
        log.info("received image %s (%s); %d in the queue", key, ACCEPTED.get(str(dataset.SOPClassUID), "?"),
                 self._queue.qsize())  # fmt: skip
        status = Dataset()
        status.Status = 0x0000
        return status

    def _refuse(self, code: int, reason: str, what: str) -> Any:
        from pydicom.dataset import Dataset

        self.counts["refused"] += 1
        log.warning("refused %s: %s", what, reason)
        status = Dataset()
        status.Status, status.ErrorComment = code, reason[:64]
        return status

    def _problem(self, data: bytes) -> str | None:
        """Why an object cannot be classified (decoded as the client will) or its results not filed
        (the header a report copies), in words that hold no value of the object; or None."""
        from dgla_export.deidentify import refuse_burned_in
        from dgla_export.pacs.results import PacsError, check_fileable
        from dgla_export.preprocess import ImageError, decode_image

        try:
            check_fileable(data)
            refuse_burned_in(data)
            decode_image(data, self._limits(), min_side=INTAKE_SIDE)
        except (ImageError, PacsError) as err:
            return _safe(err)
        except Exception as err:  # a decoder's own error on a malformed object
            return f"its pixels cannot be decoded ({type(err).__name__})"
        return None

    def _limits(self) -> Any:
        from dgla_export.preprocess import Limits

        given = {"max_pixels": self.options.max_pixels, "max_bytes": self.options.max_bytes}
        return Limits(**{key: value for key, value in given.items() if value is not None})

    # -- classifying -----------------------------------------------------------------------------

    def _requeue(self) -> None:
        """Queue the spooled images not queued yet (an earlier run's, or those an outage kept)."""
        for path in sorted(self.incoming.glob("*.dcm")):
            with self._lock:
                if path in self._pending or self._queue.full() or self._stopping.is_set():
                    continue
                self._pending.add(path)
                self._queue.put_nowait(path)

    def _work(self) -> None:
        while (path := self._queue.get()) is not None:
            try:
                self._classify_one(path)
            except Exception as err:  # the node keeps serving; the image is where _classify_one left it
                log.error("image %s: %s", path.stem[:KEY_DIGITS], _safe(err))
            finally:
                with self._lock:
                    self._pending.discard(path)
        log.info("the images in hand are done")

    def _classify_one(self, path: Path) -> None:
        from dgla_export.pacs.results import dicom_results
        from dgla_export.triton.client import ClientError, classify

        options, key = self.options, path.stem[:KEY_DIGITS]
        limits = self._limits()
        try:
            [prediction] = classify(
                [path], url=options.url, model=options.model, protocol=options.protocol, timeout=options.timeout,
                maps="top1", maps_optional=True, send="pixels", security=options.security,
                max_pixels=limits.max_pixels, max_bytes=limits.max_bytes,
            )  # fmt: skip
            error = prediction.error
        except ClientError as err:  # the server is down or unreachable: kept, however long it lasts
            log.warning("image %s kept in the spool, tried again in %g s: Triton did not answer (%s)",
                        key, options.resend_every, _safe(err))  # fmt: skip
            return
        if error is not None:  # the server answered this image with an error (overloaded, or the image's)
            tries = self._tries[path] = self._tries.get(path, 0) + 1
            if tries < MAX_TRIES:
                log.warning("image %s not classified (try %d of %d): %s; kept in the spool, tried again in %g s",
                            key, tries, MAX_TRIES, _safe(error), options.resend_every)  # fmt: skip
                return
            self._set_aside(path, f"not classified after {MAX_TRIES} tries: {_safe(error)}")
            return
        self._tries.pop(path, None)
        try:
            results = dicom_results(prediction, limits=limits)
        except Exception as err:  # its header was checked at intake: not expected, kept for a person to see
            self._set_aside(path, f"its results could not be made ({type(err).__name__})")
            return
        for dataset in results.datasets:  # into the spool before the image leaves it: nothing lost
            _write_private(self.outgoing / f"{path.stem}.{dataset.Modality.lower()}.dcm", _encoded(dataset))
        path.unlink()
        _sync_folder(path.parent)
        self.counts["classified"] += 1
        top1 = int(prediction.probs.argmax())  # type: ignore[union-attr]
        log.info("classified image %s: %s %.3f", key, prediction.classes[top1], prediction.probs[top1])  # type: ignore[index]
        self._wake.set()

    def _set_aside(self, path: Path, why: str) -> None:
        """Move a spooled file to ``failed/`` (kept for a person: never deleted, never retried)."""
        self._tries.pop(path, None)  # the same photo sent again later starts its count anew
        self.counts["failed"] += 1
        os.replace(path, self.failed / path.name)
        _sync_folder(self.failed)
        log.error("image %s set aside in %s: %s", path.stem[:KEY_DIGITS], self.failed, why)

    # -- filing ----------------------------------------------------------------------------------

    def _file(self) -> None:
        """The filer: offers the spool's results when new ones wait, and every ``resend_every`` s."""
        while not self._stopping.is_set():
            self._wake.wait(self.options.resend_every)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self._file_spooled()
                self._requeue()
            except Exception as err:
                log.error("the spool's offer failed: %s", _safe(err))

    def _file_spooled(self) -> None:
        """Offer the archive every image's results, with bounded retries: an archive that does not
        answer ends the round (all waits for the next); one that refuses an image's objects sets
        them aside in ``failed/``."""
        import pydicom

        groups: dict[str, list[Path]] = {}
        for path in sorted(self.outgoing.glob("*.dcm")):
            groups.setdefault(path.name.split(".")[0], []).append(path)
        for digest, paths in groups.items():
            key, datasets = digest[:KEY_DIGITS], [pydicom.dcmread(p) for p in paths]
            for attempt in range(self.options.retries):
                try:
                    self.options.send_to.store(datasets)
                except SendError as err:
                    if err.refused:
                        for path in paths:
                            self._set_aside(path, f"the archive refused it ({_safe(err)})")
                        break
                    if attempt + 1 < self.options.retries and not self._stopping.wait(
                        self.options.retry_wait * 2**attempt
                    ):
                        continue
                    log.warning("image %s: the archive did not take its results (%s); kept in the spool, "
                                "offered again in %g s", key, _safe(err), self.options.resend_every)  # fmt: skip
                    return
                for path in paths:
                    path.unlink()
                _sync_folder(self.outgoing)
                self.counts["filed"] += 1
                log.info("image %s: report%s filed to %s", key, " and heatmap" * (len(paths) > 1),
                         self.options.send_to)  # fmt: skip
                break


def _prepare_spool(spool: Path) -> None:
    """The spool's folders, the user's alone; a folder that holds anything else is refused (the
    gateway would make it private and fill it with patient data); half-written files of a run that
    was killed are removed (their complete copies were never acknowledged)."""
    if spool.exists() and any(p.name not in SPOOL_FOLDERS for p in spool.iterdir()):
        raise UserError(f"--spool {spool} holds files that are not a dgla-gateway spool's; give a new or empty folder")
    spool.mkdir(parents=True, exist_ok=True, mode=0o700)
    spool.chmod(0o700)
    for name in SPOOL_FOLDERS:
        (spool / name).mkdir(exist_ok=True, mode=0o700)
        (spool / name).chmod(0o700)
        for stale in (spool / name).glob(".*.tmp"):
            stale.unlink()


def _encoded(dataset: Any) -> bytes:
    """A dataset as the bytes of a DICOM file (its file meta, the preamble)."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _write_private(path: Path, data: bytes) -> None:
    """Write beside and rename into place, readable by the user only (patient data), durably."""
    staging = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(staging, path)
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """A rename or unlink in ``folder`` survives a power cut once the folder itself is synced."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_UID = re.compile(r"\b\d+(?:\.\d+){4,}\b")  # five parts or more: a UID, not an IPv4 address


def _safe(err: object, limit: int = 200) -> str:
    """An error for the log: one line, bounded, with what a library quotes of the object (a date, a
    name, a UID) and any UID replaced: the words stay, the values do not."""
    text = _UID.sub("<uid>", _QUOTED.sub("<value>", " ".join(str(err).split())))
    return text if len(text) <= limit else text[:limit] + " ..."
