"""Only what the model sees leaves the clinic PC: the pixels-only entry point (NAME_pixels).

The normaliser graph against the package's numbers; the answers against the server reading the
photo itself; and, as an attacker would check it, every byte the client sends recorded on its way
to the real shared server: no marker of the patient, no file name, no container, only the model's
16-bit pixels.
"""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from inputs import photo_jpeg
from tritonclient.grpc import model_config_pb2
from wire import Recorder

from dgla_export.models.config import ModelConfig
from dgla_export.preprocess import PIXEL_LEVELS, Preprocessing, from_pixels
from dgla_export.triton.client import classify
from dgla_export.triton.normalise import normalise_graph
from dgla_export.triton.repository import write_repository

AGREEMENT = 0.01  # pixels-only vs the server reading the photo: probability, max abs (the bound)
MARGIN = 0.05  # top-1 may differ only where the bytes path's top two are closer than this (the fast path's rule)


def _parse(path: Path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_the_normaliser_graph_computes_from_pixels_to_the_last_bit(tiny, images) -> None:
    """NAME_normalise's ONNX graph (ONNX Runtime) equals from_pixels, which the golden answers use."""
    import onnxruntime

    recipe = Preprocessing.of(tiny.config)
    pixels = [recipe.pixels(image) for _, image in images[:3]]
    batch = [np.stack(column) for column in zip(*pixels, strict=True)]
    assert [b.dtype for b in batch] == [np.uint16, np.uint16] and batch[1].shape == (3, 192, 192, 3)
    graph = normalise_graph(tiny.config.input_sizes, tiny.config.mean, tiny.config.std)
    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    served = session.run(None, dict(zip(tiny.config.input_names, batch, strict=True)))
    expected = from_pixels(batch, recipe)
    for got, want in zip(served, expected, strict=True):
        assert got.shape == want.shape and np.array_equal(got, want), float(np.abs(got - want).max())
    floats = recipe.batch([image for _, image in images[:3]])  # within half a 16-bit level of the float path
    worst = max(float(np.abs(a - b).max()) for a, b in zip(expected, floats, strict=True))
    half = 0.5 / PIXEL_LEVELS / min(tiny.config.std)
    print(f"16-bit pixels vs float preprocessing: {worst:.2e} after normalisation (half a level: {half:.2e})")
    assert worst <= half * 1.01, worst


def test_the_repository_has_the_pixels_entry_point(tiny_onnx, tmp_path) -> None:
    repo = tmp_path / "repo"
    write_repository(tiny_onnx["fp32"], repo)
    entry = _parse(repo / "dgla_pixels" / "config.pbtxt")
    assert entry.platform == "ensemble"
    assert {i.name: (i.data_type, list(i.dims)) for i in entry.input} == {
        "image_224": (model_config_pb2.TYPE_UINT16, [96, 96, 3]),
        "image_448": (model_config_pb2.TYPE_UINT16, [192, 192, 3]),
    }
    assert [s.model_name for s in entry.ensemble_scheduling.step] == ["dgla_normalise", "dgla_onnx"]
    assert [s.model_version for s in entry.ensemble_scheduling.step] == [1, 1]
    assert ModelConfig.from_dict(json.loads(entry.parameters["model_config"].string_value)).input_sizes == {
        "image_224": 96,
        "image_448": 192,
    }
    assert entry.parameters["pixels_method"].string_value == "fast"  # how its clients make the pixels
    normalise = _parse(repo / "dgla_normalise" / "config.pbtxt")
    assert normalise.platform == "onnxruntime_onnx" and normalise.dynamic_batching.default_queue_policy.max_queue_size
    assert (repo / "dgla_pixels" / "labels.txt").read_text() == (repo / "dgla" / "labels.txt").read_text()
    manifest = json.loads((repo / "dgla" / "1" / "manifest.json").read_text())
    assert "dgla_normalise/1/model.onnx" in manifest["files"] and "dgla_pixels" in manifest["configs"]
    pixels = manifest["golden"]["pixels"]
    assert pixels["model"] == "dgla_pixels" and len(pixels["photos"]) == 3
    for photo in pixels["photos"].values():  # the reference pixels, recorded and hashed like every file
        assert set(photo["files"]) == {"image_224", "image_448"}
        assert all(file in manifest["files"] for file in photo["files"].values())


@pytest.fixture(scope="module")
def corpus_files(tmp_path_factory):
    """Every photo encoding of the corpus (each carrying the patient in its containers), named after the patient."""
    import skimage.data
    from photo_encodings import corpus
    from PIL import Image

    photo = np.asarray(Image.fromarray(skimage.data.retina()).resize((1200, 900), Image.Resampling.BICUBIC))
    folder = tmp_path_factory.mktemp("pixels-photos")
    files = {}
    for name, data in corpus(photo).items():
        files[name] = folder / f"Jane_Example_{name}.bin"
        files[name].write_bytes(data)
    return files


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_only_the_models_pixels_cross_the_wire(triton_server, tiny, corpus_files, protocol) -> None:
    """The attack: relay the client through a recorder and read everything it sent. No identity
    marker, no file name, no container signature; the request bytes are the pixels and a little
    protocol. The premise is checked: the markers are in the files before."""
    from photo_encodings import IDENTITY, markers_in

    files = [corpus_files[name] for name in sorted(corpus_files)]
    before = sum(len(markers_in(f.read_bytes())) for f in files)
    assert before >= len(files), f"the corpus carries only {before} markers in {len(files)} files"
    port = triton_server.http if protocol == "http" else triton_server.grpc
    recorder = Recorder(port)
    try:
        answers = classify(files, url=f"127.0.0.1:{recorder.port}", protocol=protocol, concurrency=4)
    finally:
        recorder.close()
    assert all(a.error is None for a in answers), [a.error for a in answers if a.error]
    sent = bytes(recorder.sent)
    leaked = [m for m in (*IDENTITY, b"Jane_Example", b"Jane Example") if m in sent]
    containers = [sig for sig in (b"\xff\xd8\xff", b"\x89PNG", b"DICM", b"Exif", b"ftypheic", b"WEBP") if sig in sent]
    pixel_bytes = sum(2 * 3 * size * size for size in tiny.config.input_sizes.values())
    recipe = Preprocessing.of(tiny.config)
    first = recipe.pixels(recipe.load(files[0]))
    print(
        f"{protocol}: {len(sent):,} bytes sent for {len(files)} photos ({len(sent) / len(files):,.0f} a photo; the "
        f"pixels are {pixel_bytes:,}); {before} identity markers in the files, {len(leaked)} on the wire"
    )
    assert not leaked, f"on the wire: {leaked}"
    assert not containers, f"an image container crossed the wire: {containers}"
    assert first[1].tobytes()[:4096] in sent, "the recorder did not see the pixels: its premise fails"
    assert len(files) * pixel_bytes <= len(sent) <= len(files) * (pixel_bytes + 4096), len(sent)


@pytest.mark.slow
def test_a_dicom_whose_pixels_may_show_the_patient_is_not_sent(triton_server, tmp_path) -> None:
    import pydicom
    import skimage.data
    from photo_encodings import ENCODINGS

    path = tmp_path / "burned.dcm"
    dataset = pydicom.dcmread(io.BytesIO(ENCODINGS["dicom_rle"](skimage.data.astronaut())))
    dataset.BurnedInAnnotation = "YES"
    dataset.save_as(path)
    recorder = Recorder(triton_server.http)
    try:
        (answer,) = classify([path], url=f"127.0.0.1:{recorder.port}", protocol="http")
        (raw,) = classify([path], url=f"127.0.0.1:{recorder.port}", protocol="http", model="dgla_onnx")  # tensors
    finally:
        recorder.close()
    assert answer.error and "BurnedInAnnotation YES" in answer.error, answer.error
    assert raw.error and "BurnedInAnnotation YES" in raw.error, raw.error
    assert b"/infer" not in bytes(recorder.sent), "an inference request was sent"
    assert b"/v2/models/dgla_pixels" in bytes(recorder.sent), "the premise: the client spoke through the recorder"


@pytest.mark.slow
def test_pixels_answer_as_the_server_reading_the_photo(triton_server, images, corpus_files, tmp_path) -> None:
    """Within 0.01 in probability of the image path on the same files (the corpus at 1200x900 and a
    6000x4000 camera JPEG), no top-1 flip where the image path's margin is >= 0.05."""
    big = tmp_path / "IMG_0001.JPG"
    big.write_bytes(photo_jpeg(images[2][1], (6000, 4000)))
    files = [big, *(corpus_files[name] for name in sorted(corpus_files))]
    url = triton_server.grpc_url
    pixels = np.stack([a.probs for a in classify(files, url=url)])
    image = np.stack([a.probs for a in classify(files, url=url, send="image")])
    err = np.abs(pixels - image).max(axis=1)
    top2 = np.sort(image, axis=1)[:, -2:]
    decisive = top2[:, 1] - top2[:, 0] >= MARGIN
    flips = [
        f.name for f, a, b, d in zip(files, pixels.argmax(1), image.argmax(1), decisive, strict=True) if d and a != b
    ]
    worst = files[int(err.argmax())].name
    print(f"pixels vs image path: max {err.max():.2e} ({worst}), median {np.median(err):.2e} over {len(files)} photos; "
          f"{int(decisive.sum())} with a margin >= {MARGIN}, {len(flips)} flipped")  # fmt: skip
    assert err.max() <= AGREEMENT, f"{files[int(err.argmax())].name}: {err.max():.4f}"
    assert not flips, flips


@pytest.mark.slow
def test_the_self_check_sends_the_pixels_entry_point_its_reference_pixels(triton_server) -> None:
    """Every start checks NAME_pixels too: dgla-serve's self-check line counts its answers."""
    import re

    progress = triton_server.serve.stderr_so_far()  # dgla-serve's progress, the self-check's line in it
    said = re.search(r"self-check passed: (\d+) answers of (\d+) ensemble", progress)
    assert said, progress[-2000:]
    validated = [n for n in triton_server.written if "int8" not in n]  # the INT8 ones are written unvalidated
    per_entry = 3  # reference photos
    dali = int(importlib.util.find_spec("nvidia.dali") is not None)  # its image input has no golden answers
    expected = per_entry * (2 * len(validated) - dali)
    assert int(said[1]) == expected, (said[0], validated)


@pytest.mark.slow
def test_the_pixels_are_made_as_the_repository_reads_photos(triton_server, tiny, corpus_files) -> None:
    """dgla_exact's repository reads photos the exact way: its pixels entry point says so, and the
    client makes its pixels that way unless told otherwise."""
    from inputs import as_sent

    from dgla_export.runtimes.onnxruntime import create_session

    files = [corpus_files[name] for name in ("jpeg", "png", "tiff_adobergb")]
    graph = triton_server.repository / "dgla_exact_onnx" / "1" / "model.onnx"
    session = create_session(graph, "cpu")
    for method, kwargs in (("exact", {}), ("fast", {"preprocess": "fast"})):
        served = np.stack([a.probs for a in classify(files, url=triton_server.grpc_url, model="dgla_exact", **kwargs)])
        inputs = as_sent(Preprocessing.of(tiny.config, method), files)
        local = session.run(["probs"], dict(zip(tiny.config.input_names, inputs, strict=True)))[0]
        err = float(np.abs(served - local).max())
        print(f"dgla_exact's pixels made {method}: served vs local {err:.1e}")
        assert err <= 1e-5, (method, err)
