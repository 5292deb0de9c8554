"""From a modality's C-STORE to the results in the PACS: what dgla-gateway costs per photo, for
600x400 and 6000x4000 (24 MP) photos in DICOM as a camera writes them (a JPEG baseline frame, 4:2:2).

A repository of the graph is served by dgla-serve's Triton on this CPU; Orthanc (OS package) is the
PACS on loopback; dgla-gateway runs as a user starts it, filing to Orthanc by C-STORE. Each photo is
stored by a modality (pynetdicom), one at a time, and timed:

- acknowledgement: the C-STORE's round trip (the gateway checks the object: it decodes the pixels
  and builds a trial report; then writes it to its spool);
- to the PACS: from the C-STORE's start until Orthanc holds the report (and the heatmap, for a graph
  exported with --explain): what a dermatologist waits for;
- the gateway's CPU per photo (its process, from /proc), besides the server's.

    python benchmarks/gateway.py --onnx build/dgla_resnet50.onnx

Writes benchmarks/results/gateway/results.json and results.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from pacs.dermoscopy import camera_dicom  # tests/pacs/: the DICOM photos and the PACS the tests use
from pacs.orthanc import Orthanc, free_port, require_tools

from benchmarks.common import RESULTS, parse_args
from benchmarks.triton_cpu import free_ports
from benchmarks.triton_photos import photos
from dgla_export.machine import provenance
from dgla_export.triton.repository import write_repository
from dgla_export.triton.server import TritonServer

SIZES = {"600x400": (600, 400), "6000x4000": (6000, 4000)}
TICK = os.sysconf("SC_CLK_TCK")
AET = "DGLAGW"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def send(port: int, data: bytes) -> tuple[int, float]:
    """C-STORE ``data`` to the gateway: (status, seconds)."""
    import pydicom
    from pynetdicom import AE

    dataset = pydicom.dcmread(io.BytesIO(data))
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
    started = time.perf_counter()
    association = ae.associate("127.0.0.1", port, ae_title=AET)
    try:
        status = int(association.send_c_store(dataset).Status)
    finally:
        association.release()
    return status, time.perf_counter() - started


def filed(pacs: Orthanc, study: str) -> int:
    """The PACS's instances of ``study``."""
    return len(pacs.study(study))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", type=Path, required=True, help="a validated graph from `dgla-export onnx`")
    parser.add_argument("--output", type=Path, default=RESULTS / "gateway")
    parser.add_argument("--photos", type=int, default=4, help="photos per size (default 4)")
    args = parse_args(parser)
    require_tools()
    import pydicom

    args.output.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="dgla-gateway-bench-"))
    import importlib.metadata

    versions = {name: importlib.metadata.version(name) for name in ("highdicom", "pynetdicom")}
    orthanc = subprocess.run(["Orthanc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    results: dict[str, Any] = {**provenance(), **versions, "orthanc": orthanc, "onnx": str(args.onnx), "runs": []}
    pacs = Orthanc(workdir)
    pacs.start()
    gateway = None
    try:
        repository = workdir / "repo"
        write_repository(args.onnx, repository)
        ports = free_ports()
        with TritonServer(repository, ports) as server:
            server.wait_ready(timeout=600)
            port = free_port()
            command = [
                sys.executable, "-m", "dgla_export.tools.gateway", "--port", str(port), "--ae-title", AET,
                "--host", "127.0.0.1", "--url", f"127.0.0.1:{ports.grpc}", "--send-to", pacs.send_to,
                "--spool", str(workdir / "spool"),
            ]  # fmt: skip
            log = open(workdir / "gateway.log", "wb")  # noqa: SIM115
            gateway = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
            assert "listening on" in gateway.stdout.readline(), (workdir / "gateway.log").read_text()
            import onnx

            outputs = [o.name for o in onnx.load(str(args.onnx), load_external_data=False).graph.output]
            expected = 2 if "cam_top1" in outputs else 1  # the report, and the heatmap of an explained graph
            for label, size in SIZES.items():
                files = [camera_dicom(jpeg, i) for i, jpeg in enumerate(photos(size, args.photos))]
                send(port, files[0])  # warm: the gateway's first photo pays its imports
                study = str(pydicom.dcmread(io.BytesIO(files[0])).StudyInstanceUID)
                while filed(pacs, study) < expected:
                    time.sleep(0.1)
                acknowledged, to_pacs = [], []
                cpu_before = cpu_seconds(gateway.pid)
                for data in files:
                    study = str(pydicom.dcmread(io.BytesIO(data)).StudyInstanceUID)
                    started = time.perf_counter()
                    status, seconds = send(port, data)
                    assert status == 0, f"status {status:#06x}"
                    deadline = time.monotonic() + 600
                    while filed(pacs, study) < expected and time.monotonic() < deadline:
                        time.sleep(0.05)
                    acknowledged.append(seconds)
                    to_pacs.append(time.perf_counter() - started)
                cpu = (cpu_seconds(gateway.pid) - cpu_before) / len(files)
                row = {
                    "photos": label,
                    "count": len(files),
                    "dicom_bytes_mean": statistics.fmean(len(f) for f in files),
                    "objects_filed_per_photo": expected,
                    "acknowledged_ms_median": statistics.median(acknowledged) * 1e3,
                    "to_pacs_ms_median": statistics.median(to_pacs) * 1e3,
                    "to_pacs_ms_max": max(to_pacs) * 1e3,
                    "gateway_cpu_ms_per_photo": cpu * 1e3,
                }
                results["runs"].append(row)
                print(f"{label}: acknowledged {row['acknowledged_ms_median']:.0f} ms, in the PACS after "
                      f"{row['to_pacs_ms_median']:.0f} ms (median), gateway CPU {cpu * 1e3:.0f} ms/photo",
                      flush=True)  # fmt: skip
            gateway.terminate()
            assert gateway.wait(timeout=120) == 0
            results["gateway_log_lines"] = len((workdir / "gateway.log").read_text().splitlines())
    finally:
        if gateway is not None and gateway.poll() is None:
            gateway.kill()
        pacs.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    (args.output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| photos | DICOM bytes | objects filed | acknowledged ms (median) | in the PACS ms (median) | max | "
             "gateway CPU ms/photo |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in results["runs"]:
        lines.append(f"| {r['photos']} | {r['dicom_bytes_mean']:,.0f} | {r['objects_filed_per_photo']} | "
                     f"{r['acknowledged_ms_median']:.0f} | {r['to_pacs_ms_median']:.0f} | {r['to_pacs_ms_max']:.0f} | "
                     f"{r['gateway_cpu_ms_per_photo']:.0f} |")  # fmt: skip
    (args.output / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
