"""The self-check: a served ensemble answers its reference photos as PyTorch did, on this machine.

Answers change where a model is served without a file changing (a CPU with AMX makes OpenVINO
compute BF16; a Pillow, libjpeg, ONNX Runtime or driver upgrade moves them), and a file can change
behind its manifest. So every start of ``dgla-serve`` checks each file of each served version
against its manifest's SHA-256, then sends the version's reference photos through the ensemble over
HTTP and compares the probabilities (and the top-1 maps of an explained graph) with the golden
answers the version's manifest carries (:mod:`dgla_export.triton.admission`), within the served
precision's tolerance, before it says ready; an answer outside it stops the start (exit 3, naming
the model, the photo and the error).

This file is also the check for any other Triton deployment: ``dgla-export triton`` copies it into
the repository (``NAME/selfcheck.py``), where it runs with the standard library and numpy alone
(the official container's Python has both):

    python3 triton-repo/dgla/selfcheck.py --url http://127.0.0.1:8000

with the keys from ``$DGLA_API_KEY`` and ``$DGLA_ADMIN_KEY`` when the server has them. Exit 0: every
answer within tolerance; 3: one is not; 2: the server or the repository cannot be read.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Answer", "SelfCheck", "SelfCheckError", "check", "main", "verify_files"]

MANIFEST = "manifest.json"
KEY_HEADERS = {"DGLA_API_KEY": "dgla-api-key", "DGLA_ADMIN_KEY": "dgla-admin-key"}
# The version an ensemble's config pins, in protobuf's text format (either field syntax).
_VERSION = re.compile(r"version_policy\s*:?\s*\{\s*specific\s*:?\s*\{\s*versions\s*:\s*\[?\s*(\d+)")
_ENSEMBLE = re.compile(r'^platform\s*:\s*"ensemble"', re.M)


class SelfCheckError(Exception):
    """The repository or the server cannot be read: not a verdict on the answers."""

    user_facing = True


@dataclasses.dataclass(frozen=True)
class Answer:
    """One reference photo through one ensemble: the largest probability and map errors."""

    model: str
    version: int
    photo: str
    probs_abs: float
    cam_abs: float | None
    precision: str
    tolerance: dict[str, float]
    error: str | None = None  # the server's error, when it did not answer

    @property
    def passed(self) -> bool:
        if self.error is not None:
            return False
        within = self.probs_abs <= self.tolerance["probs_abs"]
        return within and (self.cam_abs is None or self.cam_abs <= self.tolerance["cam_abs"])

    def describe(self) -> str:
        where = f"{self.model} v{self.version}, photo {self.photo}"
        if self.error is not None:
            return f"{where}: no answer ({self.error})"
        maps = f", top-1 map {self.cam_abs:.3g} (<= {self.tolerance['cam_abs']:g})" if self.cam_abs is not None else ""
        return (
            f"{where}: probabilities differ from PyTorch FP32 by {self.probs_abs:.3g} "
            f"(<= {self.tolerance['probs_abs']:g} allowed for {self.precision}){maps}"
        )


@dataclasses.dataclass(frozen=True)
class SelfCheck:
    """Every answer checked, the ensembles with nothing to check (unvalidated), and the time it took."""

    answers: tuple[Answer, ...]
    unchecked: tuple[str, ...]  # "NAME vN: why its answers are not checked"
    seconds: float

    @property
    def passed(self) -> bool:
        return all(a.passed for a in self.answers)

    @property
    def failures(self) -> tuple[Answer, ...]:
        return tuple(a for a in self.answers if not a.passed)

    def summary(self) -> str:
        if not self.answers:
            return "self-check: nothing to check (no version with golden answers)"
        worst = max(self.answers, key=lambda a: (not a.passed, a.probs_abs))
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"self-check {verdict}: {len(self.answers)} answers of {len({a.model for a in self.answers})} "
            f"ensemble(s) in {self.seconds:.1f} s; largest: {worst.describe()}"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def served_versions(repository: Path, versions: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """The manifest of each ensemble's served version: the one its config pins, or ``versions``'.
    An ensemble that neither has one nor belongs to one (``NAME_pixels`` is NAME's) cannot be
    checked, and says so."""
    found, unowned = [], []
    for config in sorted(repository.glob("*/config.pbtxt")):
        text = config.read_text(errors="replace")
        pinned = _VERSION.search(text)
        number = (versions or {}).get(config.parent.name) or (int(pinned[1]) if pinned else None)
        manifest = config.parent / str(number) / MANIFEST
        if number is not None and manifest.is_file():
            try:
                record = json.loads(manifest.read_text(encoding="utf-8"))
                record["pinned"] = bool(pinned) and int(pinned[1]) == number  # served as its configs say
                found.append(record)
            except (OSError, ValueError) as err:
                raise SelfCheckError(f"{manifest} cannot be read: {err}") from err
        elif _ENSEMBLE.search(text):
            unowned.append(config.parent.name)
    owned = {model for record in found for model in record.get("configs", {})}
    for name in unowned:
        if name not in owned:
            raise SelfCheckError(
                f"{name} has no version manifest for the version it serves, so its answers cannot be "
                "checked: write it again with `dgla-export triton`"
            )
    return found


def verify_files(repository: Path, manifest: dict[str, Any], *, configs: bool = True) -> None:
    """Each file of the version as its manifest records it (its SHA-256), nothing else in its version
    folders, and with ``configs`` (the version the repository's configs serve) each of its models'
    config.pbtxt and labels as written: a config names the code a model runs, the labels what the
    client calls each class. (A version about to be served by other means gets its configs and
    labels from the manifest itself: a rollback, ``dgla-serve --version``.)"""
    version, name = manifest["version"], manifest["name"]
    files = manifest.get("files", {})
    for relative, expected in files.items():
        path = repository / relative
        if not path.is_file():
            raise SelfCheckError(f"version {version} of {name} lacks {relative}; it cannot be served")
        if _sha256(path) != expected:
            raise SelfCheckError(
                f"{relative} changed since version {version} of {name} was written (its SHA-256 differs from the "
                "manifest's); write that version again"
            )
    for model, text in manifest.get("configs", {}).items():
        folder = repository / model
        extra = sorted(
            str(p.relative_to(repository)) for p in (folder / str(version)).rglob("*")
            if (p.is_file() or p.is_symlink()) and p.name != MANIFEST and str(p.relative_to(repository)) not in files
        )  # fmt: skip
        if extra:
            raise SelfCheckError(f"{extra[0]} is in version {version} of {name} but not in its manifest; remove it")
        if not configs:
            continue
        labels = folder / "labels.txt"
        if labels.is_file() and labels.read_text(errors="replace") != manifest.get("labels"):
            raise SelfCheckError(f"{model}/labels.txt changed since version {version} of {name} was written")
        if (folder / "config.pbtxt").read_text(errors="replace") != text:
            raise SelfCheckError(
                f"{model}/config.pbtxt changed since version {version} of {name} was written; serve the version's own "
                f"configs with `dgla-export versions {repository} --activate {version}`"
            )


def _infer(url: str, model: str, inputs: list[tuple[str, str, list[int], bytes]], outputs: list[str],
           headers: dict[str, str], timeout: float) -> dict:  # fmt: skip
    """One request to ``model`` over Triton's HTTP API, each input (name, datatype, shape, raw bytes)
    as binary data."""
    described = [
        {"name": name, "shape": shape, "datatype": dtype, "parameters": {"binary_data_size": len(data)}}
        for name, dtype, shape, data in inputs
    ]
    request = {
        "inputs": described,
        "outputs": [{"name": name, "parameters": {"binary_data": False}} for name in outputs],
    }
    header = json.dumps(request).encode()
    sent = urllib.request.Request(
        f"{url.rstrip('/')}/v2/models/{model}/infer",
        data=header + b"".join(data for *_, data in inputs),
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream",
                 **headers},
    )  # fmt: skip
    with urllib.request.urlopen(sent, timeout=timeout) as answer:
        body = json.loads(answer.read())
    return {o["name"]: np.asarray(o["data"], dtype=np.float64).reshape(o["shape"]) for o in body["outputs"]}


def _image_request(repository: Path, expected: dict[str, Any]) -> list[tuple[str, str, list[int], bytes]]:
    """A reference photo as the ensemble takes it: one BYTES element (a 4-byte length, then the PNG)."""
    image = (repository / expected["file"]).read_bytes()
    return [("image", "BYTES", [1, 1], len(image).to_bytes(4, "little") + image)]


def _pixels_request(repository: Path, expected: dict[str, Any]) -> list[tuple[str, str, list[int], bytes]]:
    """A reference photo's 16-bit pixels as ``NAME_pixels`` takes them: one uint16 tensor per input
    (little-endian, as Triton reads binary data)."""
    arrays = {name: np.load(repository / file, allow_pickle=False) for name, file in expected["files"].items()}
    return [(name, "UINT16", list(a.shape), np.ascontiguousarray(a, "<u2").tobytes()) for name, a in arrays.items()]


def _normalised(maps: np.ndarray) -> np.ndarray:
    low, span = maps.min(), maps.max() - maps.min()
    return (maps - low) / span if span > 0 else np.zeros_like(maps)


def check(
    repository: Path,
    url: str,
    headers: dict[str, str] | None = None,
    timeout: float = 120.0,
    *,
    versions: dict[str, int] | None = None,
    verify: bool = True,
) -> SelfCheck:
    """Verify every served version's files (unless ``verify`` is off: the caller did), then send its
    reference photos to ``url`` (Triton's HTTP endpoint) and compare each answer with the golden one.
    ``versions``: ensembles served at another version than their configs pin (``dgla-serve --version``)."""
    started = time.monotonic()
    answers: list[Answer] = []
    unchecked: list[str] = []
    for manifest in served_versions(repository, versions):
        try:
            _check_version(repository, manifest, url, headers or {}, timeout, verify, answers, unchecked)
        except (KeyError, TypeError, AttributeError) as err:
            raise SelfCheckError(f"{manifest.get('name')}'s manifest is not one this check reads (no {err})") from err
    return SelfCheck(tuple(answers), tuple(unchecked), time.monotonic() - started)


def _check_version(
    repository: Path,
    manifest: dict[str, Any],
    url: str,
    headers: dict[str, str],
    timeout: float,
    verify: bool,
    answers: list[Answer],
    unchecked: list[str],
) -> None:
    if verify:
        verify_files(repository, manifest, configs=manifest["pinned"])
    name, version, golden = manifest["name"], manifest["version"], manifest.get("golden")
    if not golden or not (golden.get("photos") or golden.get("pixels")):
        why = (
            "UNVALIDATED (written with --unvalidated)"
            if manifest.get("unvalidated")
            else "no golden answers (written before repositories carried them)"
        )
        unchecked.append(f"{name} v{version}: {why}; its answers are not checked")
        return
    entries = [(name, golden.get("photos") or {}, _image_request)]
    if not entries[0][1]:
        unchecked.append(
            f"{name} v{version}: no golden answers for DALI preprocessing; its image entry point is not checked"
        )
    if golden.get("pixels"):  # the pixels-only entry point, with the same model behind it
        entries.append((golden["pixels"]["model"], golden["pixels"]["photos"], _pixels_request))
    for model, photos, request in entries:
        for photo, expected in photos.items():
            answer = functools.partial(
                Answer, model, version, photo, precision=golden["precision"], tolerance=golden["tolerance"]
            )
            answers.append(_answer(model, answer, url, headers, timeout, request(repository, expected), expected))


def _answer(model: str, answer: Callable[..., Answer], url: str, headers: dict[str, str], timeout: float, inputs,
            expected: dict[str, Any]) -> Answer:  # fmt: skip
    """One reference photo's answer from ``model``, compared with its golden answer (``answer``: the
    :class:`Answer` of this model, version and photo, given the errors)."""
    outputs = ["probs", *(["cam_top1"] if "cam_top1" in expected else [])]
    try:
        got = _infer(url, model, inputs, outputs, headers, timeout)
    except (OSError, ValueError, KeyError) as err:
        detail = err.read().decode(errors="replace")[:200] if isinstance(err, urllib.error.HTTPError) else ""
        return answer(probs_abs=math.inf, cam_abs=None, error=f"{err} {detail}".strip())
    golden_probs = np.asarray(expected["probs"])
    if got["probs"].shape[-1] != golden_probs.shape[-1]:
        shape = f"{got['probs'].shape[-1]} probabilities where the golden answer has {golden_probs.shape[-1]}"
        return answer(probs_abs=math.inf, cam_abs=None, error=shape)
    probs = float(np.abs(got["probs"][0] - golden_probs).max())
    cam = None
    if "cam_top1" in expected:
        served, reference = _normalised(got["cam_top1"][0]), np.asarray(expected["cam_top1"])
        cam = float(np.abs(served - reference).max()) if served.shape == reference.shape else math.inf
    return answer(probs_abs=probs, cam_abs=cam)


def _wait_ready(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/v2/health/ready", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1.0)
    if seconds:
        raise SelfCheckError(f"the server at {url} was not ready within {seconds:g} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="selfcheck.py", description=__doc__.split("\n\n")[0] if __doc__ else None
    )  # fmt: skip
    here = Path(__file__).resolve().parent.parent
    parser.add_argument("repository", nargs="?", type=Path, default=here, help="the repository (default: this file's)")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server's HTTP endpoint")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each answer")
    parser.add_argument(
        "--wait", type=float, default=0.0, metavar="S", help="first wait up to S seconds for the server to be ready"
    )
    args = parser.parse_args(argv)
    headers = {header: os.environ[env] for env, header in KEY_HEADERS.items() if os.environ.get(env)}
    try:
        _wait_ready(args.url, args.wait)
        result = check(args.repository, args.url, headers, args.timeout)
    except (SelfCheckError, OSError) as err:
        print(f"selfcheck.py: error: {err}", file=sys.stderr)
        return 2
    for line in result.unchecked:
        print(line)
    for answer in result.failures:
        print(f"selfcheck.py: FAILED: {answer.describe()}", file=sys.stderr)
    print(result.summary())
    return 0 if result.passed else 3


if __name__ == "__main__":
    sys.exit(main())
