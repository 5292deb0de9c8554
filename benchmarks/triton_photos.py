"""Load run of the served ensemble with camera-sized photos, before and after the fast path.

For each preprocessing path (``exact``: what ``dgla_preprocess`` ran before; ``fast``: the
default now), a repository of the full FP32 graph is served by dgla-serve's Triton on this CPU and
perf_analyzer sends ``dgla`` JPEGs of 600x450 and then of 6000x4000 (four held-out photos each,
the small ones being the same photos reduced), at concurrency 1 and 2. The goal: at concurrency 2,
6000x4000 throughput >= 80% of 600x450 throughput.

    python benchmarks/triton_photos.py --onnx build/dgla_resnet50.onnx
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, parse_args
from benchmarks.photos import photo_bytes, sources
from benchmarks.triton_cpu import batch_stats, free_ports, input_data, load_run, perf_analyzer
from dgla_export.machine import provenance
from dgla_export.triton.client import classify
from dgla_export.triton.repository import TritonOptions, write_repository
from dgla_export.triton.server import TritonServer

SIZES = {"600x450": (600, 450), "6000x4000": (6000, 4000)}
LEVELS = 2


def photos(size: tuple[int, int], count: int = 4) -> list[bytes]:
    from PIL import Image

    images = []
    for index, (_, pixels) in enumerate(sources()[:count]):
        big = photo_bytes(pixels, SIZES["6000x4000"], seed=index)
        if size != SIZES["6000x4000"]:  # the same photo, reduced as a camera's preview would be
            buffer = io.BytesIO()
            Image.open(io.BytesIO(big)).resize(size, Image.Resampling.LANCZOS).save(buffer, "JPEG", quality=90)
            big = buffer.getvalue()
        images.append(big)
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", type=Path, required=True, help="FP32 graph from `dgla-export onnx`")
    parser.add_argument("--output", type=Path, default=RESULTS / "preprocess-cpu" / "load")
    parser.add_argument("--requests", type=int, default=12, help="requests per measurement window")
    args = parse_args(parser)
    args.output.mkdir(parents=True, exist_ok=True)
    binary, env = perf_analyzer()
    workdir = Path(tempfile.mkdtemp(prefix="dgla-photo-load-"))
    results: dict[str, Any] = {**provenance(), "onnx": str(args.onnx), "runs": []}
    try:
        data = {label: input_data(workdir, photos(size), f"{label}.json") for label, size in SIZES.items()}
        warm = workdir / "warm.jpg"
        warm.write_bytes(photos(SIZES["6000x4000"], 1)[0])
        for method in ("exact", "fast"):
            repository = workdir / f"repo-{method}"
            write_repository(args.onnx, repository, options=TritonOptions(preprocess=method))
            ports = free_ports()
            with TritonServer(repository, ports) as server:
                server.wait_ready(timeout=600)
                for _ in range(2):
                    classify([warm] * 2, url=ports.urls["grpc"], concurrency=2)
                for label in SIZES:
                    started = time.monotonic()
                    rows = load_run(
                        binary, env, ports, "dgla", ["--input-data", str(data[label]), "--shape", "image:1"],
                        args.output, levels=LEVELS, requests=args.requests, label=f"dgla-{method}-{label}",
                    )  # fmt: skip
                    results["runs"] += [dict(row, preprocess=method, photos=label) for row in rows]
                    print(f"{method} {label}: {[round(r['inferences_per_s'], 2) for r in rows]} pairs/s "
                          f"({time.monotonic() - started:.0f} s)", flush=True)  # fmt: skip
                results.setdefault("executed_batch_sizes", {})[method] = batch_stats(server, "dgla_onnx")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ratios = {}
    for method in ("exact", "fast"):
        throughput = {
            r["photos"]: r["inferences_per_s"]
            for r in results["runs"]
            if r["preprocess"] == method and r["concurrency"] == 2
        }
        ratios[method] = throughput["6000x4000"] / throughput["600x450"]
    results["ratio_6000x4000_vs_600x450_at_concurrency_2"] = ratios
    (args.output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| preprocessing | photos | concurrency | pairs/s | p50 ms | p90 ms | p99 ms |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in results["runs"]:
        lines.append(f"| {r['preprocess']} | {r['photos']} | {r['concurrency']} | {r['inferences_per_s']:.2f} | "
                     f"{r['p50_ms']:.0f} | {r['p90_ms']:.0f} | {r['p99_ms']:.0f} |")  # fmt: skip
    lines.append("")
    lines += [f"{m}: 6000x4000 / 600x450 throughput at concurrency 2 = {v:.0%}" for m, v in ratios.items()]
    (args.output / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
