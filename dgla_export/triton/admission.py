"""What may enter a repository: a graph with a passing validation report of that very graph, or one
its writer chose to serve unvalidated, in the open.

``dgla-export onnx`` and ``validate`` write the report beside the graph (``dgla.validation.json``,
:func:`dgla_export.io.report_beside`), with the graph's SHA-256 and the golden answers
(:mod:`dgla_export.golden`); ``dgla-export triton`` finds it there, so the plain flow needs no
flag. A graph without one, with another graph's, or with a failed one is refused (exit 2, naming
the command that writes one), unless ``--unvalidated``: then the version's manifest says so and
every start of dgla-serve prints it. The golden answers for the repository's preprocessing method
and the served precision's tolerance go into the version's manifest, and the reference photos
into the ensemble's version folder (Triton reads nothing there), for the self-check at every start
(:mod:`dgla_export.triton.selfcheck`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dgla_export.errors import UserError, option
from dgla_export.io import report_beside

if TYPE_CHECKING:
    from dgla_export.preprocess import Recipe

__all__ = ["Admission", "AdmissionError", "admit", "served_precision", "write_golden"]

REFERENCE_FOLDER = "reference"  # in the ensemble's version folder: the reference photos


class AdmissionError(UserError):
    """A graph without a passing report of itself, bound for a repository."""


@dataclasses.dataclass(frozen=True)
class Admission:
    """Why a graph may be served: its report (None when written unvalidated) and its golden answers."""

    report: dict[str, Any] | None
    golden: dict[str, Any] | None

    @property
    def unvalidated(self) -> bool:
        return self.report is None


def admit(
    onnx_path: Path, digest: str, validation: Path | None, *, unvalidated: bool, runtime: str | None = None
) -> Admission:
    """The graph's report (``validation``, else the one beside the graph), checked to be of this very
    graph (``digest``) and passed, and for an INT8 graph passed on the ``runtime`` that will serve
    it (``onnxruntime``, ``openvino``): INT8 arithmetic differs between runtimes (the same Q/DQ
    graph 0.31 off FP32 on one and 0.19 on the other, docs/cpu.md). With ``unvalidated``, a graph
    without such a report is admitted without one (the caller records it)."""
    try:
        return _admitted(onnx_path, digest, validation, runtime)
    except AdmissionError:
        if unvalidated:
            return Admission(None, None)
        raise


def _admitted(onnx_path: Path, digest: str, validation: Path | None, runtime: str | None) -> Admission:
    validate_hint = f"dgla-export validate {onnx_path}"
    path = validation if validation is not None else report_beside(onnx_path)
    if validation is None and not path.is_file():
        raise AdmissionError(
            f"{onnx_path} has no validation report beside it ({path.name}), so nothing says it answers what "
            f"PyTorch answers: validate it (`{validate_hint}` writes {path.name}), or serve it unvalidated with "
            f"{option('--unvalidated', 'unvalidated=True')} (recorded, and printed at every start)"
        )
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise AdmissionError(f"cannot read the validation report {path}: {err}") from err
    if not isinstance(report, dict):
        raise AdmissionError(f"{path} is JSON but not a validation report (an object): `{validate_hint}` writes one")
    if report.get("graph_sha256") != digest:
        raise AdmissionError(
            f"{path} is not a report on {onnx_path} (another graph's SHA-256, or none): the graph changed after "
            f"it was validated; validate it again with `{validate_hint}`"
        )
    if report.get("passed") is not True:
        raise AdmissionError(f"{path} says the graph FAILED validation ({report.get('verdict')}); it is not served")
    validated_on = str(report.get("runtime", ""))
    if runtime and report.get("precision") == "int8" and not validated_on.startswith(runtime):
        raise AdmissionError(
            f"{path} validated this INT8 graph on {validated_on or 'an unnamed runtime'}, and it is to be served on "
            f"{runtime}, whose INT8 arithmetic differs: validate it there (`{validate_hint} --runtime {runtime}` "
            f"writes {path.name}), or serve it with the runtime it was validated on"
        )
    golden = report.pop("golden", None)
    if not (isinstance(golden, dict) and isinstance(golden.get("answers"), dict) and golden.get("photos")):
        raise AdmissionError(
            f"{path} carries no golden answers (a report of an earlier dgla-export), so the server's answers could "
            f"not be checked where it runs: validate it again with `{validate_hint}`"
        )
    from dgla_export.golden import PIXELS

    if PIXELS not in golden["answers"] or not golden.get("pixels"):
        raise AdmissionError(
            f"{path} carries no golden answers for the pixels-only entry point, which dgla-client uses by default (a "
            f"report of an earlier dgla-export), so its answers could not be checked where it runs: validate it "
            f"again with `{validate_hint}`"
        )
    return Admission(report, golden)


def served_precision(metadata: dict[str, str], openvino_bf16: bool) -> str:
    """The precision the served answers have: the graph's, or BF16 where OpenVINO computes it."""
    return "bf16" if openvino_bf16 else metadata.get("precision", "fp32")


def write_golden(
    admission: Admission,
    folder: Path,
    relative: str,
    *,
    method: str,
    precision: str,
    tolerances: dict[str, Any],
    pixels: tuple[str, Recipe] | None = None,
) -> dict[str, Any] | None:
    """Write the reference photos into ``folder`` (the ensemble's version folder, ``relative`` to the
    repository) and return the manifest's ``golden`` record: the answers for ``method``, the served
    ``precision`` and its tolerance (no photos for a method the answers were not computed for:
    DALI's). None when there is nothing to check (unvalidated, or a report without golden answers).
    ``pixels``: the pixels-only entry point's name and the model's recipe; the photos' 16-bit
    pixels go into its version folder (``reference/PHOTO.INPUT.npy``) with their answers, for that
    entry point."""
    golden = admission.golden
    if golden is None:
        return None
    from dgla_export.golden import PIXELS, reference_photos

    photos = reference_photos()
    if {name: hashlib.sha256(data).hexdigest() for name, data in photos.items()} != golden["photos"]:
        raise AdmissionError(_ELSEWHERE.format(what="the reference photos encode"))
    (folder / REFERENCE_FOLDER).mkdir(parents=True, exist_ok=True)
    tolerance = tolerances[precision]
    record: dict[str, Any] = {
        "method": method,
        "precision": precision,
        "tolerance": {"probs_abs": tolerance["probs_abs"], "cam_abs": tolerance["cam_abs"]},
        "photos": {},  # none for a method the answers were not computed for (DALI's)
    }
    for name, data in photos.items() if method in golden.get("answers", {}) else ():
        (folder / REFERENCE_FOLDER / f"{name}.png").write_bytes(data)
        file = f"{relative}/{REFERENCE_FOLDER}/{name}.png"
        record["photos"][name] = {"file": file, **golden["answers"][method][name]}
    if pixels is not None and PIXELS in golden.get("answers", {}):
        model, recipe = pixels  # its reference pixels in its own version folder (an object store keeps no empty one)
        own = folder.parent.parent / model / folder.name
        record["pixels"] = _write_pixels(golden, photos, own, f"{model}/{folder.name}", model, recipe)
    return record if record["photos"] or record.get("pixels") else None


_ELSEWHERE = (
    "{what} differently here than where the graph was validated (another Pillow or zlib): validate the graph "
    "again on this machine"
)


def _write_pixels(
    golden: dict[str, Any], photos: dict[str, bytes], folder: Path, relative: str, model: str, recipe: Recipe
) -> dict[str, Any]:
    """The reference photos' pixels as the validation computed them (their SHA-256 checked), one
    ``.npy`` per input, and their answers: what the self-check sends ``model`` (``NAME_pixels``)."""
    import numpy as np

    from dgla_export.golden import PIXELS, pixels_digest
    from dgla_export.preprocess import Preprocessing

    made = Preprocessing.of(recipe, "fast")
    entry: dict[str, Any] = {"model": model, "photos": {}}
    (folder / REFERENCE_FOLDER).mkdir(parents=True, exist_ok=True)
    for name, data in photos.items():
        pixels = made.pixels(made.decode(data))
        if pixels_digest(pixels) != golden.get("pixels", {}).get(name):
            raise AdmissionError(_ELSEWHERE.format(what="the reference photos' pixels come out"))
        files = {}
        for input_name, array in zip(recipe.input_sizes, pixels, strict=True):
            np.save(folder / REFERENCE_FOLDER / f"{name}.{input_name}.npy", array[None], allow_pickle=False)
            files[input_name] = f"{relative}/{REFERENCE_FOLDER}/{name}.{input_name}.npy"
        entry["photos"][name] = {"files": files, **golden["answers"][PIXELS][name]}
    return entry
