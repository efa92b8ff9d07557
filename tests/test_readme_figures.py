"""Every measured figure README.md quotes comes from a file in benchmarks/results/ that a benchmark script
wrote, and matches it (issue 27). The README's conventions:

- ``<!-- figure: FILE PATH [// PATH] [| OP] -->`` right after a figure names its source: FILE in
  benchmarks/results/ (JSON as written; Markdown as ``{"tables": [table, ...]}``, each table a list of rows
  keyed by its header), PATH a dotted path into it (``key``, a list index, ``[column=value]`` to keep the
  rows whose column reads value; a key on a list maps over it; a table cell read as a number is its first
  number, ``#k`` its k-th), ``//`` an elementwise ratio of two paths, OP ``range`` (quoted as ``A - B``,
  ``A to B`` or ``A and B``: least and greatest), ``min``, ``max`` or ``mean``. The quoted figure is
  the file's value rounded to the decimals the README prints.
- ``<!-- begin: benchmarks/results/FILE -->`` ... ``<!-- end: benchmarks/results/FILE -->`` holds that file
  verbatim (inside a code fence).
- After ``<!-- measured figures below -->`` every number with a decimal point carries a figure comment.
"""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "results"
FIGURE = re.compile(r"<!-- figure: (\S+) (.+?) -->")
NUMBER = r"[-+]?\d+(?:\.\d+)?"
BLOCK = re.compile(r"<!-- begin: (\S+) -->\n(.*?)<!-- end: \1 -->", re.S)
MEASURED = "<!-- measured figures below -->"


def load(name: str):
    """A results file: JSON as written, Markdown as its tables."""
    text = (RESULTS / name).read_text()
    return json.loads(text) if name.endswith(".json") else {"tables": markdown_tables(text)}


def markdown_tables(text: str) -> list[list[dict]]:
    """Each Markdown table of ``text`` as a list of rows, a row a dict from header to cell text."""
    tables, header, rows = [], None, []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
            elif not set("".join(cells)) <= set("-: "):  # not the |---| rule
                rows.append(dict(zip(header, cells)))
        elif header is not None:
            tables.append(rows)
            header, rows = None, []
    return tables


def split_path(path: str) -> list[str]:
    """``a.b[c=d.e].0`` -> ``["a", "b", "[c=d.e]", "0"]``: dots split outside brackets, filters stand alone."""
    parts = re.findall(r"\[[^\]]*\]|[^.\[\]]+", path)
    return [p for p in parts if p]


class Rows(list):
    """The rows a filter kept: a later key or index applies to each of them."""


def step(value, part: str):
    """One path step: a filter keeps the matching rows of a list; a key or index picks from a dict or a
    list, or from each of the rows a filter kept."""
    if part.startswith("["):
        col, want = part[1:-1].split("=", 1)
        kept = Rows(row for row in value if str(row.get(col)) == want or _same_number(row.get(col), want))
        assert kept, f"no row with {col} = {want!r}"
        return kept
    if isinstance(value, Rows):
        return Rows(step(v, part) for v in value)
    if isinstance(value, list):  # an index picks one entry; a key applies to every row
        return value[int(part)] if part.isdigit() else Rows(step(v, part) for v in value)
    assert part in value, f"no {part!r} among {sorted(value)}"
    return value[part]


def _same_number(cell, want: str) -> bool:
    try:
        return float(cell) == float(want)
    except (TypeError, ValueError):
        return False


def as_number(value, k: int = 0) -> float:
    """A JSON number, or the k-th number written in a table cell."""
    if isinstance(value, (int, float)):
        return float(value)
    found = re.findall(NUMBER, str(value))
    assert len(found) > k, f"no number #{k} in {value!r}"
    return float(found[k])


def evaluate(name: str, expr: str) -> list[float]:
    """The figure(s) ``expr`` names in results file ``name``: one number, or (min, max) for ``range``."""
    expr, _, op = (s.strip() for s in expr.partition("|"))
    data = load(name)
    values = []
    for path in expr.split(" // "):
        path, _, k = path.strip().partition("#")
        v = data
        for part in split_path(path):
            v = step(v, part)
        v = v if isinstance(v, Rows) else [v]
        values.append([as_number(x, int(k or 0)) for x in v])
    v = values[0] if len(values) == 1 else [a / b for a, b in zip(*values)]
    if op == "range":
        return [min(v), max(v)]
    if op in ("min", "max", "mean"):
        return [{"min": min, "max": max, "mean": statistics.fmean}[op](v)]
    assert op == "" and len(v) == 1, f"{expr}: {len(v)} values and no op"
    return v


def quoted(before: str, n: int) -> list[str]:
    """The figure written right before a comment: one number, or two for a range."""
    sep = r"\s*(?:-|to|and)\s*" if n == 2 else None
    pattern = (rf"({NUMBER}){sep}({NUMBER})" if sep else rf"({NUMBER})") + r"%?\**$"
    m = re.search(pattern, before)
    assert m, f"no figure right before the comment: ...{before[-60:]!r}"
    return list(m.groups())


def matches(text: str, value: float) -> bool:
    """``text`` is ``value`` rounded to the decimals ``text`` shows."""
    decimals = len(text.split(".")[1]) if "." in text else 0
    return abs(float(text) - value) <= 0.5 * 10 ** -decimals + 1e-9


def figures(readme: str):
    """(line number, text before the comment, file, expression) for every figure comment."""
    for i, line in enumerate(readme.splitlines(), start=1):
        for m in FIGURE.finditer(line):
            yield i, FIGURE.sub("", line[:m.start()]), m.group(1), m.group(2)


def test_every_quoted_figure_matches_its_results_file():
    readme = README.read_text()
    found = list(figures(readme))
    assert len(found) >= 40  # the results summary, the quality and few-step tables, flow matching
    wrong = []
    for line, before, name, expr in found:
        values = evaluate(name, expr)
        texts = quoted(before.rstrip(), len(values))
        if not all(matches(t, v) for t, v in zip(texts, values)):
            wrong.append(f"README.md:{line}: {' - '.join(texts)} but {name} {expr} gives "
                         f"{' - '.join(f'{v:.6g}' for v in values)}")
    assert not wrong, "\n".join(wrong)


def test_results_blocks_are_the_files_verbatim():
    readme = README.read_text()
    blocks = BLOCK.findall(readme)
    assert [name for name, _ in blocks] == ["benchmarks/results/tutorial_transcript.txt"]
    for name, body in blocks:
        lines = body.splitlines(keepends=True)
        assert lines[0].startswith("```") and lines[-1].startswith("```"), name
        assert "".join(lines[1:-1]) == (ROOT / name).read_text(), f"README.md's copy of {name} differs from it"


def test_every_measured_decimal_carries_its_source():
    """Below the marker, a number with a decimal point that no figure comment follows is a figure nobody
    can trace (a block quoted verbatim from a file is exempt)."""
    readme = README.read_text()
    assert readme.count(MEASURED) == 1
    region = BLOCK.sub("", readme.split(MEASURED, 1)[1])
    bare = []
    for line in region.splitlines():
        for m in re.finditer(rf"{NUMBER}(?:\s*(?:-|to|and)\s*{NUMBER})?%?", line):
            if "." in m.group() and not line[m.end():].startswith("<!-- figure:") \
                    and not _inside_comment(line, m.start()):
                bare.append(f"{m.group()!r} in: {line.strip()[:100]}")
    assert not bare, "\n".join(bare)


def _inside_comment(line: str, pos: int) -> bool:
    return line.rfind("<!--", 0, pos) > line.rfind("-->", 0, pos)


@pytest.mark.parametrize("cell, k, expected", [("19.85 (host slow)", 0, 19.85), ("7 of 10", 0, 7.0), (2.5, 0, 2.5),
                                               ("0.0601, +0.0041 +- 0.0062", 1, 0.0041)])
def test_cells_read_as_numbers(cell, k, expected):
    assert as_number(cell, k) == expected
