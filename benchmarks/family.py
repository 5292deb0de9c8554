"""The family side by side: every full-size registered architecture's inputs, parameters and MACs
(counted by the package: ``dgla_export.models.cost``), and its FP32 ONNX Runtime latency on this
CPU at batch 1 on the bundled photos, the graphs called in turn so that a change of the machine's
state falls on all alike.

    python benchmarks/family.py            # writes benchmarks/results/family/family.{json,md}

The demo weights are untrained: the latencies are the architectures', not a trained model's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, commit, loaded, machine, parse_args, write_json
from dgla_export.console import quiet_libraries

FAMILY = ("resnet50", "dbi_resnet50", "gla_resnet50", "dgla_resnet50", "arl_cnn50")


def feed(config) -> dict[str, np.ndarray]:
    from dgla_export.data import sample_images
    from dgla_export.preprocess import preprocess_batch

    arrays = preprocess_batch([sample_images()[0][1]], config)
    return dict(zip(config.input_names, arrays, strict=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="timing per architecture (default 20)")
    parser.add_argument("--output", type=Path, default=RESULTS / "family")
    args = parse_args(parser)
    quiet_libraries(verbose=False)
    from dgla_export import create_model
    from dgla_export.export.onnx_export import ExportOptions, export_onnx
    from dgla_export.models.cost import measure_cost
    from dgla_export.models.identity import identify

    rows, runners, feeds = [], {}, {}
    with tempfile.TemporaryDirectory(prefix="dgla-family.") as tmp:
        for name in FAMILY:
            model = create_model(name, weights="demo")
            cost = measure_cost(model)
            contract = model.config.architecture
            path = Path(tmp) / f"{name}.onnx"
            started = time.perf_counter()
            export_onnx(model, path, options=ExportOptions(max_batch=2), checkpoint=identify("demo", model))
            print(f"{name}: {cost.params:,} parameters, {cost.macs / 1e9:.2f} GMAC, exported in "
                  f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
            rows.append(
                {
                    "model": name,
                    "block": model.config.block,
                    "inputs": contract.input_sizes,
                    "spec_version": contract.spec_version,
                    "params": cost.params,
                    "macs": cost.macs,
                    "gflops": 2 * cost.macs / 1e9,
                }
            )
            runners[name], feeds[name] = loaded(path), feed(model.config)
        latencies: dict[str, list[float]] = {name: [] for name in FAMILY}
        for runner_name, runner in runners.items():
            for _ in range(2):
                runner.infer(feeds[runner_name])  # warm-up
        started = time.perf_counter()
        while time.perf_counter() - started < args.seconds * len(FAMILY) or min(map(len, latencies.values())) < 5:
            for name in FAMILY:
                begin = time.perf_counter()
                runners[name].infer(feeds[name])
                latencies[name].append((time.perf_counter() - begin) * 1e3)
    for row in rows:
        values = np.array(latencies[row["model"]])
        row["ort_fp32_batch1_p50_ms"] = float(np.median(values))
        row["calls"] = len(values)
    record = {"machine": machine(), "commit": commit(), "rows": rows}
    args.output.mkdir(parents=True, exist_ok=True)
    path = write_json(str((args.output / "family.json").relative_to(RESULTS)), record)
    lines = [
        f"# The family on this CPU ({record['machine'].get('cpu_flags', '')}), commit {record['commit']}",
        "",
        "| model | inputs | parameters | GFLOPs | ORT FP32 batch 1 p50 (ms) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        inputs = " + ".join(str(size) for size in row["inputs"].values())
        latency = row["ort_fp32_batch1_p50_ms"]
        lines.append(f"| {row['model']} | {inputs} | {row['params']:,} | {row['gflops']:.2f} | {latency:.0f} |")
    (args.output / "family.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
