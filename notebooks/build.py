"""Build the tutorial notebooks from their percent-format sources, executed, with outputs.

    python notebooks/build.py            # all notebooks
    python notebooks/build.py 01         # those whose name starts with 01

Sources: ``notebooks/src/*.py`` (cells separated by ``# %%``; ``# %% [markdown]`` cells hold
markdown as ``# ``-prefixed lines). Output: ``notebooks/<name>.ipynb``, executed top to bottom
with nbclient, so the docs show real outputs. ``tests/test_notebooks.py`` checks that every
notebook's cells equal its source and executes it again.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
TIMEOUT_S = 600


def cells_from_source(text: str) -> list[tuple[str, str]]:
    """[(kind, source)] from percent-format text; kind is ``"code"`` or ``"markdown"``."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("# %%"):
            cells.append(("markdown" if "[markdown]" in line else "code", []))
            continue
        if not cells:
            if line.strip():
                raise ValueError(f"text before the first '# %%' marker: {line!r}")
            continue
        kind, body = cells[-1]
        if kind == "markdown":
            if line.strip() and not line.startswith("#"):
                raise ValueError(f"markdown cell line without '#': {line!r}")
            body.append(line[2:] if line.startswith("# ") else line[1:])
        else:
            body.append(line)
    return [(kind, "\n".join(body).strip("\n")) for kind, body in cells]


def notebook_from_source(path: Path) -> nbformat.NotebookNode:
    """An unexecuted notebook from a percent-format source file."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for kind, src in cells_from_source(path.read_text(encoding="utf-8")):
        nb.cells.append(nbformat.v4.new_markdown_cell(src) if kind == "markdown" else nbformat.v4.new_code_cell(src))
    return nb


def execute(nb: nbformat.NotebookNode, timeout: int = TIMEOUT_S) -> nbformat.NotebookNode:
    """Execute a notebook in place with nbclient (working directory: notebooks/)."""
    from nbclient import NotebookClient

    # the kernel inherits the environment: an MPLBACKEND=Agg set for headless tests would make every
    # figure vanish from the notebook, so the kernel always draws inline
    old = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(HERE)}}).execute()
    finally:
        if old is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = old
    return nb


def main(argv: list[str]) -> int:
    prefix = argv[0] if argv else ""
    for src in sorted(SRC.glob(f"{prefix}*.py")):
        start = time.perf_counter()
        nb = execute(notebook_from_source(src))
        for i, cell in enumerate(nb.cells):  # stable ids keep diffs small
            cell["id"] = f"cell-{i:02d}"
        nbformat.write(nb, HERE / f"{src.stem}.ipynb")
        print(f"{src.stem}: executed in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
