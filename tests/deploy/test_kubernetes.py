"""dgla-export kubernetes: the manifests and KServe's InferenceService, each checked strictly against
its schema before writing (a manifest with an unknown field or a wrong type is refused, naming
where), what dgla-serve enforces on one machine carried into the pod, and nothing secret in them."""

from __future__ import annotations

import copy
import gzip
import hashlib
import importlib.util
import re

import pytest

from dgla_export.deploy.check import KSERVE_SCHEMA, ManifestError, check_kserve, check_kubernetes
from dgla_export.deploy.manifests import KubernetesOptions, kserve_manifest, manifests
from dgla_export.tools.export import main as export_main

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("kubernetes_validate") is None, reason="needs pip install '.[deploy]'"
)
S3 = KubernetesOptions(storage="s3://models/dgla", s3_endpoint="https://minio.storage:9000", client_ca_secret="ca")


def _container(written):
    return written["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("options", [S3, KubernetesOptions(storage="pvc:dgla-models", gpus=0)], ids=["s3", "pvc"])
def test_every_manifest_passes_its_schema_strictly(options) -> None:
    written = manifests(options)
    for manifest in written.values():
        check_kubernetes(manifest)
    check_kserve(kserve_manifest(options))
    assert {m["kind"] for m in written.values()} == {
        "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
        "ServiceAccount", "ConfigMap",
    }  # fmt: skip


def test_a_wrong_manifest_is_refused_where_it_is_wrong() -> None:
    deployment = manifests(S3)["deployment.yaml"]
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(ManifestError, match=r"'readinesProbe' was unexpected.* at spec/template/spec/containers/0"):
        check_kubernetes(typo)
    wrong = copy.deepcopy(deployment)
    wrong["spec"]["replicas"] = "two"
    with pytest.raises(ManifestError, match=r"'two' is not of type 'integer'.* at spec/replicas"):
        check_kubernetes(wrong)
    service = kserve_manifest(S3)
    typo = copy.deepcopy(service)
    typo["spec"]["predictor"]["model"]["storageURI"] = "s3://x/y"
    with pytest.raises(ManifestError, match=r"'storageURI' was unexpected.* at spec/predictor/model"):
        check_kserve(typo)
    wrong = copy.deepcopy(service)
    wrong["spec"]["predictor"]["minReplicas"] = "2"
    with pytest.raises(ManifestError, match="'2' is not of type 'integer' at spec/predictor/minReplicas"):
        check_kserve(wrong)


def test_the_vendored_schema_is_the_one_its_source_note_names() -> None:
    note = (KSERVE_SCHEMA.parent / "SOURCE.md").read_text()
    digest = hashlib.sha256(gzip.decompress(KSERVE_SCHEMA.read_bytes())).hexdigest()
    assert f"`{digest}`" in note, f"schema SHA-256 {digest} is not the one SOURCE.md records"
    assert "v0.20.0" in KSERVE_SCHEMA.name and "tag `v0.20.0`" in note


def test_the_pod_enforces_what_dgla_serve_enforces() -> None:
    written = manifests(S3)
    container = _container(written)
    command = container["command"]
    assert command[:2] == ["tritonserver", "--model-repository=s3://https://minio.storage:9000/models/dgla"]
    for flag in (
        "--model-control-mode=none", "--strict-readiness=true", "--grpc-use-ssl=true", "--grpc-use-ssl-mutual=true",
        "--grpc-restricted-protocol=inference,metadata,model-config:dgla-api-key=$(DGLA_API_KEY)",
        # mutual TLS: HTTP inference (no client certificate there) behind the admin key
        "--http-restricted-api=model-repository,shared-memory,statistics,trace,logging,inference,metadata,model-config:"
        "dgla-admin-key=$(DGLA_ADMIN_KEY)",
    ):  # fmt: skip
        assert flag in command, flag
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    # a mounted repository: started means answering the reference photos as PyTorch did (the self-check);
    # one in object storage is not in the pod: readiness alone
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    mounted = _container(manifests(KubernetesOptions(storage="pvc:models")))["startupProbe"]
    assert "selfcheck.py" in mounted["exec"]["command"][2] and mounted["timeoutSeconds"] >= 60, mounted
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["capabilities"]["drop"] == ["ALL"] and not security["allowPrivilegeEscalation"]
    env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") for e in container["env"]}
    assert env["DGLA_API_KEY"] == env["DGLA_ADMIN_KEY"] == "dgla-keys"
    assert env["AWS_ACCESS_KEY_ID"] == env["AWS_SECRET_ACCESS_KEY"] == "dgla-s3"
    # the HPA's metric is the one the adapter's rule makes, from Triton's queue-time counter
    hpa = written["hpa.yaml"]["spec"]["metrics"][0]["pods"]
    rule = written["prometheus-adapter-rules.yaml"]["data"]["config.yaml"]
    assert f"as: {hpa['metric']['name']}" in rule and "nv_inference_queue_duration_us" in rule
    assert hpa["target"]["averageValue"] == "200000"
    assert [p["port"] for p in written["service.yaml"]["spec"]["ports"]] == [8001]  # gRPC (TLS) only
    kserve = kserve_manifest(S3)["spec"]["predictor"]["model"]
    assert (kserve["protocolVersion"], kserve["storageUri"]) == ("v2", "s3://models/dgla")
    assert not any(a.startswith("--model-repository") for a in kserve["args"])  # the runtime names it


def test_the_command_writes_checked_yaml_and_keeps_what_it_must(tmp_path, capsys) -> None:
    import yaml

    output = tmp_path / "k8s"
    argv = ["kubernetes", "--storage", "pvc:dgla-models", "--output", str(output), "--gpus", "0"]
    assert export_main(argv) == 0
    files = sorted(str(p.relative_to(output)) for p in output.rglob("*.yaml"))
    assert "deployment.yaml" in files and "kserve/inferenceservice.yaml" in files
    for name in files:
        text = (output / name).read_text()
        assert not re.search(r"&id\d+|\*id\d+", text), f"{name} uses YAML aliases"
        manifest = yaml.safe_load(text)
        (check_kserve if name.startswith("kserve/") else check_kubernetes)(manifest)
    pod = yaml.safe_load((output / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    assert {"name": "repository", "persistentVolumeClaim": {"claimName": "dgla-models", "readOnly": True}} in pod[
        "volumes"
    ]
    capsys.readouterr()
    assert export_main(argv) == 2  # an existing output needs --force
    assert "--force" in capsys.readouterr().err
    for bad, problem in (("ftp://x/y", "give s3://BUCKET/PREFIX or pvc:CLAIM"), ("pvc:Bad_Name", "pvc:CLAIM")):
        assert export_main(["kubernetes", "--storage", bad, "--output", str(tmp_path / "no")]) == 2
        assert problem in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


def test_plaintext_object_storage_only_on_loopback() -> None:
    """The store's credentials and the model travel to it: plain http is refused beyond this host."""
    from dgla_export.errors import OptionError

    for endpoint in ("http://minio.storage:9000", "http://10.0.0.7:9000", "http://127.0.0.1.example:9000"):
        with pytest.raises(OptionError, match=r"in clear beyond this host; give https://"):
            KubernetesOptions(storage="s3://models/dgla", s3_endpoint=endpoint)
    for endpoint in ("http://127.0.0.1:9000", "http://localhost:9000", "https://minio.storage:9000"):
        assert KubernetesOptions(storage="s3://models/dgla", s3_endpoint=endpoint).s3


def test_the_init_container_installs_pillow_by_its_hash_or_nothing(tmp_path) -> None:
    """Its shell command, run here as the pod would run it (pip fetching for the container's Python
    3.12 on x86_64), installs Pillow; with a hash changed by one digit it installs nothing."""
    import subprocess
    import sys
    from pathlib import Path

    from dgla_export.deploy.manifests import DEPS, preprocess_requirements

    pinned = next(line for line in Path("constraints.txt").read_text().splitlines() if line.startswith("pillow=="))
    assert preprocess_requirements().startswith(pinned + " "), "the hashes are not of the Pillow CI tests"
    (init,) = manifests(S3)["deployment.yaml"]["spec"]["template"]["spec"]["initContainers"]
    command = init["command"][2]
    assert "--require-hashes" in command and "pillow==" not in command.split("-r /tmp/requirements.txt")[1]

    def run(text: str, target: Path) -> subprocess.CompletedProcess:
        local = text.replace(DEPS, str(target)).replace("/tmp/requirements.txt", str(tmp_path / "requirements.txt"))
        local = local.replace(
            "pip install", f"{sys.executable} -m pip install --python-version 3.12 --platform manylinux_2_28_x86_64"
        )
        return subprocess.run(["sh", "-c", local], capture_output=True, text=True, timeout=300)

    installed = run(command, tmp_path / "deps")
    if installed.returncode != 0 and "HASH" not in installed.stderr.upper():
        pytest.skip(f"the package index is not reachable here: {installed.stderr.strip()[-200:]}")
    assert installed.returncode == 0, installed.stderr
    assert (tmp_path / "deps" / "PIL" / "__init__.py").exists()
    digest = re.search(r"sha256:([0-9a-f]{64})", command)[1]  # type: ignore[index]
    tampered = command.replace(digest, digest[:-1] + ("0" if digest[-1] != "0" else "1"))
    refused = run(tampered, tmp_path / "tampered")
    assert refused.returncode != 0 and "HASH" in refused.stderr.upper(), refused.stderr
    assert not (tmp_path / "tampered" / "PIL").exists()
    print(f"init container: installed {pinned} by hash; one changed digit: refused ({refused.stderr.strip()[:80]})")
