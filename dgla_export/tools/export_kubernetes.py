"""Write a Kubernetes deployment of a Triton repository written by `dgla-export triton`: N Triton
replicas reading it from object storage (s3://BUCKET/PREFIX; --s3-endpoint for MinIO and other
S3-compatible stores) or a volume (pvc:CLAIM), with TLS and keys from Secrets, probes on
/v2/health/ready, a Service, an HPA on Triton's queue time (through prometheus-adapter: its rule is
written too), a PodDisruptionBudget, a NetworkPolicy, Prometheus scraping; and KServe's
InferenceService (Triton runtime, protocol v2) in kserve/. Every manifest is checked against its
schema (Kubernetes', bundled with kubernetes-validate; KServe's, vendored) before anything is
written: pip install -e '.[deploy]'. Create the Secrets it names first (docs/serving.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dgla_export.tools.args import positive_float, positive_int

HELP = "write Kubernetes manifests and a KServe InferenceService for a Triton repository"


def configure(parser: argparse.ArgumentParser) -> None:
    from dgla_export.deploy.manifests import DEFAULT_IMAGE

    parser.add_argument(
        "--storage", required=True, metavar="URL", help="where the repository is: s3://BUCKET/PREFIX or pvc:CLAIM"
    )
    parser.add_argument("--output", type=Path, required=True, metavar="FOLDER", help="folder to write")
    parser.add_argument("--name", default="dgla-triton", help="the resources' name (default dgla-triton)")
    parser.add_argument("--namespace", help="their namespace (default: kubectl's current one)")
    parser.add_argument(
        "--s3-endpoint", metavar="URL", help="an S3-compatible store: https://HOST:PORT (plain http on loopback only)"
    )
    parser.add_argument("--s3-region", default="us-east-1", help="the bucket's region (default us-east-1)")
    parser.add_argument("--image", default=DEFAULT_IMAGE, help=f"Triton's container (default {DEFAULT_IMAGE})")
    parser.add_argument("--gpus", type=int, default=1, metavar="N", help="GPUs per replica (default 1; 0 runs on CPUs)")
    parser.add_argument("--cpu", default="4", help="CPU request per replica (default 4)")
    parser.add_argument("--memory", default="8Gi", help="memory per replica, request and limit (default 8Gi)")
    parser.add_argument("--replicas", type=positive_int, default=2, metavar="N", help="replicas at least (default 2)")
    parser.add_argument(
        "--max-replicas", type=positive_int, default=8, metavar="N", help="replicas at most (default 8)"
    )
    parser.add_argument(
        "--queue-target-ms",
        type=positive_float,
        default=200.0,
        metavar="MS",
        help="the HPA adds replicas while a request waits longer than this in Triton's queue (default 200)",
    )
    parser.add_argument("--tls-secret", default="dgla-tls", help="kubernetes.io/tls Secret (default dgla-tls)")
    parser.add_argument("--client-ca-secret", help="mutual TLS: a Secret holding ca.crt, the clients' CA")
    parser.add_argument(
        "--keys-secret", default="dgla-keys", help="Secret with api-key and admin-key (default dgla-keys)"
    )
    parser.add_argument(
        "--s3-secret",
        default="dgla-s3",
        help="Secret with access-key-id and secret-access-key (default dgla-s3)",
    )
    parser.add_argument("--no-kserve", action="store_true", help="leave out kserve/inferenceservice.yaml")
    parser.add_argument("--force", action="store_true", help="replace --output if it is an earlier output of this")


def run(args: argparse.Namespace) -> int:
    from dgla_export.api import write_kubernetes
    from dgla_export.deploy.manifests import KubernetesOptions

    options = KubernetesOptions(
        storage=args.storage,
        name=args.name,
        namespace=args.namespace,
        s3_endpoint=args.s3_endpoint,
        s3_region=args.s3_region,
        image=args.image,
        gpus=args.gpus,
        cpu=args.cpu,
        memory=args.memory,
        replicas=args.replicas,
        max_replicas=args.max_replicas,
        queue_target_ms=args.queue_target_ms,
        tls_secret=args.tls_secret,
        client_ca_secret=args.client_ca_secret,
        keys_secret=args.keys_secret,
        s3_secret=args.s3_secret,
    )
    result = write_kubernetes(args.output, options, kserve=not args.no_kserve, force=args.force)
    print(f"wrote {result.path}: {', '.join(result.files)} (checked against Kubernetes {result.kubernetes_version})")
    return 0
