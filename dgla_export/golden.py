"""Golden answers: what the FP32 PyTorch model answers for a few reference photos.

A served model's answers can change where it is served without any file changing: a CPU with AMX
makes OpenVINO compute BF16 whatever the repository says, and a Pillow, libjpeg, ONNX Runtime or
driver upgrade moves them too. So a graph's validation (``dgla-export onnx``, ``validate``) also
records the PyTorch FP32 probabilities (and, for a graph exported with ``--explain``, the top-1
class's Grad-CAM map) of three photos scikit-image bundles (no patient in them), for each
preprocessing method a repository can serve. ``dgla-export triton`` copies those photos and that
method's answers into the repository, and every start of ``dgla-serve`` sends the photos through
the served ensemble and compares (:mod:`dgla_export.triton.selfcheck`).

For the pixels-only entry point (``NAME_pixels``) the answers are those of the photos' 16-bit
pixels as a pixels-only client makes them on the fast path (:func:`dgla_export.preprocess.to_pixels`),
with the pixels' SHA-256: the repository stores those pixels, and the self-check sends them.

The photos travel as PNG files, so the server decodes exactly the pixels the answers were computed
from (PNG is lossless; a JPEG's decode would depend on the server's libjpeg, which is one of the
things the check is there to catch, but then not separable from the model's own answers).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from dgla_export.models.resnet import ResNet

__all__ = ["METHODS", "PIXELS", "REFERENCE_PHOTOS", "golden_answers", "pixels_digest", "reference_photos"]

REFERENCE_PHOTOS = ("astronaut", "coffee", "chelsea")  # scikit-image's: a person, a cup, a cat
METHODS = ("fast", "exact")  # the preprocessing a repository's NAME_preprocess runs (preprocess.py)
PIXELS = "pixels"  # the answers' key for the 16-bit pixels a pixels-only client sends (NAME_pixels)


def reference_photos() -> dict[str, bytes]:
    """name -> the PNG of each reference photo (encoded here; the repository keeps these bytes)."""
    import skimage.data
    from PIL import Image

    photos = {}
    for name in REFERENCE_PHOTOS:
        buffer = io.BytesIO()
        Image.fromarray(getattr(skimage.data, name)()).save(buffer, format="PNG", compress_level=6)
        photos[name] = buffer.getvalue()
    return photos


def pixels_digest(pixels: tuple[np.ndarray, ...]) -> str:
    """The SHA-256 of one photo's pixels (every input's, in order)."""
    import hashlib

    digest = hashlib.sha256()
    for array in pixels:
        digest.update(np.ascontiguousarray(array, dtype="<u2").tobytes())
    return digest.hexdigest()


def golden_answers(network: ResNet, explain: bool) -> dict[str, Any]:
    """The FP32 PyTorch model's answers for the reference photos, per preprocessing method and for
    their pixels: ``{"photos": {name: sha256}, "pixels": {name: sha256}, "answers": {method or
    "pixels": {name: {"probs": [...], "cam_top1": [[...]]}}}}`` (``cam_top1``, with ``explain``: the
    top-1 class's Grad-CAM, normalised to [0, 1])."""
    import hashlib

    import torch
    from captum.attr import LayerGradCam

    from dgla_export.overlay import normalise_maps
    from dgla_export.preprocess import Preprocessing, from_pixels
    from dgla_export.validation import reference_logits

    photos = reference_photos()
    answers: dict[str, Any] = {}
    digests: dict[str, str] = {}
    for method in (*METHODS, PIXELS):  # decoded and preprocessed by the very code the served model runs
        recipe = Preprocessing.of(network.config, "fast" if method == PIXELS else method)  # type: ignore[arg-type]
        decoded = [recipe.decode(data) for data in photos.values()]
        if method == PIXELS:  # as a pixels-only client makes them, and as NAME_normalise reads them
            pixels = [recipe.pixels(image) for image in decoded]
            digests = {name: pixels_digest(p) for name, p in zip(photos, pixels, strict=True)}
            inputs = from_pixels([np.stack(column) for column in zip(*pixels, strict=True)], recipe)
        else:
            inputs = recipe.batch(decoded)
        logits = reference_logits(network, inputs).astype(np.float64)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = shifted / shifted.sum(axis=1, keepdims=True)
        maps = None
        if explain:  # the top-1 class's map only: one backward pass per photo, not one per class
            gradcam = LayerGradCam(network, network.get_submodule(network.config.architecture.cam_layer))
            tensors = tuple(torch.as_tensor(x).float() for x in inputs)
            top1 = [int(c) for c in probs.argmax(axis=1)]
            attributed = gradcam.attribute(tensors, target=top1, relu_attributions=True).detach()
            maps = normalise_maps(attributed[:, 0].double().numpy())
        answers[method] = {
            name: {"probs": probs[i].tolist(), **({"cam_top1": maps[i].tolist()} if maps is not None else {})}
            for i, name in enumerate(photos)
        }
    photo_digests = {name: hashlib.sha256(data).hexdigest() for name, data in photos.items()}
    return {"photos": photo_digests, "pixels": digests, "answers": answers}
