"""The exit-code contract: exit 2 only for the package's user-facing errors; any other exception,
a ValueError from deep inside an exporter included, is a bug: exit 1 with its traceback."""

from __future__ import annotations

import pytest

from dgla_export.errors import EXIT_BUG, EXIT_MISMATCH, EXIT_USAGE, MismatchError, UserError, run_command


def _exit(error: BaseException, capsys) -> tuple[int, str]:
    def body() -> int:
        raise error

    return run_command("prog", body), capsys.readouterr().err


@pytest.mark.parametrize(
    "error",
    [ValueError("shape mismatch inside the exporter"), KeyError("input_sizes"), RuntimeError("x"), OSError("no file")],
)
def test_an_unexpected_exception_is_a_bug_with_its_traceback(error, capsys) -> None:
    code, err = _exit(error, capsys)
    assert code == EXIT_BUG and "Traceback" in err and "internal error" in err, err


def test_user_errors_are_one_line(capsys) -> None:
    from dgla_export.preprocess import ImageError

    for error in (UserError("bad --batch"), ImageError("cannot decode"), FileNotFoundError(2, "No such file", "x.pt")):
        code, err = _exit(error, capsys)
        assert code == EXIT_USAGE and "Traceback" not in err and err.count("\n") == 1, err
    code, err = _exit(MismatchError("validation FAILED"), capsys)
    assert code == EXIT_MISMATCH and err == "prog: validation FAILED\n"


def test_an_exporter_bug_in_a_command_is_exit_1(monkeypatch, tmp_path, capsys) -> None:
    """GraphContractError (a ValueError) means the exporter produced a broken graph: a bug to report,
    never a user's one-line error (exit 2 before this contract was narrowed)."""
    from dgla_export.artefacts.graph import GraphContractError
    from dgla_export.export import onnx_export
    from dgla_export.tools.export import main

    def broken(*args, **kwargs):
        raise GraphContractError("exported graph breaks the contract: input names")

    monkeypatch.setattr(onnx_export, "to_onnx", broken)
    argv = ["onnx", "--model", "dgla_tiny", "--output", str(tmp_path / "m.onnx"), "--batch", "1:2", "--no-validate"]
    assert main(argv) == EXIT_BUG
    err = capsys.readouterr().err
    assert "Traceback" in err and "GraphContractError" in err and "please report it" in err
    assert not (tmp_path / "m.onnx").exists()


def test_messages_name_options_as_the_caller_writes_them(tmp_path, capsys) -> None:
    """From Python an error names the keyword (force=True); inside a command, the option (--force)."""
    from dgla_export.io import OutputExistsError, check_output

    existing = tmp_path / "g.onnx"
    existing.write_bytes(b"x")
    with pytest.raises(OutputExistsError) as raised:
        check_output(existing, False)
    assert "pass force=True" in str(raised.value) and "--force" not in str(raised.value)

    def body() -> int:
        check_output(existing, False)
        return 0

    assert run_command("dgla-test", body) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "pass --force" in err and "force=True" not in err, err
    with pytest.raises(OutputExistsError, match="force=True"):  # back in Python after the command
        check_output(existing, False)
    with pytest.raises(UserError, match=r"is a folder; give the output file's name, e\.g\. .*\.onnx"):
        check_output(tmp_path, False, suffix=".onnx")


def test_an_interrupt_is_exit_130_in_one_line(capsys) -> None:
    def body() -> int:
        raise KeyboardInterrupt

    assert run_command("dgla-test", body) == 130
    assert capsys.readouterr().err == "dgla-test: interrupted\n"
