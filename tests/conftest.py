"""Shared fixtures: tiny models with demo weights, real images, exported graphs (built once)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Demo weights are recomputed, not read from a developer's cache.
    os.environ["DGLA_EXPORT_CACHE"] = str(tmp_path_factory.mktemp("demo-cache"))


@pytest.fixture(scope="session")
def images():
    from dgla_export.data import sample_images

    return sample_images()


@pytest.fixture(scope="session")
def held_out(tmp_path_factory):
    """A folder of real images that no calibration uses: scikit-image's other offline photos (grey
    ones as RGB), for validating INT8 graphs calibrated on the bundled set."""
    import numpy as np
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("held_out")
    for name in ("coins", "moon", "camera", "grass", "gravel", "brick"):
        image = getattr(data, name)()
        Image.fromarray(np.stack([image] * 3, axis=-1) if image.ndim == 2 else image[..., :3]).save(
            folder / f"{name}.png"
        )
    return folder


@pytest.fixture(scope="session")
def tiny():
    from dgla_export import create_model

    return create_model("dgla_tiny", weights="demo")


def _export_tiny(tiny, folder, *, explain: bool = False) -> dict:
    """precision -> the tiny model's FP32 and FP16 graphs in ``folder``, not validated."""
    from dgla_export.export.onnx_export import ExportOptions, export_onnx
    from dgla_export.models.identity import identify

    paths = {}
    for precision in ("fp32", "fp16"):
        paths[precision] = folder / f"tiny{'_explained' if explain else ''}_{precision}.onnx"
        options = ExportOptions(precision=precision, max_batch=8, explain=explain)
        export_onnx(tiny, paths[precision], options=options, checkpoint=identify("demo", tiny))
    return paths


@pytest.fixture(scope="session")
def tiny_onnx(tiny, tmp_path_factory):
    """(fp32 path, fp16 path) of the tiny model, exported once for the session."""
    return _export_tiny(tiny, tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="session")
def tiny_int8(tiny, tiny_onnx, images, tmp_path_factory):
    """target -> (INT8 graph path, QuantizationReport) of the tiny model, calibrated on the bundled images."""
    from dgla_export.quantize import QuantizationOptions, quantize_onnx

    folder = tmp_path_factory.mktemp("int8")
    graphs = {}
    for target in ("cpu", "tensorrt"):
        path = folder / f"tiny_int8_{target}.onnx"
        report = quantize_onnx(
            tiny_onnx["fp32"], path, tiny.config, images, options=QuantizationOptions(target=target), progress=print
        )
        graphs[target] = (path, report)
    return graphs


@pytest.fixture
def immutable(tmp_path):
    """A folder nobody may write into, root included (chattr +i), as a read-only mount would be."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode != 0:
        pytest.skip("cannot make an immutable folder here (chattr +i)")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.fixture(scope="session")
def tiny_explained(tiny, tmp_path_factory):
    """precision -> the tiny model's graph exported with explain (a ``cam`` output), not validated."""
    return _export_tiny(tiny, tmp_path_factory.mktemp("explained"), explain=True)
