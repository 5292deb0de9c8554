"""Overload of the served model on loopback: the queue policy at several times capacity.

1. Capacity: ``dgla`` (camera-sized JPEGs, 12-24 MP, decoded and reduced on the server) with 4
   clients in a closed loop for ``--capacity-seconds``: answered pairs per second, on a repository
   with the default queue. The repository is then written again with its batch and queue sized from
   that capacity and the clients' ``--deadline`` (``dgla-export triton --capacity --deadline``), and
   served anew for the rest.
2. Flood: an open loop at ``--factor`` x capacity for ``--seconds`` (at most ``--max-requests``),
   each request with the client deadline ``--deadline``. Every request ends as
   answered (its latency), rejected by the server (its status), or past its deadline; none may be
   lost. The server's memory (tritonserver and its stubs: heaps, and the Python backend's shared
   memory counted once) is sampled before, during and after; a second flood shows whether it grows
   per flood or stays bounded.

3. Fault: 4 clients in a closed loop; a third of the way in, one preprocessing process (a Python
   backend stub) is killed; dgla-serve's supervisor restarts the server. Every request's fate, and
   the gap until the model answers again.

Loopback only, bounded in count and time; the server stops with the run.

    python benchmarks/triton_flood.py --onnx build/dgla_resnet50.onnx --output benchmarks/results/triton-flood
"""

from __future__ import annotations

import argparse
import json
import queue
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import parse_args
from benchmarks.photos import heldout_photos
from benchmarks.triton_cpu import free_ports
from dgla_export.machine import provenance
from dgla_export.triton.repository import TritonOptions, write_repository
from dgla_export.triton.server import SHM_ROOT, TritonServer
from dgla_export.triton.supervisor import StubSupervisor, process_group, stub_processes


def memory_mb(server: TritonServer) -> dict[str, float]:
    """The server's memory: the anonymous memory (heaps) of tritonserver and every process of its
    group (the Python backend's stubs), plus the backend's shared-memory regions counted once (each
    process maps them, so a sum of RSS would count them once per process)."""
    assert server.pid is not None
    anon = 0.0
    for proc in process_group(server.pid):
        try:
            status = (proc / "status").read_text().splitlines()
            anon += next(int(line.split()[1]) for line in status if line.startswith("RssAnon:")) / 1024
        except (OSError, ValueError, IndexError, StopIteration):
            continue
    shm = sum(p.stat().st_size for p in SHM_ROOT.glob(f"{server._shm_prefix}*")) / 2**20
    return {"anon_mb": anon, "shm_regions_mb": shm, "total_mb": anon + shm}


class Sampler(threading.Thread):
    def __init__(self, server: TritonServer) -> None:
        super().__init__(daemon=True)
        self.server, self.samples, self.stop_event = server, [], threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(0.5):
            self.samples.append((time.monotonic(), memory_mb(self.server)["total_mb"]))


def photos(count: int = 8) -> list[bytes]:
    """Camera-sized JPEGs (12-24 MP), as clinics send them: the server decodes and reduces each."""
    return [path.read_bytes() for path in heldout_photos(count)]


def request_inputs(module: Any, data: bytes) -> list[Any]:
    tensor = module.InferInput("image", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[data]], dtype=np.object_))
    return [tensor]


Request = tuple[float, float, str | None]  # sent, ended (time.monotonic()), the status the client reports


def closed_loop(
    url: str, images: list[bytes], seconds: float, clients: int = 4, during: Callable[[], None] = lambda: None
) -> list[Request]:
    """``clients`` threads, each sending one request after another for ``seconds``; ``during`` runs
    in this thread meanwhile (the fault phase's kill). Every request, with its error or None."""
    import tritonclient.grpc as grpcclient

    log: list[Request] = []
    stop = time.monotonic() + seconds

    def client_loop(offset: int) -> None:
        client = grpcclient.InferenceServerClient(url)
        index = offset
        while time.monotonic() < stop:
            sent = time.monotonic()
            try:
                client.infer("dgla", request_inputs(grpcclient, images[index % len(images)]), client_timeout=60)
                error = None
            except Exception as err:  # the status the client reports
                error = str(err).split("\n")[0][:200]
            log.append((sent, time.monotonic(), error))
            index += clients
        client.close()

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    during()
    for thread in threads:
        thread.join()
    return log


def capacity(url: str, images: list[bytes], seconds: float) -> float:
    """Answered pairs per second of a closed loop of 4 clients."""
    started = time.monotonic()
    log = closed_loop(url, images, seconds)
    return sum(error is None for _, _, error in log) / (time.monotonic() - started)


def flood(url: str, images: list[bytes], rate: float, count: int, deadline_s: float) -> list[dict[str, Any]]:
    """Send ``count`` requests at ``rate`` per second without waiting for answers; collect every outcome."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    outcomes: queue.Queue = queue.Queue()
    sent: dict[int, float] = {}
    start = time.monotonic()
    for index in range(count):
        time.sleep(max(0.0, start + index / rate - time.monotonic()))
        sent[index] = time.monotonic()
        client.async_infer(
            "dgla",
            request_inputs(grpcclient, images[index % len(images)]),
            callback=lambda result, error, i=index: outcomes.put((i, time.monotonic(), error)),
            client_timeout=deadline_s,
        )
    rows: dict[int, dict[str, Any]] = {}
    hard_stop = time.monotonic() + deadline_s + 5
    while len(rows) < count and time.monotonic() < hard_stop:
        try:
            index, ended, error = outcomes.get(timeout=1)
        except queue.Empty:
            continue
        text = "" if error is None else str(error)
        kind = (
            "answered" if error is None
            else "past deadline" if "deadline" in text.lower()
            else "rejected"
        )  # fmt: skip
        rows[index] = {"index": index, "outcome": kind, "seconds": ended - sent[index], "status": text[:200]}
    client.close()
    return [rows.get(i, {"index": i, "outcome": "lost", "seconds": None, "status": ""}) for i in range(count)]


def kill_run(server: TritonServer, images: list[bytes], seconds: float, kill_after: float) -> dict[str, Any]:
    """4 clients in a closed loop; one preprocessing stub killed after ``kill_after`` seconds; the
    supervisor dgla-serve runs restarts the server. Every request's fate, and the gap."""
    import os
    import signal

    supervisor = StubSupervisor(server, say=lambda line: print(line, flush=True))
    supervisor.start()
    kills: list[float] = []

    def kill() -> None:
        time.sleep(kill_after)
        assert server.pid is not None
        victim = next(pid for pid, model in stub_processes(server.pid).items() if model.endswith("_preprocess"))
        kills.append(time.monotonic())
        os.kill(victim, signal.SIGKILL)

    log = closed_loop(server.ports.urls["grpc"], images, seconds, during=kill)
    supervisor.stop()
    killed = kills[0]
    failed = [(s - killed, a - killed, e) for s, a, e in log if e is not None]
    recovery = supervisor.recoveries[0] if supervisor.recoveries else None
    recovered = None if recovery is None else recovery.noticed_at - killed + recovery.seconds
    later = [e for s, _, e in log if recovered is not None and s - killed > recovered]  # sent once it was back
    return {
        "requests": len(log),
        "failed": len(failed),
        "failed_before_kill": sum(s < 0 for s, _, _ in failed),
        "failure_statuses": sorted({e for _, _, e in failed}),
        "last_failure_answered_after_kill_s": max((a for _, a, _ in failed), default=None),
        "restarted_ready_after_kill_s": recovered,
        "restart_error": None if recovery is None else recovery.error,
        "answered_after_restart": sum(e is None for e in later),
        "failed_after_restart": sum(e is not None for e in later),
    }


def summarise(rows: list[dict[str, Any]], seconds: float, sampler: Sampler, after: dict[str, float]) -> dict[str, Any]:
    kinds = ("answered", "rejected", "past deadline", "lost")
    answered = np.array([r["seconds"] for r in rows if r["outcome"] == "answered"]) * 1e3
    rejected = np.array([r["seconds"] for r in rows if r["outcome"] == "rejected"]) * 1e3

    def stat(values: np.ndarray, q: float) -> float | None:
        return float(np.percentile(values, q)) if values.size else None

    return {
        "seconds": seconds,
        "outcomes": {kind: sum(r["outcome"] == kind for r in rows) for kind in kinds},
        "answered_p50_ms": stat(answered, 50),
        "answered_p99_ms": stat(answered, 99),
        "answered_max_ms": stat(answered, 100),
        "rejected_p50_ms": stat(rejected, 50),
        "rejection_statuses": sorted({r["status"].split("\n")[0] for r in rows if r["outcome"] == "rejected"}),
        "peak_total_mb": max((total for _, total in sampler.samples), default=None),
        "after": after,
        "rows": rows,
    }


def queue_settings(config_text: str) -> dict[str, Any]:
    """The batch and queue a runtime model's config.pbtxt asks of Triton."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse(config_text, model_config_pb2.ModelConfig())
    policy = config.dynamic_batching.default_queue_policy
    return {
        "max_batch_size": config.max_batch_size,
        "max_queue_size": policy.max_queue_size,
        "timeout_s": policy.default_timeout_microseconds / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", type=Path, required=True, help="FP32 graph from `dgla-export onnx`")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/triton-flood"))
    parser.add_argument("--factor", type=float, default=5.0, help="arrival rate as a multiple of capacity")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each flood")
    parser.add_argument("--max-requests", type=int, default=400, help="at most this many requests per flood")
    parser.add_argument("--capacity-seconds", type=float, default=20.0)
    parser.add_argument("--floods", type=int, default=2, help="a second flood shows whether memory grows per flood")
    parser.add_argument(
        "--kill-seconds", type=float, default=30.0, help="then a load run in which a preprocessing process is killed"
    )
    parser.add_argument(
        "--deadline", type=float, default=20.0, help="the clients' deadline; the queue is sized to keep it"
    )
    args = parse_args(parser)
    record: dict[str, Any] = {**provenance(), "onnx": str(args.onnx), "factor": args.factor}
    record["deadline_s"] = args.deadline
    workdir = Path(tempfile.mkdtemp(prefix="dgla-flood-"))
    try:
        images = photos()
        record["photos"] = {"count": len(images), "mean_mb": sum(map(len, images)) / len(images) / 1e6}
        repository = workdir / "repo"
        write_repository(args.onnx, repository)
        with TritonServer(repository, free_ports()) as server:
            server.wait_ready(timeout=600)
            url = server.ports.urls["grpc"]
            capacity(url, images, 5.0)  # warm-up
            record["capacity_pairs_s"] = measured = capacity(url, images, args.capacity_seconds)
        print(f"capacity {measured:.2f} pairs/s; sizing the queue for a {args.deadline:g} s deadline", flush=True)
        options = TritonOptions(capacity_pairs_s=measured, deadline_s=args.deadline)
        _, texts, _ = write_repository(args.onnx, repository, options=options, force=True)
        record["queue"] = queue_settings(texts[options.model("onnx")])
        with TritonServer(repository, free_ports()) as server:
            server.wait_ready(timeout=600)
            url = server.ports.urls["grpc"]
            closed_loop(url, images, 10.0)  # every instance works once
            time.sleep(5)
            record["baseline"] = memory_mb(server)
            rate = args.factor * measured
            count = min(args.max_requests, round(rate * args.seconds))
            floods = []
            for number in range(args.floods):
                print(f"flood {number + 1}: {count} requests at {rate:.1f}/s (capacity {measured:.2f})", flush=True)
                sampler = Sampler(server)
                sampler.start()
                started = time.monotonic()
                rows = flood(url, images, rate, count, args.deadline)
                seconds = time.monotonic() - started
                time.sleep(10)  # let the server settle, then read its memory again
                sampler.stop_event.set()
                sampler.join()
                floods.append(summarise(rows, seconds, sampler, memory_mb(server)))
            if args.kill_seconds:
                print("killing a preprocessing process under load", flush=True)
                record["kill"] = kill_run(server, images, args.kill_seconds, kill_after=args.kill_seconds / 3)
            record["server_alive_after"] = server.process is not None and server.process.poll() is None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    record.update(requests_per_flood=count, arrival_rate_s=rate, floods=floods)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    shown = {k: v for k, v in record.items() if k not in ("machine", "floods")}
    shown["floods"] = [{k: v for k, v in f.items() if k != "rows"} for f in floods]
    print(json.dumps(shown, indent=2))


if __name__ == "__main__":
    main()
