"""What a command prints in a pipe or a log: every line within the log's width, words whole."""

from __future__ import annotations

from dgla_export.console import PLAIN_WIDTH, Console


def test_a_long_step_in_a_log_goes_on_over_indented_lines(capsys) -> None:
    console = Console("dgla-export")  # stderr is captured: not a terminal
    step = "still exporting and validating: Grad-CAM of the PyTorch model (captum) for every class on 6 images"
    console.log(f"{step}, {'and a path /tmp/' + 'x' * 30 + '/tiny.onnx ' * 3}")
    lines = capsys.readouterr().err.splitlines()
    print("\n".join(lines))
    assert len(lines) > 1 and all(len(line) <= PLAIN_WIDTH for line in lines), lines
    assert lines[0].startswith("dgla-export: [0 s] still exporting") and all(
        line.startswith("  ") for line in lines[1:]
    )
    assert " ".join(line.strip() for line in lines).endswith("tiny.onnx"), lines  # nothing lost, words whole
