"""A DICOM node that classifies the photos a modality or a PACS sends it and files the results back.

It accepts C-STORE of photographs (VL Photographic, Dermoscopic Photography, Secondary Capture) and
answers each at once: success once the object is in its spool, a failure status for an object it
cannot classify (no pixels, several frames, pixels that may show the patient, a decoder's error),
"out of resources" (A700) while its queue is full. A worker takes the spool's images in order,
classifies each through Triton sending only the pixels the model sees (:func:`classify`, as
``dgla-client`` does), and files the report and the heatmap (:mod:`dgla_export.pacs.results`) to the
archive: C-STORE or STOW-RS, retried a bounded number of times. What the archive did not take stays
in the spool and is offered again every ``resend_every`` seconds, and on the next start: nothing is
lost. A stop (Ctrl-C, SIGTERM) refuses new associations, finishes the images in hand, then returns.

The spool holds patient data: its folders are the user's alone (0700). The log names images by a
digest of their SOP Instance UID (``image 3f2a91c4e0b1``), never by patient, file or UID.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import queue
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
OUT_OF_RESOURCES, CANNOT_UNDERSTAND, PROCESSING_FAILURE = 0xA700, 0xC000, 0x0110


def image_key(sop_instance_uid: str) -> str:
    """How the log names an image: 12 hex digits of its SOP Instance UID's SHA-256 (no UID, no name)."""
    return hashlib.sha256(sop_instance_uid.encode()).hexdigest()[:12]


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
        self.incoming, self.outgoing, self.failed = (
            options.spool / name for name in ("incoming", "outgoing", "failed")
        )
        self._queue: queue.Queue[Path | None] = queue.Queue(maxsize=options.queue_size)
        self._pending: set[Path] = set()  # queued or in hand
        self._lock = threading.Lock()  # guards _pending
        self._filing = threading.Lock()  # one filing at a time
        self._stopping = threading.Event()
        self._server: Any = None
        self._threads: list[threading.Thread] = []
        self.counts = {"received": 0, "refused": 0, "classified": 0, "filed": 0, "failed": 0}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        from pynetdicom import AE, evt

        for folder in (self.incoming, self.outgoing, self.failed):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o700)
        self.options.spool.chmod(0o700)
        ae = AE(ae_title=self.options.ae_title)
        ae.maximum_pdu_size = 0  # no limit from this side
        ae.require_calling_aet = list(self.options.allowed)
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
        for target, name in ((self._work, "classify"), (self._resend, "resend")):
            thread = threading.Thread(target=target, name=f"dgla-gateway-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._requeue()  # what an earlier run left in the spool

    def stop(self) -> None:
        """Refuse new associations, classify and file what is queued, then return."""
        if self._server is not None:
            self._server.shutdown()
        self._stopping.set()
        self._queue.put(None)  # after the images in hand: the worker ends there
        for thread in self._threads:
            thread.join()
        self._file_spooled()  # a last offer of what the archive has not taken

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
            key = image_key(str(dataset.SOPInstanceUID))
        except Exception:  # not even its UIDs parse
            return self._refuse(CANNOT_UNDERSTAND, "the object cannot be parsed", "an object")
        buffer = io.BytesIO()
        try:
            dataset.save_as(buffer, enforce_file_format=True)
        except Exception:
            return self._refuse(CANNOT_UNDERSTAND, "the object cannot be written as a DICOM file", f"image {key}")
        data = buffer.getvalue()
        if problem := self._problem(data):
            return self._refuse(CANNOT_UNDERSTAND, problem, f"image {key}")
        path = self.incoming / f"{key}.dcm"
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
        """Why an object cannot be classified (decoded as the client will), or None."""
        from dgla_export.deidentify import refuse_burned_in
        from dgla_export.preprocess import ImageError, Limits, decode_image

        limits = Limits(*(v for v in (self.options.max_pixels, self.options.max_bytes) if v is not None))
        try:
            refuse_burned_in(data)
            decode_image(data, limits, min_side=448)
        except ImageError as err:
            return str(err)
        except Exception as err:  # a decoder's own error on a malformed object
            return f"its pixels cannot be decoded ({type(err).__name__})"
        return None

    # -- classifying and filing ----------------------------------------------------------------

    def _requeue(self) -> None:
        """Queue the spooled images not queued yet (an earlier run's, or those a server outage kept)."""
        for path in sorted(self.incoming.glob("*.dcm")):
            with self._lock:
                if path in self._pending or self._queue.full():
                    continue
                self._pending.add(path)
                self._queue.put_nowait(path)

    def _work(self) -> None:
        while (path := self._queue.get()) is not None:
            try:
                self._classify_one(path)
            except Exception as err:  # kept in the spool, tried again later; the node keeps serving
                log.error("image %s kept in the spool: %s", path.stem, _safe(err))
            finally:
                with self._lock:
                    self._pending.discard(path)
        log.info("the images in hand are done")

    def _classify_one(self, path: Path) -> None:
        from dgla_export.pacs.results import dicom_results
        from dgla_export.triton.client import ClientError, classify

        options = self.options
        limits = {k: v for k, v in (("max_pixels", options.max_pixels), ("max_bytes", options.max_bytes)) if v}
        for attempt in range(options.retries):
            try:
                [prediction] = classify(
                    [path], url=options.url, model=options.model, protocol=options.protocol, timeout=options.timeout,
                    maps="top1", maps_optional=True, send="pixels", security=options.security, **limits,
                )  # fmt: skip
                break
            except ClientError as err:  # the server is down or slow: wait, then the spool keeps it
                if attempt + 1 < options.retries and not self._stopping.wait(options.retry_wait * 2**attempt):
                    continue
                raise ClientError(f"Triton did not answer ({_safe(err)})") from err
        if prediction.probs is None:
            self.counts["failed"] += 1
            os.replace(path, self.failed / path.name)
            log.error("image %s not classified (kept in %s): %s", path.stem, self.failed.name, _safe(prediction.error))
            return
        results = dicom_results(prediction)
        top1 = int(prediction.probs.argmax())
        for dataset in results.datasets:  # into the spool before the image leaves it: nothing lost
            buffer = io.BytesIO()
            dataset.save_as(buffer, enforce_file_format=True)
            _write_private(self.outgoing / f"{path.stem}.{dataset.Modality.lower()}.dcm", buffer.getvalue())
        path.unlink()
        self.counts["classified"] += 1
        log.info("classified image %s: %s %.3f", path.stem, prediction.classes[top1], prediction.probs[top1])
        self._file_spooled()

    def _file_spooled(self) -> None:
        """Offer the archive every result the spool holds, per image, with bounded retries."""
        import pydicom

        with self._filing:
            groups: dict[str, list[Path]] = {}
            for path in sorted(self.outgoing.glob("*.dcm")):
                groups.setdefault(path.name.split(".")[0], []).append(path)
            for key, paths in groups.items():
                datasets = [pydicom.dcmread(p) for p in paths]
                for attempt in range(self.options.retries):
                    try:
                        self.options.send_to.store(datasets)
                    except (SendError, OSError) as err:
                        if attempt + 1 < self.options.retries and not self._stopping.wait(
                            self.options.retry_wait * 2**attempt
                        ):
                            continue
                        log.warning("image %s: the archive did not take its results (%s); kept in the spool, "
                                    "offered again in %g s", key, _safe(err), self.options.resend_every)  # fmt: skip
                        return  # the archive is down: the rest waits too
                    for path in paths:
                        path.unlink()
                    self.counts["filed"] += 1
                    log.info("image %s: report%s filed to %s", key, " and heatmap" * (len(paths) > 1),
                             self.options.send_to)  # fmt: skip
                    break

    def _resend(self) -> None:
        while not self._stopping.wait(self.options.resend_every):
            try:
                self._requeue()
                self._file_spooled()
            except Exception as err:
                log.error("the spool's offer failed: %s", _safe(err))


def _write_private(path: Path, data: bytes) -> None:
    """Write beside and rename into place, readable by the user only (patient data)."""
    staging = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(staging, path)


def _safe(err: object, limit: int = 200) -> str:
    """An error for the log: one line, bounded (a server's echo of a request is not logged whole)."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit] + " ..."
