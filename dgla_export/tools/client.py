"""Classify images through a running Triton server (see `dgla-serve`). Prints each image's class and
top-k probabilities, in the class names the served model's repository records; an image the server
cannot decode gets an error line, and the exit code is 2. Imports neither torch nor ONNX Runtime:
a reception PC pays for neither.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dgla_export.data import distinct, find_photos, image_id
from dgla_export.errors import EXIT_USAGE, run_command
from dgla_export.tools.args import (
    add_client_security_args,
    add_common,
    add_preprocess_args,
    client_security,
    positive_int,
)
from dgla_export.triton.client import SEND, Prediction, classify

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dgla-client", description=__doc__)
    parser.add_argument(
        "images",
        nargs="+",
        type=Path,
        help="image files (JPEG, PNG, TIFF, WebP, HEIC, AVIF, DICOM; the format is read from the bytes), or folders "
        "of them (a file is a photo by its extension or its first bytes: a DICOM without .dcm is one; anything else "
        "is named in one line, skipped)",
    )
    parser.add_argument("--url", default="localhost:8001", help="server address: gRPC port 8001, HTTP port 8000")
    parser.add_argument(
        "--model",
        default="dgla",
        metavar="NAME",
        help="NAME (an ensemble, default dgla): see --send; NAME_onnx or NAME_trt: normalised tensors from here. "
        "Inputs, sizes and class names come from the served model",
    )
    parser.add_argument(
        "--send",
        default="pixels",
        choices=SEND,
        help="what an ensemble gets: pixels (default), only the 16-bit pixels the model sees, decoded and cropped "
        "here (to NAME_pixels: no file, no metadata); image, the photo's bytes without metadata, decoded by the server",
    )
    parser.add_argument("--protocol", default="grpc", choices=["grpc", "http"], help="default grpc")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    parser.add_argument("--concurrency", type=positive_int, default=8, help="requests in flight at once (default 8)")
    parser.add_argument("--top-k", type=positive_int, default=3, help="classes to show per image (default 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image instead of text")
    parser.add_argument(
        "--anonymise",
        action="store_true",
        help="name images in the output and the heatmaps by a stable identifier of their bytes (img-<12 hex "
        "digits of SHA-256>) instead of their file names, which often hold a patient's name or number",
    )
    heatmaps = parser.add_argument_group("heatmaps (a repository of a graph exported with --explain)")
    heatmaps.add_argument(
        "--heatmap",
        type=Path,
        metavar="DIR",
        help="write per image DIR/NAME.png (NAME: the photo's file name with its extension, e.g. skin.jpg.png; "
        "each answer line names its heatmap): the photo as shown with the square the model saw outlined, beside that "
        "square under its Grad-CAM map, class and probability in the corner (no metadata in the PNG)",
    )
    heatmaps.add_argument(
        "--heatmap-classes",
        default="top1",
        choices=["top1", "all"],
        help="top1: the predicted class's map (default); all: every class's, side by side, the predicted first",
    )
    heatmaps.add_argument(
        "--force",
        action="store_true",
        help="replace --heatmap (--dicom-out) if it holds earlier heatmaps (results) of dgla-client and nothing else",
    )
    pacs = parser.add_argument_group("results for the hospital's archive (pip extra pacs; docs/hospital.md)")
    pacs.add_argument(
        "--dicom-out",
        type=Path,
        metavar="DIR",
        help="for DICOM photos: write per image DIR/NAME.sr.dcm, a TID 1500 structured report (the class, every "
        "class's probability, the model and its checkpoint's SHA-256; unverified, a decision aid), and with a graph "
        "exported with --explain DIR/NAME.heatmap.dcm, the heatmap as a Secondary Capture, both in the photo's "
        "patient and study, for the PACS",
    )
    add_client_security_args(parser)
    add_preprocess_args(parser, served=True)
    add_common(parser, verbose=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("dgla-client", lambda: _classify(args), debug=args.debug)


HEATMAP_COMMAND = "dgla-client --heatmap"
DICOM_COMMAND = "dgla-client --dicom-out"


def _classify(args: argparse.Namespace) -> int:
    photos = find_photos(args.images, named=not args.anonymise)
    files = list(photos.files)
    if args.heatmap is not None:  # a bad folder fails here, before any request
        from dgla_export.io import check_output_folder

        check_output_folder(args.heatmap, args.force, command=HEATMAP_COMMAND, inputs=files)
    if args.dicom_out is not None:  # every photo a DICOM, and the folder free, before any request
        from dgla_export.io import check_output_folder
        from dgla_export.pacs.results import check_sources

        check_sources(files, [str(p) for p in files] if not args.anonymise else None)
        check_output_folder(args.dicom_out, args.force, command=DICOM_COMMAND, inputs=files)
    if skipped := photos.skipped_line(named=not args.anonymise):
        print(f"dgla-client: {skipped}", file=sys.stderr)
    predictions = classify(
        files,
        url=args.url,
        model=args.model,
        protocol=args.protocol,
        timeout=args.timeout,
        concurrency=args.concurrency,
        preprocess=args.preprocess,
        max_pixels=args.max_pixels,
        max_bytes=args.max_bytes,
        maps=args.heatmap_classes if args.heatmap is not None or args.dicom_out is not None else None,
        maps_optional=args.heatmap is None,  # --dicom-out alone: the heatmap where the graph answers maps
        send=args.send,
        security=client_security(args),
    )
    # Named by the name unique in the run (heatmap files) and printed as given (a path that opens),
    # or by their bytes under --anonymise
    names = distinct([image_id(p.read_bytes()) for p in files]) if args.anonymise else list(photos.names)
    shown = names if args.anonymise else [str(p) for p in files]
    heatmaps: list[Path | None] = [None] * len(files)
    if args.heatmap is not None:
        heatmaps = _write_heatmaps(predictions, args.heatmap, args.heatmap_classes, names)
    filed: list[list[Path]] = [[] for _ in files]
    if args.dicom_out is not None:
        filed = _write_dicom(predictions, args.dicom_out, names)
    failed = 0
    for prediction, name, heatmap, dicom in zip(predictions, shown, heatmaps, filed, strict=True):
        if prediction.probs is None:
            failed += 1
            print(f"dgla-client: error: {name}: {prediction.error}", file=sys.stderr)
            continue
        row = prediction.probs
        order = np.argsort(row)[::-1][: args.top_k]
        top = [(prediction.classes[i], float(row[i])) for i in order]
        if args.json:
            record = {"image": name, "class": top[0][0], "probability": top[0][1], "top_k": top}
            record |= {"heatmap": str(heatmap)} if heatmap else {}
            print(json.dumps(record | ({"dicom": [str(p) for p in dicom]} if dicom else {})))
        else:
            rest = ", ".join(f"{c} {p:.3f}" for c, p in top[1:])
            extra = (f"  heatmap: {heatmap}" if heatmap else "") + (
                f"  dicom: {', '.join(map(str, dicom))}" if dicom else ""
            )
            print(f"{name}: {top[0][0]} {top[0][1]:.3f}  ({rest})" + extra)
    return EXIT_USAGE if failed else 0


def _write_heatmaps(
    predictions: Sequence[Prediction], folder: Path, which: str, names: Sequence[str]
) -> list[Path | None]:
    """One PNG per answered image, ``NAME.png`` after its name unique in the run (a folder's ``/`` as
    ``__``), written as a whole folder (nothing of the user's is touched), in the served model's class
    names and at its finest input's size. Returns where each photo's heatmap is (None: no answer)."""
    from dgla_export.data import file_names
    from dgla_export.io import replace_folder
    from dgla_export.overlay import SHOWN_SIDE, heatmap_panel
    from dgla_export.preprocess import decode_image

    written: list[Path | None] = []
    with replace_folder(folder, command=HEATMAP_COMMAND) as staging:
        for prediction, name in zip(predictions, file_names(names), strict=True):
            written.append(None)
            if prediction.probs is None:
                continue
            file_name = f"{name}.png"
            image = decode_image(prediction.image.read_bytes(), min_side=SHOWN_SIDE)  # as shown; a display: reduced
            size = prediction.config.architecture.display_size
            heatmap_panel(image, prediction.labelled_maps(which), size).save(staging / file_name)
            written[-1] = folder / file_name
    return written


def _write_dicom(predictions: Sequence[Prediction], folder: Path, names: Sequence[str]) -> list[list[Path]]:
    """Per answered photo its report and heatmap (``NAME.sr.dcm``, ``NAME.heatmap.dcm``), written as a
    whole folder like the heatmaps. Returns where each photo's objects are."""
    from dgla_export.data import file_names
    from dgla_export.io import replace_folder
    from dgla_export.pacs.results import dicom_results, write_results

    written: list[list[Path]] = []
    with replace_folder(folder, command=DICOM_COMMAND) as staging:
        for prediction, name in zip(predictions, file_names(names), strict=True):
            paths = write_results(dicom_results(prediction), staging, name) if prediction.probs is not None else []
            written.append([folder / p.name for p in paths])
    return written


if __name__ == "__main__":
    sys.exit(main())
