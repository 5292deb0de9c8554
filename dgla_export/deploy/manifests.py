"""A Triton repository on Kubernetes: plain manifests for N replicas, and a KServe InferenceService.

The manifests run the official Triton container on the repository as `dgla-export triton` writes
it, from object storage (S3 or an S3-compatible store, credentials from a Secret as Triton reads
them: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``) or from a volume
(a PersistentVolumeClaim, read-only). What dgla-serve does on one machine holds here: gRPC with TLS
(a ``kubernetes.io/tls`` Secret; mutual with a CA Secret), inference behind the inference key and
the admin APIs behind the admin key (both from a Secret, handed to tritonserver through the
environment: the pod spec holds ``$(DGLA_API_KEY)``, never a key), model control ``none``, strict
readiness, readiness and liveness probes on ``/v2/health/ready`` and ``/v2/health/live``, a
non-root read-only container without capabilities, and metrics for Prometheus. An HPA scales on
the average time a request waits in Triton's queue (through prometheus-adapter; its rule is
written beside), a PodDisruptionBudget keeps one replica up during node drains, and a
NetworkPolicy admits only gRPC from clients and metrics from the monitoring namespace.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from importlib import resources
from typing import Any

from dgla_export.errors import OptionError
from dgla_export.triton.security import ADMIN_KEY_ENV, API_KEY_ENV, loopback, triton_arguments

__all__ = ["KubernetesOptions", "kserve_manifest", "manifests"]

Manifest = dict[str, Any]
HTTP, GRPC, METRICS = 8000, 8001, 8002
# The release scripts/triton_server.sh runs: after NVIDIA's August 2025 bulletins' fixes (docs/serving.md).
DEFAULT_IMAGE = "nvcr.io/nvidia/tritonserver:25.10-py3"
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,50}[a-z0-9])?")
_S3 = re.compile(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/[A-Za-z0-9._/-]*)?")
REPOSITORY = "/models"  # where a volume is mounted, and where KServe puts what it downloads
DEPS = "/opt/dgla/python"  # Pillow for the preprocessing model (the container has numpy)
REQUIREMENTS = "preprocess-requirements.txt"  # beside this module: Pillow, pinned by hash


@dataclasses.dataclass(frozen=True)
class KubernetesOptions:
    """Where the repository is (``storage``: ``s3://bucket/prefix`` or ``pvc:CLAIM``; ``s3_endpoint``
    for an S3-compatible store such as MinIO), how many replicas (``replicas`` to ``max_replicas``,
    scaled on the queue time ``queue_target_ms``), on what (``gpus`` per replica; 0 runs on CPUs),
    and the Secrets it reads: TLS, an optional client CA (mutual TLS), the keys, the S3 credentials."""

    storage: str
    name: str = "dgla-triton"
    namespace: str | None = None
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    image: str = DEFAULT_IMAGE
    gpus: int = 1
    cpu: str = "4"
    memory: str = "8Gi"
    replicas: int = 2
    max_replicas: int = 8
    queue_target_ms: float = 200.0
    tls_secret: str = "dgla-tls"
    client_ca_secret: str | None = None
    keys_secret: str = "dgla-keys"
    s3_secret: str = "dgla-s3"
    monitoring_namespace: str = "monitoring"

    def __post_init__(self) -> None:
        for field in ("name", "tls_secret", "keys_secret", "s3_secret", "monitoring_namespace"):
            if not _NAME.fullmatch(getattr(self, field)):
                raise OptionError(f"{field} {getattr(self, field)!r}: a Kubernetes name (a-z, 0-9, -; up to 52)")
        if not (self.storage.startswith("pvc:") and _NAME.fullmatch(self.storage[4:])) and not _S3.fullmatch(
            self.storage
        ):
            raise OptionError(f"--storage {self.storage!r}: give s3://BUCKET/PREFIX or pvc:CLAIM")
        if self.s3_endpoint is not None:
            found = re.fullmatch(r"(https?)://([A-Za-z0-9.-]+):\d+", self.s3_endpoint)
            if not found:
                raise OptionError(f"--s3-endpoint {self.s3_endpoint!r}: give http(s)://HOST:PORT")
            if found[1] == "http" and not loopback(found[2]):
                raise OptionError(
                    f"--s3-endpoint {self.s3_endpoint}: plain http would carry the store's credentials and the "
                    f"model in clear beyond this host; give https://{self.s3_endpoint.removeprefix('http://')}"
                )
        if not 1 <= self.replicas <= self.max_replicas:
            raise OptionError(f"replicas {self.replicas} to {self.max_replicas}: need 1 <= replicas <= max")
        if self.gpus < 0 or self.queue_target_ms <= 0:
            raise OptionError("--gpus must be >= 0 and --queue-target-ms > 0")

    @property
    def s3(self) -> bool:
        return self.storage.startswith("s3://")

    def repository_url(self) -> str:
        """The repository as tritonserver reads it: ``s3://[http(s)://HOST:PORT/]BUCKET/PREFIX`` or the mount."""
        if not self.s3:
            return REPOSITORY
        if self.s3_endpoint is None:
            return self.storage
        return f"s3://{self.s3_endpoint}/{self.storage.removeprefix('s3://')}"


def _metadata(options: KubernetesOptions, name: str | None = None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name or options.name, "labels": {"app.kubernetes.io/name": options.name}}
    if options.namespace:
        meta["namespace"] = options.namespace
    return {**meta, **extra}


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def triton_command(options: KubernetesOptions, repository: str) -> list[str]:
    """tritonserver's command line: the repository, the security dgla-serve applies, model control none."""
    ca = "/etc/dgla/client-ca/ca.crt" if options.client_ca_secret else None
    return [
        "tritonserver",
        f"--model-repository={repository}",
        f"--http-port={HTTP}",
        f"--grpc-port={GRPC}",
        f"--metrics-port={METRICS}",
        "--allow-gpu-metrics=true" if options.gpus else "--allow-gpu-metrics=false",
        *triton_arguments(
            tls_cert="/etc/dgla/tls/tls.crt", tls_key="/etc/dgla/tls/tls.key", tls_ca=ca,
            api_key=f"$({API_KEY_ENV})", admin_key=f"$({ADMIN_KEY_ENV})",
        ),
    ]  # fmt: skip


def preprocess_requirements() -> str:
    """The preprocessing model's dependencies with their hashes (``pip --require-hashes``): what the
    init container installs, and ``scripts/triton_server.sh``."""
    text = resources.files("dgla_export.deploy").joinpath(REQUIREMENTS).read_text(encoding="utf-8")
    return "\n".join(line for line in text.splitlines() if line and not line.startswith("#")) + "\n"


def _container(options: KubernetesOptions, repository: str) -> dict[str, Any]:
    env = [
        _secret_env(API_KEY_ENV, options.keys_secret, "api-key"),
        _secret_env(ADMIN_KEY_ENV, options.keys_secret, "admin-key"),
        {"name": "PYTHONPATH", "value": DEPS},
    ]
    if options.s3:
        env += [
            _secret_env("AWS_ACCESS_KEY_ID", options.s3_secret, "access-key-id"),
            _secret_env("AWS_SECRET_ACCESS_KEY", options.s3_secret, "secret-access-key"),
            {"name": "AWS_DEFAULT_REGION", "value": options.s3_region},
        ]
    mounts = [
        {"name": "tls", "mountPath": "/etc/dgla/tls", "readOnly": True},
        {"name": "deps", "mountPath": DEPS, "readOnly": True},
        {"name": "scratch", "mountPath": "/tmp"},
        {"name": "shm", "mountPath": "/dev/shm"},
    ]
    if options.client_ca_secret:
        mounts.append({"name": "client-ca", "mountPath": "/etc/dgla/client-ca", "readOnly": True})
    if not options.s3:
        mounts.append({"name": "repository", "mountPath": REPOSITORY, "readOnly": True})
    resources: dict[str, Any] = {"requests": {"cpu": options.cpu, "memory": options.memory}}
    resources["limits"] = {"memory": options.memory}
    if options.gpus:
        resources["limits"]["nvidia.com/gpu"] = options.gpus
    probe = {"port": "http"}
    return {
        "name": "triton",
        "image": options.image,
        "command": triton_command(options, repository),
        "env": env,
        "ports": [
            {"name": "http", "containerPort": HTTP},
            {"name": "grpc", "containerPort": GRPC},
            {"name": "metrics", "containerPort": METRICS},
        ],
        # loading the models can take minutes (engines, warm-up): the startup probe allows 10 of them
        "startupProbe": _startup_probe(options, probe),
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", **probe}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", **probe}, "periodSeconds": 10, "failureThreshold": 3},
        "resources": resources,
        "volumeMounts": mounts,
        "securityContext": _locked_down(),
    }


def _locked_down() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _startup_probe(options: KubernetesOptions, probe: dict[str, Any]) -> dict[str, Any]:
    """Ready, and answering the reference photos as PyTorch did: the repository's self-check
    (``NAME/selfcheck.py``, the standard library and numpy), where the repository is mounted; a pod
    whose answers are outside the tolerance never becomes ready and is restarted. A repository in
    object storage is not in the pod's file system: there, readiness alone."""
    timing = {"periodSeconds": 10, "failureThreshold": 60}
    if options.s3:
        return {"httpGet": {"path": "/v2/health/ready", **probe}, **timing}
    check = f'python3 "$(ls {REPOSITORY}/*/selfcheck.py | head -n 1)" {REPOSITORY} --url http://127.0.0.1:{HTTP}'
    return {"exec": {"command": ["sh", "-c", check]}, "timeoutSeconds": 120, **timing}


def _deps_init(options: KubernetesOptions) -> dict[str, Any]:
    """Pillow, pinned by hash, as a wheel into an emptyDir: the preprocessing model's one dependency
    the container lacks; pip installs the wheel whose SHA-256 the requirements name, or nothing (a
    cluster without PyPI: bake it into your image and drop this)."""
    requirements = shlex.quote(preprocess_requirements())
    install = (
        f"printf %s {requirements} > /tmp/requirements.txt && pip install --quiet --require-hashes --no-deps "
        f"--only-binary :all: --target {DEPS} -r /tmp/requirements.txt"
    )
    return {
        "name": "python-deps",
        "image": options.image,
        "command": ["sh", "-c", install],
        "env": [{"name": "HOME", "value": "/tmp"}],
        "volumeMounts": [{"name": "deps", "mountPath": DEPS}, {"name": "scratch", "mountPath": "/tmp"}],
        "securityContext": _locked_down(),
    }


def _volumes(options: KubernetesOptions) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        {"name": "tls", "secret": {"secretName": options.tls_secret, "defaultMode": 0o440}},
        {"name": "deps", "emptyDir": {}},
        {"name": "scratch", "emptyDir": {}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},  # the Python backend's
    ]
    if options.client_ca_secret:
        volumes.append({"name": "client-ca", "secret": {"secretName": options.client_ca_secret}})
    if not options.s3:
        claim = options.storage.removeprefix("pvc:")
        volumes.append({"name": "repository", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
    return volumes


def _deployment(options: KubernetesOptions) -> Manifest:
    selector = {"app.kubernetes.io/name": options.name}
    annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS), "prometheus.io/path": "/metrics"}
    pod: dict[str, Any] = {
        "serviceAccountName": options.name,
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": [_deps_init(options)],
        "containers": [_container(options, options.repository_url())],
        "volumes": _volumes(options),
        "terminationGracePeriodSeconds": 40,  # Triton waits 30 s for requests in flight
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(options),
        "spec": {
            "replicas": options.replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": selector, "annotations": annotations}, "spec": pod},
        },
    }


def _service(options: KubernetesOptions) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(options),
        "spec": {
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/name": options.name},
            "ports": [{"name": "grpc", "port": GRPC, "targetPort": "grpc", "appProtocol": "grpc"}],
        },
    }


def _autoscaler(options: KubernetesOptions) -> Manifest:
    target_us = round(options.queue_target_ms * 1000)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(options),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": options.name},
            "minReplicas": options.replicas,
            "maxReplicas": options.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": "avg_time_queue_us"},
                        "target": {"type": "AverageValue", "averageValue": str(target_us)},
                    },
                }
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


ADAPTER_RULE = """\
rules:
- seriesQuery: 'nv_inference_queue_duration_us{namespace!="",pod!=""}'
  resources:
    overrides:
      namespace: {resource: namespace}
      pod: {resource: pod}
  name:
    matches: nv_inference_queue_duration_us
    as: avg_time_queue_us
  metricsQuery: >-
    avg(delta(nv_inference_queue_duration_us{<<.LabelMatchers>>}[1m])
    / clamp_min(delta(nv_inference_request_success{<<.LabelMatchers>>}[1m]), 1)) by (<<.GroupBy>>)
"""


def _adapter_rules(options: KubernetesOptions) -> Manifest:
    """prometheus-adapter's rule that turns Triton's cumulative queue time into the HPA's metric:
    microseconds a request waited in the last minute, per pod (merge it into the adapter's config)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{options.name}-adapter-rules", "namespace": options.monitoring_namespace},
        "data": {"config.yaml": ADAPTER_RULE},
    }


def _disruption_budget(options: KubernetesOptions) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(options),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": options.name}}},
    }


def _network_policy(options: KubernetesOptions) -> Manifest:
    monitoring = {"kubernetes.io/metadata.name": options.monitoring_namespace}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(options),
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": options.name}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"ports": [{"port": GRPC, "protocol": "TCP"}]},  # clients: TLS and the inference key
                {"from": [{"namespaceSelector": {"matchLabels": monitoring}}], "ports": [{"port": METRICS}]},
            ],  # HTTP (plaintext) is for the kubelet's probes only
        },
    }


def _service_account(options: KubernetesOptions) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(options),
        "automountServiceAccountToken": False,
    }


def manifests(options: KubernetesOptions) -> dict[str, Manifest]:
    """file name -> manifest, for ``kubectl apply -f`` on the folder."""
    return {
        "serviceaccount.yaml": _service_account(options),
        "deployment.yaml": _deployment(options),
        "service.yaml": _service(options),
        "hpa.yaml": _autoscaler(options),
        "pdb.yaml": _disruption_budget(options),
        "networkpolicy.yaml": _network_policy(options),
        "prometheus-adapter-rules.yaml": _adapter_rules(options),
    }


def kserve_manifest(options: KubernetesOptions) -> Manifest:
    """KServe's InferenceService for the same repository: the Triton runtime, protocol v2, the
    repository from ``storageUri`` (KServe's storage initializer downloads it to /mnt/models; its
    credentials come from the service account's Secret, as KServe documents), and the same security
    arguments as the plain manifests."""
    storage = options.storage if options.s3 else f"pvc://{options.storage.removeprefix('pvc:')}"
    container = _container(options, "/mnt/models")  # the plain Deployment's, where KServe puts the repository
    # KServe's Triton runtime names the repository and the ports itself; these follow
    ports = ("--model-repository", "--http-port", "--grpc-port", "--metrics-port")
    args = [a for a in container["command"][1:] if not a.startswith(ports)]
    model: dict[str, Any] = {
        "modelFormat": {"name": "triton"},
        "protocolVersion": "v2",
        "runtime": "kserve-tritonserver",
        "storageUri": storage,
        "args": args,
        "env": [e for e in container["env"] if not e["name"].startswith("AWS_")],
        "volumeMounts": [m for m in container["volumeMounts"] if m["name"] != "repository"],
        "securityContext": _locked_down(),
        "resources": {
            "requests": {"cpu": options.cpu, "memory": options.memory},
            "limits": {"memory": options.memory, **({"nvidia.com/gpu": str(options.gpus)} if options.gpus else {})},
        },
    }
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": _metadata(options),
        "spec": {
            "predictor": {
                "minReplicas": options.replicas,
                "maxReplicas": options.max_replicas,
                "serviceAccountName": options.name,
                "model": model,
                "initContainers": [_deps_init(options)],
                "volumes": [v for v in _volumes(options) if v["name"] != "repository"],
            }
        },
    }
