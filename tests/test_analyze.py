"""`mamba-ode analyze` end to end: exit codes, summary schema, figure files, headless rendering."""

from __future__ import annotations

import html
import json
import re
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib
import matplotlib.pyplot
import pytest
import torch

import mamba_ode
from mamba_ode.analysis.report import FIGURE_NAMES, make_figures, validate_summary, write_report
from mamba_ode.cli import main
from tests.layout import layout_problems

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _close_figures():
    """Figures drawn by a test (make_figures) are closed after it."""
    yield
    matplotlib.pyplot.close("all")


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    """One analyze run on the embedded default model (shared by the tests of this module)."""
    out = tmp_path_factory.mktemp("report")
    rc = main(["analyze", "--out", str(out), "--quiet", "--svg", "--t-max", "1000", "--prompt", "To be, or not to be"])
    assert rc == 0
    return out


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_summary_schema_names_every_layer(report_dir):
    summary = json.loads((report_dir / "summary.json").read_text())
    validate_summary(summary)
    model = mamba_ode.load()
    K = model.config.n_layer
    assert [rec["layer"] for rec in summary["layers"]] == list(range(K))
    n_tokens = len(model.tokenizer.encode("To be, or not to be"))
    assert summary["prompt"]["n_tokens"] == n_tokens
    allowed = {"convergent", "divergent-finite-time", "divergent", "bounded", "undetermined"}
    for rec in summary["layers"]:
        assert rec["parameter_regime"] in {"positive semi-definite", "negative semi-definite", "indefinite"}
        assert len(rec["trajectory"]["labels"]) == n_tokens
        assert set(rec["trajectory"]["labels"]) <= allowed
        assert sum(rec["trajectory"]["counts"].values()) == n_tokens
        assert abs(sum(rec["channel_fractions"].values()) - 1.0) < 1e-9
        sp = rec["spectrum"]
        assert sp["n_positive"] + sp["n_negative"] + sp["n_zero"] >= 1
    # the discrete network is Euler with step 1 of the depth field: its error must be finite and reported
    assert len(summary["comparison"]["times"]) == K + 1


def test_summary_quadratic_form_is_u0_M_u0(report_dir):
    """The recorded u₀ᵀMu₀ of token 0 (the first token) equals a dense recomputation from the checkpoint weights."""
    summary = json.loads((report_dir / "summary.json").read_text())
    model = mamba_ode.load(dtype=torch.float64)
    for rec in summary["layers"][:2]:
        k = rec["layer"]
        u0 = model.token_states("To be, or not to be", k)[0, 0]
        W = model.layers[k].mixer.x_proj.weight.detach()
        R, N = model.config.dt_rank, model.config.d_state
        M = W[R + N:].T @ W[R:R + N]
        assert rec["token0_quadratic_form"] == pytest.approx(float(u0 @ M @ u0), rel=1e-6, abs=1e-12)
        assert "token1_quadratic_form" not in rec


def test_every_figure_exists_and_is_an_image(report_dir):
    summary = json.loads((report_dir / "summary.json").read_text())
    names = set(summary["figures"])
    assert summary["notes"] == [] and set(FIGURE_NAMES) <= names
    assert {f"trajectories_layer{rec['layer']}" for rec in summary["layers"]} <= names
    for name, files in summary["figures"].items():
        assert {Path(f).suffix for f in files} == {".png", ".svg"}, name
        for rel in files:
            path = report_dir / rel
            assert path.is_file() and path.stat().st_size > 1000, rel
            if path.suffix == ".png":
                w, h = _png_size(path)
                assert w > 100 and h > 100
            else:
                assert ET.parse(path).getroot().tag.endswith("svg")
    html = (report_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(names)
    assert "http://" not in html and "https://" not in html  # self-contained


@pytest.mark.slow
def test_report_renders_in_headless_chromium(report_dir, tmp_path):
    """Every embedded image decodes (naturalWidth > 0) in Chromium, and the screenshot is not blank."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    page = tmp_path / "check.html"
    probe = ("<script>window.addEventListener('load',()=>{const imgs=[...document.images];"
             "document.body.setAttribute('data-broken',imgs.filter(i=>!(i.complete&&i.naturalWidth>0)).length);"
             "document.body.setAttribute('data-images',imgs.length);});</script>")
    page.write_text((report_dir / "report.html").read_text().replace("</body>", probe + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    found = re.search(r'data-broken="(\d+)" data-images="(\d+)"', dom)
    assert found, "the page did not finish loading"
    assert found.group(1) == "0" and int(found.group(2)) >= len(FIGURE_NAMES)
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1200,2400",
                    (report_dir / "report.html").as_uri()], capture_output=True, timeout=120, check=True)
    img = torch.tensor(__import__("matplotlib.image", fromlist=["imread"]).imread(shot))
    assert img.shape[0] >= 2400 and img.std() > 0.05  # text and figures, not a blank page


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mamba_ode", *args], capture_output=True, text=True, timeout=300,
                          check=False)


@pytest.mark.parametrize(("args", "needle"), [
    (["analyze", "/no/such/model/dir", "--quiet"], "/no/such/model/dir"),
    (["analyze", "--prompt-file", "/no/such/prompt.txt", "--quiet"], "/no/such/prompt.txt"),
    (["analyze", "--layers", "99", "--quiet"], "99"),
    (["analyze", "--t-max", "0", "--quiet"], "--t-max"),
    (["analyze", "--t-max", "-5", "--quiet"], "--t-max"),
    (["analyze", "--dtype", "int8", "--quiet"], "--dtype"),
    (["analyze", "--workers", "0", "--quiet"], "--workers"),
    (["analyze", "--workers", "many", "--quiet"], "--workers"),
    (["analyze", "--prompts", "/no/such/prompts.txt", "--workers", "2", "--quiet"], "--workers"),
])
def test_bad_cli_input_exits_2_with_one_line(args, needle, tmp_path):
    res = _run_cli(*args, "--out", str(tmp_path / "out"))
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if not ln.startswith("[mamba-ode]")]
    assert len(lines) == 1, res.stderr
    assert needle in lines[0]
    assert "Traceback" not in res.stderr


def test_unreadable_prompt_file(tmp_path):
    bad = tmp_path / "prompt.bin"
    bad.write_bytes(b"\xff\xfe\xfa")
    res = _run_cli("analyze", "--prompt-file", str(bad), "--quiet", "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and str(bad) in res.stderr and "Traceback" not in res.stderr


def test_analyze_api_rejects_bad_arguments():
    model = mamba_ode.load()
    with pytest.raises(ValueError, match="t_max"):
        mamba_ode.analyze(model, "x", t_max=0.0)
    with pytest.raises(ValueError, match="layers"):
        mamba_ode.analyze(model, "x", layers=[model.config.n_layer])
    with pytest.raises(TypeError, match="model"):
        mamba_ode.analyze("tiny-shakespeare", "x")
    with pytest.raises(TypeError, match=r"'layers' must be a sequence.*\[0\]"):  # was: 'int' object is not iterable
        mamba_ode.analyze(model, "x", layers=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'layers' is empty"):
        mamba_ode.analyze(model, "x", layers=[])
    from mamba_ode.nn.scan import _triton_module, triton_available

    if not triton_available():  # checked before any work, whichever way triton is missing
        with pytest.raises(ImportError, match="needs triton"):
            mamba_ode.analyze(model, "x", backend="triton")
    elif not _triton_module().interpreted():
        with pytest.raises(ValueError, match="needs CUDA tensors, and these are on cpu"):
            mamba_ode.analyze(model, "x", backend="triton")
    with pytest.raises(TypeError, match="'layers'"):
        mamba_ode.analyze_many(model, ["x"], layers=1)  # type: ignore[arg-type]


def test_internal_failure_exits_1(monkeypatch, tmp_path, capsys):
    def boom(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr("mamba_ode.cli.analyze", boom)
    assert main(["analyze", "--quiet", "--out", str(tmp_path)]) == 1
    assert "internal error: RuntimeError: simulated bug" in capsys.readouterr().err


@pytest.mark.parametrize(("labels", "verdict"), [
    (["divergent-finite-time", "undetermined"], "divergent-finite-time"),
    (["convergent", "divergent", "undetermined"], "divergent"),
    (["convergent", "convergent", "divergent"], "convergent"),
    (["convergent", "bounded", "bounded", "undetermined"], "bounded"),
    (["undetermined"], "undetermined"),
])
def test_layer_regime_from_token_labels(labels, verdict):
    """The layer's summary is its most frequent decided label — one token does not decide a layer."""
    from mamba_ode.analysis import regime_of_labels

    assert regime_of_labels(labels) == verdict


def test_agreement_line_shows_disagreements():
    from mamba_ode.analysis import agreement

    stats = {"theorem": {"n": 2, "agree": 2, "disagree": 0, "undetermined": 0, "rate": 1.0, "disagreements": []},
             "indicator": {"n": 9, "agree": 5, "disagree": 3, "undetermined": 1, "rate": 5 / 8,
                           "disagreements": [2, 4, 7]}}
    line = agreement(stats)
    assert "theorem 2/2 agree" in line and "indicator 5/8 agree (3 disagree)" in line
    none = {k: {"n": 0, "agree": 0, "disagree": 0, "undetermined": 0, "rate": None, "disagreements": []}
            for k in ("theorem", "indicator")}
    assert agreement(none) == "no prediction"


def test_summary_tokens_agree_with_the_layer_records(report_dir):
    """Per layer, the ``tokens`` list carries each token's label, own t* and prediction (0-based indices)."""
    summary = json.loads((report_dir / "summary.json").read_text())
    assert summary["schema_version"] == 3 and summary["token_indexing"] == "0-based"
    for rec in summary["layers"]:
        toks = rec["tokens"]
        assert [t["label"] for t in toks] == rec["trajectory"]["labels"]
        assert [t["index"] for t in toks] == list(range(len(toks)))
        for t in toks:
            assert (t["t_blowup"] is not None) == (t["label"] == "divergent-finite-time")
            assert (t["predicted"] is None) == (t["prediction_kind"] is None)
            assert t["prediction_kind"] in (None, "theorem", "indicator") and t["reason"]
            if t["t_blowup"] is not None:
                assert 0 < t["t_blowup"] <= rec["integration_end"] * (1 + 1e-12) or t["end"] == "blow-up"
        assert rec["integration_end"] <= summary["settings"]["t_max"]
        assert set(rec["prediction_agreement"]) == {"theorem", "indicator"}


def test_report_header_states_where_each_layer_ended(report_dir):
    summary = json.loads((report_dir / "summary.json").read_text())
    page = (report_dir / "report.html").read_text()
    assert "integrated to" in page
    for rec in summary["layers"]:
        assert f"{rec['integration_end']:.3g}" in page


def _ln_bias_model(directory: Path, *, n_layer: int = 3, blowup_scale: float = 2e4) -> Path:
    """A LayerNorm model with projection biases and expand 1 (native layout), its layers' S_C set to
    ``blowup_scale``·S_B so that M is positive semi-definite and large: tokens blow up long before t = 1e-3."""
    from mamba_ode import ByteTokenizer, MambaConfig, MambaLM

    cfg = MambaConfig(d_model=16, n_layer=n_layer, vocab_size=256, d_state=4, expand=1, rms_norm=False,
                      proj_bias=True, layout="native")
    torch.manual_seed(0)
    model = MambaLM(cfg)
    R, N = cfg.dt_rank, cfg.d_state
    with torch.no_grad():
        for layer in model.layers:
            W = layer.mixer.x_proj.weight
            W[R + N:] = blowup_scale * W[R:R + N]
    model.tokenizer = ByteTokenizer()
    model.save_pretrained(directory, layout="native")
    return directory


def test_layernorm_bias_expand1_model_blowing_up_before_any_output_time(tmp_path):
    """The failure seen on trained third-party weights: exit 0, a complete report, every token labelled."""
    src = _ln_bias_model(tmp_path / "ln")
    out = tmp_path / "report"
    rc = main(["analyze", str(src), "--prompt", "ROMEO: But, soft! what light", "--quiet", "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    validate_summary(summary)
    t_stars = [t["t_blowup"] for rec in summary["layers"] for t in rec["tokens"] if t["t_blowup"] is not None]
    assert t_stars and min(t_stars) < 1e-3  # blow-ups before the first output time of a fixed grid
    for rec in summary["layers"]:
        assert rec["trajectory"]["counts"]["divergent-finite-time"] >= 1
        assert f"trajectories_layer{rec['layer']}" in summary["figures"]
    assert set(FIGURE_NAMES) <= set(summary["figures"]) | {n.split("'")[1] for n in summary["notes"]}
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(summary["figures"])
    assert {Path(f).suffix for files in summary["figures"].values() for f in files} == {".png"}  # SVG on request


def test_a_figure_that_cannot_be_drawn_becomes_a_note(tmp_path, monkeypatch):
    """A plotting failure (here: matplotlib's log-scale error) is a note; summary and page are still written."""
    from mamba_ode.analysis import plots

    def broken(*args, **kwargs):
        raise ValueError("Data cannot be log-scaled because all values are <= 0.")

    monkeypatch.setattr(plots, "plot_token_trajectories", broken)
    rc = main(["analyze", "--layers", "0", "--t-max", "100", "--quiet", "--prompt", "To be", "--out", str(tmp_path)])
    assert rc == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    validate_summary(summary)
    assert "trajectories_layer0" not in summary["figures"]
    assert any("trajectories_layer0" in n and "log-scaled" in n for n in summary["notes"])
    assert "log-scaled" in (tmp_path / "report.html").read_text()


def test_many_layers_get_one_summary_figure_and_no_figure_warnings(tmp_path):
    """More than 8 layers: the layer summary replaces per-layer figures; matplotlib never warns about open
    figures."""
    import warnings

    from mamba_ode.analysis.report import MAX_LAYER_FIGURES

    src = _ln_bias_model(tmp_path / "deep", n_layer=MAX_LAYER_FIGURES + 2, blowup_scale=1.0)
    out = tmp_path / "report"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main(["analyze", str(src), "--prompt", "abc", "--quiet", "--t-max", "100", "--out", str(out)])
    assert rc == 0
    assert not [w for w in caught if "figures" in str(w.message).lower()]
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["layers"]) == MAX_LAYER_FIGURES + 2
    assert "layer_summary" in summary["figures"]
    assert not [n for n in summary["figures"] if n.startswith("trajectories_layer")]


def test_trajectory_figure_draws_the_deciding_tokens():
    """The first token to blow up, the other labels, and a sample — not evenly spaced indices."""
    from mamba_ode.analysis.token_plots import deciding_tokens

    labels = ["convergent"] * 30 + ["divergent-finite-time"] + ["undetermined"] * 9
    t_b = [None] * 30 + [0.01] + [None] * 9
    chosen = deciding_tokens(labels, t_b, max_tokens=6)
    assert 30 in chosen and len(chosen) <= 6
    assert any(labels[i] == "convergent" for i in chosen) and any(labels[i] == "undetermined" for i in chosen)


def test_analyze_mamba2_checkpoint(tmp_path):
    """A transformers Mamba-2 checkpoint: one row per layer with one head record per head, figures, exit 0."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.Mamba2Config(hidden_size=32, num_heads=4, head_dim=16, n_groups=2, state_size=8,
                                    num_hidden_layers=2, vocab_size=64, expand=2, chunk_size=8)
    transformers.Mamba2ForCausalLM(cfg).eval().save_pretrained(tmp_path / "m2")
    out = tmp_path / "report"
    rc = main(["analyze", str(tmp_path / "m2"), "--prompt-ids", *map(str, range(1, 14)), "--quiet", "--t-max", "100",
               "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    validate_summary(summary)
    assert summary["model"]["architecture"] == "mamba2"
    assert summary["model"]["n_heads"] == 4 and summary["model"]["n_groups"] == 2
    assert [rec["layer"] for rec in summary["layers"]] == [0, 1]
    model = mamba_ode.load(tmp_path / "m2", dtype=torch.float64)
    for rec in summary["layers"]:
        assert [h["head"] for h in rec["heads"]] == [0, 1, 2, 3]
        assert [h["group"] for h in rec["heads"]] == [0, 0, 1, 1]
        assert abs(sum(rec["channel_fractions"].values()) - 1.0) < 1e-12
        assert len(rec["trajectory"]["labels"]) == 13 and len(rec["tokens"]) == 13
        # counts summed over the two groups' Sym(M_g), checked against dense eigenvalues
        p = model.layer_params(rec["layer"]).snapshot()
        ev = torch.cat([torch.linalg.eigvalsh(0.5 * (m + m.T)) for m in
                        (p.S_C[g].T @ p.S_B[g] for g in range(2))])
        tol = 1e-9 * float(ev.abs().max())
        assert rec["spectrum"]["n_positive"] == int((ev > tol).sum())
        assert rec["spectrum"]["n_negative"] == int((ev < -tol).sum())
    for files in summary["figures"].values():
        for rel in files:
            assert (out / rel).stat().st_size > 1000


def test_failed_depth_solve_is_reported_not_a_crash(tmp_path):
    """NaN comparison errors (after a failed ODE trajectory) become JSON nulls and a status in the report."""
    import dataclasses
    import math

    from mamba_ode.analysis.report import write_report
    from mamba_ode.dynamics.solvers import Status

    analysis = mamba_ode.analyze(mamba_ode.load(), "To be", layers=[0], t_max=10.0)
    cmp_ = analysis.comparison
    rel = cmp_.rel_error.clone()
    rel[2:] = math.nan
    ode = dataclasses.replace(cmp_.ode_solution, status=[Status.BLOWUP], messages=["blow-up: simulated"])
    analysis.comparison = dataclasses.replace(cmp_, rel_error=rel, ode_solution=ode)
    page = write_report(analysis, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    validate_summary(summary)
    c = summary["comparison"]
    assert c["relative_error"][2:] == [None] * (len(c["times"]) - 2)
    assert c["max_relative_error"] == max(c["relative_error"][:2])
    assert c["status"] == "blow-up" and "simulated" in page.read_text()


def test_report_has_no_internal_references(report_dir):
    """The rendered report and its JSON cite the paper, never internal planning files or tickets."""
    internal = re.compile(r"\bSPEC\b|(?i:\bissues?\b)|\.\./shared")
    for name in ("report.html", "summary.json"):
        text = (report_dir / name).read_text(encoding="utf-8")
        text = re.sub(r"data:image/[a-z+]+;base64,[A-Za-z0-9+/=]+", "", text)  # embedded figures are not prose
        found = internal.search(text)
        assert found is None, f"{name}: ...{text[max(0, found.start() - 60):found.end() + 60]}..."


# ---------------------------------------------------------------------------------------------- what the page says


def _prompt_paragraph(page: str) -> re.Match:
    found = re.search(r"<p>Prompt \((\d+) tokens, ([^)]*)\): (.*?)</p>", page, re.S)
    assert found, "the report shows no prompt"
    return found


def _caption(page: str, name: str) -> str:
    found = re.search(rf'alt="{name}".*?<figcaption>(.*?)</figcaption>', page, re.S)
    assert found, f"no figure {name!r} in the page"
    return html.unescape(found.group(1))


def _text(page: str) -> str:
    """The page's prose: no embedded images, styles or tags."""
    page = re.sub(r"data:image/[a-z+]+;base64,[A-Za-z0-9+/=]+", "", page)
    page = re.sub(r"<style>.*?</style>", "", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


@pytest.fixture(scope="module")
def mamba2_report(tmp_path_factory):
    """A small in-memory Mamba-2 model without a tokenizer, analysed on ids, and its report."""
    torch.manual_seed(0)
    model = mamba_ode.Mamba2LM(mamba_ode.Mamba2Config(d_model=16, n_layer=2, vocab_size=32, d_state=4, headdim=8,
                                                      ngroups=2, chunk_size=8))
    assert model.tokenizer is None
    analysis = mamba_ode.analyze(model, [5, 9, 2, 7], layers=[0], t_max=10.0)
    out = tmp_path_factory.mktemp("mamba2")
    page = write_report(analysis, out).read_text(encoding="utf-8")
    return analysis, page


def test_prompt_ids_are_shown_as_decoded_tokens(report_dir, tmp_path):
    """--prompt-ids with a tokenizer: the prompt reads as its decoded tokens (never "None"), index by index,
    exactly as the same prompt given as text."""
    model = mamba_ode.load()
    text = "To be, or not to be"
    ids = model.tokenizer.encode(text)
    out = tmp_path / "ids"
    assert main(["analyze", "--prompt-ids", *map(str, ids), "--layers", "0", "--t-max", "10", "--quiet",
                 "--out", str(out)]) == 0
    para = _prompt_paragraph((out / "report.html").read_text(encoding="utf-8"))
    assert "None" not in para.group(0)
    shown = re.findall(r"<code title='token (\d+)'>(\d+):(.*?)</code>", para.group(3))
    assert [(int(a), int(b)) for a, b, _ in shown] == [(i, i) for i in range(len(ids))]
    assert "".join(html.unescape(piece) for _, _, piece in shown) == text
    from_text = _prompt_paragraph((report_dir / "report.html").read_text(encoding="utf-8"))
    assert para.group(0) == from_text.group(0)


def test_prompt_without_a_tokenizer_is_shown_as_ids(mamba2_report):
    _, page = mamba2_report
    para = _prompt_paragraph(page)
    assert para.group(1) == "4" and "no tokenizer" in para.group(2)
    assert para.group(3) == "0:5, 1:9, 2:2, 3:7"
    assert "None" not in para.group(0)


def test_mamba2_figures_and_captions_count_heads_not_channels(mamba2_report, report_dir):
    """Mamba-2: the regime map's colour bar, title and caption speak of heads (signs of the group's form), not of
    channels or one-dimensional reductions; Mamba-1 keeps channels."""
    analysis, page = mamba2_report
    figs, notes = make_figures(analysis)
    assert notes == []
    regime_map = figs["regime_map"]
    texts = [t.get_text() for t in regime_map.findobj(matplotlib.text.Text) if t.get_text()]
    assert "heads" in regime_map.axes[1].get_ylabel()
    assert not [t for t in texts if "channel" in t or "1-D" in t], texts
    for name in ("regime_map", "hidden_attention"):
        caption = _caption(page, name)
        assert "head" in caption and "channel" not in caption and "one-dimensional" not in caption, caption
    assert "group" in _caption(page, "spectrum")
    mamba1 = (report_dir / "report.html").read_text(encoding="utf-8")
    for name in ("regime_map", "hidden_attention"):
        caption = _caption(mamba1, name)
        assert "channel" in caption and "head" not in caption, caption
    fig = mamba_ode.plots.plot_regime_map(mamba_ode.regime_table(mamba_ode.load()))
    assert "channels" in fig.axes[1].get_ylabel()


def test_index_convention_is_stated_once_and_figures_follow_it(report_dir, mamba2_report):
    """One sentence states that indices count from 0; the figures name tokens by those indices."""
    for page in ((report_dir / "report.html").read_text(encoding="utf-8"), mamba2_report[1]):
        statements = re.findall(r"(?:count(?:s|ed)?|index(?:es|ed)?|numbered) from (\d)", _text(page))
        assert statements == ["0"]
    analysis = mamba_ode.analyze(mamba_ode.load(), "To be", layers=[0], t_max=10.0)
    summary = analysis.summary()
    figs, _ = make_figures(analysis)
    assert figs["comparison"].axes[0].get_ylabel().endswith("token 4")  # the last of 5 tokens
    legend = [t.get_text() for leg in figs["trajectories_layer0"].legends for t in leg.get_texts()]
    named = [re.fullmatch(r"token (\d+): (.+)", t) for t in legend]
    named = [m for m in named if m]
    assert named
    for m in named:
        assert summary["layers"][0]["tokens"][int(m.group(1))]["label"] == m.group(2)
    assert "token 0" in figs["regime_diagram"].axes[0].get_title()


def test_every_table_column_and_the_comparison_number_are_explained(report_dir):
    """Every column of every table has a one-sentence definition; so does the comparison's relative error."""
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    headers = {html.unescape(h) for h in re.findall(r"<th>(.*?)</th>", page)}
    defined = {html.unescape(d) for d in re.findall(r"<dt>(.*?)</dt>", page)}
    assert headers and headers <= defined, headers - defined
    summary = json.loads((report_dir / "summary.json").read_text())
    number = f"{summary['comparison']['max_relative_error']:.3g}"
    text = _text(page)
    assert f"at most {number}" in text
    sentences = re.split(r"(?<=\.) ", text)
    explained = [s for s in sentences if "relative error" in s and " / " in s and "largest" in s and "0 means" in s]
    assert len(explained) == 1, "no sentence says what the relative error measures and how to read it"
    header = re.search(r"<h1>.*?</h1>\s*<p>(.*?)</p>", page, re.S).group(1)
    for symbol in ("d_model", "E", "N", "R"):
        assert re.search(rf"\b{symbol} (is )?the ", html.unescape(header)), symbol


def test_figures_of_a_24_layer_model_fit_their_frames():
    """A tiny random 24-layer model: no figure is clipped or overlaps, layer and depth axes have whole-number
    ticks, extreme points lie inside their axes."""
    torch.manual_seed(3)
    model = mamba_ode.MambaLM(mamba_ode.MambaConfig(d_model=4, n_layer=24, vocab_size=32, d_state=2, expand=1))
    analysis = mamba_ode.analyze(model, [1, 2, 3, 4, 5, 6], layers=[0, 23], t_max=10.0)
    figs, notes = make_figures(analysis)
    assert notes == [] and set(FIGURE_NAMES) <= set(figs)
    for name, fig in figs.items():
        # the regime diagram's legend sits on a corner of its (dense) map by design
        assert layout_problems(fig, legends_outside=name != "regime_diagram") == [], name


def test_analyze_refuses_a_batch_naming_the_argument_and_the_shape():
    model = mamba_ode.load()
    ids = torch.tensor([model.tokenizer.encode("To be"), model.tokenizer.encode("or no")])  # (2, 5)
    with pytest.raises(ValueError) as err:
        mamba_ode.analyze(model, ids, layers=[0], t_max=1.0)
    msg = str(err.value)
    assert "'prompt'" in msg and "(2, 5)" in msg and "one sequence at a time" in msg and "loop" in msg
    with pytest.raises(ValueError, match="'prompt'.*2 sequences"):
        mamba_ode.analyze(model, ids.tolist(), layers=[0], t_max=1.0)
    one = mamba_ode.analyze(model, ids[1:], layers=[0], t_max=1.0)  # (1, L): one sequence, accepted
    assert one.input_ids.tolist() == ids[1:].tolist()
