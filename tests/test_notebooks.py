"""The tutorial notebooks: each equals its source and runs top to bottom (as the docs show it)."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
SOURCES = sorted((NB_DIR / "src").glob("*.py"))

_spec = importlib.util.spec_from_file_location("nb_build", NB_DIR / "build.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)


def test_there_are_four_tutorials():
    assert [p.stem[:2] for p in SOURCES] == ["01", "02", "03", "04"]


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_notebook_matches_its_source(src):
    nb = nbformat.read(NB_DIR / f"{src.stem}.ipynb", as_version=4)
    expect = build.cells_from_source(src.read_text(encoding="utf-8"))
    assert [(c.cell_type, c.source) for c in nb.cells] == expect, "run: python notebooks/build.py " + src.stem[:2]
    # the committed notebook carries outputs (the docs render them) and no errors
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code)
    assert not any(o.get("output_type") == "error" for c in code for o in c.get("outputs", []))
    # nor warnings or other stderr text (which would show the builder's paths to readers)
    stderr = [o.get("text", "") for c in code for o in c.get("outputs", []) if o.get("name") == "stderr"]
    assert not stderr, stderr[0][:300]
    # and the figures themselves (a headless backend in the kernel would drop them silently)
    if "plt." in src.read_text(encoding="utf-8"):
        assert any("image/png" in o.get("data", {}) for c in code for o in c.get("outputs", [])), "no figure output"


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
@pytest.mark.slow
def test_notebook_executes(src, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel inherits it: no oversubscription beside xdist
    start = time.perf_counter()
    nb = build.execute(build.notebook_from_source(src), timeout=600)
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("name") == "stderr"], "a cell wrote to stderr (a warning?)"
    if "plt." in src.read_text(encoding="utf-8"):
        assert any("image/png" in o.get("data", {}) for o in outputs), "no figure output"
    print(f"{src.stem}: {time.perf_counter() - start:.1f} s")


def test_percent_parser_rejects_stray_text():
    with pytest.raises(ValueError, match="before the first"):
        build.cells_from_source("x = 1\n# %%\ny = 2\n")
    with pytest.raises(ValueError, match="markdown"):
        build.cells_from_source("# %% [markdown]\nnot a comment\n")
