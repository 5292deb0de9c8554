#!/usr/bin/env bash
# The GPU check (docs/gpu.md): on a bare GPU box, the package from this tree on the box's own torch,
# no registry, under one time budget, everything in one folder.
#
#   scripts/gpu_check.sh prepare        here, with the registry: the wheels the box lacks -> build/gpu-check/
#   scripts/gpu_check.sh run OUT        on the box (carry build/gpu-check): every stage, then OUT/summary.md
#   scripts/gpu_check.sh dry OUT        on any CPU: the same stages, tiny model, seconds (make test runs it)
#   scripts/gpu_check.sh pytest ARGS... the tests named, in the same environment (make test: numpy 2)
#
# PYTHON picks the interpreter (default python3: on the box, the one that holds torch).
# DGLA_GPU_CHECK_SECONDS: the whole run's budget (default 450; a stage that would pass it is stopped
# and named in the summary). Exit: 0 all ran and passed, 3 a variant failed parity, 1 a stage left
# nothing, 2 bad usage.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
carried=$root/build/gpu-check
mode=${1:-}
out=${2:-}

if [ "$mode" = prepare ]; then
  set -e
  rm -rf "$carried/wheels" && mkdir -p "$carried/wheels"
  # the pure-Python wheels the box lacks, at the versions CI tests (constraints.txt)
  # shellcheck disable=SC2046
  "$python" -m pip download --quiet --no-deps --only-binary :all: -d "$carried/wheels" \
    $(grep -E '^(polygraphy|onnx_graphsurgeon|captum)==' "$root/constraints.txt")
  dirty=$(git -C "$root" status --porcelain --untracked-files=no)
  echo "$(git -C "$root" rev-parse HEAD)${dirty:++dirty}" > "$carried/COMMIT"
  ls "$carried/wheels"
  echo "prepared $carried ($(du -sh "$carried" | cut -f1)); carry it: the device run's carry [\"build/gpu-check\"]"
  exit 0
fi
if [ "$mode" != pytest ] && { [ "$mode" != run ] && [ "$mode" != dry ] || [ -z "$out" ]; }; then
  echo "usage: scripts/gpu_check.sh prepare | run OUT | dry OUT | pytest ARGS..." >&2
  exit 2
fi
if ! ls "$carried"/wheels/*.whl >/dev/null 2>&1; then
  echo "no carried wheels in $carried/wheels: run 'scripts/gpu_check.sh prepare' first (on a machine with the registry)" >&2
  exit 2
fi

site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
# A wheel is a zip: unpacked, it is importable from PYTHONPATH with its metadata; nothing is installed.
"$python" - "$site" "$carried"/wheels/*.whl <<'EOF'
import sys, zipfile
for wheel in sys.argv[2:]:
    zipfile.ZipFile(wheel).extractall(sys.argv[1])
EOF
export PYTHONPATH="$root:$site${PYTHONPATH:+:$PYTHONPATH}"
if [ "$mode" = pytest ]; then
  shift
  cd "$root" && "$python" -m pytest -p no:cacheprovider "$@"
  exit $?
fi
mkdir -p "$out"
dry=$([ "$mode" = dry ] && echo --dry)
budget=${DGLA_GPU_CHECK_SECONDS:-450}
start=$SECONDS
stages_json="{"
# stage caps (s): the ceiling and machine, a photo's decoding, Grad-CAM, the bench, torch.compile
for entry in env:60 preprocess:60 maps:120 bench:240 compile:600; do
  stage=${entry%%:*}
  left=$((budget - (SECONDS - start) - 10))  # 10 s kept for the summary
  cap=${entry##*:}
  limit=$((left < cap ? left : cap))
  if [ "$limit" -lt 15 ]; then
    echo "== $stage: not started, the budget of ${budget} s is spent" >&2
    stages_json+="\"$stage\": {\"rc\": null, \"seconds\": 0, \"why\": \"budget spent\"},"
    continue
  fi
  echo "== $stage (at most ${limit} s)"
  t0=$SECONDS
  # shellcheck disable=SC2086  # $dry is one option or nothing
  timeout --kill-after=10 "$limit" "$python" "$root/benchmarks/gpu_check.py" "$stage" --output "$out" $dry
  rc=$?
  why=$([ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && echo "stopped after ${limit} s" || echo "exit $rc")
  stages_json+="\"$stage\": {\"rc\": $rc, \"seconds\": $((SECONDS - t0)), \"why\": \"$why\"},"
done
echo "${stages_json%,}}" > "$out/stages.json"
"$python" "$root/benchmarks/gpu_check.py" summary --output "$out" $dry
