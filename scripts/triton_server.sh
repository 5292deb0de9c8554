#!/usr/bin/env bash
# Serve a repository written by `dgla-export triton` with the official Triton container.
# Documented, not run in CI (no Docker engine or GPU there); without Docker, use `dgla-serve`.
# Usage: scripts/triton_server.sh REPO [TRITON_TAG]      e.g. scripts/triton_server.sh triton-repo 25.10-py3
#   BIND=0.0.0.0 to publish beyond this machine (default 127.0.0.1: loopback only; put TLS in front,
#   docs/serving.md). The container runs as the calling user (not root), with no capabilities and
#   no privilege escalation, the repository read-only, model control off and strict readiness.
# The preprocessing model needs numpy (in the image) and Pillow: its preprocessing source is in
# the repository (dgla_preprocess/1/preprocess.py), so neither torch nor this package is installed.
# Pillow is the version CI tests (constraints.txt), a wheel only, into a scratch folder: nothing
# the image holds is changed.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
repo=$(realpath "${1:?repository folder}")
tag=${2:-25.10-py3}
bind=${BIND:-127.0.0.1}
pillow=$(grep -E '^pillow==' "$here/constraints.txt")
docker run --rm --gpus all --shm-size 1g \
  -p "$bind:8000:8000" -p "$bind:8001:8001" -p "127.0.0.1:8002:8002" \
  --user "$(id -u):$(id -g)" --cap-drop ALL --security-opt no-new-privileges \
  --tmpfs /tmp:rw,exec -e HOME=/tmp -e PYTHONPATH=/tmp/pydeps \
  -v "$repo":/models:ro "nvcr.io/nvidia/tritonserver:$tag" \
  bash -c "pip install --quiet --no-deps --only-binary :all: --target /tmp/pydeps '$pillow' && \
           tritonserver --model-repository=/models --disable-auto-complete-config \
             --model-control-mode=none --strict-readiness=true"
