"""docs/tutorial.ipynb: in sync with its jupytext source docs/tutorial.py, and executed top to bottom by a
real Jupyter kernel (nbclient), every figure cell showing its image. The notebook cannot rot."""
import os
import re
import time
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext", reason="the test extra installs jupytext")
nbformat = pytest.importorskip("nbformat", reason="the test extra installs nbformat")

DOCS = Path(__file__).resolve().parents[1] / "docs"
SOURCE, NOTEBOOK = DOCS / "tutorial.py", DOCS / "tutorial.ipynb"
BUDGET_S = 180  # CI on 2 cores
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?[eE][-+]?\d+")  # numbers written with an exponent


def cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_notebook_is_built_from_its_source():
    """The .ipynb holds exactly the cells of the .py (rebuild: ``jupytext --to ipynb docs/tutorial.py``),
    and no stale outputs."""
    built = jupytext.read(SOURCE)
    kept = nbformat.read(NOTEBOOK, as_version=4)
    assert cells(kept) == cells(built), "docs/tutorial.ipynb is out of date: jupytext --to ipynb docs/tutorial.py"
    assert not any(c.get("outputs") for c in kept.cells if c.cell_type == "code")


def test_notebook_runs_and_shows_every_figure(tmp_path, monkeypatch):
    pytest.importorskip("nbclient", reason="the test extra installs nbclient")
    pytest.importorskip("ipykernel", reason="the test extra installs ipykernel")
    from nbclient import NotebookClient

    nb = jupytext.read(SOURCE)
    src = str(Path(__file__).resolve().parents[1] / "src")  # this checkout's ddpmlab, installed or not
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as the other tests: tiny tensors, a busy machine
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend shows the figures
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    start = time.perf_counter()
    client.execute()  # a cell that raises fails here, naming the cell
    seconds = time.perf_counter() - start
    print(f"notebook executed in {seconds:.1f} s")
    shown = 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        want = cell.source.count("plt.show()")
        assert len(images) == want, f"cell {i} shows {want} figure(s) but produced {len(images)} image(s)"
        shown += len(images)
    assert shown >= 8  # the five figures, the diagnosis, the recommended recipe's, the side-by-side
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "evaluation, nats per data point" in text
    huge = [v for v in NUMBER.findall(text) if abs(float(v)) > 1e6]
    assert not huge, huge  # a diverged likelihood reads "diverged (median X)"
    if os.environ.get("CI"):  # the budget holds on CI's quiet 2 cores; a busy shared machine is slower
        assert seconds < BUDGET_S, f"the notebook took {seconds:.0f} s (budget {BUDGET_S} s)"
