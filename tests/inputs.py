"""Named images preprocessed by the package, as torch tensors for the eager model and the reference."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dgla_export.preprocess import Recipe, preprocess_batch


def torch_inputs(images: Sequence[tuple[str, np.ndarray]], recipe: Recipe) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(a) for a in preprocess_batch([image for _, image in images], recipe))


def bomb_png(width: int, height: int, value: int = 128) -> bytes:
    """A valid RGB PNG of one colour: megabytes on disk, ``width * height`` pixels decoded.

    Written row by row through zlib, so making a 12000x12000 one costs no 432 MB here."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\0" + bytes([value]) * (3 * width)  # filter type 0, then the pixels
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def text_bomb_png() -> bytes:
    """A 300x300 PNG of 60 kB whose zTXt chunk inflates to 50 MB: Pillow refuses it with a ValueError."""
    import io
    import zlib

    from PIL import Image

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    small = io.BytesIO()
    Image.new("RGB", (300, 300), (200, 150, 120)).save(small, "PNG")
    body = small.getvalue()
    return body[:33] + chunk(b"zTXt", b"comment\0\0" + zlib.compress(b"\0" * 50_000_000, 9)) + body[33:]


def photo_jpeg(image: np.ndarray, size: tuple[int, int], seed: int = 0) -> bytes:
    """``image`` upscaled to a camera's ``size`` (width, height) with sensor noise, as a JPEG."""
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    big = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC), np.float32)
    big += rng.normal(0, 4, big.shape).astype(np.float32)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def as_sent(recipe, paths, send: str = "pixels") -> tuple[np.ndarray, ...]:
    """The network's inputs for ``paths`` as the server gets them: from the 16-bit pixels a
    pixels-only client sends, normalised as NAME_normalise does (``pixels``), or preprocessed
    whole from the photo (``image``)."""
    from dgla_export.preprocess import from_pixels

    if send == "image":
        return recipe.batch([recipe.load(p) for p in paths])
    pixels = [recipe.pixels(recipe.load(p)) for p in paths]
    return from_pixels([np.stack(column) for column in zip(*pixels, strict=True)], recipe)
