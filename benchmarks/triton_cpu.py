"""Load run of the Triton repository on this CPU: dgla-serve + Triton's perf_analyzer.

1. Footprint of the preprocessing model: a repository holding only ``dgla_preprocess`` (4
   instances) is served; time to ready and each stub process's RSS and private memory are
   recorded. ``--baseline-commit C`` measures commit C's preprocessing model the same way (it
   imported torch and this package), for the before/after comparison.
2. perf_analyzer against the full repository served by dgla-serve's server: ``dgla`` (JPEG bytes
   of the bundled images, preprocessed on the server) and ``dgla_onnx`` (tensors), concurrency 1
   to 8: throughput, p50/p90/p99 latency, errors.

perf_analyzer comes from ``tritonclient==2.48.0`` in a venv of its own (newer builds need glibc
2.38; PyTriton pins another tritonclient), with the two libraries it needs linked from PyTriton.

    python benchmarks/triton_cpu.py --onnx build/dgla_resnet50.onnx --output benchmarks/results/triton-cpu
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import venv
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import parse_args
from dgla_export.artefacts.graph import graph_metadata, load_graph
from dgla_export.data import sample_images
from dgla_export.io import cache_dir
from dgla_export.machine import provenance
from dgla_export.triton.repository import write_repository
from dgla_export.triton.server import Ports, TritonInstall, TritonServer
from dgla_export.triton.supervisor import stub_processes

PERF_ANALYZER_CLIENT = "tritonclient==2.48.0"


def free_ports() -> Ports:
    sockets = [socket.socket() for _ in range(3)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return Ports("127.0.0.1", *ports)


def perf_analyzer() -> tuple[Path, dict[str, str]]:
    """The perf_analyzer binary and the environment it runs in (installed once into the cache)."""
    root = cache_dir() / "perf-analyzer"
    binary = root / "venv" / "bin" / "perf_analyzer"
    if not binary.exists():
        print(f"installing {PERF_ANALYZER_CLIENT} into {root / 'venv'}", flush=True)
        venv.create(root / "venv", with_pip=True)
        subprocess.run([root / "venv" / "bin" / "pip", "install", "--quiet", PERF_ANALYZER_CLIENT], check=True)
    libs = root / "libs"
    libs.mkdir(exist_ok=True)
    bundled = TritonInstall.find().libraries
    for plain, pattern in (("libb64.so.0d", "libb64-*.so.0d"), ("libcudart.so.12", "libcudart-*.so.12*")):
        link = libs / plain
        if not link.exists():
            link.symlink_to(next(bundled.glob(pattern)))
    return binary, {"LD_LIBRARY_PATH": str(libs), "PATH": "/usr/bin:/bin"}


def stub_memory(server: TritonServer) -> list[dict[str, Any]]:
    """RSS and private memory (MiB) of each Python-backend stub the server started."""
    assert server.pid is not None
    rows = []
    for pid, model in stub_processes(server.pid).items():
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
        except OSError:
            continue
        kib = {k: int(v.split()[0]) for k, v in fields.items() if k in ("Rss", "Private_Clean", "Private_Dirty")}
        rows.append({
            "model": model, "pid": pid, "rss_mib": round(kib["Rss"] / 1024, 1),
            "private_mib": round((kib["Private_Clean"] + kib["Private_Dirty"]) / 1024, 1),
        })  # fmt: skip
    return sorted(rows, key=lambda r: (r["model"], r["pid"]))


def baseline_preprocess(repository: Path, commit: str, workdir: Path) -> None:
    """Replace the preprocessing model by commit ``commit``'s (which imported torch and the package)."""
    source = workdir / f"dgla_export-{commit}"
    archive = subprocess.run(["git", "archive", commit, "dgla_export"], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(source, filter="data")
    model = repository / "dgla_preprocess"
    old = (source / "dgla_export" / "triton" / "preprocess_model.py").read_text()
    future = "from __future__ import annotations\n"
    (model / "1" / "model.py").write_text(
        old.replace(future, f"{future}import sys\nsys.path.insert(0, {str(source)!r})\n")
    )
    (model / "1" / "preprocess.py").unlink()
    metadata = graph_metadata(load_graph(repository / "dgla_onnx" / "1" / "model.onnx"))
    config = (model / "config.pbtxt").read_text()
    (model / "config.pbtxt").write_text(
        config + f'parameters {{ key: "dgla_config" value {{ string_value: {json.dumps(metadata["config"])} }} }}\n'
    )


def footprint(repository: Path, label: str) -> dict[str, Any]:
    """Serve ``dgla_preprocess`` alone; time to ready and per-instance memory."""
    only = Path(tempfile.mkdtemp(prefix="dgla-preprocess-only-"))
    try:
        shutil.copytree(repository / "dgla_preprocess", only / "dgla_preprocess", symlinks=True)
        started = time.monotonic()
        with TritonServer(only, free_ports()) as server:
            server.wait_ready(timeout=300)
            ready = time.monotonic() - started
            memory = stub_memory(server)
    finally:
        shutil.rmtree(only)
    print(f"{label}: 4 instances ready in {ready:.1f} s; RSS per instance {[m['rss_mib'] for m in memory]} MiB")
    return {"label": label, "ready_seconds": round(ready, 2), "instances": memory}


def input_data(folder: Path, images: list[bytes] | None = None, name: str = "images.json") -> Path:
    """perf_analyzer input for ``dgla``: encoded images (default: the bundled ones as JPEG), in
    Triton's string layout (a 4-byte little-endian length, then the bytes)."""
    from PIL import Image

    if images is None:
        images = []
        for _, pixels in sample_images():
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
            images.append(buffer.getvalue())
    entries = [{"image": {"b64": base64.b64encode(len(d).to_bytes(4, "little") + d).decode()}} for d in images]
    path = folder / name
    path.write_text(json.dumps({"data": entries}))
    return path


def tensor_data(folder: Path, onnx_path: Path) -> Path:
    """perf_analyzer input for ``dgla_onnx``: one bundled image, preprocessed, as raw float32 per
    input (random data is no real image, and random float bits include slow denormals)."""
    from dgla_export.models.config import ModelConfig
    from dgla_export.preprocess import preprocess

    metadata = graph_metadata(load_graph(onnx_path))
    config = ModelConfig.from_dict(json.loads(metadata["config"]))
    data = folder / "tensors"
    data.mkdir()
    for name, array in zip(config.input_names, preprocess(sample_images(1)[0][1], config), strict=True):
        (data / name).write_bytes(array.astype("<f4").tobytes())
    return data


def load_run(
    binary: Path,
    env: dict[str, str],
    ports: Ports,
    model: str,
    extra: list[str],
    folder: Path,
    *,
    levels: int = 8,
    requests: int = 24,
    label: str | None = None,
) -> list[dict[str, Any]]:
    """perf_analyzer on ``model`` at concurrency 1 to ``levels``, every level required."""
    label = label or model
    report = folder / f"{label}.csv"
    command = [
        str(binary), "-m", model, "-u", ports.urls["grpc"], "-i", "grpc", "--concurrency-range", f"1:{levels}",
        "--measurement-mode", "count_windows", "--measurement-request-count", str(requests),
        "--stability-percentage", "50", "--max-trials", "10", "-f", str(report),
        *extra,
    ]  # fmt: skip
    print(" ".join(command), flush=True)
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    (folder / f"{label}.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"perf_analyzer failed on {model} (exit {result.returncode}): {result.stderr[-2000:]}")
    rows = []
    with open(report) as handle:
        for row in {int(r["Concurrency"]): r for r in csv.DictReader(handle)}.values():
            rows.append({
                "concurrency": int(row["Concurrency"]),
                "inferences_per_s": float(row["Inferences/Second"]),
                "p50_ms": int(row["p50 latency"]) / 1000, "p90_ms": int(row["p90 latency"]) / 1000,
                "p99_ms": int(row["p99 latency"]) / 1000,
            })  # fmt: skip
    # perf_analyzer 2.48 exits 0 even when it gives up on an unstable level: demand every level.
    measured = sorted(r["concurrency"] for r in rows)
    if measured != list(range(1, levels + 1)) or "Failed to obtain stable" in result.stdout:
        raise SystemExit(f"perf_analyzer measured concurrency {measured} for {model}, not 1-{levels}; see {label}.log")
    # It exits non-zero when a request fails, so these rows had no failed request.
    return [dict(row, model=model, failed_requests=0) for row in sorted(rows, key=lambda r: r["concurrency"])]


def warm_up(ports: Ports, folder: Path) -> None:
    """A few rounds of real requests through both models before any level is measured (the
    first requests of a fresh server are slower, and perf_analyzer's stability test can take
    them as a steady state)."""
    from PIL import Image

    from dgla_export.triton.client import classify

    paths = []
    for name, pixels in sample_images():
        paths.append(folder / f"{name}.jpg")
        Image.fromarray(pixels).save(paths[-1], quality=90)
    for model in ("dgla", "dgla_onnx"):
        for _ in range(3):
            classify(paths, url=ports.urls["grpc"], model=model, concurrency=4)


def batch_stats(server: TritonServer, model: str) -> dict[int, int]:
    import urllib.request

    from dgla_export.triton.security import ADMIN_HEADER

    # statistics are an admin API: the key only the server's owner holds
    url = f"{server.ports.urls['http']}/v2/models/{model}/stats"
    request = urllib.request.Request(url, headers={ADMIN_HEADER: server.security.admin_key})
    with urllib.request.urlopen(request, timeout=10) as answer:
        stats = json.load(answer)["model_stats"][0]
    return {b["batch_size"]: b["compute_infer"]["count"] for b in stats.get("batch_stats", [])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", type=Path, required=True, help="FP32 graph from `dgla-export onnx`")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/triton-cpu"))
    parser.add_argument("--baseline-commit", help="also measure this commit's preprocessing model's footprint")
    args = parse_args(parser)
    args.output.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="dgla-triton-bench-"))
    try:
        repository = workdir / "repo"
        write_repository(args.onnx, repository)
        results: dict[str, Any] = {**provenance(), "onnx": str(args.onnx), "footprint": []}
        results["footprint"].append(footprint(repository, "numpy + Pillow (this commit)"))
        if args.baseline_commit:
            baseline = workdir / "baseline-repo"
            shutil.copytree(repository, baseline)
            baseline_preprocess(baseline, args.baseline_commit, workdir)
            results["footprint"].append(footprint(baseline, f"torch + dgla_export ({args.baseline_commit})"))
        binary, env = perf_analyzer()
        ports = free_ports()
        started = time.monotonic()
        with TritonServer(repository, ports) as server:
            server.wait_ready(timeout=600)
            results["full_repository_ready_seconds"] = round(time.monotonic() - started, 2)
            results["how_models_run"] = server.how
            warm_up(ports, workdir)
            images = input_data(workdir)
            rows = load_run(
                binary, env, ports, "dgla", ["--input-data", str(images), "--shape", "image:1"], args.output
            )
            tensors = tensor_data(workdir, args.onnx)
            rows += load_run(binary, env, ports, "dgla_onnx", ["--input-data", str(tensors)], args.output)
            results["load"] = rows
            results["executed_batch_sizes"] = {m: batch_stats(server, m) for m in ("dgla_onnx", "dgla_preprocess")}
            results["server_stub_memory_after_load"] = stub_memory(server)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    (args.output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "| model | concurrency | pairs/s | p50 ms | p90 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results["load"]:
        figures = f"{r['inferences_per_s']:.2f} | {r['p50_ms']:.0f} | {r['p90_ms']:.0f} | {r['p99_ms']:.0f}"
        lines.append(f"| {r['model']} | {r['concurrency']} | {figures} |")
    (args.output / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"executed batch sizes: {results['executed_batch_sizes']}")


if __name__ == "__main__":
    sys.exit(main())
