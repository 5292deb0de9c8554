from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from inputs import bomb_png, photo_jpeg

from dgla_export import get_config
from dgla_export.preprocess import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    ImageTooLargeError,
    Preprocessing,
    decode_image,
    preprocess,
    to_rgb_float,
)

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
    small = np.ascontiguousarray(images[2][1][::2, ::2])  # 256x256 -> 224 and (upsampled) 448
    for array, size in zip(preprocess(small, CONFIG), (224, 448), strict=True):
        err = float(np.abs(array - _exact(small, size)).max())
        assert err < 2e-6, f"256 px -> {size}: {err:.2e} from the exact filter"


def test_images_below_the_smallest_input_are_refused(images) -> None:
    """The documented rule: no dermatoscope writes a photo under 224 px, and a 1x5000 strip is not one."""
    for shape in ((26, 26), (1, 5000), (223, 4000)):
        with pytest.raises(ImageError, match="smaller than the model's 224 px input"):
            preprocess(np.zeros((*shape, 3), np.uint8), CONFIG)
    preprocess(np.zeros((224, 4000, 3), np.uint8), CONFIG)  # the limit itself is accepted


def test_module_imports_neither_torch_nor_the_package(tmp_path) -> None:
    """What Triton's Python backend loads beside the preprocessing model: numpy and Pillow only."""
    from dgla_export import decode, preprocess

    for module in (decode, preprocess):  # laid out as the Triton model folder holds them
        shutil.copyfile(module.__file__, tmp_path / Path(module.__file__).name)
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import preprocess, decode\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'dgla_export')))"
    )
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout


def test_recipe_round_trip_and_config_agree() -> None:
    recipe = Preprocessing.of(CONFIG)
    assert Preprocessing.from_dict(recipe.to_dict()) == recipe
    assert (recipe.method, recipe.max_pixels) == ("fast", DEFAULT_MAX_PIXELS)
    exact = Preprocessing.of(CONFIG, "exact", 5_000_000)
    assert Preprocessing.from_dict(exact.to_dict()) == exact
    old = {k: v for k, v in recipe.to_dict().items() if k in ("input_sizes", "mean", "std")}
    assert Preprocessing.from_dict(old).method == "exact"  # what repositories written before the fast path ran
    with pytest.raises(ValueError, match="method"):
        Preprocessing.of(CONFIG, "quick")  # type: ignore[arg-type]
    grey = np.full((240, 300, 3), 77, dtype=np.uint8)
    for a, b in zip(preprocess(grey, recipe), preprocess(grey, CONFIG), strict=True):
        np.testing.assert_array_equal(a, b)


def test_normalisation_uses_imagenet_statistics() -> None:
    grey = np.full((224, 224, 3), 128, dtype=np.uint8)
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


@pytest.mark.parametrize("size", [(4000, 3000), (6000, 4000)])
def test_fast_path_decodes_photos_reduced_and_stays_near_the_exact_path(images, tiny, size) -> None:
    """A camera-sized JPEG: the fast path decodes it at 1/2 or 1/4 scale (never below 2x448 px across
    the crop), and its inputs and the network's probabilities stay near the exact path's.

    Bounds from measurement on the six bundled images at both sizes: inputs within 0.084 (max) and
    0.0047 (mean) normalised units, tiny-network probabilities within 0.016. A 1/8 decode gives 0.34,
    a misplaced crop far more."""
    fast, exact = Preprocessing.of(CONFIG, "fast"), Preprocessing.of(CONFIG, "exact")
    tiny_fast, tiny_exact = Preprocessing.of(tiny.config, "fast"), Preprocessing.of(tiny.config, "exact")
    for name, image in (images[2], images[0]):  # astronaut (the largest input error), retina
        data = photo_jpeg(image, size)
        decoded, side = fast.decode(data), min(size)  # the centre square only
        scale = side // decoded.shape[1]
        assert decoded.shape == (side // scale, side // scale, 3) and scale in (2, 4), decoded.shape
        assert min(decoded.shape[:2]) >= 2 * 448
        assert exact.decode(data).shape == (side, side, 3)
        pairs = zip(fast.apply(decoded), exact.apply(exact.decode(data)), strict=True)
        errors = [(float(np.abs(a - b).max()), float(np.abs(a - b).mean())) for a, b in pairs]
        assert max(e[0] for e in errors) < 0.1 and max(e[1] for e in errors) < 0.006, f"{name} {size}: {errors}"
        with torch.no_grad():
            probs = [
                tiny(*(torch.from_numpy(x[None]) for x in recipe.apply(recipe.decode(data)))).softmax(-1)
                for recipe in (tiny_fast, tiny_exact)
            ]
        err = float((probs[0] - probs[1]).abs().max())
        assert err < 0.03, f"{name} {size}: tiny-network probabilities differ by {err:.4f}"


def test_arrays_and_other_formats_take_the_exact_filter_on_the_fast_path(images) -> None:
    """An array, or a PNG too small to reduce (512 px < 2 x 896), gets the exact path's numbers."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(images[2][1]).save(buffer, format="PNG")
    fast, exact = Preprocessing.of(CONFIG, "fast"), Preprocessing.of(CONFIG, "exact")
    assert fast.decode(buffer.getvalue()).shape == images[2][1].shape
    for a, b in zip(fast.apply(images[2][1]), exact.apply(images[2][1]), strict=True):
        np.testing.assert_array_equal(a, b)


def test_an_image_bomb_is_refused_from_its_header() -> None:
    bomb = bomb_png(12000, 12000)  # 0.45 MB of PNG, 144 MP (432 MB) decoded
    with pytest.raises(ImageTooLargeError, match=r"12000x12000 pixels \(144\.0 MP\) exceeds the limit of 64 MP"):
        decode_image(bomb)
    with pytest.raises(ImageTooLargeError, match="exceeds the limit of 64 MP"):
        Preprocessing.of(CONFIG, "exact").decode(bomb)


def test_the_pixel_limit_is_an_option() -> None:
    image = bomb_png(5000, 5000)  # 25 MP
    with pytest.raises(ImageTooLargeError, match="limit of 20 MP"):
        Preprocessing.of(CONFIG, max_pixels=20_000_000).decode(image)
    decoded = Preprocessing.of(CONFIG, "exact", max_pixels=30_000_000).decode(image)
    assert decoded.shape == (5000, 5000, 3) and int(decoded[0, 0, 0]) == 128
    reduced = Preprocessing.of(CONFIG, max_pixels=30_000_000).decode(image)  # fast: reduced 4x, short side >= 896
    assert reduced.shape == (1250, 1250, 3) and int(reduced[0, 0, 0]) == 128
