#!/usr/bin/env bash
# Serve a repository written by `dgla-export triton` with the official Triton container.
# Documented, not run in CI (no Docker engine or GPU there); without Docker, use `dgla-serve`.
# Usage: scripts/triton_server.sh REPO [TRITON_TAG]      e.g. scripts/triton_server.sh triton-repo 25.10-py3
# The preprocessing model needs numpy (in the image) and Pillow: its preprocessing source is in
# the repository (dgla_preprocess/1/preprocess.py), so neither torch nor this package is installed.
set -euo pipefail
repo=$(realpath "${1:?repository folder}")
tag=${2:-25.10-py3}
docker run --rm --gpus all --shm-size 1g -p 8000:8000 -p 8001:8001 -p 8002:8002 \
  -v "$repo":/models "nvcr.io/nvidia/tritonserver:$tag" \
  bash -c "pip install --quiet pillow && \
           tritonserver --model-repository=/models --disable-auto-complete-config"
