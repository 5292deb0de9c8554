#!/usr/bin/env bash
# Serve a repository written by `dgla-export triton` with the official Triton container.
# Documented, not run in CI (no Docker engine or GPU there).
# Usage: scripts/triton_server.sh REPO [TRITON_TAG]      e.g. scripts/triton_server.sh triton-repo 25.10-py3
# The Python-backend preprocessing imports dgla_export (and torch): the container pip-installs this
# checkout first. perf_analyzer command lines: see the README.
set -euo pipefail
repo=$(realpath "${1:?repository folder}")
tag=${2:-25.10-py3}
src=$(realpath "$(dirname "$0")/..")
docker run --rm --gpus all --shm-size 1g -p 8000:8000 -p 8001:8001 -p 8002:8002 \
  -v "$repo":/models -v "$src":/src:ro "nvcr.io/nvidia/tritonserver:$tag" \
  bash -c "pip install /src && \
           tritonserver --model-repository=/models --strict-model-config=true"
