#!/usr/bin/env bash
# Serve a repository written by `dgla-export triton` with the official Triton container, with the
# restrictions dgla-serve applies. Documented, not run in CI (no Docker engine or GPU there); without
# Docker, use `dgla-serve`.
# Usage: scripts/triton_server.sh REPO [TRITON_TAG]      e.g. scripts/triton_server.sh triton-repo 25.10-py3
#   BIND=0.0.0.0 to publish beyond this machine (default 127.0.0.1: loopback only).
#   TLS_DIR=DIR: gRPC over TLS with DIR/tls.crt and DIR/tls.key (owner-only), and mutual TLS when
#   DIR/ca.crt is there; HTTP then stays on loopback (Triton's HTTP has no TLS).
#   DGLA_API_KEY (environment): the inference key; DGLA_ADMIN_KEY: the admin key (default: a random
#   one nobody else holds). Keys pass through the environment, never this script's or docker's
#   command line; inside the container tritonserver holds them as arguments, which the host's users
#   can read while it runs (docs/serving.md: the limit, and hidepid).
# Before it serves, the repository's self-check (NAME/selfcheck.py) sends its reference photos through
# each ensemble and compares with the golden answers written with it: an answer outside the served
# precision's tolerance stops the server (exit 3).
# Model control none (no request loads code into the server), strict readiness; the container runs
# as the calling user, with no capabilities and no privilege escalation, the repository read-only.
# The preprocessing model needs numpy (in the image) and Pillow: pip installs the wheel whose SHA-256
# dgla_export/deploy/preprocess-requirements.txt names (--require-hashes), or nothing, into a
# scratch folder: nothing the image holds is changed.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
repo=$(realpath "${1:?repository folder}")
tag=${2:-25.10-py3}
bind=${BIND:-127.0.0.1}
export DGLA_ADMIN_KEY=${DGLA_ADMIN_KEY:-$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')}
for key in DGLA_ADMIN_KEY DGLA_API_KEY; do  # as dgla-serve takes them: Triton parses KEY=VALUE pairs
  if [[ -n ${!key:-} && ! ${!key} =~ ^[A-Za-z0-9._~-]{16,256}$ ]]; then
    echo "triton_server.sh: \$$key: a key is 16 to 256 letters, digits or ._~- (make one with python -c 'import secrets; print(secrets.token_urlsafe(32))')" >&2
    exit 2
  fi
done
admin_apis=model-repository,shared-memory,statistics,trace,logging
inference_apis=inference,metadata,model-config
http_bind=$bind
tls=()
mounts=(-v "$repo":/models:ro -v "$here/dgla_export/deploy/preprocess-requirements.txt":/etc/dgla/requirements.txt:ro)
http_admin=$admin_apis
if [[ -n ${TLS_DIR:-} ]]; then
  tls_dir=$(realpath "$TLS_DIR")
  if [[ $(stat -c %a "$tls_dir/tls.key") != [0-7]00 ]]; then
    echo "triton_server.sh: $tls_dir/tls.key: other users may read it; chmod 600 $tls_dir/tls.key" >&2
    exit 2
  fi
  mounts+=(-v "$tls_dir":/etc/dgla/tls:ro)
  tls+=(--grpc-use-ssl=true --grpc-server-cert=/etc/dgla/tls/tls.crt --grpc-server-key=/etc/dgla/tls/tls.key)
  http_bind=127.0.0.1
  if [[ -f $tls_dir/ca.crt ]]; then
    tls+=(--grpc-use-ssl-mutual=true --grpc-root-cert=/etc/dgla/tls/ca.crt)
    http_admin=$admin_apis,$inference_apis  # HTTP sees no client certificate: inference behind the admin key
  fi
fi
keys=(
  "--grpc-restricted-protocol=$admin_apis:dgla-admin-key=\${DGLA_ADMIN_KEY}"
  "--http-restricted-api=$http_admin:dgla-admin-key=\${DGLA_ADMIN_KEY}"
)
if [[ -n ${DGLA_API_KEY:-} ]]; then
  keys+=("--grpc-restricted-protocol=$inference_apis:dgla-api-key=\${DGLA_API_KEY}")
  [[ $http_admin == "$admin_apis" ]] && keys+=("--http-restricted-api=$inference_apis:dgla-api-key=\${DGLA_API_KEY}")
fi
# the container's shell expands ${DGLA_...} from its environment (docker -e NAME passes the value
# without putting it on docker's command line)
docker run --rm --init --gpus all --shm-size 1g \
  -p "$http_bind:8000:8000" -p "$bind:8001:8001" -p "127.0.0.1:8002:8002" \
  --user "$(id -u):$(id -g)" --cap-drop ALL --security-opt no-new-privileges \
  --tmpfs /tmp:rw,exec -e HOME=/tmp -e PYTHONPATH=/tmp/pydeps -e DGLA_ADMIN_KEY -e DGLA_API_KEY \
  "${mounts[@]}" "nvcr.io/nvidia/tritonserver:$tag" \
  bash -c "pip install --quiet --require-hashes --no-deps --only-binary :all: --target /tmp/pydeps \
             -r /etc/dgla/requirements.txt || exit 2
           check=\$(ls /models/*/selfcheck.py 2>/dev/null | head -n 1)
           [ -n \"\$check\" ] || { echo 'no NAME/selfcheck.py in the repository: write it with dgla-export triton' >&2; exit 2; }
           env -u DGLA_API_KEY -u DGLA_ADMIN_KEY tritonserver --model-repository=/models --disable-auto-complete-config \
             --model-control-mode=none --strict-readiness=true ${tls[*]} ${keys[*]} &
           server=\$!
           trap 'kill -TERM \$server; wait \$server' TERM INT
           python3 \"\$check\" /models --wait 600 || { kill \$server; exit 3; }
           wait \$server"
