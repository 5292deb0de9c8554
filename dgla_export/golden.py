"""Golden answers: what the FP32 PyTorch model answers for a few reference photos.

A served model's answers can change where it is served without any file changing: a CPU with AMX
makes OpenVINO compute BF16 whatever the repository says, and a Pillow, libjpeg, ONNX Runtime or
driver upgrade moves them too. So a graph's validation (``dgla-export onnx``, ``validate``) also
records the PyTorch FP32 probabilities (and, for a graph exported with ``--explain``, the top-1
class's Grad-CAM map) of three photos scikit-image bundles (no patient in them), for each
preprocessing method a repository can serve. ``dgla-export triton`` copies those photos and that
method's answers into the repository, and every start of ``dgla-serve`` sends the photos through
the served ensemble and compares (:mod:`dgla_export.triton.selfcheck`).

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

__all__ = ["METHODS", "REFERENCE_PHOTOS", "golden_answers", "reference_photos"]

REFERENCE_PHOTOS = ("astronaut", "coffee", "chelsea")  # scikit-image's: a person, a cup, a cat
METHODS = ("fast", "exact")  # the preprocessing a repository's NAME_preprocess runs (preprocess.py)


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


def golden_answers(network: ResNet, explain: bool) -> dict[str, Any]:
    """The FP32 PyTorch model's answers for the reference photos, per preprocessing method:
    ``{"photos": {name: sha256}, "answers": {method: {name: {"probs": [...], "cam_top1": [[...]]}}}}``
    (``cam_top1``, with ``explain``: the top-1 class's Grad-CAM, normalised to [0, 1])."""
    import hashlib

    import torch
    from captum.attr import LayerGradCam

    from dgla_export.overlay import normalise_maps
    from dgla_export.preprocess import Preprocessing
    from dgla_export.validation import reference_logits

    photos = reference_photos()
    answers: dict[str, Any] = {}
    for method in METHODS:  # decoded and preprocessed by the very code the served model runs
        recipe = Preprocessing.of(network.config, method)  # type: ignore[arg-type]
        inputs = recipe.batch([recipe.decode(data) for data in photos.values()])
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
    return {"photos": {name: hashlib.sha256(data).hexdigest() for name, data in photos.items()}, "answers": answers}
