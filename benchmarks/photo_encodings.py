"""One 24 MP photo in every encoding a clinic meets: decode cost, memory, and what the model answers.

The photo: a quadrant of scikit-image's fundus photograph (the closest to dermoscopy, used by no
test), upscaled to 6000x4000 with sensor and mid-scale noise (``benchmarks/photos.py``), stored
each way ``tests/photo_encodings.py`` knows (EXIF orientations, AdobeRGB/ProPhoto/Display P3
profiles, CMYK, MPO, PNG variants, TIFF, WebP, HEIC, AVIF, DICOM). For each file:

- the fast path's time from encoded bytes to both tensors and its peak extra memory, each in a
  fresh process (``benchmarks/preprocess_cpu.py``'s worker), the plain sRGB JPEG in the same run:
  what orientation and colour management cost is the difference;
- the full FP32 graph's probabilities (demo weights, ONNX Runtime) on the fast path, against the
  exact path on the file's "as shown" PNG (Pillow's ImageOps and ImageCms, made independently).

Then the worst files the default limits accept (64 MP, decoded at 4 bytes per pixel), fast and exact.

    python benchmarks/photo_encodings.py            # about 15 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from benchmarks.common import RESULTS, commit, machine, parse_args
from benchmarks.photos import photo_array, sources
from benchmarks.preprocess_cpu import measure


def worst_files(folder: Path) -> dict[str, Path]:
    """What the default limits accept at their worst: 64 MP of RGBA PNG and of float TIFF (one colour)."""
    import numpy as np
    from PIL import Image

    files = {}
    rgba = np.full((8000, 8000, 4), (180, 120, 100, 200), np.uint8)
    files["64 MP RGBA PNG"] = folder / "worst_rgba.png"
    Image.fromarray(rgba).save(files["64 MP RGBA PNG"], compress_level=1)
    del rgba
    files["64 MP float TIFF"] = folder / "worst_float.tif"
    Image.fromarray(np.full((8000, 8000), 0.6, np.float32)).save(files["64 MP float TIFF"], compression="tiff_deflate")
    return files


def main() -> None:
    import numpy as np
    from photo_encodings import ENCODINGS, as_shown_png, corpus

    from dgla_export.api import export_onnx
    from dgla_export.models.registry import get_config
    from dgla_export.preprocess import Preprocessing
    from dgla_export.runtimes.onnxruntime import create_session

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--size", default="6000x4000", help="WIDTHxHEIGHT of the photo (default 24 MP)")
    parser.add_argument("--output", type=Path, default=RESULTS / "photo-encodings")
    args = parse_args(parser)
    provenance = {"machine": machine(), "commit": commit()}
    size = tuple(int(v) for v in args.size.split("x"))
    config = get_config("dgla_resnet50")
    fast, exact = Preprocessing.of(config), Preprocessing.of(config, "exact")
    recipe = fast.to_dict()
    source = dict(sources())["retina_q0"]
    photo = photo_array(source, size, seed=26)  # type: ignore[arg-type]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dgla-photo-encodings-") as tmp:
        folder = Path(tmp)
        graph = folder / "dgla_resnet50.onnx"
        print("exporting the FP32 graph (demo weights)", flush=True)
        export_onnx(graph, "dgla_resnet50", validate=False)
        session = create_session(graph, "cpu")

        def probs(recipe: Preprocessing, data: bytes) -> np.ndarray:
            inputs = recipe.batch([recipe.decode(data)])
            return session.run(["probs"], dict(zip(config.input_names, inputs, strict=True)))[0][0]

        for name in ENCODINGS:
            print(f"encoding {name} at {size[0]}x{size[1]}", flush=True)
            data = corpus(photo, (name,))[name]
            path = folder / name
            path.write_bytes(data)
            timed = measure("fast", path, recipe, args.reps, fast.max_pixels)
            answer, shown = probs(fast, data), probs(exact, as_shown_png(data))
            rows.append({
                "encoding": name, "bytes": len(data), "runs": args.reps,
                "median_ms": round(1e3 * float(np.median(timed["seconds"])), 1),
                "peak_extra_mib": round(timed["peak_extra_mib"], 1),
                "max_abs_prob_diff_vs_as_shown": round(float(np.abs(answer - shown).max()), 4),
                "same_top1": bool(answer.argmax() == shown.argmax()),
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
        worst = []
        for label, path in worst_files(folder).items():
            for method in ("fast", "exact"):
                timed = measure(method, path, recipe, 1, fast.max_pixels)
                worst.append({
                    "file": label, "bytes": path.stat().st_size, "method": method,
                    "ms": round(1e3 * timed["seconds"][0], 1), "peak_extra_mib": round(timed["peak_extra_mib"], 1),
                    "refused": timed["refused"],
                })  # fmt: skip
                print(json.dumps(worst[-1]), flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    record = {**provenance, "size": list(size), "reps": args.reps, "rows": rows, "worst_accepted": worst}
    (args.output / "encodings.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        f"| stored as ({size[0]}x{size[1]}) | MB | fast path ms (median) | peak extra MiB | "
        "max abs prob. diff vs as shown | top-1 |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['encoding']} | {r['bytes'] / 1e6:.1f} | {r['median_ms']:.0f} | {r['peak_extra_mib']:.0f} | "
            f"{r['max_abs_prob_diff_vs_as_shown']:.4f} | {'same' if r['same_top1'] else 'FLIPS'} |"
        )
    lines += ["", "| worst accepted file | path | ms | peak extra MiB |", "| --- | --- | ---: | ---: |"]
    lines += [f"| {w['file']} | {w['method']} | {w['ms']:.0f} | {w['peak_extra_mib']:.0f} |" for w in worst]
    (args.output / "encodings.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
