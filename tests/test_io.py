"""Output rules: nothing of the user's is overwritten or deleted, and a failed write changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dgla_export.io import (
    OUTPUT_MARKER,
    OutputError,
    OutputExistsError,
    atomic_path,
    check_output,
    check_output_folder,
    replace_folder,
)

COMMAND = "dgla-test"


def _write_output(folder: Path, files: dict[str, str]) -> None:
    with replace_folder(folder, command=COMMAND) as staging:
        for name, text in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_text(text)


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_new_or_empty_folder_is_written_and_marked(tmp_path) -> None:
    for folder in (tmp_path / "new", tmp_path / "empty"):
        if folder.name == "empty":
            folder.mkdir()
        check_output_folder(folder, False, command=COMMAND)
        _write_output(folder, {"a.txt": "a", "sub/b.txt": "b"})
        marker = json.loads((folder / OUTPUT_MARKER).read_text())
        assert marker == {"command": COMMAND, "files": ["a.txt", "sub/b.txt"]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "new"]  # no staging left beside


def test_force_replaces_an_earlier_output_of_the_same_command_only(tmp_path) -> None:
    folder = tmp_path / "out"
    _write_output(folder, {"old.txt": "old", "stale/x.txt": "x"})
    with pytest.raises(OutputExistsError, match="force=True"):  # from Python, the keyword
        check_output_folder(folder, False, command=COMMAND)
    check_output_folder(folder, True, command=COMMAND)
    _write_output(folder, {"new.txt": "new"})
    assert _tree(folder) == {OUTPUT_MARKER: (folder / OUTPUT_MARKER).read_text(), "new.txt": "new"}
    with pytest.raises(OutputError, match="written by dgla-test, not dgla-other"):
        check_output_folder(folder, True, command="dgla-other")


def test_force_never_touches_a_folder_holding_anything_else(tmp_path) -> None:
    mine = tmp_path / "mydata"
    mine.mkdir()
    (mine / "precious.txt").write_text("x")
    with pytest.raises(OutputError, match="did not write"):
        check_output_folder(mine, True, command=COMMAND)
    earlier = tmp_path / "out"
    _write_output(earlier, {"a.txt": "a"})
    (earlier / "notes.md").write_text("mine")
    (earlier / "sub").mkdir()
    (earlier / "sub" / "deep.txt").write_text("mine too")
    with pytest.raises(OutputError, match=r"holds notes\.md, sub/deep\.txt, which dgla-test did not write"):
        check_output_folder(earlier, True, command=COMMAND)
    assert (mine / "precious.txt").read_text() == "x" and (earlier / "notes.md").read_text() == "mine"


def test_protected_folders_are_refused_even_with_force(tmp_path, monkeypatch) -> None:
    work, home = tmp_path / "work", tmp_path / "home"
    for folder in (work, home):
        folder.mkdir()
        (folder / "model.onnx").write_text("input")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(OutputError, match="is the current folder"):
        check_output_folder(Path("."), True, command=COMMAND)
    with pytest.raises(OutputError, match="is your home folder"):
        check_output_folder(home, True, command=COMMAND)
    with pytest.raises(OutputError, match="file-system root"):
        check_output_folder(Path("/"), True, command=COMMAND)
    # a folder holding an input, also as an earlier output of this very command
    _write_output(tmp_path / "out", {"a.txt": "a"})
    with pytest.raises(OutputError, match="holds the input"):
        check_output_folder(tmp_path / "out", True, command=COMMAND, inputs=[tmp_path / "out" / "a.txt"])
    with pytest.raises(OutputError, match="holds the input"):
        check_output_folder(tmp_path, True, command=COMMAND, inputs=[None, work / "model.onnx"])


def test_a_failed_write_leaves_the_earlier_output_intact(tmp_path) -> None:
    folder = tmp_path / "out"
    _write_output(folder, {"a.txt": "first"})
    before = _tree(folder)
    with pytest.raises(RuntimeError, match="half-way"), replace_folder(folder, command=COMMAND) as staging:
        (staging / "a.txt").write_text("second")
        raise RuntimeError("failed half-way")
    assert _tree(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("atomic_swap", [True, False], ids=["renameat2-exchange", "two-renames-fallback"])
def test_replacing_an_output_leaves_only_the_new_one(tmp_path, monkeypatch, atomic_swap) -> None:
    """Where no atomic exchange exists (macOS, some network file systems) the two-rename fallback
    must end in the same state: the new output in place, nothing beside it."""
    import dgla_export.io as io_module

    if not atomic_swap:
        monkeypatch.setattr(io_module, "_exchange", lambda a, b: False)
    folder = tmp_path / "out"
    _write_output(folder, {"a.txt": "first", "old.txt": "x"})
    _write_output(folder, {"a.txt": "second"})
    assert _tree(folder) == {OUTPUT_MARKER: (folder / OUTPUT_MARKER).read_text(), "a.txt": "second"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "a staging or .old folder was left beside"


def test_file_outputs(tmp_path) -> None:
    existing = tmp_path / "model.onnx"
    existing.write_text("old")
    with pytest.raises(OutputExistsError, match="force=True"):  # from Python, the keyword
        check_output(existing, False)
    assert check_output(existing, True) == existing
    with pytest.raises(OutputError, match="is a folder"):
        check_output(tmp_path, True)
    with pytest.raises(OutputError, match="is also an input"):
        check_output(existing, True, inputs=[tmp_path / "." / "model.onnx"])
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output(existing / "x.onnx", True)
    with atomic_path(existing) as tmp:
        tmp.write_text("new")
    assert existing.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_an_unwritable_place_is_named_with_the_users_path(immutable) -> None:
    with pytest.raises(OutputError) as info:
        check_output(immutable / "model.onnx", False)
    assert str(info.value).startswith(f"cannot write {immutable / 'model.onnx'}: {immutable} is not writable")
    with pytest.raises(OutputError, match="not writable"):
        check_output_folder(immutable / "repo", False, command=COMMAND)
    with pytest.raises(OutputError) as info, atomic_path(immutable / "model.onnx") as tmp:
        tmp.write_text("x")
    assert ".model.onnx." not in str(info.value), info.value  # never a staging name


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_get_the_users_normal_permissions(tmp_path, umask) -> None:
    """Staging is private (0700 while half-written); what reaches the user's path has the modes any
    folder and file of theirs gets under their umask, so a Triton container running as another
    user, or a colleague, can read a repository (the folder was once left 0700)."""
    import os
    import stat

    old = os.umask(umask)
    try:
        with replace_folder(tmp_path / "out", command="test") as staging:
            (staging / "model" / "1").mkdir(parents=True)
            (staging / "model" / "config.pbtxt").write_text("x")
        with atomic_path(tmp_path / "file.onnx") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    wrong = {}
    for path in tmp_path.rglob("*"):
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        if stat.S_IMODE(path.stat().st_mode) != expected:
            wrong[str(path.relative_to(tmp_path))] = oct(stat.S_IMODE(path.stat().st_mode))
    assert not wrong, f"under umask {oct(umask)}: {wrong}"
