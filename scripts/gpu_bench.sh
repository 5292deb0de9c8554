#!/usr/bin/env bash
# On a GPU box: export FP32, FP16 and INT8 (TensorRT flavour) ONNX, build the FP16 and INT8
# TensorRT engines when TensorRT is installed, then run dgla-bench on every available backend
# (torch on CUDA, ONNX Runtime CUDA and TensorRT EPs, the engines, CPU) and write the results;
# then what --explain costs (ONNX Runtime CUDA, and the FP16 engine) and preprocessing with DALI.
# Usage: scripts/gpu_bench.sh [WEIGHTS] [OUT_DIR] [CALIBRATION_FOLDER]   (defaults: demo, gpu-results, bundled)
set -euo pipefail
weights=${1:-demo}
out=${2:-gpu-results}
calibration=${3:+--calibration-images $3}
mkdir -p "$out"
dgla-export onnx --weights "$weights" --output "$out/dgla_resnet50.onnx" --device cuda \
  --report "$out/validate_fp32.json" --force
dgla-export onnx --weights "$weights" --precision fp16 --output "$out/dgla_resnet50_fp16.onnx" --device cuda \
  --report "$out/validate_fp16.json" --force
int8_args=()
# shellcheck disable=SC2086  # $calibration is an option and its value, or nothing
if dgla-export onnx --weights "$weights" --precision int8 --int8-target tensorrt $calibration \
  --output "$out/dgla_resnet50_int8.onnx" --device cuda --report "$out/validate_int8.json" --force; then
  int8_args=(--onnx-int8 "$out/dgla_resnet50_int8.onnx")
else
  echo "the INT8 graph missed its accuracy target (see above): benchmarking without it" >&2
fi
engine_args=()
if python -c "import tensorrt" 2>/dev/null; then
  dgla-export trt --onnx "$out/dgla_resnet50_fp16.onnx" --output "$out/dgla_resnet50_fp16.plan" \
    --timing-cache "$out/timing.cache" --force
  engine_args=(--engine "$out/dgla_resnet50_fp16.plan")
  if [ ${#int8_args[@]} -gt 0 ]; then
    dgla-export trt --onnx "$out/dgla_resnet50_int8.onnx" --precision int8 --output "$out/dgla_resnet50_int8.plan" \
      --timing-cache "$out/timing.cache" --force
    dgla-bench --weights "$weights" --engine "$out/dgla_resnet50_int8.plan" --backends tensorrt-engine \
      --batches 1,4,8,16,32 --output "$out/bench-int8-engine" --fail-on-mismatch
  fi
else
  echo "TensorRT not importable: skipping the engine builds (install NVIDIA's tensorrt wheel)" >&2
fi
dgla-bench --weights "$weights" --onnx "$out/dgla_resnet50.onnx" --onnx-fp16 "$out/dgla_resnet50_fp16.onnx" \
  "${int8_args[@]}" "${engine_args[@]}" --batches 1,4,8,16,32 --output "$out/bench" --fail-on-mismatch
# What --explain costs on this GPU: the FP16 graph exported again with the maps, validated against
# Grad-CAM like any export, timed against the plain one (interleaved rounds), then as engines.
here="$(dirname "$0")/.."
dgla-export onnx --weights "$weights" --precision fp16 --explain --output "$out/dgla_resnet50_fp16_explain.onnx" \
  --device cuda --report "$out/validate_fp16_explain.json" --force
python "$here/benchmarks/explain_cost.py" --runtime onnxruntime-cuda --precision fp16 --batches 1,8,32 \
  --plain "$out/dgla_resnet50_fp16.onnx" --explained "$out/dgla_resnet50_fp16_explain.onnx" \
  --output "$out/explain-onnxruntime-cuda" || echo "explain cost above the goal on ONNX Runtime CUDA (see above)" >&2
if [ ${#engine_args[@]} -gt 0 ]; then
  dgla-export trt --onnx "$out/dgla_resnet50_fp16_explain.onnx" --output "$out/dgla_resnet50_fp16_explain.plan" \
    --timing-cache "$out/timing.cache" --force
  dgla-bench --weights "$weights" --engine "$out/dgla_resnet50_fp16_explain.plan" --backends tensorrt-engine \
    --batches 1,8 --output "$out/bench-explain-engine" --heatmaps --fail-on-mismatch
  python "$here/benchmarks/explain_cost.py" --runtime tensorrt --batches 1,8,32 \
    --plain "$out/dgla_resnet50_fp16.plan" --explained "$out/dgla_resnet50_fp16_explain.plan" \
    --output "$out/explain-tensorrt" || echo "explain cost above the goal on TensorRT (see above)" >&2
fi
# Preprocessing of camera-sized photos: exact, fast (CPU) and DALI on the GPU (mixed decoder).
if python -c "import nvidia.dali" 2>/dev/null; then
  python "$here/benchmarks/preprocess_cpu.py" --dali-device gpu --output "$out/preprocess"
else
  echo "NVIDIA DALI not importable: skipping the GPU preprocessing run (pip install -e '.[dali]' in this clone)" >&2
fi
