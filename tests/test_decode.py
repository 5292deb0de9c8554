"""The one decoder: every encoding read as a colour-managed viewer shows it, hostile files refused."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from inputs import bomb_png, text_bomb_png
from photo_encodings import ENCODINGS, as_shown, as_shown_png, corpus, mutations
from PIL import Image

from dgla_export.decode import ImageError, ImageTooLargeError, Limits, dali_problem, decode_image, image_size
from dgla_export.preprocess import Preprocessing, to_rgb_float

# What the DALI pipeline reads as the package does; the guard refuses everything else.
DALI_ADMITTED = {"jpeg", "jpeg_progressive", "png", "tiff", "webp"}


@pytest.fixture(scope="session")
def photo():
    """The fundus photograph upscaled to 1200x900: large enough that the tiny model's fast path reduces it."""
    import skimage.data

    return np.asarray(Image.fromarray(skimage.data.retina()).resize((1200, 900), Image.Resampling.BICUBIC))


@pytest.fixture(scope="session")
def encoded(photo):
    return corpus(photo)


@pytest.mark.parametrize("name", list(ENCODINGS))
def test_every_encoding_decodes_to_what_a_viewer_shows(encoded, name) -> None:
    got = to_rgb_float(decode_image(encoded[name]))
    shown = as_shown(encoded[name]).astype(np.float32) / 255
    err = np.abs(got - shown)
    assert got.shape == shown.shape, f"{name}: decoded {got.shape}, shown {shown.shape}"
    assert err.max() <= 1.5 / 255 and err.mean() < 0.2 / 255, (
        f"{name}: max {err.max() * 255:.2f}, mean {err.mean() * 255:.3f} grey levels"
    )


@pytest.mark.parametrize("name", list(ENCODINGS))
def test_the_model_sees_each_encoding_as_its_as_shown_png(encoded, tiny, name) -> None:
    """Exact path: probabilities within 0.02 of the as-shown PNG's, same top-1. Fast path: inputs
    within 0.01 (normalised units, mean). The untrained tiny model moves its probabilities by 0.02
    for the 0.003 the fast path's reduced decode differs by, so its probabilities are compared on the
    exact path; benchmarks/photo_encodings.py records the full model's on the fast path."""
    import torch

    fast, exact = Preprocessing.of(tiny.config), Preprocessing.of(tiny.config, "exact")
    reference = as_shown_png(encoded[name])
    drift = max(
        float(np.abs(a - b).mean())
        for a, b in zip(fast.apply(fast.decode(encoded[name])), fast.apply(fast.decode(reference)), strict=True)
    )
    with torch.no_grad():
        probs, shown = (
            tiny(*(torch.from_numpy(a[None]) for a in exact.apply(exact.decode(data)))).softmax(-1)[0].numpy()
            for data in (encoded[name], reference)
        )
    assert drift < 0.01, f"{name}: fast-path inputs differ from the as-shown PNG's by {drift:.4f} (mean, normalised)"
    assert float(np.abs(probs - shown).max()) < 0.02, (
        f"{name}: probabilities differ by {np.abs(probs - shown).max():.4f}"
    )
    assert probs.argmax() == shown.argmax(), f"{name}: top-1 {probs.argmax()} vs {shown.argmax()}"


def test_ignoring_the_profile_would_fail_that_bound(encoded, tiny) -> None:
    """What main did before (the profile ignored): the same check fails, so the check means something."""
    recipe = Preprocessing.of(tiny.config)
    naive = np.asarray(Image.open(io.BytesIO(encoded["jpeg_prophoto"])).convert("RGB"))
    drift = max(
        float(np.abs(a - b).mean())
        for a, b in zip(
            recipe.apply(naive), recipe.apply(recipe.decode(as_shown_png(encoded["jpeg_prophoto"]))), strict=True
        )
    )
    assert drift > 0.1, f"ProPhoto read without its profile drifts only {drift:.4f}"


def test_transparent_palette_and_grey_alpha_are_white_not_black() -> None:
    """The documented rule, over white: a palette PNG's transparent index and an LA image's alpha."""
    palette = Image.new("P", (300, 300), 0)
    palette.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    palette.paste(1, (100, 100, 200, 200))
    grey = Image.merge("LA", (Image.new("L", (300, 300), 0), Image.new("L", (300, 300), 0)))
    for image, options in ((palette, {"transparency": 0}), (grey, {})):
        rgb = to_rgb_float(decode_image(_png(image, **options)))
        assert rgb[0, 0].tolist() == [1.0, 1.0, 1.0], (image.mode, rgb[0, 0])
    assert np.allclose(rgb[150, 150], 1.0)  # the LA image is transparent everywhere
    lesion = to_rgb_float(decode_image(_png(palette, transparency=0)))[150, 150]
    np.testing.assert_allclose(lesion, [200 / 255, 30 / 255, 30 / 255])


def test_wide_integers_and_floats_are_scaled_not_wrapped_or_truncated() -> None:
    values = np.full((300, 300), 70000, np.int32)  # wrapped to 4464 by a cast to uint16
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, "TIFF")  # signed 32-bit: scaled by 2**31 - 1
    assert decode_image(buffer.getvalue())[0, 0] == pytest.approx(70000 / (2**31 - 1), rel=1e-6)
    buffer = io.BytesIO()
    Image.fromarray(np.full((300, 300), 0.5, np.float32)).save(buffer, "TIFF")  # truncated to 0 by a cast
    assert decode_image(buffer.getvalue())[0, 0] == 0.5
    buffer = io.BytesIO()
    Image.fromarray(np.full((300, 300), 1.5, np.float32)).save(buffer, "TIFF")
    with pytest.raises(ImageError, match=r"float image's values must lie in \[0, 1\]"):
        decode_image(buffer.getvalue())


def _png(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


def test_orientation_turns_the_header_size(encoded) -> None:
    assert image_size(encoded["jpeg_orientation_6"]) == (900, 1200)  # as stored
    assert decode_image(encoded["jpeg_orientation_6"]).shape == (900, 1200, 3)  # as shown


def test_the_fast_path_reduces_every_format_by_the_same_factor(encoded, tiny) -> None:
    """A JPEG and an MPO inside libjpeg, the others by Pillow's box reduce: 1200x900 -> 600x450 (>= 2 x 192),
    and of that, preprocessing decodes the centre square only."""
    fast = Preprocessing.of(tiny.config)
    for name in ("jpeg", "mpo", "png", "tiff", "webp", "heic_displayp3", "dicom_rle", "jpeg_orientation_6"):
        assert decode_image(encoded[name], min_side=2 * 192).shape[:2] == (450, 600), name
        assert fast.decode(encoded[name]).shape[:2] == (450, 450), name


def _int32_tiff(width: int, height: int) -> bytes:
    """A 32-bit integer TIFF (Pillow's mode I), its values across the type's range."""
    values = np.random.default_rng(0).integers(0, 2**31 - 1, (height, width), dtype=np.int32)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, "TIFF")
    return buffer.getvalue()


SQUARE_CASES = ["jpeg_adobergb_orientation_6", "tiff_adobergb", "dicom_adobergb", "png_16bit_grey", "tiff_float_grey"]


@pytest.mark.parametrize("name", [*SQUARE_CASES, "int32_square", "int32_landscape", "int32_portrait"])
def test_the_colour_of_the_centre_square_alone_is_the_photos(encoded, name) -> None:
    """The square is cut before the colour conversion (which then costs its pixels only): the same
    pixels, to the last bit, as converting the whole upright photo and cutting after, in every mode
    (32-bit integers scaled by their type's range, whatever the square's place)."""
    from dgla_export.decode import centre_box

    sizes = {"int32_square": (300, 300), "int32_landscape": (400, 300), "int32_portrait": (300, 400)}
    data = _int32_tiff(*sizes[name]) if name in sizes else encoded[name]
    for min_side in (None, 64):
        whole = decode_image(data, min_side=min_side)
        top, left, side = centre_box(*whole.shape[:2])
        square = decode_image(data, min_side=min_side, square=True)
        assert np.isfinite(square).all() and np.array_equal(square, whole[top : top + side, left : left + side]), (
            name,
            min_side,
        )


def test_the_format_comes_from_the_bytes(encoded, tmp_path) -> None:
    from dgla_export.preprocess import load_image

    path = tmp_path / "photo.png"  # a JPEG named .png, as phones' exports often are
    path.write_bytes(encoded["jpeg"])
    np.testing.assert_array_equal(load_image(path), decode_image(encoded["jpeg"]))


def test_limits_refuse_before_decoding(encoded) -> None:
    with pytest.raises(ImageTooLargeError, match=r"exceeds the limit of 0\.1 MB of encoded data.*--max-bytes"):
        decode_image(encoded["jpeg"], Limits(max_bytes=100_000))
    with pytest.raises(ImageTooLargeError, match=r"1200x900 pixels \(1\.1 MP\) exceeds the limit of 1 MP"):
        decode_image(encoded["dicom_rle"], Limits(max_pixels=1_000_000))
    with pytest.raises(ImageTooLargeError, match=r"12000x12000 pixels \(144\.0 MP\) exceeds the limit of 64 MP"):
        decode_image(bomb_png(12000, 12000))


def test_multi_frame_dicom_is_refused(encoded) -> None:
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(encoded["dicom_adobergb"]))
    dataset.NumberOfFrames = 2
    dataset.PixelData = dataset.PixelData * 2
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    with pytest.raises(ImageError, match="holds 2 frames; give one photograph per file"):
        decode_image(buffer.getvalue())


def test_hostile_files_are_the_image_error() -> None:
    bomb = text_bomb_png()
    assert len(bomb) < 60_000
    with pytest.raises(ImageError, match="damaged or unsupported data"):
        decode_image(bomb)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"  # Ghostscript is never offered bytes
    with pytest.raises(ImageError, match="not a known image format"):
        decode_image(eps)


def test_fuzz_every_outcome_is_an_answer_or_the_image_error(encoded) -> None:
    """Bounded: a few seconds of mutated files across the formats (benchmarks/fuzz_decode.py runs 10,000+)."""
    rng = np.random.default_rng(2026)
    small = {name: data for name, data in encoded.items() if len(data) < 3_000_000}
    deadline, outcomes = time.monotonic() + 8.0, {"answer": 0, "image error": 0}
    while time.monotonic() < deadline:
        for name, data in small.items():
            for mutated in mutations(data, rng, 2):
                started = time.monotonic()
                try:
                    decode_image(mutated, Limits(max_pixels=4_000_000))
                    outcomes["answer"] += 1
                except ImageError:
                    outcomes["image error"] += 1
                assert time.monotonic() - started < 5.0, f"a mutated {name} took {time.monotonic() - started:.1f} s"
    assert sum(outcomes.values()) > 50, outcomes
    print(outcomes)


def test_the_dali_guard_admits_only_what_dali_reads_as_the_package_does(encoded) -> None:
    problems = {name: dali_problem(data) for name, data in encoded.items()}
    assert {name for name, problem in problems.items() if problem is None} == DALI_ADMITTED, problems
    assert "colour profile other than sRGB" in problems["jpeg_adobergb"]
    assert "EXIF orientation" in problems["jpeg_orientation_6"]
    assert "DICOM is not read by the DALI pipeline" in problems["dicom_rle"]
    assert all("--preprocess fast or exact" in p for p in problems.values() if p), problems


def test_a_camera_jpeg_in_dicom_is_read_at_reduced_scale_as_the_jpeg_is(images) -> None:
    """The fast path reads a DICOM's camera JPEG frame inside libjpeg's DCT, as it reads the JPEG file
    (pydicom decodes every pixel: 1.6 s a 24 MP frame here, against 61 ms); the exact path still
    decodes every pixel, through pydicom."""
    pytest.importorskip("pydicom")
    from pacs.dermoscopy import camera_dicom

    buffer = io.BytesIO()
    Image.fromarray(images[0][1]).resize((1600, 1200)).save(buffer, "JPEG", quality=90)
    jpeg = buffer.getvalue()
    wrapped = camera_dicom(jpeg)
    fast = decode_image(wrapped, min_side=224)
    assert fast.shape == (300, 400, 3) and np.array_equal(fast, decode_image(jpeg, min_side=224))
    exact = decode_image(wrapped)
    assert exact.shape == (1200, 1600, 3)
    reduced = np.asarray(Image.fromarray(exact).reduce(4)).astype(int)
    error = np.abs(fast.astype(int) - reduced).mean()
    print(f"DICOM frame at 1/4 in the DCT vs every pixel then a 4x4 box: mean {error:.2f} levels")
    assert error < 2.0
