"""Triton: write a repository (several models in one), serve it with the pip-installed server."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dgla_export.api.common import Progress, Record, quiet

if TYPE_CHECKING:
    from dgla_export.triton.repository import TritonOptions
    from dgla_export.triton.security import ServerSecurity
    from dgla_export.triton.versions import Version

__all__ = ["RepositoryResult", "ServerEndpoints", "activate_version", "serve", "write_triton_repository"]


@dataclasses.dataclass(frozen=True)
class RepositoryResult(Record):
    """A written Triton repository: the models written and their config.pbtxt texts."""

    path: Path
    configs: dict[str, str]
    version: int = 1
    unvalidated: bool = False  # written with unvalidated=True and no report: no golden answers either

    @property
    def models(self) -> list[str]:
        return sorted(self.configs)


@dataclasses.dataclass(frozen=True)
class ServerEndpoints(Record):
    """A running server: where it listens, its PID, each model's state and how it runs."""

    http: str
    grpc: str
    metrics: str
    pid: int | None
    states: list[dict[str, Any]]
    models: dict[str, str]
    self_check: Any = None  # dgla_export.triton.selfcheck.SelfCheck: the reference photos' answers at start
    _server: Any = dataclasses.field(default=None, repr=False, compare=False)
    _supervisor: Any = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def recoveries(self) -> list[Any]:
        """Each restart of the server because a stub process died
        (:class:`dgla_export.triton.supervisor.Recovery`)."""
        return list(self._supervisor.recoveries) if self._supervisor is not None else []

    def wait(self) -> int | None:
        """Block until the server exits (it should not: this returns only when it crashed; a restart
        after a stub died is not an exit)."""
        return self._server.wait()

    def exit_reason(self) -> str:
        stopped = self._supervisor.failure if self._supervisor is not None else None
        return f"the server was stopped after a stub died: {stopped}" if stopped else self._server.exit_reason()


def write_triton_repository(
    onnx: str | Path,
    output: str | Path,
    *,
    engine: str | Path | None = None,
    options: TritonOptions | None = None,
    validation: str | Path | None = None,
    unvalidated: bool = False,
    force: bool = False,
    add: bool = False,
) -> RepositoryResult:
    """Write a Triton Inference Server repository: NAME_onnx (ONNX Runtime), NAME_trt (given an
    engine, checked against its manifest and SHA-256 first), NAME_preprocess (image bytes -> tensors)
    and the ensemble NAME (image bytes in, probabilities out), NAME being ``options.name`` (dgla).
    Each model records its config (inputs, sizes, class names) for the client. ``force`` replaces
    an earlier repository of this function, nothing else; ``add`` keeps its models of other names
    (one repository, several models), and writes NAME's next version when NAME is there already
    (the earlier ones stay for a rollback: :func:`activate_version`). ``validation``: the graph's
    report (default: the one ``export_onnx`` or ``validate`` wrote beside the graph), checked to be
    of this graph and passed, kept in the version's manifest with the SHA-256 of every file and the
    golden answers :func:`serve` checks the server against at every start; without one the graph is
    refused unless ``unvalidated`` (recorded in the manifest, printed at every start).

    >>> write_triton_repository("dgla.onnx", "triton-repo").models   # doctest: +SKIP
    ['dgla', 'dgla_onnx', 'dgla_preprocess']
    """
    from dgla_export.triton.repository import TritonOptions, write_repository

    engine = Path(engine) if engine is not None else None
    version, configs, unvalidated = write_repository(
        Path(onnx),
        Path(output),
        engine=engine,
        options=options or TritonOptions(),
        validation=Path(validation) if validation is not None else None,
        unvalidated=unvalidated,
        force=force,
        add=add,
    )
    return RepositoryResult(Path(output), configs, version, unvalidated=unvalidated)


def activate_version(repository: str | Path, name: str, version: int | None = None) -> tuple[int | None, Version]:
    """Serve ``version`` of the ensemble ``name`` from ``repository`` from now on (default: the one
    before the version served now: a rollback). Its files are checked against its manifest's
    SHA-256 first; then its configs replace the current ones. A running server picks it up when
    restarted (or ``serve(..., versions={name: version})`` serves a version without changing the
    repository). Returns the version served before and the one served now.

    >>> activate_version("triton-repo", "dgla")   # doctest: +SKIP
    (2, Version(name='dgla', version=1, ...))
    """
    from dgla_export.triton.versions import activate

    return activate(Path(repository), name, version)


@contextlib.contextmanager
def serve(
    repository: str | Path,
    *,
    host: str = "127.0.0.1",
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
    metrics_host: str = "127.0.0.1",
    security: ServerSecurity | None = None,
    versions: dict[str, int] | None = None,
    timeout: float = 300.0,
    log: str | Path | None = None,
    progress: Progress = quiet,
) -> Iterator[ServerEndpoints]:
    """Serve a repository with the pip-installed Triton (``pip install -e '.[serve]'``):
    yields the endpoints once every model is ready, and stops the server (and everything it
    started) on exit; meanwhile a Python-backend stub that dies is recovered by restarting the server (``recoveries``).
    ``security``: TLS and keys (:class:`dgla_export.triton.security.ServerSecurity`;
    with TLS, HTTP listens on loopback only); metrics stay on loopback unless ``metrics_host`` says.
    ``versions``: ensembles to serve at another version than the repository names (``{"dgla": 1}``;
    their files are checked against their manifests first), the repository left as it is.

    >>> with serve("triton-repo") as server:   # doctest: +SKIP
    ...     classify(["lesion.jpg"], url=server.grpc)
    """
    from dgla_export.triton.server import Ports, TritonServer
    from dgla_export.triton.supervisor import StubSupervisor

    ports = Ports(host, http_port, grpc_port, metrics_port, metrics_host=metrics_host)
    with TritonServer(
        Path(repository), ports, log_path=Path(log) if log else None, security=security, versions=versions
    ) as server:
        progress(f"tritonserver pid {server.pid}, loading {repository} ({server.security.describe()}) ...")
        if server.keys_visible_s is None:
            progress(
                "warning: the keys could not be wiped from tritonserver's command line (this kernel refuses writes to "
                "/proc/PID/mem): other local users can read them with ps; mount /proc with hidepid=invisible"
            )
        states = server.wait_ready(timeout)
        checked = _self_check(server, versions, progress)
        urls = server.ports.urls
        supervisor = StubSupervisor(
            server, say=progress, after_restart=lambda: _self_check(server, versions, progress, verify=True)
        )
        supervisor.start()
        try:
            yield ServerEndpoints(
                urls["http"], urls["grpc"], urls["metrics"], server.pid, states, dict(server.how), checked, server,
                supervisor,
            )  # fmt: skip
        finally:
            supervisor.stop()


def _self_check(server: Any, versions: dict[str, int] | None, progress: Progress, *, verify: bool = False) -> Any:
    """Each served version's reference photos through the running server, against the golden answers
    its manifest carries (at start the files were checked before the server started; after a restart,
    ``verify`` checks them again); an answer outside the served precision's tolerance stops it (exit 3)."""
    from dgla_export.errors import MismatchError, ServeError
    from dgla_export.triton.security import ADMIN_HEADER, KEY_HEADER
    from dgla_export.triton.selfcheck import SelfCheckError, check
    from dgla_export.triton.versions import VersionError, active_version, ensembles

    security = server.security
    headers = {ADMIN_HEADER: security.admin_key, **({KEY_HEADER: security.api_key} if security.api_key else {})}
    try:  # the served versions as the server reads them (protobuf), not as the standalone check's pattern does
        served = {name: (versions or {}).get(name) or active_version(server.repository, name)
                  for name in ensembles(server.repository)}  # fmt: skip
        result = check(server.repository, server.ports.urls["http"], headers, versions=served, verify=verify)
    except (SelfCheckError, VersionError) as err:
        raise ServeError(str(err)) from err
    for line in result.unchecked:
        progress(line)
    if not result.passed:
        raise MismatchError(
            f"self-check FAILED, not serving: {result.failures[0].describe()}"
            + (f" (and {len(result.failures) - 1} more)" if len(result.failures) > 1 else "")
        )
    progress(result.summary())
    return result
