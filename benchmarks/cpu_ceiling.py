"""How fast can FP32 arithmetic go on this CPU, and what does that bound for dgla_resnet50?

Two ceilings, recorded with the machine and commit:
- FMA peak: independent AVX2 FMA chains on every core (a C kernel compiled here with gcc), the
  most FP32 FLOP/s the cores can retire;
- GEMM: the best large FP32 matrix product of the fastest dense kernel here (numpy's BLAS, torch,
  ONNX Runtime, OpenVINO: what dgla-bench reports as the CPU ceiling).
With the model's FLOPs per image pair they give the least time any FP32 runtime can take, hence
the largest speed-up over a measured eager time. Run: python benchmarks/cpu_ceiling.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import commit, machine, parse_args, write_json
from dgla_export.benchmarking.ceilings import cpu_ceiling
from dgla_export.models.cost import measure_cost
from dgla_export.models.registry import create_model

# 12 independent chains (Zen 3 / Skylake: 2 FMA pipes x 4-5 cycles latency) per thread; the
# chains start at different values so that the compiler cannot merge them.
FMA_KERNEL = r"""
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
int main(void) {
  const long iters = 400000000L;
  float sink = 0;
  double t0 = omp_get_wtime();
#pragma omp parallel reduction(+ : sink)
  {
    __m256 a[12];
    for (int k = 0; k < 12; k++) a[k] = _mm256_set1_ps(1.0f + 0.1f * k);
    const __m256 b = _mm256_set1_ps(0.9999999f), c = _mm256_set1_ps(1e-7f);
    for (long i = 0; i < iters; i++) {
      a[0] = _mm256_fmadd_ps(a[0], b, c); a[1] = _mm256_fmadd_ps(a[1], b, c);
      a[2] = _mm256_fmadd_ps(a[2], b, c); a[3] = _mm256_fmadd_ps(a[3], b, c);
      a[4] = _mm256_fmadd_ps(a[4], b, c); a[5] = _mm256_fmadd_ps(a[5], b, c);
      a[6] = _mm256_fmadd_ps(a[6], b, c); a[7] = _mm256_fmadd_ps(a[7], b, c);
      a[8] = _mm256_fmadd_ps(a[8], b, c); a[9] = _mm256_fmadd_ps(a[9], b, c);
      a[10] = _mm256_fmadd_ps(a[10], b, c); a[11] = _mm256_fmadd_ps(a[11], b, c);
    }
    float out[8];
    __m256 s = a[0];
    for (int k = 1; k < 12; k++) s = _mm256_add_ps(s, a[k]);
    _mm256_storeu_ps(out, s);
    sink += out[0];
  }
  double seconds = omp_get_wtime() - t0;
  /* 12 FMAs x 8 lanes x 2 FLOPs per iteration and thread */
  printf("%d %.6f %f\n", omp_get_max_threads(), omp_get_max_threads() * iters * 192.0 / seconds / 1e9, sink);
  return 0;
}
"""


def fma_peak_gflops(repeats: int = 5) -> tuple[int, list[float]]:
    """(threads, GFLOP/s of each run) of the FMA kernel; needs gcc with AVX2/FMA and OpenMP.

    Several runs, because a shared VM's clock moves (177 to 201 GFLOP/s seen on one machine).
    """
    with tempfile.TemporaryDirectory() as folder:
        source, binary = Path(folder) / "fma.c", Path(folder) / "fma"
        source.write_text(FMA_KERNEL)
        subprocess.run(["gcc", "-O2", "-mavx2", "-mfma", "-fopenmp", str(source), "-o", str(binary)], check=True)
        runs = [
            subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout.split()
            for _ in range(repeats)
        ]
    return int(runs[0][0]), [float(run[1]) for run in runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="dgla_resnet50")
    parser.add_argument(
        "--bench", type=Path, default=Path(__file__).parent / "results" / "cpu-dgla_resnet50" / "results.json",
        help="a dgla-bench results.json whose torch-eager-cpu batch-1 time bounds the speed-up",
    )  # fmt: skip
    args = parse_args(parser)
    threads, fma_runs = fma_peak_gflops()
    fma = max(fma_runs)
    ceiling = cpu_ceiling()
    gemm = ceiling.tflops * 1e3
    gflop_per_pair = 2 * measure_cost(create_model(args.model)).macs / 1e9
    record = {
        "machine": machine(),
        "commit": commit(),
        "cpus_in_affinity_mask": len(os.sched_getaffinity(0)),
        "fma_threads": threads,
        "fma_peak_gflops": fma,
        "fma_runs_gflops": fma_runs,
        "gemm_gflops": gemm,
        "gemm_kernel": ceiling.kernel,  # the fastest dense kernel here (dgla_export.benchmarking.ceilings)
        "gemm_rates_gflops": {kernel: rate * 1e3 for kernel, rate in ceiling.rates.items()},
        "model": args.model,
        "gflop_per_pair": gflop_per_pair,
        "min_ms_per_pair_at_fma_peak": gflop_per_pair / fma * 1e3,
        "min_ms_per_pair_at_gemm_rate": gflop_per_pair / gemm * 1e3,
    }
    if args.bench.exists():
        bench = json.loads(args.bench.read_text())
        eager = next(b for b in bench["backends"] if b["backend"] == "torch-eager-cpu")
        eager_ms = next(t["p50_ms"] for t in eager["timing"] if t["batch"] == 1)
        source = os.path.relpath(args.bench, Path(__file__).parents[1])
        record["eager_batch1_ms"] = {"value": eager_ms, "from": source, "commit": bench["commit"]}
        record["max_speedup_over_eager_at_fma_peak"] = eager_ms / record["min_ms_per_pair_at_fma_peak"]
        record["max_speedup_over_eager_at_gemm_rate"] = eager_ms / record["min_ms_per_pair_at_gemm_rate"]
    print(json.dumps(record, indent=2))
    print("wrote", write_json("cpu_ceiling.json", record))


if __name__ == "__main__":
    main()
