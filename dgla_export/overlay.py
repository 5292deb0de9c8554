"""Heatmap overlays a dermatologist can open: the crop the model saw, a class activation map
upsampled over it in a perceptual colormap (clear where the map is cold), the class and
probability in the corner, legible at the size written, and the colour bar that gives the scale.

numpy, Pillow and matplotlib's colormaps only (no torch): ``dgla-client --heatmap`` draws them
on a reception PC, ``dgla-bench --heatmaps`` side by side for the reference and each runtime.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dgla_export.preprocess import centre_box, to_rgb_float

__all__ = [
    "COLORMAP",
    "SHOWN_SIDE",
    "colour_bar",
    "heatmap_panel",
    "normalise_maps",
    "overlay",
    "photo_with_crop",
    "side_by_side",
]

COLORMAP = "inferno"  # perceptually uniform, readable in grey and by colour-blind viewers
SIZE = 448  # the default panel side (a model's finest input: 448 for the dual-branch ones)
ALPHA = 0.6  # the map's opacity at its hottest cell; 0 at its coldest
SHOWN_SIDE = 896  # a photo is decoded for a panel at reduced scale, its short side kept >= this


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


def _upsampled(cam: np.ndarray, size: int) -> np.ndarray:
    """(h, w) map -> (size, size) in [0, 1]: normalised, upsampled bilinearly."""
    normalised = normalise_maps(cam).astype(np.float32)
    upsampled = np.asarray(Image.fromarray(normalised).resize((size, size), Image.Resampling.BILINEAR))
    return np.clip(upsampled, 0, 1)


def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's own scalable font at ``size`` px (its bitmap fallback where Pillow lacks FreeType)."""
    return ImageFont.load_default(size=size)


def label_size(size: int) -> int:
    """Text height on a ``size`` px panel: 1/20 of its side, at least 14 px (22 px at 448)."""
    return max(14, size // 20)


def overlay(image: np.ndarray, cam: np.ndarray, label: str, *, size: int = SIZE, alpha: float = ALPHA) -> Image.Image:
    """``image`` (H, W[, C]) under ``cam`` (h, w), ``label`` (e.g. ``"MEL 0.83"``) in the top-left corner.

    The map's opacity follows its value (``alpha`` where it is hottest, 0 where it is coldest):
    the skin shows unchanged where the model did not look, instead of tinted by the colormap's dark end."""
    from matplotlib import colormaps

    crop = np.asarray(_crop(image, size), dtype=np.float32) / 255
    values = _upsampled(cam, size)
    weight = alpha * values[:, :, None]
    mixed = ((1 - weight) * crop + weight * colormaps[COLORMAP](values)[:, :, :3]).clip(0, 1)
    blended = Image.fromarray((mixed * 255).round().astype(np.uint8))
    draw = ImageDraw.Draw(blended)
    text = font(label_size(size))
    margin = max(6, size // 60)
    box = draw.textbbox((margin, margin), label, font=text)
    draw.rectangle((box[0] - 4, box[1] - 3, box[2] + 4, box[3] + 3), fill=(0, 0, 0))
    draw.text((margin, margin), label, fill=(255, 255, 255), font=text)
    return blended


def colour_bar(size: int = SIZE, *, alpha: float = ALPHA) -> Image.Image:
    """The overlays' scale, ``size`` px high: each map is normalised per image and class, from its
    coldest cell (0: the skin shows clear) to its hottest (1), drawn as :func:`overlay` blends it
    (here over white), with its ticks."""
    from matplotlib import colormaps

    text = font(max(12, label_size(size) * 3 // 4))
    bar_width, margin = max(14, size // 24), 6
    width = bar_width + 2 * margin + 10 + int(text.getlength("0.5"))
    panel = Image.new("RGB", (width, size), (255, 255, 255))
    ramp = np.linspace(1, 0, size - 2 * margin)[:, None].repeat(bar_width, axis=1)
    weight = alpha * ramp[:, :, None]
    bar = (1 - weight) + weight * colormaps[COLORMAP](ramp)[:, :, :3]
    panel.paste(Image.fromarray((bar * 255).round().astype(np.uint8)), (margin, margin))
    draw = ImageDraw.Draw(panel)
    draw.rectangle((margin - 1, margin - 1, margin + bar_width, size - margin), outline=(0, 0, 0))
    for value in (1.0, 0.5, 0.0):
        y = margin + round((1 - value) * (size - 2 * margin - 1))
        draw.line((margin + bar_width, y, margin + bar_width + 3, y), fill=(0, 0, 0), width=1)
        anchor = "lt" if value == 1 else ("lb" if value == 0 else "lm")
        draw.text((margin + bar_width + 8, y), f"{value:g}", fill=(0, 0, 0), font=text, anchor=anchor)
    return panel


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
        draw.text((left + 6, 4), title, fill=(0, 0, 0), font=font(14))
        left += panel.size[0]
    return sheet


def heatmap_panel(image: np.ndarray, maps: Sequence[tuple[str, np.ndarray]], size: int = SIZE) -> Image.Image:
    """What a dermatologist is shown for one photo (``dgla-client --heatmap``, the heatmap filed in
    the PACS): the photo as shown with the square the model saw outlined, then each labelled map over
    that square, then the scale. ``image`` as decoded for display; ``maps``: (label, raw map)."""
    pictures = [(label, overlay(image, cam, label, size=size)) for label, cam in maps]
    photo = ("photo as shown; outlined: what the model saw", photo_with_crop(image, size=size))
    return side_by_side([photo, *pictures, ("scale", colour_bar(size))])
