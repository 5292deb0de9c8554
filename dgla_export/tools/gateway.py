"""A DICOM node between the modalities and the PACS (pip extra pacs; docs/hospital.md). It accepts
C-STORE of dermoscopy photos (VL Photographic, Dermoscopic Photography, Secondary Capture), classifies
each through a Triton server sending only the pixels the model sees, and stores in the PACS a TID 1500
structured report and, for a graph exported with --explain, the heatmap as a Secondary Capture, both in
the photo's study. A PACS that is down gets bounded retries; what it did not take waits in the spool
(--spool) and is offered again, also after a restart. Ctrl-C or SIGTERM: no new images, the images
in hand are finished, then it stops (exit 130 after Ctrl-C, 0 after SIGTERM). Its log names images by a
digest of their UID only.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from dgla_export.errors import EXIT_INTERRUPTED, UserError, run_command
from dgla_export.tools.args import (
    add_client_security_args,
    add_common,
    add_limit_args,
    client_security,
    positive_float,
    positive_int,
)

__all__ = ["build_parser", "main"]


def _port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 1..65535, got {text!r}")
    return value


def _ae_title(text: str) -> str:
    if not 0 < len(text) <= 16 or not text.isascii() or "\\" in text or not text.strip():
        raise argparse.ArgumentTypeError(f"an AE title is 1 to 16 ASCII characters without a backslash, got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dgla-gateway", description=__doc__)
    parser.add_argument("--port", type=_port, required=True, help="the DICOM port to listen on (e.g. 11112)")
    parser.add_argument("--ae-title", type=_ae_title, required=True, metavar="AET", help="this node's AE title")
    parser.add_argument(
        "--host", default="0.0.0.0", help="the address to listen on (default 0.0.0.0: every interface; a modality "
        "on this machine only: 127.0.0.1)",
    )  # fmt: skip
    parser.add_argument(
        "--url", required=True, help="the Triton server (gRPC port 8001, HTTP 8000), e.g. localhost:8001"
    )
    parser.add_argument("--model", default="dgla", metavar="NAME", help="the served ensemble (default dgla)")
    parser.add_argument("--protocol", default="grpc", choices=["grpc", "http"], help="default grpc")
    parser.add_argument(
        "--send-to", required=True, metavar="AE@HOST:PORT|URL",
        help="the archive the results go to: a PACS's AE title, host and DICOM port (C-STORE), or a DICOMweb "
        "service's URL (STOW-RS), e.g. ORTHANC@127.0.0.1:4242 or http://127.0.0.1:8042/dicom-web",
    )  # fmt: skip
    parser.add_argument(
        "--spool", type=Path, metavar="DIR",
        help="where received images and unfiled results wait (patient data: made readable by you only; a new or "
        "earlier spool folder; default $XDG_STATE_HOME/dgla-export/gateway/AET, else ~/.local/state/...: state, "
        "not a cache a cleaner may empty)",
    )  # fmt: skip
    parser.add_argument(
        "--allow", action="append", default=[], metavar="AET",
        help="accept associations only from this calling AE title (repeat for each); default: any",
    )  # fmt: skip
    parser.add_argument(
        "--queue", type=positive_int, default=16, metavar="N",
        help="images waiting at most (default 16); beyond, a sender gets 'out of resources' (A700) and sends again",
    )  # fmt: skip
    parser.add_argument("--retries", type=positive_int, default=3, help="tries per filing and per classification (3)")
    parser.add_argument(
        "--retry-wait", type=positive_float, default=2.0, metavar="S",
        help="seconds before the second try, doubling for each next (default 2)",
    )  # fmt: skip
    parser.add_argument(
        "--resend-every", type=positive_float, default=30.0, metavar="S",
        help="seconds between offers of what the spool still holds (default 30)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=positive_float, default=30.0, help="seconds per Triton request (default 30)")
    add_limit_args(parser)
    tls = parser.add_argument_group("TLS on the DICOM port (DICOM PS3.15 B.9: TLS 1.2 or newer)")
    tls.add_argument("--tls-cert", type=Path, metavar="PEM", help="this node's certificate chain")
    tls.add_argument("--tls-key", type=Path, metavar="PEM", help="its private key")
    tls.add_argument(
        "--tls-client-ca", type=Path, metavar="PEM", help="accept only callers with a certificate of this CA"
    )
    add_client_security_args(parser)
    add_common(parser, verbose=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("dgla-gateway", lambda: _serve(args), debug=args.debug)


def _serve(args: argparse.Namespace) -> int:
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UserError("--tls-cert and --tls-key go together: give both, or neither")
    if args.tls_client_ca is not None and args.tls_cert is None:
        raise UserError("--tls-client-ca checks callers on a TLS port: give --tls-cert and --tls-key too")
    from dgla_export.pacs.destination import parse_destination
    from dgla_export.pacs.gateway import Gateway, GatewayOptions
    from dgla_export.pacs.results import check_pacs_extra
    from dgla_export.triton.client import classify, served_model

    check_pacs_extra()
    options = GatewayOptions(
        port=args.port, ae_title=args.ae_title, url=args.url, send_to=parse_destination(args.send_to, args.ae_title),
        spool=args.spool or default_spool(args.ae_title), host=args.host, model=args.model,
        protocol=args.protocol, timeout=args.timeout, queue_size=args.queue, retries=args.retries,
        retry_wait=args.retry_wait, resend_every=args.resend_every, allowed=tuple(args.allow), tls_cert=args.tls_cert,
        tls_key=args.tls_key, tls_client_ca=args.tls_client_ca, security=client_security(args),
        max_pixels=args.max_pixels, max_bytes=args.max_bytes,
    )  # fmt: skip
    # The server, the model, its key and its outputs, and the record of what it runs, before the port opens
    classify([], url=options.url, model=options.model, protocol=options.protocol, security=options.security)
    served = served_model(options.url, model=options.model, protocol=options.protocol, security=options.security)
    _log_own_lines_only()
    stop = threading.Event()
    received: list[int] = []

    def on_signal(number: int, _frame: object) -> None:
        received.append(number)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    gateway = Gateway(options)
    try:
        gateway.start()
        tls = " with TLS" if options.tls_cert else ""
        print(
            f"dgla-gateway: listening on {options.host}:{options.port}{tls} as {options.ae_title}; classifying with "
            f"{options.model} version {served.version} ({served.model_name}) on {options.url}; filing to "
            f"{options.send_to}; spool {options.spool} "
            "(Ctrl-C stops after the images in hand)",
            flush=True,
        )
        stop.wait()
        print("dgla-gateway: stopping: no new images; finishing the images in hand", file=sys.stderr, flush=True)
    finally:
        gateway.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    counts = ", ".join(f"{n} {what}" for what, n in gateway.counts.items())
    print(f"dgla-gateway: stopped ({counts})", file=sys.stderr, flush=True)
    return 0 if received[:1] == [signal.SIGTERM] else EXIT_INTERRUPTED


def default_spool(ae_title: str) -> Path:
    """Where the gateway keeps what it holds by default: the user's state folder (XDG), not a cache."""
    import os

    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "dgla-export" / "gateway" / ae_title


def _log_own_lines_only() -> None:
    """The gateway's lines on stderr, and no library's: highdicom names the source's UIDs as it copies
    them, pynetdicom describes each object, pydicom logs a decoder's traceback (found by the served
    test that reads the log for the patient). What matters of theirs, the gateway says itself."""
    from dgla_export.pacs.gateway import log

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("dgla-gateway: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    logging.getLogger().addHandler(logging.NullHandler())  # not Python's last resort (stderr) either
    logging.captureWarnings(True)  # pydicom warns quoting values ("Invalid value for VR UI: '1.2...'"): dropped too


if __name__ == "__main__":
    sys.exit(main())
