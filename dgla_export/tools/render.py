"""What the commands show a person: every table and summary line, in one place (rich)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console as RichConsole
from rich.table import Table
from rich.text import Text

from dgla_export.clinical import ACCEPTANCE_METRICS

if TYPE_CHECKING:
    from dgla_export.benchmarking.results import BenchResult
    from dgla_export.clinical import ClinicalCheck
    from dgla_export.localise import DebugReport
    from dgla_export.quantize import QuantizationReport
    from dgla_export.validation import ValidationReport

__all__ = [
    "bench_tables",
    "clinical",
    "cost_table",
    "debug_report",
    "print_whole",
    "quantization",
    "validation",
    "versions_table",
]


def print_whole(table: Table) -> None:
    """``table`` on stdout at its natural width: a figure is never cut short (the bench table with
    maps columns is ~170 columns; a narrower terminal wraps the lines instead)."""
    from rich.measure import Measurement

    probe = RichConsole(width=10_000)
    needed = Measurement.get(probe, probe.options, table).maximum
    RichConsole(width=max(RichConsole().width, needed)).print(table)


def cost_table(record: dict[str, Any], stages: Sequence[Any], total: Any, console: RichConsole) -> None:
    """``dgla-export info``: parameters and MACs per stage, and the input/output contract."""
    table = Table(title=f"{record['model']} ({record['spec_version']}), per image pair")
    for column in ("stage", "params", "GMACs"):
        table.add_column(column, justify="right" if column != "stage" else "left")
    for stage in stages:
        table.add_row(stage.name, f"{stage.params:,}", f"{stage.macs / 1e9:.3f}")
    table.add_row("total", f"{total.params:,}", f"{total.macs / 1e9:.3f}", style="bold")
    console.print(table)
    console.print("MACs = multiply-accumulates of conv/matmul/linear (1 MAC = 2 FLOPs)")
    for name, shape in record["inputs"].items():
        console.print(f"input  {name}: {tuple(shape)} float32, RGB, ImageNet-normalised")
    classes = ", ".join(record["classes"])
    console.print(f"output logits, probs: (B, {len(record['classes'])}) float32; classes {classes}")


def validation(report: ValidationReport, console: Any) -> None:
    """A validation report: errors per batch size, NaN/Inf, agreement, verdict; then the flips."""
    images = f"{len(report.images)} images ({report.preprocessing} preprocessing)"
    table = Table(title=f"{report.runtime} ({report.precision}) vs PyTorch FP32, {images}")
    explained = any(check.maps is not None for check in report.checks)
    columns = ["batch", "logits max rel", "logits p99 abs", "probs max abs", "NaN/Inf", "top-1"]
    columns += ["maps top-1\nmax abs", "hottest\ncell"] if explained else []  # two lines: 120 columns hold it all
    for column in columns:
        table.add_column(column, no_wrap=True)  # a figure is never cut: the table is as wide as they need
    table.add_column("verdict", min_width=7)
    for check in report.checks:
        c, maps = check.comparison, check.maps
        failures = check.failures
        figures = [
            str(check.batch),
            f"{c.logits.max_rel:.2e}",
            f"{c.logits.p99_abs:.2e}",
            f"{c.probs.max_abs:.2e}",
            f"{c.logits.nan + c.probs.nan}/{c.logits.inf + c.probs.inf}",
            f"{c.top1_agreement:.0%}",
        ]
        if explained:
            figures += [f"{maps.top1_max_abs:.2e}", f"{maps.hottest_agreement:.0%}"] if maps else ["-", "-"]
        table.add_row(*figures, _verdict(failures))
    console.print(table)
    console.print(f"same image across batch positions: max logit spread {report.position_spread:.2e}")
    if report.clinical is not None:
        clinical({report.runtime: report.clinical}, console)
    for check in report.checks:
        for flip in check.comparison.flips:
            console.print(
                Text.assemble(
                    ("flip", "yellow"),
                    f" batch {check.batch}: {flip.image} {flip.reference_class} -> {flip.actual_class} "
                    f"(margins {flip.reference_margin:.3f} -> {flip.actual_margin:.3f})",
                )
            )


def _verdict(failures: Sequence[str]) -> Text:
    """A table's verdict cell: the failures as written (a message holds brackets: no markup)."""
    return Text("pass", style="green") if not failures else Text("FAIL: " + "; ".join(failures), style="red")


def verdict(report: ValidationReport, console: Any) -> None:
    """The one line a command's validation ends with: passed, or FAILED and why."""
    if report.passed:
        where = f"{report.runtime}, {report.precision}, {len(report.images)} images"
        console.print(Text.assemble(("validation passed", "green"), f" ({where})"))
    else:
        console.print(Text.assemble(("validation FAILED", "red"), f": {'; '.join(report.failures)}"))


def clinical(checks: dict[str, ClinicalCheck], console: Any) -> None:
    """Each runtime's clinical scores next to PyTorch FP32's on the same labelled images: the
    difference with its 95% paired bootstrap interval, and the verdict against --max-drop."""
    if not checks:
        return
    first = next(iter(checks.values()))
    title = f"clinical scores vs PyTorch FP32 ({first.images} labelled images; difference [95% paired bootstrap])"
    table = Table(title=title)
    for column in ("runtime", *ACCEPTANCE_METRICS, "verdict"):
        table.add_column(column, no_wrap=True)
    for name, check in checks.items():
        cells = []
        for metric in ACCEPTANCE_METRICS:
            d = check.differences[metric]
            if d.delta is None:
                cells.append("n/a")
                continue
            interval = f" [{d.low:+.3f}, {d.high:+.3f}]" if d.low is not None else ""
            allowed = f" (max drop {check.max_drop[metric]:g})" if metric in check.max_drop else ""
            cells.append(f"{d.actual:.3f} ({d.delta:+.3f}{interval}){allowed}")
        table.add_row(name, *cells, _verdict(check.failures) if check.max_drop else "-")
    print_whole(table)


def quantization(report: QuantizationReport, console: Any) -> None:
    """The INT8 graph: each unit's sensitivity where the package's search measured it (NNCF's
    placement has none), which stayed FP32, the INT8 share of MACs, the check on the calibration images."""
    if report.sensitivity:
        title = f"INT8 sensitivity ({len(report.sensitivity)} units, logits RMS error when only it is INT8)"
        table = Table(title=title)
        for column in ("unit", "error", "precision"):
            table.add_column(column)
        for unit, error in report.sensitivity.items():
            kept = unit in report.kept_out
            table.add_row(unit, f"{error:.4f}", Text("fp32 (kept out)", style="yellow") if kept else "int8")
        console.print(table)
        kept_out = f"{len(report.kept_out)} of {len(report.sensitivity)} units kept in FP32"
    else:
        kept_out = f"{report.method}: {len(report.kept_out)} units left wholly in FP32"
    check = report.calibration_check
    console.print(
        f"INT8 ({report.target}): {kept_out}; {report.int8_mac_share:.1%} of MACs in INT8 "
        f"({report.quantized_nodes} nodes); on the {len(report.calibration_images)} calibration images: probs max "
        f"abs error {check['probs_max_abs']:.3g}, {len(check['flips'])} top-1 flips"
    )


def bench_tables(result: BenchResult, preprocess: str, labels_name: str | None, console: Any) -> None:
    """dgla-bench: timing and parity per runner and batch size; scores against the labels; what
    was skipped or failed; every flip."""
    from dgla_export.benchmarking.report import ceiling_lines, format_speedup, format_utilisation, rows, score_rows
    from dgla_export.clinical import METRIC_COLUMNS, format_score

    table = Table(title=f"dgla-bench {result.model} ({preprocess} preprocessing)")
    explained = any(b.maps is not None for b in result.backends)
    columns = ["backend", "batch", "p50 ms", "p99 ms", "pairs/s", "x eager", "MFU", "logits rel", "probs abs", "flips"]
    columns += ["maps", "hottest"] if explained else []
    for column in (*columns, "parity"):
        table.add_column(column, no_wrap=True)
    measured = {r["backend"] for r in rows(result)}
    for b in result.backends:
        if b.backend in measured:
            continue
        if b.parity is None:  # skipped, or it could not run
            table.add_row(b.backend, *["-"] * (len(columns) - 1), "[dim]skipped[/]" if b.skipped else "[red]FAILED[/]")
            continue
        maps = [f"{b.maps.top1_max_abs:.1e}", f"{b.maps.hottest_agreement:.0%}"] if b.maps is not None else ["-", "-"]
        table.add_row(
            b.backend, "-", "-", "-", "-", "-", "-", f"{b.parity.logits.max_rel:.1e}", f"{b.parity.probs.max_abs:.1e}",
            str(len(b.parity.flips)), *(maps if explained else []), "[red]FAIL (not timed)[/]",
        )  # fmt: skip
    for r in rows(result):
        backend = next(b for b in result.backends if b.backend == r["backend"])
        assert backend.parity is not None
        table.add_row(
            r["backend"],
            str(r["batch"]),
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{r['throughput_pairs_s']:.2f}",
            format_speedup(r),
            format_utilisation(r),
            f"{r['logits_max_rel']:.1e}",
            f"{r['probs_max_abs']:.1e}",
            str(len(backend.parity.flips)),
            *(
                [f"{r['maps_top1_max_abs']:.1e}", f"{r['maps_hottest_agreement']:.0%}"]
                if "maps_top1_max_abs" in r
                else ["-", "-"]
                if explained
                else []
            ),
            "[green]pass[/]" if r["parity_passed"] else "[red]FAIL[/]",
        )
    print_whole(table)
    scores = score_rows(result)
    if scores:  # the summary; every class's sensitivity is in results.md, .csv and .json
        first = result.class_names[0]
        metrics = Table(title=Text(f"scores against {labels_name} ({scores[0]['images']} images)"))
        for column in ("backend", "accuracy", "balanced acc.", "weighted F1", "macro AUC", f"{first} sens."):
            metrics.add_column(column, no_wrap=True)
        for row in scores:
            metrics.add_row(row["backend"], *(format_score(row[k]) for k in (*METRIC_COLUMNS, f"sensitivity_{first}")))
        print_whole(metrics)
    clinical({b.backend: b.clinical for b in result.backends if b.clinical is not None}, console)
    for b in result.backends:
        for outcome in ("skipped", "failed"):
            if getattr(b, outcome):
                console.print(f"{outcome} {b.backend}: {getattr(b, outcome)}")
        if b.verdict == "failed":
            console.print(Text.assemble(("parity FAILED", "red"), f" {b.backend}: {'; '.join(b.failures)}"))
    for line in ceiling_lines(result):
        console.print(line)
    for recommendation in result.recommendations():
        console.print(f"recommended (fastest that passed parity), {recommendation.describe()}")
    for b in result.backends:
        for flip in b.parity.flips if b.parity else ():
            console.print(
                Text.assemble(
                    ("flip", "yellow"),
                    f" {b.backend}: {flip.image} {flip.reference_class} -> {flip.actual_class} "
                    f"(margins {flip.reference_margin:.3f} -> {flip.actual_margin:.3f})",
                )
            )


def debug_report(report: DebugReport, console: Any) -> None:
    """dgla-export debug: the worst tensors, then the first past the bound (where the fault starts)."""
    failed = (
        f"{len(report.failing_images)} of {len(report.images)} images fail" if report.failing_images else "none fails"
    )
    traced = f"{failed}; traced: {', '.join(report.traced_images)}"
    table = Table(title=f"{report.candidate} vs {report.reference}: largest intermediate errors ({traced})")
    for column in ("tensor", "op", "max abs", "rel", "NaN/Inf"):
        table.add_column(column, no_wrap=True)
    for error in report.worst:
        table.add_row(
            Text(error.name), error.op, f"{error.max_abs:.2e}", f"{error.max_rel:.2e}", f"{error.nan}/{error.inf}"
        )
    print_whole(table)
    colour = "red" if report.first_failure is not None else "green"
    console.print(Text(report.summary(), style=colour))
    if report.folder:
        console.print(f"inputs, golden outputs and reproduce.sh: {report.folder}")


def versions_table(rows: Sequence[dict[str, Any]]) -> None:
    """``dgla-export versions``: each version of each ensemble, the served one marked."""
    table = Table(title="model versions (* served)")
    columns = ("name", "version", "model", "precision", "graph_sha256", "validation", "written_at")
    for column in columns:
        table.add_column(column, justify="right" if column == "version" else "left")
    for row in rows:
        marker = "*" if row["served"] else " "
        table.add_row(*(Text(f"{marker}{row[c]}" if c == "version" else str(row[c])) for c in columns))
    print_whole(table)
