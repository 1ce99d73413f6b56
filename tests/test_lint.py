"""The code base is ruff-clean and type-checks (configuration in pyproject.toml)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff not installed")
def test_ruff_clean():
    out = subprocess.run(["ruff", "check", "mamba_ode", "tests", "benchmarks", "experiments", "notebooks"], cwd=ROOT,
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.skipif(shutil.which("mypy") is None, reason="mypy not installed")
def test_type_checker_clean(tmp_path):
    """mypy (configuration in pyproject.toml) finds no error in the package."""
    out = subprocess.run(["mypy", "--cache-dir", str(tmp_path / "mypy_cache")], cwd=ROOT, capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]
