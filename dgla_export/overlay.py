"""Heatmap overlays a dermatologist can open: the crop the model saw, a class activation map
upsampled over it in a perceptual colormap, and the class and probability in the corner.

numpy, Pillow and matplotlib's colormaps only (no torch): ``dgla-client --heatmap`` draws them
on a reception PC, ``dgla-bench --heatmaps`` side by side for the reference and each runtime.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dgla_export.preprocess import centre_box, to_rgb_float

__all__ = ["COLORMAP", "normalise_maps", "overlay", "photo_with_crop", "side_by_side"]

COLORMAP = "inferno"  # perceptually uniform, readable in grey and by colour-blind viewers
SIZE = 448  # the side of the larger input: what the model saw at its finest


def normalise_maps(maps: np.ndarray) -> np.ndarray:
    """(..., h, w) maps -> each scaled to [0, 1] by its own min and max (Grad-CAM's per-image
    normalisation); a flat map (a class the image gives no evidence for) becomes 0."""
    maps = np.asarray(maps, dtype=np.float64)
    low = maps.min(axis=(-2, -1), keepdims=True)
    span = maps.max(axis=(-2, -1), keepdims=True) - low
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1), 0.0)


def _crop(image: np.ndarray, size: int) -> Image.Image:
    """The centre square the model saw, as 8-bit RGB of ``size`` px."""
    top, left, side = centre_box(*image.shape[:2])
    rgb = to_rgb_float(np.asarray(image)[top : top + side, left : left + side])
    pixels = Image.fromarray(np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8))
    return pixels.resize((size, size), Image.Resampling.BILINEAR)


def _heat(cam: np.ndarray, size: int) -> np.ndarray:
    """(h, w) map -> (size, size, 4) float RGBA in [0, 1]: normalised, upsampled bilinearly, coloured."""
    from matplotlib import colormaps

    normalised = normalise_maps(cam).astype(np.float32)
    upsampled = np.asarray(Image.fromarray(normalised).resize((size, size), Image.Resampling.BILINEAR))
    return colormaps[COLORMAP](np.clip(upsampled, 0, 1))


def overlay(image: np.ndarray, cam: np.ndarray, label: str, *, size: int = SIZE, alpha: float = 0.45) -> Image.Image:
    """``image`` (H, W[, C]) under ``cam`` (h, w), ``label`` (e.g. ``"MEL 0.83"``) in the top-left corner."""
    crop = np.asarray(_crop(image, size), dtype=np.float32) / 255
    heat = _heat(cam, size)[:, :, :3]
    mixed = ((1 - alpha) * crop + alpha * heat).clip(0, 1)
    blended = Image.fromarray((mixed * 255).round().astype(np.uint8))
    draw = ImageDraw.Draw(blended)
    font = ImageFont.load_default()
    box = draw.textbbox((8, 8), label, font=font)
    draw.rectangle((box[0] - 4, box[1] - 3, box[2] + 4, box[3] + 3), fill=(0, 0, 0))
    draw.text((8, 8), label, fill=(255, 255, 255), font=font)
    return blended


def photo_with_crop(image: np.ndarray, *, size: int = SIZE) -> Image.Image:
    """The whole photo as shown (upright, sRGB), ``size`` px high, the centre square the model saw
    outlined: what a clinician holds next to the original to find the overlay's region on it."""
    height, width = image.shape[:2]
    scale = size / height
    rgb = np.clip(to_rgb_float(np.asarray(image)) * 255 + 0.5, 0, 255).astype(np.uint8)
    photo = Image.fromarray(rgb).resize((max(1, round(width * scale)), size), Image.Resampling.BILINEAR)
    top, left, side = (value * scale for value in centre_box(height, width))
    draw = ImageDraw.Draw(photo)
    for colour, inset in (((0, 0, 0), 0), ((0, 255, 255), 2), ((0, 0, 0), 4)):  # visible on light and dark skin
        draw.rectangle(
            (left + inset, top + inset, left + side - 1 - inset, top + side - 1 - inset), outline=colour, width=2
        )
    return photo


def side_by_side(panels: Sequence[tuple[str, Image.Image]]) -> Image.Image:
    """Panels in a row, each titled above (e.g. the reference, then each runtime); widths may differ."""
    height = max(panel.size[1] for _, panel in panels)
    strip = 22
    sheet = Image.new("RGB", (sum(panel.size[0] for _, panel in panels), height + strip), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    left = 0
    for title, panel in panels:
        sheet.paste(panel, (left, strip))
        draw.text((left + 6, 5), title, fill=(0, 0, 0), font=ImageFont.load_default())
        left += panel.size[0]
    return sheet
