#!/usr/bin/env bash
# On a GPU box: export FP32 and FP16 ONNX, then run dgla-bench on every available backend
# (torch eager/channels_last/autocast/compile on CUDA, ONNX Runtime CUDA and TensorRT EPs, CPU).
# Usage: scripts/gpu_bench.sh [WEIGHTS] [OUT_DIR]     (defaults: demo, gpu-results)
set -euo pipefail
weights=${1:-demo}
out=${2:-gpu-results}
mkdir -p "$out"
dgla-export onnx --weights "$weights" --output "$out/dgla_resnet50.onnx" --device cuda \
  --report "$out/validate_fp32.json" --force
dgla-export onnx --weights "$weights" --precision fp16 --output "$out/dgla_resnet50_fp16.onnx" --device cuda \
  --report "$out/validate_fp16.json" --force
dgla-bench --weights "$weights" --onnx "$out/dgla_resnet50.onnx" --onnx-fp16 "$out/dgla_resnet50_fp16.onnx" \
  --batches 1,4,8,16,32 --output "$out/bench" --fail-on-mismatch
