"""The GPU check: one stage of it per call, each writing its JSON into --output; scripts/gpu_check.sh
runs them in order under one time budget (docs/gpu.md).

Stages:
  env         the machine (GPU, driver, clocks, torch, CUDA, cuDNN), the GEMM ceilings of this GPU
              measured now (FP32, TF32, FP16, BF16), and what cannot run here, with why
  preprocess  the fast preprocessing of a 24 MP camera JPEG on this machine's CPU cores: one
              photo's latency, and photos/s with every core busy
  maps        Grad-CAM of the model (captum) on the GPU in FP32, TF32, FP16 and BF16 autocast
              against the CPU FP32 maps, with the logits, on the bundled photos
  bench       dgla-bench on the GPU: every PyTorch variant against the CPU FP32 reference, then
              timed at batch 1, 8, 32 and 128, with MFU and the share of the measured ceiling
  compile     the same for torch.compile (apart: its compilation can outlast the budget)
  summary     one table and summary.json from whatever the stages left, naming what is missing

--dry: on the CPU, the tiny model, small batches and a small photo: the same code in seconds, so a
visit to a GPU is never spent on a typo (make test runs it in a numpy-2 environment like the box's).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STAGES = ("env", "preprocess", "maps", "bench", "compile", "summary")
MAPS_VARIANTS = ("eager", "tf32", "autocast-fp16", "autocast-bf16")
COMMIT_FILE = Path(__file__).resolve().parents[1] / "build" / "gpu-check" / "COMMIT"
NVIDIA_SMI_FIELDS = (
    "name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.limit,"
    "temperature.gpu,pstate"
)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a stage runs: the full model on the GPU, or the tiny one on the CPU (--dry)."""

    dry: bool
    model: str
    device: str
    batches: tuple[int, ...]
    photo_size: tuple[int, int]
    gemm_size: int

    @classmethod
    def of(cls, dry: bool) -> Plan:
        if dry:
            return cls(True, "dgla_tiny", "cpu", (1, 2), (1200, 900), 512)
        return cls(False, "dgla_resnet50", "cuda", (1, 8, 32, 128), (6000, 4000), 8192)

    @property
    def maps_variants(self) -> tuple[str, ...]:
        # on the CPU only what runs there natively or cheaply: FP32, and BF16 on a tiny model
        return ("eager", "autocast-bf16") if self.dry else MAPS_VARIANTS


def provenance() -> dict[str, Any]:
    """The package's provenance; on a box without git, the commit the tree was prepared from."""
    from dgla_export.machine import commit
    from dgla_export.machine import provenance as package_provenance

    record = package_provenance()
    if commit() is None and COMMIT_FILE.is_file():
        record["commit"] = COMMIT_FILE.read_text().strip()
        record["commit_source"] = "build/gpu-check/COMMIT, written by `scripts/gpu_check.sh prepare`"
    return record


def write(output: Path, name: str, record: dict[str, Any]) -> None:
    """Write beside, then rename into place: a stage killed mid-write leaves no half file."""
    path = output / name
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(record, indent=2, default=str) + "\n")
    partial.replace(path)
    print(f"wrote {path}")


def nvidia_smi() -> dict[str, str] | str:
    try:
        result = subprocess.run(
            ["nvidia-smi", f"--query-gpu={NVIDIA_SMI_FIELDS}", "--format=csv,noheader"],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as err:
        return f"nvidia-smi did not answer: {err}"
    values = [v.strip() for v in result.stdout.strip().splitlines()[0].split(",")]
    return dict(zip(NVIDIA_SMI_FIELDS.split(","), values, strict=False))


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def not_runnable() -> dict[str, str | None]:
    """The runtimes of scripts/gpu_bench.sh this machine lacks, each with why (None: it can run)."""
    from dgla_export.runtimes.availability import onnxruntime_gpu_problem, tensorrt_problem

    return {
        "tensorrt": tensorrt_problem(),
        "onnxruntime-cuda": onnxruntime_gpu_problem("cuda"),
        "onnxruntime-tensorrt": onnxruntime_gpu_problem("tensorrt"),
        "dali": None if _importable("nvidia.dali") else "NVIDIA DALI is not installed (nvidia-dali-cuda*)",
    }


def stage_env(plan: Plan, output: Path) -> None:
    import numpy as np
    import torch

    from dgla_export.benchmarking.ceilings import cpu_ceiling
    from dgla_export.benchmarking.timing import PEAK_TFLOPS, gpu_gemm_tflops

    record: dict[str, Any] = {"plan": dataclasses.asdict(plan), **provenance(), "numpy": np.__version__}
    record["torch"] = {
        "version": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }
    if plan.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        record["gpu"] = {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "multiprocessors": props.multi_processor_count,
            "memory_gib": props.total_memory / 2**30,
            "l2_mib": getattr(props, "L2_cache_size", 0) / 2**20,
            "nvidia_smi": nvidia_smi(),
        }
        record["gemm_tflops"] = {p: gpu_gemm_tflops(p, plan.gemm_size) for p in ("fp32", "tf32", "fp16", "bf16")}
        record["datasheet_tflops"] = next((t for key, t in PEAK_TFLOPS.items() if key in props.name), None)
        record["nvidia_smi_after_gemm"] = nvidia_smi()  # the clocks under load
    else:
        record["gemm_tflops"] = {"fp32": cpu_ceiling("fp32", plan.gemm_size).tflops}
    record["not_run"] = {name: why for name, why in not_runnable().items() if why}
    write(output, "env.json", record)


def stage_preprocess(plan: Plan, output: Path) -> None:
    """One camera photo, fast path: its latency alone, then photos/s with a process per core."""
    import concurrent.futures
    import multiprocessing
    import tempfile

    from benchmarks.common import time_call
    from benchmarks.photos import sized_jpeg
    from dgla_export.models.registry import get_config
    from dgla_export.preprocess import Preprocessing

    recipe = Preprocessing.of(get_config(plan.model))
    data = sized_jpeg(plan.photo_size)
    one = time_call(lambda: recipe.apply(recipe.decode(data)), warmup=1, min_runs=5, min_seconds=2.0)
    workers = os.cpu_count() or 1
    per_worker = 4
    spawn = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    with tempfile.NamedTemporaryFile(suffix=".jpg") as photo:
        photo.write(data)
        photo.flush()
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=spawn) as pool:
            list(pool.map(_preprocess_file, [(photo.name, plan.model)] * workers))  # start and warm every worker
            started = time.perf_counter()
            list(pool.map(_preprocess_file, [(photo.name, plan.model)] * (workers * per_worker)))
            elapsed = time.perf_counter() - started
    record = {
        "photo": {"size": list(plan.photo_size), "megapixels": plan.photo_size[0] * plan.photo_size[1] / 1e6,
                  "jpeg_mb": len(data) / 1e6},
        "method": recipe.method,
        "one_photo": one,
        "workers": workers,
        "photos": workers * per_worker,
        "photos_per_s": workers * per_worker / elapsed,
    }  # fmt: skip
    write(output, "preprocess.json", record)


def _preprocess_file(job: tuple[str, str]) -> tuple[int, ...]:
    from dgla_export.models.registry import get_config
    from dgla_export.preprocess import Preprocessing

    path, model = job
    recipe = Preprocessing.of(get_config(model))
    return tuple(t.shape[-1] for t in recipe.apply(recipe.decode(Path(path).read_bytes())))


def _bundled_inputs(config: Any) -> tuple[list[str], tuple[Any, ...]]:
    from dgla_export.api.common import ImageOptions
    from dgla_export.preprocess import preprocess_batch

    images = ImageOptions.of(None).load(config)
    return [name for name, _ in images], preprocess_batch([image for _, image in images], config)


def stage_maps(plan: Plan, output: Path) -> None:
    """Grad-CAM and logits of each numeric variant on the device against the CPU FP32 ones."""
    import numpy as np
    import torch

    from dgla_export.models.registry import create_model
    from dgla_export.runtimes.torch import TorchRunner
    from dgla_export.validation import parity, reference_logits, reference_maps

    model = create_model(plan.model, weights="demo")
    config = model.config
    names, arrays = _bundled_inputs(config)
    started = time.perf_counter()
    logits, maps = reference_logits(model, arrays), reference_maps(model, arrays)
    record: dict[str, Any] = {
        "images": names,
        "reference": {"device": "cpu", "precision": "fp32", "seconds": time.perf_counter() - started},
        "variants": {},
    }
    for variant in plan.maps_variants:
        runner = TorchRunner(model, variant, plan.device)
        why = runner.unavailable()
        if why:
            record["variants"][variant] = {"skipped": why}
            continue
        runner.load()
        assert runner.net is not None
        with runner.numerics():
            reference_maps(runner.net, [a[:1] for a in arrays], device=plan.device)  # warm-up
            runner.sync()
            started = time.perf_counter()
            found_maps = reference_maps(runner.net, arrays, device=plan.device)
            runner.sync()
            seconds = time.perf_counter() - started
        found_logits = runner.infer(dict(zip(config.input_names, arrays, strict=True)))["logits"]
        runner.release()
        found = parity(
            logits, {"logits": found_logits, "cam": found_maps.astype(np.float32)},
            tolerance=config.tolerances[runner.precision], names=names, class_names=config.class_names,
            reference_cams=maps,
        )  # fmt: skip
        assert found.maps is not None
        record["variants"][variant] = {
            "precision": runner.precision,
            "passed": found.logits.passed and found.maps.passed,
            "logits": found.logits.to_dict(),
            "maps": found.maps.to_dict(),
            "maps_seconds_per_image": seconds / len(names),  # every class's map, gradients included
        }
        verdict = "passed" if record["variants"][variant]["passed"] else "FAILED"
        print(f"maps {variant} on {plan.device}: {verdict}")
    if plan.device == "cuda":
        torch.cuda.empty_cache()
    write(output, "maps.json", record)


def stage_bench(plan: Plan, output: Path, compiled: bool) -> None:
    """dgla-bench's own run (its records, tables and plot) on the plan's device."""
    from dgla_export.api.bench import bench
    from dgla_export.benchmarking.catalogue import catalogue
    from dgla_export.benchmarking.run import BenchOptions

    torch_backends = [b for b in catalogue([plan.device]) if b.source == "model" and not b.unavailable({}, None)]
    if compiled:  # the fastest combination only: each batch size is a compilation of a minute or more
        names = [b.name for b in torch_backends if b.variant == "autocast-fp16+channels_last+compile"]
    else:
        names = [b.name for b in torch_backends if b.default]
    folder = output / ("bench-compile" if compiled else "bench")
    if not names:
        write(
            output, f"{folder.name}.skipped.json", {"skipped": "nothing to run here", "plan": dataclasses.asdict(plan)}
        )
        return
    options = BenchOptions(batches=plan.batches, rounds=1, min_runs=5, min_seconds=1.0, warmup=2)
    result = bench(
        model=plan.model, weights="demo", backends=names, devices=[plan.device], options=options,
        output=folder, force=True, progress=print,
    )  # fmt: skip
    measured = len(result.measured())
    print(f"{folder.name}: {measured} of {len(names)} variants measured, parity failed: {result.parity_failed}")


def _read(output: Path, name: str) -> dict[str, Any] | None:
    path = output / name
    return json.loads(path.read_text()) if path.is_file() else None


def _bench_rows(results: dict[str, Any]) -> list[str]:
    rows = []
    for backend in results["backends"]:
        parity = backend.get("parity") or {}
        timing = {t["batch"]: t for t in backend.get("timing", [])}
        last = timing[max(timing)] if timing else {}
        why = backend.get("skipped") or backend.get("failed") or ""
        cells = [
            f"`{backend['backend']}`",
            backend["verdict"] + (f" ({why})" if why else ""),
            f"{parity['probs']['max_abs']:.1e}" if parity else "-",
            str(len(parity.get("flips", []))) if parity else "-",
            *(f"{timing[b]['p50_ms']:.2f}" if b in timing else "-" for b in sorted(results["options"]["batches"])),
            f"{last['throughput_pairs_s']:.1f}" if last else "-",
            f"{last['mfu']:.1%}" if last.get("mfu") else "-",
            f"{last['gemm_fraction']:.0%}" if last.get("gemm_fraction") else "-",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _rate(tflops: float) -> str:
    return f"{tflops:.1f} TFLOP/s" if tflops >= 1 else f"{tflops * 1e3:.0f} GFLOP/s"


def summarise(output: Path) -> int:
    """summary.json and summary.md from the stages' files; exit 0 all ran and passed, 3 a variant
    failed parity, 1 a stage left nothing (it crashed or ran out of time: stages.json says which)."""
    stages = _read(output, "stages.json") or {}
    env, maps, prep = _read(output, "env.json"), _read(output, "maps.json"), _read(output, "preprocess.json")
    benches = {name: _read(output, f"{name}/results.json") for name in ("bench", "bench-compile")}
    missing = [name for name, info in stages.items() if info.get("rc") != 0 and name != "summary"]
    failed = [v for v, r in (maps or {}).get("variants", {}).items() if r.get("passed") is False]
    failed += [
        b for r in benches.values() if r for b in (x["backend"] for x in r["backends"] if x["verdict"] == "failed")
    ]
    lines = ["# GPU check", ""]
    if env:
        gpu = env.get("gpu", {}).get("name", env["plan"]["device"])
        lines += [
            f"Machine: {gpu}; torch {env['torch']['version']} (CUDA {env['torch']['cuda']}, cuDNN "
            f"{env['torch']['cudnn']}), numpy {env['numpy']}; commit {env.get('commit')}.",
            "GEMM ceilings measured in this run: "
            + ", ".join(f"{p.upper()} {_rate(t)}" for p, t in env["gemm_tflops"].items()) + ".",
            "",
        ]  # fmt: skip
    if maps:
        lines += ["## Grad-CAM and logits against the CPU FP32 reference", "",
                  "| variant | verdict | max prob err | flips | top-1 map max err | hottest agrees | s per image |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for variant, r in maps["variants"].items():
            if "skipped" in r:
                lines.append(f"| {variant} | skipped: {r['skipped']} | | | | | |")
                continue
            lines.append(
                f"| {variant} | {'passed' if r['passed'] else 'FAILED'} | {r['logits']['probs']['max_abs']:.1e} | "
                f"{len(r['logits']['flips'])} | {r['maps']['top1_max_abs']:.1e} | "
                f"{r['maps']['hottest_agreement']:.0%} | {r['maps_seconds_per_image']:.3f} |"
            )
        lines.append("")
    for name, results in benches.items():
        if not results:
            continue
        batches = sorted(results["options"]["batches"])
        lines += [f"## {name}: parity, then p50 latency (ms) per batch", "",
                  "| backend | verdict | max prob err | flips | " + " | ".join(f"b{b}" for b in batches)
                  + f" | pairs/s (b{batches[-1]}) | MFU | of GEMM |",
                  "| --- | --- | ---: | ---: |" + " ---: |" * (len(batches) + 3), *_bench_rows(results),
                  ""]  # fmt: skip
    if prep:
        lines += [
            f"Fast preprocessing of one {prep['photo']['megapixels']:.0f} MP JPEG ({prep['photo']['jpeg_mb']:.1f} MB): "
            f"p50 {prep['one_photo']['p50_ms']:.0f} ms in one process; {prep['photos_per_s']:.1f} photos/s on "
            f"{prep['workers']} processes.",
            "",
        ]
    if env and env.get("not_run"):
        lines += ["## Not run on this machine", "", *(f"- {k}: {v}" for k, v in env["not_run"].items()), ""]
    if missing:
        lines += ["## Stages that left nothing", "", *(f"- {k}: {stages[k]}" for k in missing), ""]
    verdict = 1 if missing else 3 if failed else 0
    summary = {"stages": stages, "missing": missing, "parity_failed": failed, "exit": verdict}
    write(output, "summary.json", summary)
    (output / "summary.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return verdict


STAGE_FUNCTIONS = {
    "env": stage_env,
    "preprocess": stage_preprocess,
    "maps": stage_maps,
    "bench": lambda plan, output: stage_bench(plan, output, compiled=False),
    "compile": lambda plan, output: stage_bench(plan, output, compiled=True),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--dry", action="store_true", help="CPU, tiny model, seconds (make test runs it)")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    plan = Plan.of(args.dry)
    if args.stage == "summary":
        return summarise(args.output)
    from dgla_export.console import quiet_libraries

    quiet_libraries(verbose=False)
    STAGE_FUNCTIONS[args.stage](plan, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
