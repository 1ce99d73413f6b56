"""The package's architecture: layers that import one way only, no cycles, small modules and functions.

The layer order (lower first; a module may import only its own layer and the layers before it):

    core (shapes, _checks, _version, _enums, models) → io → nn → {dynamics, train} → regimes → analysis
    → cli / package root

``dynamics`` and ``train`` are siblings: neither imports the other. Imports inside functions are
allowed only for optional heavy dependencies.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "mamba_ode"

#: layer of each top-level part of the package, and the layers each may import
LAYER = {"shapes": "core", "_checks": "core", "_version": "core", "_enums": "core", "models": "core", "io": "io",
         "nn": "nn",
         "dynamics": "dynamics",
         "train": "train", "regimes": "regimes", "analysis": "analysis", "cli": "top", "__main__": "top",
         "__init__": "top"}
ALLOWED = {
    "core": {"core"},
    "io": {"core", "io"},
    "nn": {"core", "io", "nn"},
    "dynamics": {"core", "io", "nn", "dynamics"},
    "train": {"core", "io", "nn", "train"},
    "regimes": {"core", "io", "nn", "dynamics", "regimes"},
    "analysis": {"core", "io", "nn", "dynamics", "regimes", "analysis"},
    "top": {"core", "io", "nn", "dynamics", "train", "regimes", "analysis", "top"},
}
#: third-party modules that may be imported inside a function (optional and heavy)
# optional heavy dependencies, and scipy / torchdiffeq (required, but a third of a second to import, used only
# by the scipy and torchdiffeq runners and one quadrature: `import mamba_ode` and every worker process skip them)
LAZY_OK = {"mamba_ssm", "triton", "transformers", "tokenizers", "pandas", "ray", "scipy", "torchdiffeq"}
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80  # docstring included; a comment saying why allows more


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> list[str]:
    """Absolute names of the package modules an ``import from`` statement loads."""
    if node.level:
        base = module.split(".") if is_pkg else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not target.startswith("mamba_ode"):
        return []
    names = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
    return names or [target]


def _imports(module: str) -> list[str]:
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            out += _resolve(module, path.name == "__init__.py", node)
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("mamba_ode")]
    return [m for m in out if m in MODULES and m != module]


def _layer(module: str) -> str:
    parts = module.split(".")
    return LAYER["__init__"] if len(parts) == 1 else LAYER[parts[1]]


def test_every_module_has_a_layer():
    for module in MODULES:
        assert _layer(module) in ALLOWED, module


def test_no_module_imports_a_higher_layer():
    bad = [(m, imp) for m in MODULES for imp in _imports(m) if _layer(imp) not in ALLOWED[_layer(m)]]
    assert not bad, "\n".join(f"{m} ({_layer(m)}) imports {i} ({_layer(i)})" for m, i in bad)


def test_no_import_cycles():
    # a package's __init__ is loaded before its submodules: a submodule importing its own package's
    # __init__ is not an edge of the import order
    graph = {m: {i for i in _imports(m) if not m.startswith(i + ".")} for m in MODULES}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                pytest.fail("import cycle: " + " → ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_imports_at_module_top_except_optional_heavy_dependencies():
    bad = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    names = [node.module or ""]
                elif isinstance(node, ast.ImportFrom):
                    names = ["mamba_ode (relative)"]
                else:
                    continue
                bad += [f"{module}:{node.lineno} imports {n} inside {fn.name}()" for n in names
                        if n.split(".")[0] not in LAZY_OK]
    assert not bad, "\n".join(bad)


def test_module_and_function_sizes():
    long_modules = [(m, n) for m, p in MODULES.items() if (n := len(p.read_text(encoding="utf-8").splitlines()))
                    > MAX_MODULE_LINES]
    assert not long_modules, long_modules
    long_functions = []
    for module, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = fn.end_lineno - fn.lineno + 1
                above = "\n".join(lines[max(fn.lineno - 1 - len(fn.decorator_list) - 2, 0):fn.lineno])
                if n > MAX_FUNCTION_LINES and "long function:" not in above:
                    long_functions.append(f"{module}.{fn.name}: {n} lines")
    assert not long_functions, "\n".join(long_functions)


def test_import_leaves_scipy_and_torchdiffeq_to_their_first_use():
    code = ("import sys, mamba_ode; print(sorted(m for m in ('scipy', 'torchdiffeq') if m in sys.modules)); "
            "mamba_ode.blowup_time_1d(1.0, 1.0, 1.0); print('scipy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["[]", "True"]
