"""Every figure the README and docs/ print comes from its record in benchmarks/results/.

A measured figure carries a marker right after it, invisible on the rendered page:
``52 ms<!-- fig preprocess-cpu/curve.json /rows[setting=draft>=2x, float]/median_ms -->``,
optionally with `` / POINTER`` (a ratio of two values of the same record), `` -1`` (a relative
change) and `` *SCALE`` (1000 for s -> ms, 100 for a share in %). The test reads the value and
holds the printed figure to it at the precision printed (51.7 means within 0.05). A number with a
unit (ms, s, %, x, MiB, GiB, GFLOP/s, pairs/s) outside code and without a marker fails, unless it
is marked ``<!-- setting -->`` (a configured value, not a measurement). Numbers without a unit
(errors such as 9.5e-6, counts, table cells in a column headed with its unit) are held to their
record where they carry a marker, but an unmarked one is not found: a limit of this check (the
served-load table in serving.md and the curve table in preprocessing.md still have unmarked cells).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NUMBER = r"[-+−]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?"
# a sign only after a space, a bracket or a cell border: the dash of "187-204" is no minus
SIGNED = r"(?:(?<=[\s(|])[-+−])?(?<![\w.])\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?"
UNIT = r"(?:ms|s|%|x|MiB|GiB|MB|GB|GFLOP/s|TFLOP/s|pairs/s)"
FIGURE = re.compile(rf"(?<![\w.]){NUMBER}\s?{UNIT}(?![\w/])")
MARKED = re.compile(rf"(?P<figure>{SIGNED})\s?(?:{UNIT}|[A-Za-z/%]*)?\s*<!--\s*fig\s+(?P<spec>.*?)\s*-->")
SETTING = "<!-- setting -->"
PAGES = sorted([ROOT / "README.md", *(p for p in (ROOT / "docs").glob("*.md") if p.name != "cli.md")])


def _prose(text: str) -> str:
    """The page without code blocks and inline code, where numbers are commands, not figures."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def _resolve(record: object, pointer: str) -> float:
    """``/rows[batch=1]/plain_ms``: keys, list indices, and ``[key=value&key=value]`` to pick a list item."""
    value = record
    for part in filter(None, re.split(r"/(?![^\[]*\])", pointer)):
        key, _, selector = part.partition("[")
        if key:
            value = value[int(key)] if isinstance(value, list) else value[key]  # type: ignore[index]
        if selector:  # [key=value&key=value]: the one list item with those values
            wanted = dict(condition.partition("=")[::2] for condition in selector.rstrip("]").split("&"))
            matches = [item for item in value if all(str(item.get(k)) == v for k, v in wanted.items())]  # type: ignore[union-attr]
            assert len(matches) == 1, f"{pointer}: {len(matches)} items with {wanted}"
            value = matches[0]
    return float(value)  # type: ignore[arg-type]


SPEC = re.compile(
    r"^(?P<file>\S+)\s+(?P<pointer>.+?)(?:\s+/\s+(?P<divisor>/.+?))?(?P<change>\s+-1)?(?:\s+\*(?P<scale>[\d.e+-]+))?$"
)


def _expected(spec: str, root: Path = RESULTS) -> float:
    """``FILE POINTER [/ POINTER] [-1] [*SCALE]``: a value, or a ratio (``-1``: a relative change)."""
    parts = SPEC.match(spec)
    assert parts is not None, f"not FILE POINTER [/ POINTER] [-1] [*SCALE]: {spec!r}"
    record = json.loads((root / parts["file"]).read_text())
    value = _resolve(record, parts["pointer"])
    if parts["divisor"]:
        value /= _resolve(record, parts["divisor"])
    if parts["change"]:
        value -= 1.0
    return value * float(parts["scale"] or 1.0)


def _tolerance(figure: str) -> float:
    """Half a unit of the last digit printed."""
    mantissa, _, exponent = figure.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10.0 ** (int(exponent or 0) - decimals)


def _number(figure: str) -> float:
    return float(figure.replace(",", "").replace("−", "-"))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_marked_figure_is_its_record(page: Path) -> None:
    wrong = []
    for match in MARKED.finditer(page.read_text()):
        figure, spec = match["figure"], match["spec"]
        try:
            expected = _expected(spec)
        except (OSError, KeyError, IndexError, ValueError, AssertionError, TypeError) as err:
            wrong.append(f"{figure}: cannot read {spec!r} ({type(err).__name__}: {err})")
            continue
        printed = _number(figure)
        if abs(printed - expected) > _tolerance(figure) + 1e-9 * abs(expected):
            wrong.append(f"{figure} printed, the record {spec!r} holds {expected:.6g}")
    assert not wrong, f"{page.name}: figures that their records do not hold:\n" + "\n".join(wrong)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_figure_without_a_record(page: Path) -> None:
    text = _prose(page.read_text())
    masked = re.sub(r"<!--.*?-->", lambda m: " " * len(m.group()), text, flags=re.S)  # markers hold no figures
    unmarked = []
    for match in FIGURE.finditer(masked):
        after = text[match.end() : match.end() + 200].lstrip()
        if not after.startswith(("<!-- fig", SETTING)):
            unmarked.append(match.group())
    assert not unmarked, f"{page.relative_to(ROOT)}: figures without a record marker: {unmarked}"


def test_the_checker_reads_rounding_and_selectors(tmp_path) -> None:
    record = {"rows": [{"batch": 1, "ms": 241.709}, {"batch": 8, "ms": 1597.1}], "s": 0.0517}
    assert _resolve(record, "/rows[batch=8]/ms") == 1597.1 and _resolve(record, "/rows/0/ms") == 241.709
    assert _resolve(record, "/rows[batch=8&ms=1597.1]/ms") == 1597.1
    assert _tolerance("241.7") == pytest.approx(0.05) and _tolerance("9.5e-6") == pytest.approx(0.05e-6)
    assert _tolerance("1,657") == 0.5 and _number("1,657") == 1657
    (tmp_path / "r.json").write_text(json.dumps(record))
    assert _expected("r.json /rows[batch=8]/ms / /rows[batch=1]/ms -1 *100", tmp_path) == pytest.approx(
        560.75, abs=0.01
    )
    assert _expected("r.json /s *1000", tmp_path) == pytest.approx(51.7)
    line = "about 51.7 ms<!-- fig x.json /s *1000 --> and 99 ms, 187-204<!-- fig x.json /s -->"
    assert [m["figure"] for m in MARKED.finditer(line)] == ["51.7", "204"]  # a range's dash is no minus
    assert [m.group() for m in FIGURE.finditer(_prose(line))] == ["51.7 ms", "99 ms"]
