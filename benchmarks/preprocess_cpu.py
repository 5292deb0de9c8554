"""Preprocessing cost per image on this CPU: time and peak memory from encoded bytes to both tensors.

Images: 600x450, 1024x768, 4000x3000 and 6000x4000 JPEGs and a 6000x4000 PNG (held-out photos,
``benchmarks/photos.py``), and a 12000x12000 PNG of one colour (0.45 MB: an image bomb). Paths:
``exact``, ``fast`` (the default) and ``dali`` (DALI's CPU operators, where DALI is installed; with
``--dali-device gpu`` on a GPU machine, the mixed decoder and GPU operators, as Triton's DALI
backend runs them; the timing then includes copying the tensors back to the host).
Each (image, path) runs in a fresh process: after the imports (and, for DALI, building the
pipeline) the kernel's peak-RSS counter is reset, then the image is processed ``--reps`` times;
the extra peak memory is reported beside the image's decoded uint8 size. The bomb is refused from
its header on every path (DALI: by the ``dgla_guard`` step, whose check is timed); it is also
run once with the limit raised, to record what the refusal saves.

    python benchmarks/preprocess_cpu.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, commit, machine, parse_args
from benchmarks.photos import sized_jpeg, sized_png

WORKER = r"""
import json, sys, time
import numpy as np
method, path, recipe = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
reps, max_pixels, dali_device = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
data = open(path, "rb").read()
if method == "dali":
    from dgla_export import dali_pipeline
    from dgla_export.preprocess import ImageError, image_size
    pipeline = dali_pipeline.build(recipe["input_sizes"], recipe["mean"], recipe["std"], batch_size=1,
                                   device=dali_device, device_id=0 if dali_device == "gpu" else None, num_threads=2)
    pipeline.build()
    def guard(blob):  # what the dgla_guard step of the ensemble does before DALI sees the image
        width, height = image_size(blob)
        if width * height > max_pixels:
            raise ImageError(f"image of {width}x{height} pixels exceeds the limit")
    def work():
        guard(data)
        return dali_pipeline.run(pipeline, [data])
else:
    from dgla_export.preprocess import ImageError, Preprocessing
    prep = Preprocessing.from_dict({**recipe, "method": method, "max_pixels": max_pixels})
    def work():
        return prep.apply(prep.decode(data))
def rss_kib(field):
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(field + ":"))
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # reset the peak-RSS counter: what follows is this image's
base = rss_kib("VmRSS")
times, refused = [], None
for _ in range(reps):
    started = time.perf_counter()
    try:
        outputs = work()
    except ImageError as err:
        refused = str(err)
    times.append(time.perf_counter() - started)
print(json.dumps({"seconds": times, "peak_extra_mib": (rss_kib("VmHWM") - base) / 1024, "refused": refused}))
"""

CASES = [  # name, (width, height), format
    ("600x450 JPEG", (600, 450), "JPEG"),
    ("1024x768 JPEG", (1024, 768), "JPEG"),
    ("4000x3000 JPEG", (4000, 3000), "JPEG"),
    ("6000x4000 JPEG", (6000, 4000), "JPEG"),
    ("6000x4000 PNG", (6000, 4000), "PNG"),
    ("12000x12000 PNG, one colour", (12000, 12000), "bomb"),
]


def make_images(folder: Path) -> dict[str, Path]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from inputs import bomb_png

    paths = {}
    for name, size, kind in CASES:
        path = folder / name.split(",")[0].replace(" ", ".").lower()
        data = {"JPEG": sized_jpeg, "PNG": sized_png}[kind](size) if kind != "bomb" else bomb_png(*size)
        path.write_bytes(data)
        paths[name] = path
    return paths


def measure(
    method: str, path: Path, recipe: dict[str, Any], reps: int, max_pixels: int, dali_device: str = "cpu"
) -> dict[str, Any]:
    args = [method, str(path), json.dumps(recipe), str(reps), str(max_pixels), dali_device]
    result = subprocess.run([sys.executable, "-c", WORKER, *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{method} on {path.name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    import importlib.util

    import numpy as np

    from dgla_export.models.registry import get_config
    from dgla_export.preprocess import DEFAULT_MAX_PIXELS, Preprocessing

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--dali-device", choices=["cpu", "gpu"], default="cpu", help="gpu: the mixed decoder and GPU operators"
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "preprocess-cpu")
    args = parse_args(parser)
    provenance = {"machine": machine(), "commit": commit()}  # of the code as it starts, before anything can change
    recipe = Preprocessing.of(get_config("dgla_resnet50")).to_dict()
    methods = ["exact", "fast"] + (["dali"] if importlib.util.find_spec("nvidia.dali") else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="dgla-preprocess-bench-") as tmp:
        images = make_images(Path(tmp))
        for name, size, _ in CASES:
            decoded_mib = size[0] * size[1] * 3 / 2**20
            for method in methods:
                record = measure(method, images[name], recipe, args.reps, DEFAULT_MAX_PIXELS, args.dali_device)
                peak = round(record["peak_extra_mib"], 1)
                rows.append({
                    "image": name, "bytes": images[name].stat().st_size, "method": method, "runs": args.reps,
                    "median_ms": 1e3 * float(np.median(record["seconds"])), "peak_extra_mib": peak,
                    "decoded_uint8_mib": round(decoded_mib, 1), "peak_vs_decoded": round(peak / decoded_mib, 2),
                    "refused": record["refused"],
                })  # fmt: skip
                refused = "  refused" if record["refused"] else ""
                print(
                    f"{name:28s} {method:6s} {rows[-1]['median_ms']:9.1f} ms  peak +{peak:7.1f} MiB{refused}",
                    flush=True,
                )
        bomb = CASES[-1][0]
        for method in ("exact", "fast"):  # what refusing the bomb saves: the same image with the limit raised
            record = measure(method, images[bomb], recipe, 1, 10**9)
            rows.append({
                "image": f"{bomb}, limit raised to 1000 MP", "method": method, "runs": 1,
                "median_ms": 1e3 * record["seconds"][0], "peak_extra_mib": round(record["peak_extra_mib"], 1),
                "refused": record["refused"],
            })  # fmt: skip
            print(
                f"{rows[-1]['image']} {method}: {rows[-1]['median_ms']:.0f} ms, peak +{rows[-1]['peak_extra_mib']} MiB"
            )
    args.output.mkdir(parents=True, exist_ok=True)
    record = {
        **provenance,
        "reps": args.reps,
        "dali_device": args.dali_device,
        "rows": rows,
    }
    (args.output / "per_image.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        "| image | path | ms (median) | peak extra memory | x decoded uint8 size |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        ratio = f"{r['peak_vs_decoded']:.2f}" if "peak_vs_decoded" in r else "-"
        what = "refused" if r["refused"] else f"{r['median_ms']:.1f}"
        if r["refused"]:
            what = f"{r['median_ms']:.3f} (refused)"
        lines.append(f"| {r['image']} | {r['method']} | {what} | {r['peak_extra_mib']} MiB | {ratio} |")
    (args.output / "per_image.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
