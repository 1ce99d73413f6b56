"""The documentation site builds with --strict, and its generated pages match their raw data."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("mkdocs") is None and importlib.util.find_spec("mkdocs") is None,
                    reason="mkdocs not installed (pip install -e '.[test]')")
@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    # nbconvert looks for its templates under sys.prefix; in a venv made with --system-site-packages
    # they live under the base interpreter's prefix
    jupyter_path = [os.environ.get("JUPYTER_PATH", ""), str(Path(sys.base_prefix) / "share" / "jupyter")]
    env = dict(os.environ, JUPYTER_PATH=os.pathsep.join(p for p in jupyter_path if p))
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, check=False, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    for page in ("index.html", "concepts/index.html", "api/index.html", "claims/index.html", "results/index.html",
                 "benchmarks/index.html", "tutorials/01_one_dimensional_theory/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("selective_scan", "solve", "criteria_1d", "classify_trajectory", "regime_table", "analyze"):
        assert name in api, name


def test_benchmarks_page_matches_raw_json(tmp_path):
    spec = importlib.util.spec_from_file_location("make_page", ROOT / "benchmarks" / "make_page.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "benchmarks.md"
    mod.write_page(out)
    assert out.read_text() == (ROOT / "docs" / "benchmarks.md").read_text(), "run: python benchmarks/make_page.py"


@pytest.mark.parametrize("page", ["README.md", "docs/index.md"])
def test_python_examples_run(page, capsys):
    """The Python examples users copy first actually run (on the embedded model, offline)."""
    import re

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), re.S)
    assert blocks, f"{page} has no Python example"
    for code in blocks:
        exec(compile(code, page, "exec"), {})  # noqa: S102 - our own documentation
    assert "blows up at T=1.67694" in capsys.readouterr().out or page != "README.md"
