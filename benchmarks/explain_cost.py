"""What ``--explain`` costs: latency and throughput of a graph with and without the ``cam`` outputs.

The two graphs (the same weights and precision, one exported with ``--explain``) are timed in
interleaved rounds (A B B A ...), so drift of the machine (clock, cache, neighbours) falls on both;
each call is ``infer``: inputs in, every output back on the host (the maps included: a user pays
for their copy too). The run-to-run noise is the median change between consecutive rounds of the
same graph; the goal is a difference within that noise, and at most 2%.

    python benchmarks/explain_cost.py                       # ONNX Runtime CPU, demo FP32 graphs exported here
    python benchmarks/explain_cost.py --runtime onnxruntime-cuda --plain A.onnx --explained B.onnx
    python benchmarks/explain_cost.py --runtime tensorrt --plain A.plan --explained B.plan

Writes OUTPUT/explain_cost.json and .md (default benchmarks/results/explain-cpu/).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, commit, machine, time_call

GOAL = 0.02
RUNTIMES = ("onnxruntime-cpu", "onnxruntime-cuda", "tensorrt")


def export_pair(folder: Path, precision: str) -> tuple[Path, Path]:
    """The demo dgla_resnet50 exported twice (no validation: this measures speed, not parity)."""
    from dgla_export import create_model
    from dgla_export.export.onnx_export import ExportOptions, export_onnx
    from dgla_export.models.weights import state_dict_sha256

    model = create_model("dgla_resnet50", weights="demo")
    paths = []
    for explain in (False, True):
        path = folder / f"dgla_resnet50_{precision}{'_explain' if explain else ''}.onnx"
        print(f"exporting {path.name}", flush=True)
        options = ExportOptions(precision=precision, max_batch=32, explain=explain)  # type: ignore[arg-type]
        export_onnx(model, path, options=options, checkpoint_sha256=state_dict_sha256(model))
        paths.append(path)
    return paths[0], paths[1]


def runner_for(runtime: str, path: Path, precision: str) -> Any:
    if runtime == "tensorrt":
        from dgla_export.runtimes.tensorrt import TensorRTRunner

        return TensorRTRunner(path)
    from dgla_export.runtimes.onnxruntime import OnnxRuntimeRunner

    return OnnxRuntimeRunner(path, "cpu" if runtime == "onnxruntime-cpu" else "cuda", precision)


def feed_for(batch: int) -> dict[str, np.ndarray]:
    """A batch of the bundled photos, preprocessed (real pixels, not noise)."""
    from dgla_export.data import sample_images
    from dgla_export.models.registry import get_config
    from dgla_export.preprocess import preprocess_batch

    config = get_config("dgla_resnet50")
    images = [image for _, image in sample_images()]
    arrays = preprocess_batch([images[i % len(images)] for i in range(batch)], config)
    return dict(zip(config.input_names, arrays, strict=True))


def measure(runners: dict[str, Any], batch: int, rounds: int, seconds: float) -> dict[str, list[float]]:
    """Per graph, the median latency (ms) of each round, the order alternating A B, B A, ..."""
    feed = feed_for(batch)
    medians: dict[str, list[float]] = {name: [] for name in runners}
    for index in range(rounds):
        order = list(runners) if index % 2 == 0 else list(reversed(runners))
        for name in order:
            runner = runners[name]
            stats = time_call(lambda r=runner: r.infer(feed), warmup=2, min_runs=5, min_seconds=seconds)
            medians[name].append(stats["p50_ms"])
        latest = ", ".join(f"{name} {values[-1]:.1f} ms" for name, values in medians.items())
        print(f"batch {batch} round {index + 1}/{rounds}: {latest}", flush=True)
    return medians


def summarise(batch: int, medians: dict[str, list[float]]) -> dict[str, Any]:
    plain, explained = (np.array(medians[name]) for name in ("plain", "explained"))
    noise = float(np.median(np.abs(np.diff(plain)) / plain[:-1])) if len(plain) > 1 else float("nan")
    difference = float(np.median(explained) / np.median(plain) - 1)
    return {
        "batch": batch,
        "plain_ms": float(np.median(plain)),
        "explained_ms": float(np.median(explained)),
        "plain_pairs_s": batch * 1e3 / float(np.median(plain)),
        "explained_pairs_s": batch * 1e3 / float(np.median(explained)),
        "difference": difference,
        "noise": noise,
        "within_noise": abs(difference) <= noise,
        "within_goal": difference <= GOAL,
        "rounds": medians,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime", choices=RUNTIMES, default="onnxruntime-cpu")
    parser.add_argument("--plain", type=Path, help="graph or engine without --explain (default: export the demo)")
    parser.add_argument("--explained", type=Path, help="the same, exported with --explain")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16"], help="of the graphs exported here")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes (default 1,8)")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds per batch size (default 8)")
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum seconds per round and graph")
    parser.add_argument("--output", type=Path, default=RESULTS / "explain-cpu")
    args = parser.parse_args()
    provenance = {"machine": machine(), "commit": commit()}  # of the code as it starts
    batches = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory(prefix="dgla-explain-cost-") as tmp:
        if (args.plain is None) != (args.explained is None):
            parser.error("give both --plain and --explained, or neither")
        if args.plain is None:
            if args.runtime == "tensorrt":
                parser.error("--runtime tensorrt needs --plain and --explained engines")
            args.plain, args.explained = export_pair(Path(tmp), args.precision)
        runners = {"plain": runner_for(args.runtime, args.plain, args.precision),
                   "explained": runner_for(args.runtime, args.explained, args.precision)}  # fmt: skip
        for runner in runners.values():
            runner.load()
        outputs = {name: sorted(runner.infer(feed_for(1))) for name, runner in runners.items()}
        if "cam" in outputs["plain"] or "cam" not in outputs["explained"]:
            parser.error(f"--plain must lack the cam output and --explained have it; outputs: {outputs}")
        rows = [summarise(batch, measure(runners, batch, args.rounds, args.seconds)) for batch in batches]
        details = runners["plain"].details()
        for runner in runners.values():
            runner.release()
    record = {
        **provenance,
        "runtime": args.runtime,
        "runtime_details": details,
        "precision": args.precision,
        "graphs": {"plain": str(args.plain), "explained": str(args.explained)},
        "outputs": outputs,
        "goal": f"difference within the run-to-run noise and <= {GOAL:.0%}",
        "rows": rows,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "explain_cost.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        f"{args.runtime}, {args.precision}; {provenance['machine'].get('cpu')}; commit {provenance['commit']}",
        "",
        "| batch | without ms | with ms | without pairs/s | with pairs/s | difference | run-to-run noise | "
        "within noise | <= 2% |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['batch']} | {r['plain_ms']:.1f} | {r['explained_ms']:.1f} | {r['plain_pairs_s']:.2f} | "
            f"{r['explained_pairs_s']:.2f} | {r['difference']:+.2%} | {r['noise']:.2%} | "
            f"{'yes' if r['within_noise'] else 'no'} | {'met' if r['within_goal'] else 'MISSED'} |"
        )
    (args.output / "explain_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(r["within_goal"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
