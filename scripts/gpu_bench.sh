#!/usr/bin/env bash
# On a GPU box: export FP32 and FP16 ONNX, build the FP16 TensorRT engine when TensorRT is
# installed, then run dgla-bench on every available backend (torch on CUDA, ONNX Runtime
# CUDA and TensorRT EPs, the engine, CPU) and write the results.
# Usage: scripts/gpu_bench.sh [WEIGHTS] [OUT_DIR]     (defaults: demo, gpu-results)
set -euo pipefail
weights=${1:-demo}
out=${2:-gpu-results}
mkdir -p "$out"
dgla-export onnx --weights "$weights" --output "$out/dgla_resnet50.onnx" --device cuda \
  --report "$out/validate_fp32.json" --force
dgla-export onnx --weights "$weights" --precision fp16 --output "$out/dgla_resnet50_fp16.onnx" --device cuda \
  --report "$out/validate_fp16.json" --force
engine_args=()
if python -c "import tensorrt" 2>/dev/null; then
  dgla-export trt --onnx "$out/dgla_resnet50_fp16.onnx" --output "$out/dgla_resnet50_fp16.plan" \
    --timing-cache "$out/timing.cache" --force
  engine_args=(--engine "$out/dgla_resnet50_fp16.plan")
else
  echo "TensorRT not importable: skipping the engine build (install NVIDIA's tensorrt wheel)" >&2
fi
dgla-bench --weights "$weights" --onnx "$out/dgla_resnet50.onnx" --onnx-fp16 "$out/dgla_resnet50_fp16.onnx" "${engine_args[@]}" \
  --batches 1,4,8,16,32 --output "$out/bench" --fail-on-mismatch
