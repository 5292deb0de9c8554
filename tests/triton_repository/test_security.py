"""dgla-serve's TLS, mutual TLS and keys on a real Triton server, with certificates trustme makes:
each way in that should be shut is tried and refused, and the right client is answered."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dgla_export.errors import OptionError
from dgla_export.triton.client import ClientError, classify
from dgla_export.triton.repository import write_repository
from dgla_export.triton.security import (
    ADMIN_APIS,
    ADMIN_HEADER,
    INFERENCE_APIS,
    KEY_HEADER,
    ClientSecurity,
    ServerSecurity,
    header,
    read_key,
    triton_arguments,
)
from triton_repository.serving import Serve

KEY = "inference-key-0123456789abcdef"
ADMIN = "admin-key-fedcba9876543210abcd"


def _pem(blobs, path):
    path.write_bytes(b"".join(blob.bytes() for blob in blobs))
    if path.suffix == ".key":  # a private key: its owner's alone, or it is refused
        path.chmod(0o600)
    return path


def test_keys_come_from_an_owner_only_file_or_the_environment(tmp_path, monkeypatch) -> None:
    key = tmp_path / "key"
    key.write_text(KEY + "\n")
    key.chmod(0o644)
    with pytest.raises(OptionError, match="chmod 600"):
        read_key(key, "DGLA_TEST_KEY", "--api-key-file")
    key.chmod(0o600)
    assert read_key(key, "DGLA_TEST_KEY", "--api-key-file") == KEY
    monkeypatch.setenv("DGLA_TEST_KEY", "short")
    with pytest.raises(OptionError, match="16 to 256"):
        read_key(None, "DGLA_TEST_KEY", "--api-key-file")
    monkeypatch.delenv("DGLA_TEST_KEY")
    assert read_key(None, "DGLA_TEST_KEY", "--api-key-file") is None
    # a key never shows in a record's repr; the admin APIs are behind a key even when none is given
    security = ServerSecurity(api_key=KEY)
    assert KEY not in repr(security) and security.admin_key not in repr(security)
    arguments = " ".join(security.triton_arguments())
    assert f"model-repository,shared-memory,statistics,trace,logging:{ADMIN_HEADER}={security.admin_key}" in arguments
    assert f"inference,metadata,model-config:{KEY_HEADER}={KEY}" in arguments
    # no model loads or unloads after start, whatever the key (loading a model runs its code)
    assert "--model-control-mode=none" in arguments and "--strict-readiness=true" in arguments
    assert "--load-model" not in arguments and "explicit" not in arguments
    # under mutual TLS, HTTP (no TLS: no client certificate) serves inference only behind the admin key
    mutual = triton_arguments(tls_cert="c", tls_key="k", tls_ca="ca", api_key=KEY, admin_key="A" * 20)
    assert f"--http-restricted-api={','.join(ADMIN_APIS + INFERENCE_APIS)}:{ADMIN_HEADER}={'A' * 20}" in mutual
    assert not [a for a in mutual if a.startswith("--http-restricted-api") and KEY in a], mutual
    assert f"--grpc-restricted-protocol={','.join(INFERENCE_APIS)}:{KEY_HEADER}={KEY}" in mutual
    with pytest.raises(OptionError, match="go together"):
        ServerSecurity(tls_cert=key)
    with pytest.raises(OptionError, match="need --ssl"):
        ClientSecurity(root_cert=key)
    # a key file that is not text is one line, not a traceback
    binary = tmp_path / "binary.key"
    binary.write_bytes(b"\xff\xfe\x00key")
    binary.chmod(0o600)
    with pytest.raises(OptionError, match="not a text file"):
        read_key(binary, "DGLA_TEST_KEY", "--api-key-file")


def test_the_inference_key_is_never_sent_in_clear_beyond_loopback(tmp_path, monkeypatch, capsys) -> None:
    """Refused before any connection is made (a client constructed here fails the test, so no packet
    leaves this machine); TLS, loopback or an explicit --insecure let it through."""
    import tritonclient.grpc
    import tritonclient.http

    def no_connection(*args, **kwargs):
        raise AssertionError("a client was created: the key would have been sent")

    for module in (tritonclient.grpc, tritonclient.http):
        monkeypatch.setattr(module, "InferenceServerClient", no_connection)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(photo)
    keyed = ClientSecurity(api_key=KEY)
    for url in ("10.1.2.3:8001", "clinic-gpu.example:8001", "[2001:db8::1]:8001", "192.0.2.1:8000",
                "127.0.0.1:1@clinic-gpu.example", "::1:8001", "http://127.0.0.1:8000", "127.0.0.1:8000/x",
                "localhost.:8001", "0.0.0.0:8001"):  # fmt: skip
        with pytest.raises(OptionError, match="in clear: speak TLS with --ssl"):
            keyed.check_destination(url)
        for protocol in ("grpc", "http"):
            with pytest.raises(OptionError, match="--insecure"):
                classify([photo], url=url, protocol=protocol, security=keyed)
    for url in ("127.0.0.1:8001", "localhost:8001", "[::1]:8001", "127.8.9.10:8001"):
        keyed.check_destination(url)
    ClientSecurity(api_key=KEY, insecure=True).check_destination("10.1.2.3:8001")
    ClientSecurity(ssl=True, api_key=KEY).check_destination("10.1.2.3:8001")
    ClientSecurity().check_destination("10.1.2.3:8001")  # no key, nothing to leak
    key_file = tmp_path / "api.key"
    key_file.write_text(KEY)
    key_file.chmod(0o600)
    from dgla_export.tools.client import main as client_main

    assert client_main([str(photo), "--url", "10.1.2.3:8001", "--api-key-file", str(key_file)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--insecure" in err and KEY not in err and "Traceback" not in err, err


def test_private_keys_are_refused_unless_owner_only(tmp_path) -> None:
    """A TLS private key other users can read is a leaked key: the server's and the client's are
    refused naming the chmod, as key files are; the certificates beside them may be readable."""
    cert, private = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    private.write_text("-----BEGIN PRIVATE KEY-----\n")
    for mode in (0o644, 0o640, 0o604):
        private.chmod(mode)
        with pytest.raises(OptionError, match=rf"--tls-key {private}: other users may read it; chmod 600 {private}"):
            ServerSecurity(tls_cert=cert, tls_key=private)
        with pytest.raises(OptionError, match=rf"--client-key {private}: other users may read it; chmod 600"):
            ClientSecurity(ssl=True, client_cert=cert, client_key=private)
    private.chmod(0o600)
    assert ServerSecurity(tls_cert=cert, tls_key=private).tls
    assert ClientSecurity(ssl=True, client_cert=cert, client_key=private).grpc_options()["private_key"] == str(private)


def test_a_readable_key_file_stops_dgla_serve_in_one_line(tmp_path) -> None:
    key = tmp_path / "key"
    key.write_text(KEY)
    key.chmod(0o640)
    result = subprocess.run(
        [sys.executable, "-m", "dgla_export.tools.serve", str(tmp_path), "--api-key-file", str(key)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "chmod 600" in result.stderr, result.stderr


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("pytriton") is None, reason="needs Triton (pip install '.[serve]')")
def test_tls_mutual_tls_and_keys_on_a_real_server(tiny_onnx, images, tmp_path) -> None:
    import tritonclient.grpc as grpcclient
    import trustme
    from tritonclient.utils import InferenceServerException

    ca, stranger = trustme.CA(), trustme.CA()
    server_cert = ca.issue_cert("localhost", "127.0.0.1")
    client_cert, foreign_cert = ca.issue_cert("client.clinic.example"), stranger.issue_cert("client.clinic.example")
    pems = {
        "ca": _pem([ca.cert_pem], tmp_path / "ca.pem"),
        "cert": _pem(server_cert.cert_chain_pems, tmp_path / "server.pem"),
        "key": _pem([server_cert.private_key_pem], tmp_path / "server.key"),
        "client": _pem(client_cert.cert_chain_pems, tmp_path / "client.pem"),
        "client_key": _pem([client_cert.private_key_pem], tmp_path / "client.key"),
        "foreign": _pem(foreign_cert.cert_chain_pems, tmp_path / "foreign.pem"),
        "foreign_key": _pem([foreign_cert.private_key_pem], tmp_path / "foreign.key"),
    }
    admin_file = tmp_path / "admin.key"
    admin_file.write_text(ADMIN)
    admin_file.chmod(0o600)
    repository = tmp_path / "repo"
    write_repository(tiny_onnx["fp32"], repository)
    paths = []
    for name, image in images[:2]:
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(image).save(paths[-1])
    tls = ["--tls-cert", str(pems["cert"]), "--tls-key", str(pems["key"]), "--tls-ca", str(pems["ca"])]
    server = Serve(
        repository, extra=[*tls, "--admin-key-file", str(admin_file), "--log", str(tmp_path / "server.log")],
        env={**os.environ, "DGLA_API_KEY": KEY},
    )  # fmt: skip
    try:
        output = server.wait_ready()
        url = f"localhost:{server.grpc}"
        right = ClientSecurity(ssl=True, root_cert=pems["ca"], client_cert=pems["client"],
                               client_key=pems["client_key"], api_key=KEY)  # fmt: skip
        answered = classify(paths, url=url, security=right)
        sums = np.array([p.probs.sum() for p in answered])
        assert np.abs(sums - 1).max() < 1e-5, sums
        refused = {
            "plaintext to the TLS port": (ClientSecurity(api_key=KEY), "needs --ssl"),
            "TLS without the hospital's CA": (ClientSecurity(ssl=True, api_key=KEY), "--root-cert"),
            "mutual TLS without a client certificate": (ClientSecurity(ssl=True, root_cert=pems["ca"], api_key=KEY),
                                                        "--client-cert"),
            "a certificate another CA signed": (ClientSecurity(ssl=True, root_cert=pems["ca"],
                                                client_cert=pems["foreign"], client_key=pems["foreign_key"],
                                                api_key=KEY), "--client-cert"),
            "no key": (ClientSecurity(ssl=True, root_cert=pems["ca"], client_cert=pems["client"],
                                      client_key=pems["client_key"]), "needs its inference key"),
        }  # fmt: skip
        for case, (security, hint) in refused.items():
            with pytest.raises(ClientError) as caught:
                classify(paths[:1], url=url, security=security, timeout=10)
            assert hint in str(caught.value), f"{case}: {caught.value}"
        # the inference key opens inference, not the admin APIs; the admin key opens those
        client = grpcclient.InferenceServerClient(url, **right.grpc_options())  # type: ignore[arg-type]
        with pytest.raises(InferenceServerException, match="restricted"):
            client.get_model_repository_index(headers={header(KEY_HEADER, "grpc"): KEY})
        with pytest.raises(InferenceServerException, match="restricted"):
            client.get_inference_statistics(headers={header(KEY_HEADER, "grpc"): KEY})
        index = client.get_model_repository_index(headers={header(ADMIN_HEADER, "grpc"): ADMIN})
        assert {m.name for m in index.models} >= {"dgla"}, index
        client.close()
        # HTTP has no TLS: it listens on loopback only, and keeps the same keys
        assert f"http     http://127.0.0.1:{server.http}" in output, output
        request = urllib.request.Request(f"http://127.0.0.1:{server.http}/v2/repository/index", data=b"{}")
        with pytest.raises(urllib.error.HTTPError) as http_refusal:
            urllib.request.urlopen(request, timeout=10)
        assert http_refusal.value.code in (401, 403), http_refusal.value.code
        # mutual TLS: HTTP cannot see a client certificate, so its inference is closed even to the
        # inference key; health stays open for probes
        infer = urllib.request.Request(
            f"http://127.0.0.1:{server.http}/v2/models/dgla/infer", data=b'{"inputs": []}', headers={KEY_HEADER: KEY}
        )  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as no_certificate:
            urllib.request.urlopen(infer, timeout=10)
        assert no_certificate.value.code in (401, 403), no_certificate.value.code
        assert "restricted" in no_certificate.value.read().decode(), "refused for another reason than the key"
        with urllib.request.urlopen(f"http://127.0.0.1:{server.http}/v2/health/ready", timeout=10) as health:
            assert health.status == 200
        # neither key on any process's command line once the server is up
        shown = [pid for pid, argv in _command_lines().items() if any(KEY in a or ADMIN in a for a in argv)]
        assert not shown, f"a key is on the command line of {shown}"
        # the CLI: certificates and the key from a file; nothing of the key on its output
        key_file = tmp_path / "api.key"
        key_file.write_text(KEY)
        key_file.chmod(0o600)
        cli = subprocess.run(
            [sys.executable, "-m", "dgla_export.tools.client", str(paths[0]), "--url", url, "--ssl", "--root-cert",
             str(pems["ca"]), "--client-cert", str(pems["client"]), "--client-key", str(pems["client_key"]),
             "--api-key-file", str(key_file), "--json"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert KEY not in cli.stdout + cli.stderr
    finally:
        stderr = server.stop()
    said = "\n".join(server.lines) + stderr + (tmp_path / "server.log").read_text(errors="replace")
    assert KEY not in said and ADMIN not in said, "a key reached dgla-serve's output or the server log"
    assert not server.leftovers(), server.leftovers()


def _command_lines() -> dict[int, list[str]]:
    """Every process's arguments, as any local user reads them (``ps``)."""
    lines = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0]:  # kernel threads have none
            lines[int(proc.name)] = [a.decode(errors="replace") for a in argv if a]
    return lines


_EVIL = (
    "import pathlib\n"
    "class TritonPythonModel:\n"
    "    def initialize(self, args):\n"
    "        pathlib.Path({marker!r}).write_text('code ran inside the server')\n"
    "    def execute(self, requests):\n"
    "        return []\n"
)


def test_the_attack_reads_the_process_list_tries_every_key_and_loads_no_code(triton_server, tmp_path) -> None:
    """As another local user would: read every command line, take every key found there (and the
    admin key itself, as if stolen), and ask the server to load a model whose Python writes a file."""
    import base64
    import importlib.machinery
    import json
    import time

    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    marker = tmp_path / "pwned"
    source = _EVIL.format(marker=str(marker))
    # the premise: this Python writes the marker when a server initialises it
    payload = tmp_path / "payload.py"
    payload.write_text(source)
    module = importlib.machinery.SourceFileLoader("payload", str(payload)).load_module()
    module.TritonPythonModel().initialize({})
    assert marker.exists()
    marker.unlink()

    lines = _command_lines()
    server = [argv for argv in lines.values() if argv[0].endswith("/tritonserver")
              and f"--http-port={triton_server.http}" in argv]  # fmt: skip
    assert len(server) == 1, "the shared server's tritonserver is not in the process list"
    restricted = [a for a in server[0] if a.startswith(("--http-restricted-api=", "--grpc-restricted-protocol="))]
    assert restricted and all(a.endswith("=" + "*" * len(triton_server.admin_key)) for a in restricted), restricted
    found = {a.split("=")[-1] for argv in lines.values() for a in argv if "key=" in a} - {""}
    on_lines = [pid for pid, argv in lines.items() if any(triton_server.admin_key in a for a in argv)]
    assert not on_lines, f"the admin key is on the command line of {on_lines}"
    keys = sorted(found | {triton_server.admin_key})  # the stolen key too: the door must not depend on it
    config = json.dumps({
        "name": "evil", "backend": "python", "max_batch_size": 0,
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1]}],
        "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1]}],
    })  # fmt: skip
    body = json.dumps({"parameters": {"config": config, "file:1/model.py": base64.b64encode(source.encode()).decode()}})
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{triton_server.grpc}")
    tried, refused = 0, 0
    for key in keys:
        for name in (ADMIN_HEADER, KEY_HEADER):
            for model in ("evil", "dgla_preprocess"):  # a new model, and a served one overwritten
                tried += 2
                request = urllib.request.Request(
                    f"http://127.0.0.1:{triton_server.http}/v2/repository/models/{model}/load",
                    data=body.encode(), headers={name: key},
                )  # fmt: skip
                with pytest.raises(urllib.error.HTTPError) as http:
                    urllib.request.urlopen(request, timeout=30)
                refused += 1
                with pytest.raises(InferenceServerException) as over_grpc:
                    grpc.load_model(model, config=config, files={"file:1/model.py": source.encode()},
                                    headers={header(name, "grpc"): key})  # fmt: skip
                refused += 1
                print(f"load {model} with {name}: HTTP {http.value.code}, gRPC {over_grpc.value.message()[:80]!r}")
    with pytest.raises(InferenceServerException):
        grpc.unload_model("dgla", headers={header(ADMIN_HEADER, "grpc"): triton_server.admin_key})
    # what stays behind the admin key cannot write a file either: the log and trace files stay put
    for api, setting in (("logging", {"log_file": str(marker)}), ("trace/setting", {"trace_file": str(marker)})):
        tried += 1
        moved = urllib.request.Request(
            f"http://127.0.0.1:{triton_server.http}/v2/{api}", data=json.dumps(setting).encode(),
            headers={ADMIN_HEADER: triton_server.admin_key},
        )  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as refusal:
            urllib.request.urlopen(moved, timeout=30)
        refused += 1
        print(f"{api} with the admin key, a file of the attacker's: HTTP {refusal.value.code}")
    time.sleep(1.0)  # a model's initialize would have run by now
    assert not marker.exists(), "code sent to the server ran inside it"
    assert grpc.is_model_ready("dgla") and grpc.is_model_ready("dgla_preprocess")
    grpc.close()
    print(f"keys on command lines: {len(on_lines)} (values after 'key=' found: {len(found)}); "
          f"loads tried {tried}, refused {refused}; marker absent")  # fmt: skip
