"""Serve a model repository written by `dgla-export triton` with the pip-installed Triton Inference
Server (pip install -e '.[serve]'). Waits until every model is ready, prints the endpoints,
and stops cleanly on Ctrl-C, SIGINT or SIGTERM (within about 15 s; the server is killed after 30 s):
exit 130 after Ctrl-C or SIGINT (interrupted, as every command), 0 after SIGTERM (a supervisor's
orderly stop). It can be started again on the same ports at once. Imports neither torch nor ONNX
Runtime itself.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from dgla_export.errors import EXIT_BUG, EXIT_INTERRUPTED, UserError, run_command
from dgla_export.tools.args import add_common, positive_int
from dgla_export.triton.security import (
    ADMIN_HEADER,
    ADMIN_KEY_ENV,
    API_KEY_ENV,
    KEY_HEADER,
    ServerSecurity,
    read_key,
)

__all__ = ["build_parser", "main"]


@contextlib.contextmanager
def _signals_raise() -> Iterator[list[int]]:
    """SIGINT and SIGTERM both stop the server, however this process was started: a background
    job of a non-interactive shell inherits an ignored SIGINT, which Python then leaves ignored.
    Yields the list that the signal which stopped it is appended to."""
    received: list[int] = []

    def interrupt(signum: int, _frame: object) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stopped(received: list[int]) -> int:
    """The exit code of a stop: 0 for SIGTERM, 130 for Ctrl-C or SIGINT."""
    return 0 if received[:1] == [signal.SIGTERM] else EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dgla-serve", description=__doc__)
    parser.add_argument("repository", type=Path, help="folder written by `dgla-export triton`")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--http-port", type=positive_int, default=8000, help="HTTP/REST port (default 8000)")
    parser.add_argument("--grpc-port", type=positive_int, default=8001, help="gRPC port (default 8001)")
    parser.add_argument(
        "--metrics-port", type=positive_int, default=8002, help="Prometheus metrics port (default 8002)"
    )
    parser.add_argument(
        "--metrics-host", default="127.0.0.1", help="address for the metrics endpoint (default: loopback only)"
    )
    secure = parser.add_argument_group(
        "security",
        "gRPC over TLS (HTTP then listens on loopback only: Triton's HTTP has no TLS), mutual TLS, and keys. "
        f"Keys come from a file only its owner can read, or from ${API_KEY_ENV} / ${ADMIN_KEY_ENV}; never "
        f"from the command line. Clients send them as the {KEY_HEADER} / {ADMIN_HEADER} header.",
    )
    secure.add_argument("--tls-cert", type=Path, metavar="PEM", help="the server's certificate (chain)")
    secure.add_argument("--tls-key", type=Path, metavar="PEM", help="its private key")
    secure.add_argument(
        "--tls-ca", type=Path, metavar="PEM", help="mutual TLS: answer only clients with a certificate this CA signed"
    )
    secure.add_argument(
        "--api-key-file", type=Path, metavar="FILE",
        help=f"the inference key: inference, model metadata and config need it (else ${API_KEY_ENV}; none: open)",
    )  # fmt: skip
    secure.add_argument(
        "--admin-key-file", type=Path, metavar="FILE",
        help=f"the admin key: repository, shared memory, statistics, trace, logging (else ${ADMIN_KEY_ENV}; "
        "none: those APIs are off)",
    )  # fmt: skip
    parser.add_argument(
        "--version",
        action="append",
        type=_version,
        default=[],
        metavar="[NAME=]N",
        help="serve version N of the ensemble NAME (of the only versioned one without NAME=) instead of the one "
        "its config names; the repository is left as it is (repeatable)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for every model (default 300)")
    parser.add_argument("--log", type=Path, help="append the server's log here (default: a temporary file)")
    add_common(parser, verbose=False)
    return parser


def _version(text: str) -> tuple[str | None, int]:
    name, _, number = text.rpartition("=")
    if not number.isdigit() or int(number) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a version as N or NAME=N (N >= 1)")
    return name or None, int(number)


def _versions(repository: Path, chosen: list[tuple[str | None, int]]) -> dict[str, int]:
    """``--version`` as ensemble -> version; a bare N is for the repository's only versioned ensemble."""
    from dgla_export.triton.versions import ensembles

    if any(name is None for name, _ in chosen):
        held = ensembles(repository) if repository.is_dir() else []
        if len(held) != 1:
            raise UserError(
                f"{repository} holds {len(held)} versioned ensembles ({', '.join(held) or 'none'}): "
                "name one, --version NAME=N"
            )
    return {name or held[0]: number for name, number in chosen}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("dgla-serve", lambda: _serve(args), debug=args.debug)


def _security(args: argparse.Namespace) -> ServerSecurity:
    admin = read_key(args.admin_key_file, ADMIN_KEY_ENV, "--admin-key-file")
    return ServerSecurity(
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_ca=args.tls_ca,
        api_key=read_key(args.api_key_file, API_KEY_ENV, "--api-key-file"),
        **({"admin_key": admin} if admin else {}),
    )


def _serve(args: argparse.Namespace) -> int:
    from dgla_export.api import serve

    def say(message: str) -> None:
        print(f"dgla-serve: {message}", file=sys.stderr, flush=True)

    security = _security(args)
    versions = _versions(args.repository, args.version)
    with _signals_raise() as received:
        try:
            with serve(
                args.repository,
                host=args.host,
                http_port=args.http_port,
                grpc_port=args.grpc_port,
                metrics_port=args.metrics_port,
                metrics_host=args.metrics_host,
                security=security,
                versions=versions,
                timeout=args.timeout,
                log=args.log,
                progress=say,
            ) as server:
                for name in ("http", "grpc", "metrics"):
                    print(f"{name:8s} {getattr(server, name)}")
                for state in server.states:
                    name, version = state["name"], state.get("version", "?")
                    print(f"model    {name} v{version}: {state['state']} ({server.models.get(name, '')})")
                print("ready; Ctrl-C or SIGTERM stops the server", flush=True)
                try:
                    server.wait()
                except KeyboardInterrupt:
                    say("stopping")  # leaving the with-block stops the server and everything it started
                    return _stopped(received)
                print(f"dgla-serve: error: {server.exit_reason()}", file=sys.stderr)
                return EXIT_BUG
        except KeyboardInterrupt:  # while the server was still loading
            say("stopping")
            return _stopped(received)


if __name__ == "__main__":
    sys.exit(main())
