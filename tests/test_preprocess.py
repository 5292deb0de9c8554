from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dgla_export import get_config
from dgla_export.preprocess import ImageError, Preprocessing, decode_image, preprocess, to_rgb_float

CONFIG = get_config("dgla_resnet50")


def _filter_matrix(size_in: int, size_out: int) -> np.ndarray:
    """The antialiased bilinear (triangle) filter as an exact float64 matrix (out, in)."""
    scale = size_in / size_out
    support, stretch = (scale, 1 / scale) if scale >= 1 else (1.0, 1.0)
    matrix = np.zeros((size_out, size_in))
    for i in range(size_out):
        centre = scale * (i + 0.5)
        low, high = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), size_in)
        taps = np.clip(1 - np.abs((np.arange(low, high) - centre + 0.5) * stretch), 0, None)
        matrix[i, low:high] = taps / taps.sum()
    return matrix


def _exact(image: np.ndarray, size: int) -> np.ndarray:
    """Independent float64 reference of the recipe: crop, filter, normalise."""
    rgb = image.astype(np.float64) / 255
    side = min(rgb.shape[:2])
    top, left = (rgb.shape[0] - side) // 2, (rgb.shape[1] - side) // 2
    crop = rgb[top : top + side, left : left + side]
    filt = _filter_matrix(side, size)
    planes = np.stack([filt @ np.ascontiguousarray(crop[:, :, c]) @ filt.T for c in range(3)])
    return (planes - np.array(CONFIG.mean)[:, None, None]) / np.array(CONFIG.std)[:, None, None]


def _torch_path(image: np.ndarray, size: int) -> np.ndarray:
    """The torch preprocessing this package used before (F.interpolate, antialias=True)."""
    rgb = torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)
    side = min(rgb.shape[1:])
    top, left = (rgb.shape[1] - side) // 2, (rgb.shape[2] - side) // 2
    crop = rgb[:, top : top + side, left : left + side][None]
    out = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return ((out[0] - torch.tensor(CONFIG.mean)[:, None, None]) / torch.tensor(CONFIG.std)[:, None, None]).numpy()


def test_bundled_images_match_the_exact_filter(images) -> None:
    """Pillow's float resize is the exact antialiased bilinear filter up to float32 rounding.

    torch's antialias kernel (the old path) is off by up to ~1e-4 here (it grows with the
    downscale factor), so it is held to a looser bound: same recipe, less exact arithmetic."""
    for name, image in images:
        for array, size in zip(preprocess(image, CONFIG), (224, 448), strict=True):
            assert array.shape == (3, size, size) and array.dtype == np.float32, name
            exact_err = float(np.abs(array - _exact(image, size)).max())
            assert exact_err < 2e-6, f"{name} @ {size}: {exact_err:.2e} from the exact filter"
            torch_err = float(np.abs(array - _torch_path(image, size)).max())
            assert torch_err < 2e-4, f"{name} @ {size}: {torch_err:.2e} from the old torch path"


def test_upsampling_small_images_matches_the_exact_filter(images) -> None:
    small = np.ascontiguousarray(images[2][1][::20, ::20])  # 26x26 -> 224 and 448
    for array, size in zip(preprocess(small, CONFIG), (224, 448), strict=True):
        err = float(np.abs(array - _exact(small, size)).max())
        assert err < 2e-6, f"26 px -> {size}: {err:.2e} from the exact filter"


def test_module_imports_neither_torch_nor_the_package() -> None:
    """What Triton's Python backend loads beside the preprocessing model: numpy and Pillow only."""
    from dgla_export import preprocess as module

    code = (
        "import sys, importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('preprocess', {module.__file__!r})\n"
        "module = sys.modules['preprocess'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'dgla_export')))"
    )
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout


def test_recipe_round_trip_and_config_agree() -> None:
    recipe = Preprocessing.of(CONFIG)
    assert Preprocessing.from_dict(recipe.to_dict()) == recipe
    grey = np.full((40, 30, 3), 77, dtype=np.uint8)
    for a, b in zip(preprocess(grey, recipe), preprocess(grey, CONFIG), strict=True):
        np.testing.assert_array_equal(a, b)


def test_normalisation_uses_imagenet_statistics() -> None:
    grey = np.full((10, 10, 3), 128, dtype=np.uint8)
    small, _ = preprocess(grey, CONFIG)
    expected = (128 / 255 - np.array(CONFIG.mean)) / np.array(CONFIG.std)
    np.testing.assert_allclose(small.mean(axis=(1, 2)), expected, atol=1e-5)


def test_channel_layouts_and_bit_depths(images) -> None:
    rgb = images[2][1]  # astronaut
    grey8 = rgb.mean(axis=2).astype(np.uint8)
    np.testing.assert_array_equal(to_rgb_float(grey8)[:, :, 0], to_rgb_float(grey8)[:, :, 2])
    np.testing.assert_array_equal(to_rgb_float(grey8[:, :, None]), to_rgb_float(grey8))
    rgb16 = rgb.astype(np.uint16) * 257
    np.testing.assert_allclose(to_rgb_float(rgb16), to_rgb_float(rgb), atol=1e-6)
    opaque = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    np.testing.assert_allclose(to_rgb_float(opaque), to_rgb_float(rgb))
    transparent = np.dstack([rgb, np.zeros(rgb.shape[:2], np.uint8)])
    np.testing.assert_array_equal(to_rgb_float(transparent), np.ones((*rgb.shape[:2], 3), np.float32))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((4, 4, 2), np.uint8), "not"),
        (np.zeros((4, 4), np.int32), "unsupported pixel type"),
        (np.full((4, 4), 2.0, np.float32), r"\[0, 1\]"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
    ],
)
def test_bad_images_are_named(image, message) -> None:
    with pytest.raises(ImageError, match=message):
        to_rgb_float(image)


def test_decode_keeps_16_bit_png_and_names_bad_data(images) -> None:
    from PIL import Image

    array = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    decoded = decode_image(buffer.getvalue())
    assert decoded.dtype == np.uint16 and decoded.max() == array.max()
    with pytest.raises(ImageError, match="not a known image format"):
        decode_image(b"not an image")
    with pytest.raises(ImageError, match="no bytes"):
        decode_image(b"")
    buffer = io.BytesIO()
    Image.fromarray(images[0][1]).save(buffer, format="PNG")
    with pytest.raises(ImageError, match=r"cannot decode image \(300 bytes\)"):
        decode_image(buffer.getvalue()[:300])
