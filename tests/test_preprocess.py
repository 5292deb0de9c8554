from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from dgla_export import get_config
from dgla_export.preprocess import ImageError, decode_image, preprocess, to_rgb_float

CONFIG = get_config("dgla_resnet50")


def test_bundled_images_give_the_two_normalised_inputs(images) -> None:
    for name, image in images:
        small, large = preprocess(image, CONFIG)
        assert small.shape == (3, 224, 224) and large.shape == (3, 448, 448), name
        # Both come from one crop: the 448 input pooled 2x2 is close to the 224 one.
        pooled = torch.nn.functional.avg_pool2d(large[None], 2)[0]
        assert (pooled - small).abs().mean() < 0.05, name
        assert small.min() > -2.2 and small.max() < 2.7, name


def test_normalisation_uses_imagenet_statistics() -> None:
    grey = np.full((10, 10, 3), 128, dtype=np.uint8)
    small, _ = preprocess(grey, CONFIG)
    expected = (128 / 255 - np.array(CONFIG.mean)) / np.array(CONFIG.std)
    np.testing.assert_allclose(small.mean(dim=(1, 2)).numpy(), expected, atol=1e-5)


def test_channel_layouts_and_bit_depths(images) -> None:
    rgb = images[2][1]  # astronaut
    grey8 = rgb.mean(axis=2).astype(np.uint8)
    assert torch.equal(to_rgb_float(grey8)[0], to_rgb_float(grey8)[2])
    assert torch.allclose(to_rgb_float(grey8[:, :, None]), to_rgb_float(grey8))
    rgb16 = rgb.astype(np.uint16) * 257
    assert torch.allclose(to_rgb_float(rgb16), to_rgb_float(rgb), atol=1e-6)
    opaque = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    assert torch.allclose(to_rgb_float(opaque), to_rgb_float(rgb))
    transparent = np.dstack([rgb, np.zeros(rgb.shape[:2], np.uint8)])
    assert torch.equal(to_rgb_float(transparent), torch.ones(3, *rgb.shape[:2]))


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


def test_decode_keeps_16_bit_png() -> None:
    from PIL import Image

    array = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    decoded = decode_image(buffer.getvalue())
    assert decoded.dtype == np.uint16 and decoded.max() == array.max()
    with pytest.raises(ImageError, match="cannot decode"):
        decode_image(b"not an image")
