"""scripts/triton_server.sh starts the official container as dgla-serve starts its server: the
same tritonserver restrictions, keys only through the environment, Pillow only by hash. Docker is
not in CI: a `docker` first on PATH records the command it is given, which the tests read."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from dgla_export.triton.security import _KEY, triton_arguments

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "triton_server.sh"
API, ADMIN = "inference-key-0123456789abcdef", "admin-key-fedcba9876543210abcd"


def _run(tmp_path: Path, env: dict[str, str]) -> tuple[list[str], subprocess.CompletedProcess]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "docker-argv"
    docker = bin_dir / "docker"
    docker.write_text(
        f'#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a"; done > {shlex.quote(str(record))}\n'
        f'printf %s "$DGLA_ADMIN_KEY" > {shlex.quote(str(tmp_path / "admin-key"))}\n'
    )
    docker.chmod(0o755)
    repository = tmp_path / "repo"
    repository.mkdir(exist_ok=True)
    result = subprocess.run(
        ["bash", str(SCRIPT), str(repository)], capture_output=True, text=True, timeout=60,
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}", **env},
    )  # fmt: skip
    argv = record.read_bytes().split(b"\0")[:-1] if record.exists() else []
    return [a.decode() for a in argv], result


def _tritonserver_flags(argv: list[str]) -> list[str]:
    inner = argv[-1]  # bash -c "pip ... || exit 2; ... tritonserver ... &; server=$!; selfcheck.py ...; wait"
    marker = "env -u DGLA_API_KEY -u DGLA_ADMIN_KEY tritonserver "  # the keys out of the server's environment
    assert marker in inner, inner
    return shlex.split(inner.split(marker, 1)[1].split(" &\n", 1)[0])


@pytest.mark.parametrize("tls", [None, "tls", "mutual"])
@pytest.mark.parametrize("api_key", [None, API])
def test_the_container_gets_dgla_serve_s_restrictions_and_no_key_on_a_command_line(tmp_path, tls, api_key) -> None:
    env = {"DGLA_ADMIN_KEY": ADMIN, **({"DGLA_API_KEY": api_key} if api_key else {})}
    if tls:
        folder = tmp_path / "tls"
        folder.mkdir()
        for name in ("tls.crt", "tls.key", *(("ca.crt",) if tls == "mutual" else ())):
            (folder / name).write_text("PEM")
        (folder / "tls.key").chmod(0o600)
        env["TLS_DIR"] = str(folder)
    argv, result = _run(tmp_path, env)
    assert result.returncode == 0, result.stderr
    expected = triton_arguments(
        tls_cert="/etc/dgla/tls/tls.crt" if tls else None,
        tls_key="/etc/dgla/tls/tls.key" if tls else None,
        tls_ca="/etc/dgla/tls/ca.crt" if tls == "mutual" else None,
        api_key="${DGLA_API_KEY}" if api_key else None,
        admin_key="${DGLA_ADMIN_KEY}",
    )
    flags = _tritonserver_flags(argv)
    assert sorted(
        f for f in flags if f not in ("--model-repository=/models", "--disable-auto-complete-config")
    ) == sorted(expected), flags
    # the keys reach the container through its environment, never a command line on the host
    assert not [a for a in argv if ADMIN in a or API in a], argv
    assert "DGLA_ADMIN_KEY" in argv and "DGLA_API_KEY" in argv
    # HTTP (no TLS) on loopback once gRPC speaks TLS
    published = [argv[i + 1] for i, a in enumerate(argv) if a == "-p"]
    assert published[0] == "127.0.0.1:8000:8000", published
    # Pillow by hash or not at all; the self-check before it serves, the server stopped if it fails
    inner = argv[-1]
    assert "selfcheck.py" in inner and "--wait" in inner and "kill $server; exit 3" in inner, inner
    assert "--require-hashes" in inner and "-r /etc/dgla/requirements.txt" in inner, inner
    assert "preprocess-requirements.txt:/etc/dgla/requirements.txt:ro" in " ".join(argv)


def test_a_readable_tls_key_stops_the_script_in_one_line(tmp_path) -> None:
    folder = tmp_path / "tls"
    folder.mkdir()
    for name in ("tls.crt", "tls.key"):
        (folder / name).write_text("PEM")
    (folder / "tls.key").chmod(0o644)
    argv, result = _run(tmp_path, {"TLS_DIR": str(folder)})
    assert result.returncode == 2 and not argv, (result.returncode, argv)
    assert result.stderr.count("\n") == 1 and "chmod 600" in result.stderr, result.stderr
    assert stat.S_IMODE((folder / "tls.key").stat().st_mode) == 0o644  # the premise: it was readable


def test_without_an_admin_key_the_container_gets_a_random_one(tmp_path) -> None:
    keys = []
    for _ in range(2):
        argv, result = _run(tmp_path, {})
        assert result.returncode == 0 and "DGLA_ADMIN_KEY" in argv, result.stderr
        keys.append((tmp_path / "admin-key").read_text())
    assert keys[0] != keys[1] and all(_KEY.fullmatch(k) for k in keys), keys  # a key Triton can parse


@pytest.mark.parametrize(("pip", "check", "expected"), [(0, 0, "served"), (0, 3, 3), (1, 0, 2)])
def test_the_container_serves_only_after_its_self_check(tmp_path, pip, check, expected) -> None:
    """The container's own command, its control flow run here: pip, tritonserver and python3 are
    stand-ins that say what they were given (no Docker or GPU in CI); the real self-check runs against
    a real server in tests/triton_repository/test_selfcheck.py."""
    argv, _ = _run(tmp_path, {"DGLA_ADMIN_KEY": ADMIN})
    models = tmp_path / "models"
    (models / "dgla").mkdir(parents=True)
    (models / "dgla" / "selfcheck.py").write_text("")
    fake = tmp_path / "fake"
    fake.mkdir()
    stand_ins = {
        "pip": f"exit {pip}",
        "tritonserver": f'echo started > {tmp_path}/server; trap "echo stopped >> {tmp_path}/server; exit 0" TERM; '
        "sleep 3 & wait",
        "python3": f'sleep 0.5; echo "$@" > {tmp_path}/check; exit {check}',  # as the check waits for ready
        "env": 'while [ "$1" = -u ]; do unset "$2"; shift 2; done; exec "$@"',
    }
    for name, body in stand_ins.items():
        (fake / name).write_text(f"#!/bin/sh\n{body}\n")
        (fake / name).chmod(0o755)
    inner = argv[-1].replace("/models", str(models))
    env = {"PATH": f"{fake}:{os.environ['PATH']}", "DGLA_ADMIN_KEY": ADMIN}
    result = subprocess.run(["bash", "-c", inner], env=env, capture_output=True, text=True, timeout=30)
    if expected == 2:  # Pillow not installed by hash: nothing starts
        assert result.returncode == 2 and not (tmp_path / "server").exists()
        return
    assert (tmp_path / "check").read_text().split() == [str(models / "dgla" / "selfcheck.py"), str(models), "--wait",
                                                        "600"]  # fmt: skip
    if expected == 3:  # the check failed: the server is stopped, the container exits 3
        assert result.returncode == 3 and (tmp_path / "server").read_text().split() == ["started", "stopped"]
    else:  # it passed: the container lives as long as the server
        assert result.returncode == 0 and (tmp_path / "server").read_text().split() == ["started"]


def test_a_key_triton_cannot_parse_stops_the_script_in_one_line(tmp_path) -> None:
    for bad in ("short", "a key with spaces and=signs,commas:0123"):
        argv, result = _run(tmp_path, {"DGLA_API_KEY": bad})
        assert result.returncode == 2 and not argv and result.stderr.count("\n") == 1, (bad, result.stderr)
        assert "16 to 256" in result.stderr and bad not in result.stderr, result.stderr
