"""What ``--explain`` costs: latency and throughput of a graph with and without the ``cam`` outputs.

The two graphs (the same weights and precision, one exported with ``--explain``) and a second
session of the plain one are called in turn (in a random order each turn), so that a change of the machine's
state (clock, neighbours: it lasts seconds on a shared VM) falls on all of them alike; each call
is ``infer``: inputs in, every output back on the host (the maps included: a user pays for their
copy too). Each round gives the median over turns of the explained graph's latency over the plain
one's; the difference is the median over rounds. The second plain session is an A/A control: the
same measurement between two identical graphs, whose typical round figure is the run-to-run noise.
The goal is a difference within that noise, and at most 2%.

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
import time
from pathlib import Path
from random import Random
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, commit, machine, parse_args
from dgla_export.console import quiet_libraries

GOAL = 0.02
RUNTIMES = ("onnxruntime-cpu", "onnxruntime-cuda", "tensorrt")


def export_pair(folder: Path, precision: str) -> tuple[Path, Path]:
    """The demo dgla_resnet50 exported twice (no validation: this measures speed, not parity)."""
    from dgla_export import create_model
    from dgla_export.export.onnx_export import ExportOptions, export_onnx
    from dgla_export.models.identity import identify

    model = create_model("dgla_resnet50", weights="demo")
    paths = []
    for explain in (False, True):
        path = folder / f"dgla_resnet50_{precision}{'_explain' if explain else ''}.onnx"
        print(f"exporting {path.name}", flush=True)
        options = ExportOptions(precision=precision, max_batch=32, explain=explain)  # type: ignore[arg-type]
        export_onnx(model, path, options=options, checkpoint=identify("demo", model))
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


def measure(runners: dict[str, Any], batch: int, rounds: int, seconds: float) -> list[dict[str, list[float]]]:
    """Per round, every graph's per-call latencies (ms), the graphs called in turn, in a random order
    each turn: a fixed order favours the graph that is called twice in a row at the turns' edges
    (its weights still in cache); a shared order lets a change of the machine's state fall on all alike."""
    random = Random(0)
    feed = feed_for(batch)
    for runner in runners.values():
        for _ in range(2):
            runner.infer(feed)  # warm-up
    names = list(runners)
    measured = []
    for index in range(rounds):
        calls: dict[str, list[float]] = {name: [] for name in names}
        started, turn = time.perf_counter(), 0
        while turn < 5 or time.perf_counter() - started < seconds * len(names):
            for name in random.sample(names, len(names)):
                begin = time.perf_counter()
                runners[name].infer(feed)
                calls[name].append((time.perf_counter() - begin) * 1e3)
            turn += 1
        measured.append(calls)
        latest = ", ".join(f"{name} {np.median(values):.1f} ms" for name, values in calls.items())
        print(f"batch {batch} round {index + 1}/{rounds}: {latest}", flush=True)
    return measured


def paired(measured: list[dict[str, list[float]]], name: str) -> np.ndarray:
    """Per round, the median over turns of ``name``'s latency over the plain graph's in the same turn."""
    return np.array([np.median(np.array(calls[name]) / np.array(calls["plain"])) for calls in measured]) - 1


def summarise(batch: int, measured: list[dict[str, list[float]]]) -> dict[str, Any]:
    pooled = {name: np.concatenate([calls[name] for calls in measured]) for name in measured[0]}
    rounds, control = paired(measured, "explained"), paired(measured, "plain-again")
    difference = float(np.median(rounds))
    # The noise: what the same measurement says of two sessions of the plain graph (an A/A control),
    # as the typical size of one round's figure.
    noise = float(np.median(np.abs(control)))
    plain_ms, explained_ms = float(np.median(pooled["plain"])), float(np.median(pooled["explained"]))
    return {
        "batch": batch,
        "plain_ms": plain_ms,
        "explained_ms": explained_ms,
        "plain_pairs_s": batch * 1e3 / plain_ms,
        "explained_pairs_s": batch * 1e3 / explained_ms,
        "difference": difference,
        "control_difference": float(np.median(control)),
        "noise": noise,
        "within_noise": abs(difference) <= noise,
        "within_goal": difference <= GOAL,
        "round_differences": rounds.tolist(),
        "round_control_differences": control.tolist(),
        "calls": {name: len(values) for name, values in pooled.items()},
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
    args = parse_args(parser)
    quiet_libraries(verbose=False)
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
                   "explained": runner_for(args.runtime, args.explained, args.precision),
                   "plain-again": runner_for(args.runtime, args.plain, args.precision)}  # fmt: skip
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
        "| batch | without ms | with ms | without pairs/s | with pairs/s | difference | A/A control | "
        "run-to-run noise | within noise | <= 2% |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['batch']} | {r['plain_ms']:.1f} | {r['explained_ms']:.1f} | {r['plain_pairs_s']:.2f} | "
            f"{r['explained_pairs_s']:.2f} | {r['difference']:+.2%} | {r['control_difference']:+.2%} | "
            f"{r['noise']:.2%} | "
            f"{'yes' if r['within_noise'] else 'no'} | {'met' if r['within_goal'] else 'MISSED'} |"
        )
    (args.output / "explain_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(r["within_goal"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
