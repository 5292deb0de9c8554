"""Clinical acceptance: the scores a dermatologist signs off, next to the FP32 reference on the same
images, with paired bootstrap intervals, and --max-drop turning a larger drop into a failure."""

from __future__ import annotations

import numpy as np
import pytest

from dgla_export.clinical import acceptance_scores, clinical_check, match_labels, parse_max_drop, read_labels, score
from dgla_export.errors import UserError

CLASSES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")


def _labelled_set(count: int = 70, seed: int = 0):
    """Logits of a decent classifier on ``count`` images with every class present."""
    rng = np.random.default_rng(seed)
    truth = np.arange(count) % len(CLASSES)
    logits = rng.normal(0, 1, (count, len(CLASSES)))
    logits[np.arange(count), truth] += 2.0
    names = [f"ISIC_{i:07d}" for i in range(count)]
    return names, dict(zip(names, truth.tolist(), strict=True)), logits


def test_the_fast_scores_equal_scikit_learns() -> None:
    from dgla_export.compare import softmax

    names, labels, logits = _labelled_set()
    truth = np.array([labels[n] for n in names])
    slow = score(logits, names, labels, CLASSES)
    fast = acceptance_scores(truth, softmax(logits), len(CLASSES), 0)
    for metric in ("balanced_accuracy", "mel_sensitivity", "mel_specificity", "macro_auc"):
        assert fast[metric] == pytest.approx(getattr(slow, metric), abs=1e-12), metric
    assert 0.5 < slow.balanced_accuracy < 1 and slow.mel_specificity is not None


def test_the_same_answers_differ_by_nothing_and_pass() -> None:
    names, labels, logits = _labelled_set()
    check = clinical_check(logits, logits.copy(), names, labels, CLASSES, max_drop={"mel_sensitivity": 0.0})
    assert check.passed, check.failures
    for difference in check.differences.values():
        assert difference.delta == 0 and difference.low == difference.high == 0, difference


def test_a_runtime_that_misses_melanomas_fails_its_max_drop() -> None:
    names, labels, logits = _labelled_set()
    worse = logits.copy()
    found = [i for i, n in enumerate(names) if labels[n] == 0 and logits[i].argmax() == 0]
    melanomas = found[:4]  # 4 of the 10 melanomas that FP32 finds, called naevi
    worse[melanomas, 1] = worse[melanomas, 0] + 1.0
    check = clinical_check(logits, worse, names, labels, CLASSES, max_drop=parse_max_drop("mel_sensitivity=0.1"))
    mel = check.differences["mel_sensitivity"]
    assert not check.passed and mel.delta == pytest.approx(-0.4), mel
    assert check.failures[0].startswith("mel_sensitivity drops 0.400"), check.failures
    assert mel.low <= mel.delta <= mel.high <= 0 and mel.low < -0.2, mel  # the interval holds the estimate
    assert check.differences["mel_specificity"].delta >= 0  # fewer melanoma calls: specificity cannot fall


def _csv(folder, *rows: str):
    path = folder / "truth.csv"
    path.write_text("image," + ",".join(CLASSES) + "\n" + "".join(f"{row}\n" for row in rows))
    return path


def _row(image: str, cls: int) -> str:
    return ",".join([image, *("1" if i == cls else "0" for i in range(len(CLASSES)))])


def test_labels_match_each_photo_by_its_name_with_or_without_the_extension(tmp_path) -> None:
    photos = ["IMG_0001.JPG", "IMG_0001.HEIC", "ISIC_0024306.jpg", "astronaut"]
    rows = [_row("IMG_0001.JPG", 0), _row("IMG_0001.HEIC", 1), _row("ISIC_0024306", 2), _row("astronaut.png", 3)]
    path = _csv(tmp_path, *rows)
    assert match_labels(photos, read_labels(path, CLASSES), path) == {
        "IMG_0001.JPG": 0, "IMG_0001.HEIC": 1, "ISIC_0024306.jpg": 2, "astronaut": 3,
    }  # fmt: skip
    # a row without the extension for two photos of one name: which? refused, naming both
    path = _csv(tmp_path, _row("skin", 0))
    with pytest.raises(UserError, match=r"row skin matches two photos, skin\.jpg and skin\.png; name the photo"):
        match_labels(["skin.jpg", "skin.png"], read_labels(path, CLASSES), path)
    path = _csv(tmp_path, _row("skin", 0), _row("skin.jpg", 1))
    with pytest.raises(
        UserError, match=r"photo skin\.jpg is labelled by two rows, skin(\.jpg)? and skin(\.jpg)?; keep one"
    ):
        match_labels(["skin.jpg"], read_labels(path, CLASSES), path)
    path = _csv(tmp_path, _row("img_0002.jpg", 5), _row("IMG_0003", 6))  # a spreadsheet's letter case
    assert match_labels(["IMG_0002.JPG", "img_0003.heic"], read_labels(path, CLASSES), path) == {
        "IMG_0002.JPG": 5, "img_0003.heic": 6,
    }  # fmt: skip
    path = _csv(tmp_path, _row("skin.png", 0))  # another file's name is no label of this one
    with pytest.raises(UserError, match="names none of the 1 images"):
        match_labels(["skin.jpg"], read_labels(path, CLASSES), path)
    path = _csv(tmp_path, _row("skin.jpg", 0), _row("skin.jpg", 1))
    with pytest.raises(UserError, match=r"line 3: image skin\.jpg is labelled twice"):
        read_labels(path, CLASSES)


def test_max_drop_is_parsed_strictly() -> None:
    assert parse_max_drop("balanced_accuracy=0.01, mel_sensitivity=0.02") == {
        "balanced_accuracy": 0.01,
        "mel_sensitivity": 0.02,
    }
    for text, message in (
        ("accuracy=0.1", "unknown metric 'accuracy'"),
        ("macro_auc", "needs METRIC=NUMBER"),
        ("macro_auc=2", "between 0 and 1"),
        ("", "give METRIC=X"),
    ):
        with pytest.raises(UserError, match=message):
            parse_max_drop(text)


@pytest.mark.slow
def test_validate_judges_a_graph_on_the_labels(tiny, tiny_onnx, images, tmp_path, capsys) -> None:
    """Through the command: the clinical table, its JSON, and exit 3 on a drop beyond --max-drop."""
    import json

    import onnx

    from dgla_export.preprocess import preprocess_batch
    from dgla_export.tools.export import main
    from dgla_export.validation import reference_logits

    # a made-up ground truth for the pipeline: the FP32 model's own answers (balanced accuracy 1)
    answers = reference_logits(tiny, preprocess_batch([image for _, image in images], tiny.config)).argmax(-1)
    labels = tmp_path / "truth.csv"
    rows = ["image," + ",".join(CLASSES)]
    for (name, _), answer in zip(images, answers, strict=True):
        rows.append(name + "," + ",".join("1" if c == answer else "0" for c in range(len(CLASSES))))
    labels.write_text("\n".join(rows) + "\n")
    report = tmp_path / "report.json"
    argv = ["validate", str(tiny_onnx["fp16"]), "--batches", "1", "--labels", str(labels), "--report", str(report)]
    assert main([*argv, "--max-drop", "balanced_accuracy=0.05"]) == 0
    record = json.loads(report.read_text())
    clinical = record["clinical"]
    assert clinical["passed"] and clinical["images"] == len(images) and clinical["bootstrap_rounds"] == 2000
    assert set(clinical["differences"]) == {"balanced_accuracy", "mel_sensitivity", "mel_specificity", "macro_auc"}
    assert "clinical scores vs PyTorch FP32" in " ".join(capsys.readouterr().out.split())
    # a graph whose classifier rows are swapped answers other classes: its balanced accuracy drops
    model = onnx.load(str(tiny_onnx["fp32"]))
    fc = next(init for init in model.graph.initializer if list(init.dims) == [7, 64])
    array = onnx.numpy_helper.to_array(fc)
    fc.CopyFrom(onnx.numpy_helper.from_array(array[[1, 2, 3, 4, 5, 6, 0]].copy(), fc.name))
    onnx.save(model, str(tmp_path / "swapped.onnx"))
    argv = ["validate", str(tmp_path / "swapped.onnx"), "--batches", "1", "--labels", str(labels)]
    assert main([*argv, "--max-drop", "balanced_accuracy=0.05", "--report", str(tmp_path / "r2.json")]) == 3
    failures = json.loads((tmp_path / "r2.json").read_text())["clinical"]["failures"]
    assert failures and failures[0].startswith("balanced_accuracy drops"), failures
    capsys.readouterr()
    assert main([*argv[:2], "--max-drop", "balanced_accuracy=0.05"]) == 2  # no labels: one line, the fix
    assert "needs labels (--labels)" in capsys.readouterr().err
