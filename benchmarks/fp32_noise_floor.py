"""How much does the FP32 model itself move when its input moves by one grey level?

INT8 adds rounding noise at every quantized layer; a network whose outputs already swing under
input noise far below what any camera guarantees cannot meet an INT8 accuracy target, whatever
the quantizer. This measures that floor for a graph: each image (the 6 bundled and the 18
held-out ones of benchmarks/int8_curve.py) is perturbed by +-1 grey level (random, per pixel
and channel, seeded) and, separately, re-encoded as a JPEG of quality 95; ONNX Runtime FP32
outputs are compared with the unperturbed ones.

Run: python benchmarks/fp32_noise_floor.py --onnx build/dgla_resnet50.onnx
Writes benchmarks/results/int8-cpu/noise_floor.json.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import commit, loaded, machine, write_json
from benchmarks.int8_curve import heldout_images, score
from dgla_export.artefacts.graph import graph_metadata, load_graph
from dgla_export.compare import softmax
from dgla_export.data import sample_images
from dgla_export.models.config import ModelConfig
from dgla_export.preprocess import preprocess_batch
from dgla_export.quantize import runner_logits


def one_grey_level(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noise = rng.integers(-1, 2, size=image.shape)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def jpeg95(image: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, required=True, help="FP32 graph from `dgla-export onnx`")
    args = parser.parse_args()
    config = ModelConfig.from_dict(json.loads(graph_metadata(load_graph(args.onnx))["config"]))
    images = sample_images() + heldout_images()
    session = loaded(args.onnx)
    rng = np.random.default_rng(0)

    def logits(batch: list[np.ndarray]) -> np.ndarray:
        return runner_logits(session, dict(zip(config.input_names, preprocess_batch(batch, config), strict=True)))

    clean = logits([image for _, image in images])
    record = {"machine": machine(), "commit": commit(), "onnx": str(args.onnx), "images": [n for n, _ in images]}
    for name, perturb in (("one_grey_level", lambda im: one_grey_level(im, rng)), ("jpeg_q95", jpeg95)):
        moved = logits([perturb(image) for _, image in images])
        record[name] = score(clean, moved)
        per_image = np.abs(softmax(moved.astype(np.float64)) - softmax(clean.astype(np.float64))).max(axis=1)
        pairs = zip(record["images"], per_image, strict=True)
        record[name]["probs_max_abs_per_image"] = {n: round(float(e), 4) for n, e in pairs}
        print(name, {k: v for k, v in record[name].items() if k != "probs_max_abs_per_image"})
    print(f"wrote {write_json('int8-cpu/noise_floor.json', record)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
