"""The documentation site builds with --strict, and its generated pages match their raw data."""

from __future__ import annotations

import html
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


_NO_MKDOCS = shutil.which("mkdocs") is None and importlib.util.find_spec("mkdocs") is None
#: pages the rendering checks open: the home page, a concepts page, a tutorial and the API reference
RENDERED_PAGES = ("index.html", "concepts/index.html", "tutorials/01_one_dimensional_theory/index.html",
                  "api/index.html")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The documentation built once with ``mkdocs build --strict`` (skipped without mkdocs)."""
    if _NO_MKDOCS:
        pytest.skip("mkdocs not installed (pip install -e '.[test]')")
    out = tmp_path_factory.mktemp("docs") / "site"
    # nbconvert looks for its templates under sys.prefix; in a venv made with --system-site-packages
    # they live under the base interpreter's prefix
    jupyter_path = [os.environ.get("JUPYTER_PATH", ""), str(Path(sys.base_prefix) / "share" / "jupyter")]
    env = dict(os.environ, JUPYTER_PATH=os.pathsep.join(p for p in jupyter_path if p))
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, check=False, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return out


@pytest.mark.slow
def test_mkdocs_build_strict(site):
    for page in ("index.html", "concepts/index.html", "api/index.html", "claims/index.html", "results/index.html",
                 "benchmarks/index.html", "tutorials/01_one_dimensional_theory/index.html"):
        assert (site / page).is_file(), page
    api = (site / "api" / "index.html").read_text()
    for name in ("selective_scan", "solve", "criteria_1d", "classify_trajectory", "regime_table", "analyze"):
        assert name in api, name


@pytest.mark.slow
def test_site_needs_no_network(site):
    """No page loads a script, a stylesheet or a font from another host; formulas are MathML already."""
    remote = re.compile(r"<(?:script|link|img)\b[^>]*\b(?:src|href)=\"(?:https?:)?//[^\"]*\"[^>]*>", re.I)
    for page in sorted(site.rglob("*.html")):
        text = page.read_text()
        loads = [m.group(0) for m in remote.finditer(text) if "rel=\"preconnect\"" not in m.group(0)
                 and not re.search(r"<link\b[^>]*rel=\"(?:canonical|alternate)\"", m.group(0))]
        assert not loads, f"{page.relative_to(site)} loads {loads[:3]}"
        assert "fonts.gstatic.com" not in text, page
    for page in ("concepts/index.html", "tutorials/01_one_dimensional_theory/index.html"):
        assert (site / page).read_text().count("<math") >= 5, page


_PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const body = document.body.cloneNode(true);
  body.querySelectorAll('pre, code, math, script, style').forEach(e => e.remove());
  const text = body.textContent;
  const raw = ['\\\\(', '\\\\[', '$$', ':class:', ':func:', ':meth:', '\\\\frac', '\\\\mathrm']
    .filter(s => text.includes(s));
  const maths = [...document.querySelectorAll('math')];
  const height = m => m.getBoundingClientRect().height;
  const tall = maths.filter(m => m.querySelector('mfrac, munderover, msubsup')).map(height);
  const flat = maths.filter(m => !m.querySelector('mfrac, munderover, msubsup, msup, msub')).map(height);
  document.body.setAttribute('data-probe', JSON.stringify({
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length, raw: raw, maths: maths.length,
    tall: tall.length ? Math.max(...tall) : 0, flat: flat.length ? Math.max(...flat) : 0}));
});</script>"""


@pytest.mark.slow
@pytest.mark.parametrize("page", RENDERED_PAGES)
def test_site_renders_in_headless_chromium(site, page):
    """Opened offline in Chromium: images decode, no raw TeX or reST roles in the text, formulas laid out."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    src = site / page
    probe = src.with_name("probe.html")  # beside the page: its relative links still resolve
    probe.write_text(src.read_text().replace("</body>", _PROBE + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
             "--host-resolver-rules=MAP * ~NOTFOUND"]  # no network: every host is unresolvable
    dom = subprocess.run([chromium, *flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    found = re.search(r"data-probe=\"([^\"]*)\"", dom)
    assert found, f"{page} did not finish loading"
    result = json.loads(html.unescape(found.group(1)))
    assert result["broken"] == 0, result
    assert result["raw"] == [], f"{page} shows raw markup: {result['raw']}"
    if page != "api/index.html":
        assert result["maths"] > 0 or page == "index.html", result
    if result["tall"] and result["flat"]:  # a fraction or a sum with limits is drawn taller than a plain symbol
        assert result["tall"] > 1.3 * result["flat"], result


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


#: words that point at the project's internal planning, which no user can open
_INTERNAL = re.compile(r"\bSPEC\b|(?i:\bissues?\b)|\.\./shared|shared/[A-Z]")


def _user_facing_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "constraints.txt", ROOT / "pyproject.toml"]
    files += sorted((ROOT / "mamba_ode").rglob("*.py"))
    files += sorted(p for p in (ROOT / "docs").rglob("*") if p.suffix in {".md", ".py", ".js", ".css"})
    files += sorted((ROOT / "notebooks").rglob("*.py")) + sorted((ROOT / "notebooks").glob("*.ipynb"))
    return files


def test_no_internal_references_where_users_read():
    """The package, docs, notebooks and README cite the paper or docs pages, never internal files or tickets."""
    hits = []
    for path in _user_facing_files():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _INTERNAL.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:120]}")
    assert not hits, "\n".join(hits)


def test_public_api_is_documented():
    """Every name exported by ``mamba_ode`` (and every public method of an exported class) has a docstring;
    those taking two or more arguments describe them in an ``Arguments:`` section."""
    import inspect

    import mamba_ode

    problems = []
    for name in mamba_ode.__all__:
        obj = getattr(mamba_ode, name)
        items = [(name, obj)] if inspect.isfunction(obj) or inspect.isclass(obj) else []
        if inspect.isclass(obj):
            items += [(f"{name}.{n}", m) for n, m in vars(obj).items() if not n.startswith("_")
                      and n != "forward" and (inspect.isfunction(m) or isinstance(m, property))]
        for qualname, member in items:
            fn = member.fget if isinstance(member, property) else member
            doc = inspect.getdoc(fn)
            if not doc:
                problems.append(f"{qualname}: no docstring")
            elif inspect.isfunction(fn) and not isinstance(member, property):
                params = [p for p in inspect.signature(fn).parameters if p not in ("self", "cls")]
                if len(params) >= 2 and "Arguments:" not in doc:
                    problems.append(f"{qualname}: no Arguments section")
    assert not problems, "\n".join(problems)
