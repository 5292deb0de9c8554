"""INT8 for the CPU, compared honestly: the package's own sensitivity search (``dgla-export onnx
--precision int8``) against NNCF's post-training quantisation, plain and accuracy-controlled, on
the same FP32 graph, the same calibration images (the 6 bundled photos) and the same held-out
images (the 10 others of `int8_curve.py`), scored as `int8_curve.py` scores (against the FP32
graph: probability error, flips, flips where FP32's margin is >= 0.05) and timed on the CPU
runtimes that run each.

NNCF's accuracy control is given the package's own target: its metric is 1 - the largest
probability error against the FP32 graph on the calibration images, its ``max_drop`` 0.05 (the
int8 tolerance's probs_abs), so both searches chase the same bound on the same images and are
then judged on images neither saw. NNCF works on OpenVINO's model of the graph and returns an
OpenVINO model (FakeQuantize), which only OpenVINO runs; the package's Q/DQ graph runs on ONNX
Runtime and on OpenVINO, both timed. Beside them, ``nncf_onnx``: NNCF on the ONNX graph (its ONNX
backend, what ``dgla-export onnx --precision int8 --int8-target openvino`` runs), a Q/DQ graph
timed on OpenVINO and ONNX Runtime, to show whether it runs as fast in OpenVINO as NNCF's own IR;
and OpenVINO's FP32 graph in BF16 where the CPU computes it natively, the precision INT8 must beat.
Everything is timed interleaved in one run at batch 1 and 4.

    python benchmarks/int8_nncf.py --onnx build/dgla_resnet50.onnx --record int8-cpu/nncf-HOST.json

Accuracy control is run only with --accuracy-control (it did not finish in 15 minutes on 2 cores).

Each NNCF run is given at most --limit-minutes in a process of its own (accuracy control on 2
cores can take far longer: it compiles and scores a model for each of ~150 quantizer groups, and
ranks again after each revert); one that does not finish is recorded as such. Writes
benchmarks/results/int8-cpu/nncf.json (or --record). NNCF's usage telemetry is off for the run
(dgla_export.quantize_nncf imports it so, and OpenVINO, whose import
would send one, before anything else does).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import json
import multiprocessing
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import commit, loaded, machine, parse_args, time_call, write_json
from benchmarks.int8_curve import image_sets, score
from dgla_export.artefacts.graph import graph_metadata, load_graph
from dgla_export.compare import softmax
from dgla_export.models.config import ModelConfig
from dgla_export.quantize import QuantizationOptions, quantize_onnx, runner_logits
from dgla_export.quantize_nncf import import_nncf
from dgla_export.runtimes.openvino import OpenVINORunner, openvino_problem

MAX_DROP = 0.05


def ready(runner: OpenVINORunner) -> OpenVINORunner:
    runner.load()
    return runner


def nncf_quantize(onnx_path: Path, inputs: dict[str, np.ndarray], accuracy_control: bool, output: Path) -> float:
    """NNCF on OpenVINO's model of the graph, calibrated on ``inputs``, saved to ``output`` (IR);
    with ``accuracy_control`` layers are reverted to float until the probability error on
    ``inputs`` is within MAX_DROP. Returns the seconds it took."""
    nncf = import_nncf()  # no usage telemetry from NNCF or OpenVINO (in the spawned process too)
    import openvino

    model = openvino.Core().read_model(str(onnx_path))
    count = len(next(iter(inputs.values())))
    items = [{name: array[i : i + 1] for name, array in inputs.items()} for i in range(count)]
    dataset = nncf.Dataset(items)
    started = time.perf_counter()
    if accuracy_control:
        reference = softmax(runner_logits(loaded(onnx_path), inputs).astype(np.float64))

        def metric(compiled: Any, data: Any) -> tuple[float, None]:
            probs = np.concatenate([compiled(item)[compiled.output("probs")] for item in data])
            return 1.0 - float(np.abs(probs - reference).max()), None

        quantized = nncf.quantize_with_accuracy_control(
            model, dataset, dataset, metric, max_drop=MAX_DROP, subset_size=count, target_device=nncf.TargetDevice.CPU
        )
    else:
        quantized = nncf.quantize(model, dataset, subset_size=count, target_device=nncf.TargetDevice.CPU)
    seconds = time.perf_counter() - started
    openvino.save_model(quantized, str(output), compress_to_fp16=False)
    return seconds


def nncf_quantize_onnx(onnx_path: Path, inputs: dict[str, np.ndarray], output: Path) -> float:
    """NNCF on the ONNX graph (its ONNX backend), as ``--int8-target openvino`` runs it without labels:
    a Q/DQ graph saved to ``output``. Returns the seconds it took."""
    import onnx

    from dgla_export.quantize import explanation_nodes

    nncf = import_nncf()
    graph = onnx.load(str(onnx_path))
    count = len(next(iter(inputs.values())))
    dataset = nncf.Dataset([{name: array[i : i + 1] for name, array in inputs.items()} for i in range(count)])
    started = time.perf_counter()
    quantized = nncf.quantize(
        graph, dataset, subset_size=count, target_device=nncf.TargetDevice.CPU,
        ignored_scope=nncf.IgnoredScope(names=explanation_nodes(graph)),
    )  # fmt: skip
    seconds = time.perf_counter() - started
    onnx.save_model(quantized, str(output))
    return seconds


def bounded(job: Any, limit_s: float) -> tuple[Any, str | None]:
    """``job()`` in a fresh process, given up after ``limit_s`` seconds: (result, None) or (None, why)."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        future = pool.submit(job)
        try:
            return future.result(timeout=limit_s), None
        except concurrent.futures.TimeoutError:
            for process in list(pool._processes.values()):  # the executor cannot cancel a running job
                process.kill()
            return None, f"did not finish within {limit_s:.0f} s"


def interleaved(runners: dict[str, Any], feed: dict[str, np.ndarray], seconds: float, rounds: int = 2) -> dict:
    """p50 per runner, timed in turn ``rounds`` times (a slow spell falls on all alike)."""
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            samples[name].append(time_call(lambda r=runner: r.infer(feed), min_seconds=seconds)["p50_ms"])
    return {name: float(np.median(values)) for name, values in samples.items()}


def main() -> int:
    nncf = import_nncf()  # before anything imports it: no usage telemetry
    import onnxruntime
    import openvino

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, required=True, help="FP32 graph from `dgla-export onnx`")
    parser.add_argument("--min-seconds", type=float, default=4.0, help="timing per graph, batch and round")
    parser.add_argument("--limit-minutes", type=float, default=25.0, help="the most each NNCF run may take")
    parser.add_argument("--save-own", type=Path, metavar="FILE", help="also keep the own search's INT8 graph there")
    parser.add_argument("--accuracy-control", action="store_true", help="also run NNCF's accuracy control (long)")
    parser.add_argument("--record", default="int8-cpu/nncf.json", help="where under benchmarks/results to write")
    args = parse_args(parser)
    graph = load_graph(args.onnx)
    config = ModelConfig.from_dict(json.loads(graph_metadata(graph)["config"]))
    images, sets = image_sets(graph)
    fp32 = loaded(args.onnx)
    reference = {name: runner_logits(fp32, inputs) for name, inputs in sets.items()}
    candidates: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="dgla-nncf.") as tmp:
        own = Path(tmp) / "own_int8.onnx"
        print("own sensitivity search (ONNX Runtime's quantizer, QDQ) ...", flush=True)
        started = time.perf_counter()
        report = quantize_onnx(args.onnx, own, config, images["calibration"], options=QuantizationOptions())
        if args.save_own is not None:
            shutil.copyfile(own, args.save_own)
        candidates["own"] = {
            "method": "the package's sensitivity search (Q/DQ ONNX)",
            "quantize_s": time.perf_counter() - started,
            "kept_out_units": len(report.kept_out),
            "int8_mac_share": report.int8_mac_share,
            "runners": {"onnxruntime": loaded(own), "openvino": ready(OpenVINORunner(own, "int8"))},
        }
        print("nncf_onnx (NNCF's ONNX backend, Q/DQ) ...", flush=True)
        qdq = Path(tmp) / "nncf_onnx.onnx"
        candidates["nncf_onnx"] = {
            "method": "nncf.quantize on the ONNX graph (Q/DQ ONNX, the package's --int8-target openvino)",
            "quantize_s": nncf_quantize_onnx(args.onnx, sets["calibration"], qdq),
            "runners": {"onnxruntime": loaded(qdq), "openvino": ready(OpenVINORunner(qdq, "int8"))},
        }
        for accuracy_control in (False, True) if args.accuracy_control else (False,):
            label = "nncf_accuracy_control" if accuracy_control else "nncf"
            method = "nncf.quantize_with_accuracy_control" if accuracy_control else "nncf.quantize"
            print(f"{label} (at most {args.limit_minutes:.0f} min) ...", flush=True)
            xml = Path(tmp) / f"nncf_{int(accuracy_control)}.xml"
            job = functools.partial(nncf_quantize, args.onnx, sets["calibration"], accuracy_control, xml)
            seconds, why = bounded(job, args.limit_minutes * 60)
            if why is not None:
                candidates[label] = {"method": method, "quantize_s": None, "not_finished": why}
                print(f"{label}: {why}", flush=True)
                continue
            runners = {"openvino": ready(OpenVINORunner(xml, "int8"))}
            candidates[label] = {"method": method, "quantize_s": seconds, "runners": runners}
        ov_fp32 = ready(OpenVINORunner(args.onnx, "fp32"))
        finished = {label: c for label, c in candidates.items() if "runners" in c}
        for label, candidate in finished.items():
            candidate["scores"] = {
                runtime: {name: score(reference[name], runner_logits(runner, inputs)) for name, inputs in sets.items()}
                for runtime, runner in candidate["runners"].items()
            }
            print(label, json.dumps(candidate["scores"]), flush=True)
        timed = {"onnxruntime_fp32": fp32, "openvino_fp32": ov_fp32}
        if openvino_problem("bf16") is None:
            timed["openvino_bf16"] = ready(OpenVINORunner(args.onnx, "bf16"))
        for label, candidate in finished.items():
            timed |= {f"{runtime}_{label}": runner for runtime, runner in candidate["runners"].items()}
        timing = {}
        for batch in (1, 4):
            feed = {k: v[:batch] for k, v in sets["heldout"].items()}
            timing[f"batch{batch}"] = p50 = interleaved(timed, feed, args.min_seconds)
            print(f"batch {batch}: " + ", ".join(f"{k} {v:.0f} ms" for k, v in p50.items()), flush=True)
    for candidate in finished.values():
        del candidate["runners"]
    record = {
        "machine": machine(),
        "commit": commit(),
        "tools": {
            "own": f"dgla_export.quantize (onnxruntime {onnxruntime.__version__} quantize_static, QDQ, target cpu)",
            "nncf": f"nncf {nncf.__version__}, target_device CPU: on OpenVINO {openvino.get_version()}'s model "
            "(nncf), on the ONNX graph (nncf_onnx)",
        },
        "onnx": str(args.onnx),
        "reference": "ONNX Runtime CPU FP32 (the FP32 graph)",
        "target": {"probs_max_abs": MAX_DROP, "on": "the calibration images", "nncf_metric": "1 - probs_max_abs"},
        "calibration_images": [n for n, _ in images["calibration"]],
        "heldout_images": [n for n, _ in images["heldout"]],
        "candidates": candidates,
        "timing_p50_ms": timing,
    }
    path = write_json(args.record, record)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
