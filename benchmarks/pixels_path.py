"""What a photo costs the server, sent as the model's pixels or as the photo: server CPU, bytes on the
wire and client time, for 600x400 and 6000x4000 (24 MP) camera JPEGs, through dgla-client's classify.

A repository of the graph is served by dgla-serve's Triton on this CPU (ONNX Runtime FP32, or with
``--runtime openvino`` Triton's OpenVINO backend, ``--openvino-bf16`` computing in BF16). For each
way in (``pixels``: dgla-client's default, only the 16-bit pixels the model sees, to ``dgla_pixels``;
``image``: the photo's de-identified bytes, to ``dgla``, decoded by the server) and each size, the
photos are sent one at a time, ``--rounds`` times over:

- server CPU per photo: user + system time of every process of the server's process group
  (tritonserver and its Python stubs), read from /proc before and after, divided by the photos sent;
  per model too (a stub's own CPU);
- bytes on the wire per photo: everything the client sent, counted by a loopback relay between the
  client and the server (HTTP);
- server latency per photo: the entry point's own (Triton's statistics), what a thin client waits
  for less the network;
- client time per photo: the wall time of ``classify`` for one photo (its metadata requests,
  reading, decoding, cropping here on the pixels path; and the server's answer).

The photos are as a phone writes them: JPEG in Display P3 with its ICC profile.

Goals (issue "Only what the model sees leaves the clinic PC"): through the pixels path a 24 MP photo
costs the server at most 1.3x the CPU of a 600x400 one; through the image path (the thin client),
its server latency within 1.25x of the 600x400 one. Answers of both ways are compared per photo.

    python benchmarks/pixels_path.py --onnx build/dgla_resnet50.onnx
    python benchmarks/pixels_path.py --onnx build/dgla_resnet50.onnx --runtime openvino --openvino-bf16

The first writes pixels-path/results.json, the other pixels-path/openvino-bf16.json (and .md).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from photo_encodings import profile  # tests/photo_encodings.py: the ICC profiles the corpus embeds
from wire import Recorder  # tests/wire.py: the relay the privacy tests read the wire with

from benchmarks.common import RESULTS, parse_args
from benchmarks.triton_cpu import free_ports
from benchmarks.triton_photos import photos
from dgla_export.machine import provenance
from dgla_export.triton.client import classify
from dgla_export.triton.repository import TritonOptions, write_repository
from dgla_export.triton.server import TritonServer
from dgla_export.triton.supervisor import process_group, stub_processes

SIZES = {"600x400": (600, 400), "6000x4000": (6000, 4000)}
WAYS = ("pixels", "image")
NETWORK = {"onnxruntime": "dgla_onnx", "openvino": "dgla_openvino"}  # the network's model in the repository
TICK = os.sysconf("SC_CLK_TCK")


def with_profile(jpeg: bytes) -> bytes:
    """The photo as a phone writes it: in Display P3, its ICC profile embedded (the colour conversion
    to sRGB is part of what reading it costs)."""
    from PIL import Image, ImageCms

    source = ImageCms.ImageCmsProfile(io.BytesIO(profile("displayp3")))
    with Image.open(io.BytesIO(jpeg)) as image:
        converted = ImageCms.profileToProfile(image, ImageCms.createProfile("sRGB"), source)
    buffer = io.BytesIO()
    converted.save(buffer, "JPEG", quality=90, icc_profile=profile("displayp3"))
    return buffer.getvalue()


def cpu_seconds(group: int) -> dict[int, float]:
    """PID -> user + system CPU seconds of each process in the server's process group."""
    seconds = {}
    for proc in process_group(group):
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds[int(proc.name)] = (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
    return seconds


def served_latency(server: TritonServer, model: str) -> tuple[int, int]:
    """(requests answered, their summed latency in ns) of ``model``, from Triton's statistics: what a
    thin client waits for, less the network between it and the server."""
    import urllib.request

    from dgla_export.triton.security import ADMIN_HEADER

    url = f"{server.ports.urls['http']}/v2/models/{model}/stats"
    request = urllib.request.Request(url, headers={ADMIN_HEADER: server.security.admin_key})
    with urllib.request.urlopen(request, timeout=10) as answer:
        success = json.load(answer)["model_stats"][0]["inference_stats"]["success"]
    return int(success["count"]), int(success["ns"])


def measure(server: TritonServer, port: int, files: list[Path], way: str, rounds: int, network: str) -> dict[str, Any]:
    group = server.pid
    assert group is not None
    stubs = stub_processes(group)
    entry = "dgla_pixels" if way == "pixels" else "dgla"
    recorder = Recorder(port)
    url = f"127.0.0.1:{recorder.port}"
    answers, times = [], []
    try:
        classify(files[:1], url=url, protocol="http", send=way)  # the connection and the model's metadata
        recorder.sent.clear()
        before, served_before = cpu_seconds(group), served_latency(server, entry)
        for _ in range(rounds):
            for file in files:
                started = time.perf_counter()
                (answer,) = classify([file], url=url, protocol="http", send=way)
                times.append(time.perf_counter() - started)
                assert answer.error is None, answer.error
                answers.append(answer.probs.tolist())
        after, served_after = cpu_seconds(group), served_latency(server, entry)
    finally:
        recorder.close()
    sent = len(files) * rounds
    used = {pid: after[pid] - before.get(pid, 0.0) for pid in after}
    per_model: dict[str, float] = {}
    for pid, seconds in used.items():
        name = stubs.get(pid, "tritonserver")
        per_model[name] = per_model.get(name, 0.0) + seconds * 1e3 / sent
    return {
        "way": way,
        "photos_sent": sent,
        "server_cpu_ms_per_photo": sum(used.values()) * 1e3 / sent,
        # what the photo costs the server besides the network, whose own CPU does not depend on the photo
        # (only on how much its threads spin while the client, on the same cores, works)
        "server_cpu_ms_per_photo_besides_network": sum(v for k, v in per_model.items() if k != network),
        "server_cpu_ms_per_photo_by_process": dict(sorted(per_model.items())),
        # each classify call also asks for the model's metadata and config: counted, they are sent too
        "bytes_on_wire_per_photo": len(recorder.sent) / sent,
        "server_latency_ms_per_photo": (served_after[1] - served_before[1])
        / (served_after[0] - served_before[0])
        / 1e6,
        "client_ms_per_photo_median": statistics.median(times) * 1e3,
        "client_ms_per_photo_mean": statistics.fmean(times) * 1e3,
        "answers": answers[: len(files)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", type=Path, required=True, help="a validated graph from `dgla-export onnx`")
    parser.add_argument("--output", type=Path, default=RESULTS / "pixels-path")
    parser.add_argument("--rounds", type=int, default=5, help="times each photo is sent per measurement")
    parser.add_argument("--photos", type=int, default=4, help="photos per size (default 4)")
    parser.add_argument("--runtime", choices=sorted(NETWORK), default="onnxruntime", help="the served network's")
    parser.add_argument("--openvino-bf16", action="store_true", help="OpenVINO computes in BF16 (a BF16 CPU)")
    args = parse_args(parser)
    args.output.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="dgla-pixels-path-"))
    results: dict[str, Any] = {**provenance(), "onnx": str(args.onnx), "rounds": args.rounds, "runs": []}
    results["runtime"] = args.runtime + (" bf16" if args.openvino_bf16 else "")
    name = "openvino-bf16" if args.openvino_bf16 else "openvino" if args.runtime == "openvino" else "results"
    try:
        files = {}
        for label, size in SIZES.items():
            files[label] = []
            for index, data in enumerate(photos(size, args.photos)):
                files[label].append(workdir / f"{label}-{index}.jpg")
                files[label][-1].write_bytes(with_profile(data))
            results.setdefault("jpeg_bytes_mean", {})[label] = statistics.fmean(f.stat().st_size for f in files[label])
        repository = workdir / "repo"
        options = TritonOptions(runtime=args.runtime, openvino_bf16=args.openvino_bf16)
        write_repository(args.onnx, repository, options=options)
        ports = free_ports()
        with TritonServer(repository, ports) as server:
            server.wait_ready(timeout=600)
            for way in WAYS:
                for label in SIZES:
                    started = time.monotonic()
                    row = measure(server, ports.http, files[label], way, args.rounds, NETWORK[args.runtime])
                    results["runs"].append({"photos": label, **row})
                    print(f"{way} {label}: server {row['server_cpu_ms_per_photo']:.0f} ms CPU, "
                          f"{row['bytes_on_wire_per_photo']:,.0f} bytes, "
                          f"client {row['client_ms_per_photo_median']:.0f} ms "
                          f"({time.monotonic() - started:.0f} s)", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows = {(r["way"], r["photos"]): r for r in results["runs"]}
    summary: dict[str, Any] = {}
    for way in WAYS:
        small, big = rows[(way, "600x400")], rows[(way, "6000x4000")]
        besides = "server_cpu_ms_per_photo_besides_network"
        summary[way] = {
            "server_cpu_ratio_24mp_vs_600x400": big["server_cpu_ms_per_photo"] / small["server_cpu_ms_per_photo"],
            "server_cpu_besides_network_ratio_24mp_vs_600x400": big[besides] / small[besides],
            "server_latency_ratio_24mp_vs_600x400": big["server_latency_ms_per_photo"]
            / small["server_latency_ms_per_photo"],
            "client_time_ratio_24mp_vs_600x400": big["client_ms_per_photo_median"]
            / small["client_ms_per_photo_median"],
        }
    for label in SIZES:
        pixels, image = rows[("pixels", label)]["answers"], rows[("image", label)]["answers"]
        diffs = [max(abs(a - b) for a, b in zip(p, i, strict=True)) for p, i in zip(pixels, image, strict=True)]
        summary[f"pixels_vs_image_max_abs_prob_{label}"] = max(diffs)
    results["summary"] = summary
    (args.output / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| way in | photos | server CPU ms/photo | of which besides the network | bytes on the wire/photo | "
             "server latency ms/photo | client ms/photo (median) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in results["runs"]:
        lines.append(f"| {r['way']} | {r['photos']} | {r['server_cpu_ms_per_photo']:.0f} | "
                     f"{r['server_cpu_ms_per_photo_besides_network']:.0f} | "
                     f"{r['bytes_on_wire_per_photo']:,.0f} | {r['server_latency_ms_per_photo']:.0f} | "
                     f"{r['client_ms_per_photo_median']:.0f} |")  # fmt: skip
    lines.append("")
    lines += [f"{way}: 24 MP / 600x400 = {summary[way]['server_cpu_ratio_24mp_vs_600x400']:.2f}x server CPU "
              f"({summary[way]['server_cpu_besides_network_ratio_24mp_vs_600x400']:.2f}x besides the network), "
              f"{summary[way]['server_latency_ratio_24mp_vs_600x400']:.2f}x server latency, "
              f"{summary[way]['client_time_ratio_24mp_vs_600x400']:.2f}x client time" for way in WAYS]  # fmt: skip
    (args.output / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
