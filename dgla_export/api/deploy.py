"""Past one machine: the Kubernetes manifests (and KServe's InferenceService) for a Triton repository."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from dgla_export.api.common import Record

if TYPE_CHECKING:
    from dgla_export.deploy.manifests import KubernetesOptions

__all__ = ["DeploymentResult", "write_kubernetes"]

COMMAND = "dgla-export kubernetes"


@dataclasses.dataclass(frozen=True)
class DeploymentResult(Record):
    """The folder written, its files, and the Kubernetes version its manifests were checked against."""

    path: Path
    files: list[str]
    kubernetes_version: str


def write_kubernetes(
    output: str | Path, options: KubernetesOptions, *, kserve: bool = True, force: bool = False
) -> DeploymentResult:
    """Write ``output``: the manifests ``kubectl apply -f`` takes (Deployment, Service, HPA, PDB,
    NetworkPolicy, ServiceAccount, prometheus-adapter's rule) and, with ``kserve``,
    ``kserve/inferenceservice.yaml``. Every manifest is checked strictly against its schema
    (Kubernetes' own through kubernetes-validate; KServe's, vendored) before anything is written;
    ``force`` replaces an earlier output of this function, nothing else.

    >>> write_kubernetes("k8s", KubernetesOptions(storage="s3://models/dgla")).files   # doctest: +SKIP
    ['deployment.yaml', 'hpa.yaml', ..., 'kserve/inferenceservice.yaml']
    """
    from dgla_export.deploy.check import KUBERNETES_VERSION, check_kserve, check_kubernetes
    from dgla_export.deploy.manifests import kserve_manifest, manifests
    from dgla_export.io import check_output_folder, replace_folder

    output = Path(output)
    check_output_folder(output, force, command=COMMAND)
    written = manifests(options)
    for manifest in written.values():
        check_kubernetes(manifest)
    if kserve:
        written["kserve/inferenceservice.yaml"] = kserve_manifest(options)
        check_kserve(written["kserve/inferenceservice.yaml"])
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: object) -> bool:  # a reader sees each value written out, not &id001
            return True

    with replace_folder(output, command=COMMAND) as staging:
        for name, manifest in written.items():
            (staging / name).parent.mkdir(exist_ok=True)
            (staging / name).write_text(yaml.dump(manifest, Dumper=Dumper, sort_keys=False, width=120))
    return DeploymentResult(output, sorted(written), KUBERNETES_VERSION)
