"""Who may reach a served model, and how: TLS on gRPC, keys on the APIs, the rest on loopback.

Triton 2.51 (the pip server ``dgla-serve`` runs) speaks TLS on gRPC only; its HTTP endpoint has
none, so with TLS on, HTTP and metrics are bound to loopback (where ``dgla-serve`` itself checks
readiness), and under mutual TLS HTTP inference is behind the admin key. Its restricted protocols
check a header on each request: the inference key guards inference, model metadata and model
config (what a client needs); the admin key guards the model repository index, shared memory,
statistics, trace and logging. Without an admin key given they get a random one that only
``dgla-serve`` holds. Health stays open, for load balancers and probes.

Model control is ``none``: the server runs the models of the repository at start, and no request,
whatever its key, loads or unloads one (Triton's load request takes a model's files in its body,
and loading runs them: code execution). A model whose Python-backend stub dies is recovered by
restarting the server (:mod:`.supervisor`).

Keys come from a file (owner-only permissions) or the environment, never from a command line:
another user could read that from ``ps``. tritonserver itself takes them only as arguments;
dgla-serve wipes them from its command line as soon as it has read them
(:mod:`dgla_export.triton.server`), and docs/serving.md says what remains. Private keys
(``--tls-key``, ``--client-key``) are refused unless owner-only, as key files are.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import secrets
import stat
from pathlib import Path

from dgla_export.errors import OptionError

__all__ = [
    "ADMIN_APIS",
    "ADMIN_HEADER",
    "ADMIN_KEY_ENV",
    "API_KEY_ENV",
    "INFERENCE_APIS",
    "KEY_HEADER",
    "ClientSecurity",
    "ServerSecurity",
    "header",
    "loopback",
    "read_key",
    "triton_arguments",
]

KEY_HEADER, ADMIN_HEADER = "dgla-api-key", "dgla-admin-key"
API_KEY_ENV, ADMIN_KEY_ENV = "DGLA_API_KEY", "DGLA_ADMIN_KEY"
INFERENCE_APIS = ("inference", "metadata", "model-config")
ADMIN_APIS = ("model-repository", "shared-memory", "statistics", "trace", "logging")
# Triton parses "APIS:KEY=VALUE": a value must not hold ':', ',' or '=', nor whitespace.
_KEY = re.compile(r"[A-Za-z0-9._~-]{16,256}")
MAKE_A_KEY = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
# A server's address as the clients take it: HOST:PORT or [IPv6]:PORT.
_DESTINATION = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):\d{1,5}")


def loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback, the one place plaintext stays inside it."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def header(name: str, protocol: str) -> str:
    """The header a restricted API checks: over gRPC Triton reads it with its protocol prefix."""
    return f"triton-grpc-protocol-{name}" if protocol == "grpc" else name


def read_key(file: Path | None, env: str, option: str) -> str | None:
    """The key in ``file`` (which only its owner may read), else in ``$env``, else None."""
    if file is not None:
        _owner_only(file, option)
        try:
            text = file.read_text(encoding="utf-8").strip()
        except OSError as err:
            raise OptionError(f"{option} {file}: cannot be read ({err.strerror})") from err
        except UnicodeDecodeError as err:
            raise OptionError(f"{option} {file}: not a text file (a key is one line of letters and digits)") from err
        source = f"{option} {file}"
    elif os.environ.get(env):
        text, source = os.environ[env].strip(), f"${env}"
    else:
        return None
    if not _KEY.fullmatch(text):
        raise OptionError(f"{source}: a key is 16 to 256 letters, digits or ._~- (make one with {MAKE_A_KEY})")
    return text


def _owner_only(path: Path, option: str) -> None:
    """A secret's file: readable, and by its owner only (another user would read the secret)."""
    try:
        mode = path.stat().st_mode
    except OSError as err:
        raise OptionError(f"{option} {path}: cannot be read ({err.strerror})") from err
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise OptionError(f"{option} {path}: other users may read it; chmod 600 {path}")


def _readable(path: Path | None, option: str, *, private: bool = False) -> Path | None:
    """A PEM file that exists; a private key's (``private``) only its owner may read."""
    if path is not None and not path.is_file():
        raise OptionError(f"{option} {path}: no such file (a PEM file)")
    if path is not None and private:
        _owner_only(path, option)
    return path


def triton_arguments(
    *,
    tls_cert: str | Path | None,
    tls_key: str | Path | None,
    tls_ca: str | Path | None,
    api_key: str | None,
    admin_key: str,
) -> list[str]:
    """tritonserver's options for TLS, the two keys (or what stands for them, such as a container's
    ``$(DGLA_API_KEY)``), strict readiness and model control ``none``: the models are those of the
    repository at start, and no request can load or unload one (loading a model runs its code).

    Under mutual TLS a client proves itself with its certificate, which Triton's HTTP (no TLS) cannot
    check: there HTTP inference joins the admin APIs behind the admin key, so no client reaches it
    without what only the server's operator holds; health stays open for probes."""
    arguments = ["--model-control-mode=none", "--strict-readiness=true"]
    if tls_cert is not None:
        arguments += ["--grpc-use-ssl=true", f"--grpc-server-cert={tls_cert}", f"--grpc-server-key={tls_key}"]
    if tls_ca is not None:
        arguments += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={tls_ca}"]
    http_admin = ADMIN_APIS + INFERENCE_APIS if tls_ca is not None else ADMIN_APIS
    arguments += [
        f"--grpc-restricted-protocol={','.join(ADMIN_APIS)}:{ADMIN_HEADER}={admin_key}",
        f"--http-restricted-api={','.join(http_admin)}:{ADMIN_HEADER}={admin_key}",
    ]
    if api_key is not None:
        arguments.append(f"--grpc-restricted-protocol={','.join(INFERENCE_APIS)}:{KEY_HEADER}={api_key}")
        if tls_ca is None:
            arguments.append(f"--http-restricted-api={','.join(INFERENCE_APIS)}:{KEY_HEADER}={api_key}")
    return arguments


@dataclasses.dataclass(frozen=True)
class ServerSecurity:
    """TLS (``tls_cert`` + ``tls_key``; with ``tls_ca``, mutual: clients need a certificate that CA
    signed) and the two keys. The default is what ``dgla-serve`` always was: plaintext on the host
    asked for, no key, admin APIs off."""

    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    api_key: str | None = dataclasses.field(default=None, repr=False)
    admin_key: str = dataclasses.field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise OptionError("--tls-cert and --tls-key go together (the server's certificate and its key)")
        if self.tls_ca is not None and self.tls_cert is None:
            raise OptionError("--tls-ca (mutual TLS) needs --tls-cert and --tls-key too")
        _readable(self.tls_cert, "--tls-cert")
        _readable(self.tls_key, "--tls-key", private=True)
        _readable(self.tls_ca, "--tls-ca")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def mutual(self) -> bool:
        return self.tls_ca is not None

    def triton_arguments(self) -> list[str]:
        """tritonserver's options for this: TLS, restricted APIs, model control none, strict readiness."""
        return triton_arguments(
            tls_cert=self.tls_cert, tls_key=self.tls_key, tls_ca=self.tls_ca, api_key=self.api_key,
            admin_key=self.admin_key,
        )  # fmt: skip

    @property
    def secrets(self) -> tuple[str, ...]:
        """The keys on tritonserver's command line, which dgla-serve wipes from it once read."""
        return tuple(k for k in (self.admin_key, self.api_key) if k)

    def describe(self) -> str:
        tls = "mutual TLS" if self.mutual else "TLS" if self.tls else "plaintext"
        key = "an inference key" if self.api_key else "no inference key"
        http = "; HTTP inference behind the admin key (no client certificate there)" if self.mutual else ""
        return f"gRPC {tls}, {key}, admin APIs behind the admin key, model control none{http}"


@dataclasses.dataclass(frozen=True)
class ClientSecurity:
    """What a client presents: TLS (``root_cert`` to trust a private CA; ``client_cert`` and
    ``client_key`` for mutual TLS) and the inference key, sent as the ``dgla-api-key`` header
    (``triton-grpc-protocol-dgla-api-key`` over gRPC, as Triton reads it). The key goes in clear
    only to loopback, or beyond it with ``insecure`` (a network the caller vouches for)."""

    ssl: bool = False
    root_cert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    api_key: str | None = dataclasses.field(default=None, repr=False)
    insecure: bool = False

    def __post_init__(self) -> None:
        if (self.client_cert is None) != (self.client_key is None):
            raise OptionError("--client-cert and --client-key go together (mutual TLS)")
        if not self.ssl and any(p is not None for p in (self.root_cert, self.client_cert)):
            raise OptionError("--root-cert, --client-cert and --client-key need --ssl")
        _readable(self.root_cert, "--root-cert")
        _readable(self.client_cert, "--client-cert")
        _readable(self.client_key, "--client-key", private=True)

    def check_destination(self, url: str) -> None:
        """Refuse to send the inference key in clear to another machine. ``url`` must then be
        HOST:PORT or [IPv6]:PORT and nothing else (no user part, path or scheme that could make the
        client connect elsewhere than the host this check reads)."""
        if not self.api_key or self.ssl or self.insecure:
            return
        found = _DESTINATION.fullmatch(url)
        host = found and (found["ipv6"] or found["host"])
        if not host or not loopback(host):
            raise OptionError(
                f"the inference key would cross the network to {url!r} in clear: speak TLS with --ssl (the "
                "server started with --tls-cert), or pass --insecure where every hop between is trusted"
            )

    def headers(self, protocol: str) -> dict[str, str] | None:
        return {header(KEY_HEADER, protocol): self.api_key} if self.api_key else None

    def grpc_options(self) -> dict[str, object]:
        """tritonclient.grpc.InferenceServerClient's TLS keywords (it reads the PEM files itself)."""
        if not self.ssl:
            return {}
        paths = {"root_certificates": self.root_cert, "private_key": self.client_key}
        paths["certificate_chain"] = self.client_cert
        return {"ssl": True, **{k: str(v) for k, v in paths.items() if v is not None}}
