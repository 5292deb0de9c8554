"""The decoder under fire: at least 10,000 mutated files across JPEG, PNG, TIFF, WebP, HEIC, DICOM.

Each seed file is a real photo (a quadrant of scikit-image's fundus photograph at 640x480) in one
of the corpus's encodings (``tests/photo_encodings.py``); each mutation flips bytes, overwrites a
run, cuts the file short or splices a slice of it elsewhere (``mutations``). Files go to worker
processes, each decoding under the default limits (on the fast path, as a server does); every
outcome must be an answer or the one image error. Any other exception, a crashed worker (a signal)
or a file taking over ``--hang-s`` seconds is recorded with the file's bytes (base64) so that it
can be replayed. The run stops by itself after ``--count`` files.

    python benchmarks/fuzz_decode.py --count 12000
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from benchmarks.common import RESULTS, commit, machine

SEEDS = ("jpeg", "jpeg_orientation_6", "jpeg_adobergb", "mpo", "png", "png_rgba", "png_16bit_grey", "tiff",
         "tiff_float_grey", "webp", "heic_displayp3", "avif", "dicom_jpeg_ybr422", "dicom_jpeg2000", "dicom_rle",
         "dicom_adobergb")  # fmt: skip


def _decode(data: bytes) -> tuple[str, str]:
    from dgla_export.decode import ImageError, decode_image

    try:
        decode_image(data, min_side=896)
        return "answer", ""
    except ImageError as err:
        return "image error", str(err)[:120]
    except BaseException as err:  # exactly what this run looks for
        return "other exception", f"{type(err).__name__}: {str(err)[:200]}"


def main() -> None:
    import numpy as np
    from photo_encodings import corpus, mutations
    from PIL import Image

    from benchmarks.photos import sources

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=12_000)
    parser.add_argument("--hang-s", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--output", type=Path, default=RESULTS / "fuzz-decode")
    args = parser.parse_args()
    provenance = {"machine": machine(), "commit": commit()}
    photo = np.asarray(Image.fromarray(dict(sources())["retina_q0"]).resize((640, 480), Image.Resampling.BICUBIC))
    seeds = corpus(photo, SEEDS)
    rng = np.random.default_rng(args.seed)
    per_seed = -(-args.count // len(SEEDS))
    outcomes: dict[str, collections.Counter] = {name: collections.Counter() for name in SEEDS}
    findings: list[dict[str, Any]] = []
    started = time.monotonic()
    with multiprocessing.get_context("spawn").Pool(2, maxtasksperchild=500) as pool:
        for name in SEEDS:
            files = list(mutations(seeds[name], rng, per_seed))
            pending = [(data, pool.apply_async(_decode, (data,))) for data in files]
            for data, result in pending:
                try:
                    outcome, detail = result.get(timeout=args.hang_s)
                except multiprocessing.TimeoutError:
                    outcome, detail = "hang", f"no answer in {args.hang_s} s (a hang, or a worker killed by a signal)"
                except Exception as err:  # a worker that died (a signal) surfaces here
                    outcome, detail = "crash", f"{type(err).__name__}: {err}"
                outcomes[name][outcome] += 1
                if outcome not in ("answer", "image error"):
                    findings.append({"seed": name, "outcome": outcome, "detail": detail,
                                     "file_base64": base64.b64encode(data).decode()})  # fmt: skip
            print(f"{name:20s} {dict(outcomes[name])}  ({time.monotonic() - started:.0f} s)", flush=True)
    total = collections.Counter()
    for counter in outcomes.values():
        total.update(counter)
    record = {
        **provenance, "files": sum(total.values()), "seconds": round(time.monotonic() - started, 1),
        "seed": args.seed, "outcomes": dict(total), "per_seed": {n: dict(c) for n, c in outcomes.items()},
        "findings": findings,
    }  # fmt: skip
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "fuzz.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k not in ("per_seed", "findings")}))
    if findings:
        print(f"{len(findings)} outcomes were neither an answer nor the image error", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
