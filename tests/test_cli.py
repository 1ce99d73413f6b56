"""The command line: output-place safety, bounded prompts, every knob, and a fuzz of its arguments.

Exit codes are the contract: 0 success, 2 bad arguments or input (one line, no traceback), 1 only for a
genuine internal bug — which no argument list may trigger.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mamba_ode
from mamba_ode.analysis.output import MARKER, ReportDirError, check_report_dir, is_report_dir
from mamba_ode.cli import main


def _tiny_model(directory: Path) -> Path:
    """A 1-layer byte-level model (d_model 8) saved in the native layout: fast to analyse."""
    cfg = mamba_ode.MambaConfig(d_model=8, n_layer=1, vocab_size=256, d_state=2, layout="native")
    torch.manual_seed(0)
    model = mamba_ode.MambaLM(cfg)
    model.tokenizer = mamba_ode.ByteTokenizer()
    model.save_pretrained(directory, layout="native")
    return directory


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return _tiny_model(tmp_path_factory.mktemp("tiny") / "m")


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("[mamba-ode]")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------------------------------------- output place


def test_check_report_dir_accepts_new_empty_and_own_directories(tmp_path):
    assert check_report_dir(tmp_path / "new" / "deeper") == (tmp_path / "new" / "deeper").absolute()
    (tmp_path / "empty").mkdir()
    check_report_dir(tmp_path / "empty")
    own = tmp_path / "own"
    own.mkdir()
    (own / MARKER).write_text("{}")
    (own / "anything").write_text("x")
    assert is_report_dir(own)
    check_report_dir(own)


@pytest.mark.parametrize("case", ["file", "under_file", "foreign", "empty_string", "unwritable"])
def test_check_report_dir_refuses_with_the_path(tmp_path, case):
    target: Path | str
    if case == "file":
        target = tmp_path / "f"
        target.write_text("x")
    elif case == "under_file":
        (tmp_path / "f").write_text("x")
        target = tmp_path / "f" / "report"
    elif case == "foreign":
        target = tmp_path / "mine"
        target.mkdir()
        (target / "notes.txt").write_text("precious")
    elif case == "empty_string":
        target = ""
    else:
        target = Path("/proc/mamba-ode-report")
    with pytest.raises(ReportDirError) as info:
        check_report_dir(target)
    assert isinstance(info.value, ValueError)
    if case != "empty_string":
        assert str(target) in str(info.value) or str(Path(target).parent) in str(info.value)


@pytest.mark.parametrize("case", ["file", "foreign"])
def test_cli_refuses_a_bad_out_before_any_work(tmp_path, capsys, monkeypatch, case):
    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr("mamba_ode.cli.load", no_load)
    target = tmp_path / "out"
    if case == "file":
        target.write_text("x")
    else:
        target.mkdir()
        (target / "thesis.tex").write_text("precious")
    rc, _, err = _run(capsys, "analyze", "--out", str(target))
    assert rc == 2
    assert str(target) in _one_line_error(err)
    if case == "foreign":
        assert (target / "thesis.tex").read_text() == "precious"


def test_a_failing_report_leaves_the_previous_one_intact(tmp_path, monkeypatch, tiny):
    """Atomic writing: a failure half-way leaves the previous report untouched, and no staging directory."""
    from mamba_ode.analysis import report

    model = mamba_ode.load(tiny)
    analysis = mamba_ode.analyze(model, "abc", t_max=10.0)
    out = tmp_path / "report"
    report.write_report(analysis, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def broken(*args, **kwargs):
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(report, "render_html", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        report.write_report(analysis, out)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no .partial or .old left behind
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError):
        report.write_report(analysis, fresh)
    assert not fresh.exists()  # nothing rather than half a report


def test_own_report_is_replaced_even_when_broken(tmp_path, capsys, tiny):
    """A previous report of ours (marker present) is replaced as a whole, even with report.html a directory."""
    out = tmp_path / "r"
    assert _run(capsys, "analyze", str(tiny), "--prompt", "ab", "--t-max", "10", "--quiet", "--out", str(out))[0] == 0
    shutil.rmtree(out / "figures")
    (out / "report.html").unlink()
    (out / "report.html").mkdir()
    assert _run(capsys, "analyze", str(tiny), "--prompt", "ab", "--t-max", "10", "--quiet", "--out", str(out))[0] == 0
    assert (out / "report.html").is_file() and (out / "figures").is_dir() and is_report_dir(out)
    assert oct((out).stat().st_mode & 0o777) != oct(0o700) or (out.stat().st_mode & 0o077) == 0


# ---------------------------------------------------------------------------------------------- bounded prompts


def test_long_prompt_is_refused_before_any_work(capsys, tiny, monkeypatch, tmp_path):
    def no_analysis(*args, **kwargs):
        raise AssertionError("the analysis started")

    monkeypatch.setattr("mamba_ode.cli.analyze", no_analysis)
    prompt = tmp_path / "long.txt"
    prompt.write_text("x" * 200_000)
    rc, _, err = _run(capsys, "analyze", str(tiny), "--prompt-file", str(prompt), "--out", str(tmp_path / "o"))
    assert rc == 2
    line = _one_line_error(err)
    assert "200000 tokens" in line and "--max-tokens" in line


def test_analyze_api_bounds_tokens_and_memory(tiny, monkeypatch):
    model = mamba_ode.load(tiny)
    with pytest.raises(ValueError, match="max_tokens=16"):
        mamba_ode.analyze(model, "y" * 17, max_tokens=16)
    monkeypatch.setattr("mamba_ode.analysis.budget.available_memory", lambda device: 1000)
    with pytest.raises(ValueError, match=r"needs about .* and cpu has 1000 B available"):
        mamba_ode.analyze(model, "abc")


def test_attention_figure_never_grows_with_the_prompt(tiny):
    from mamba_ode.analysis.budget import ATTENTION_TOKENS

    model = mamba_ode.load(tiny)
    analysis = mamba_ode.analyze(model, "z" * (ATTENTION_TOKENS + 30), t_max=1.0, max_steps=50)
    assert analysis.hidden_attention.shape[1] == analysis.hidden_attention.shape[2] == ATTENTION_TOKENS


# ---------------------------------------------------------------------------------------------- the knobs


def test_version_help_and_models(capsys):
    rc, out, _ = _run(capsys, "--version")
    assert rc == 0 and out.strip() == f"mamba-ode {mamba_ode.__version__}"
    rc, out, _ = _run(capsys, "analyze", "--help")
    assert rc == 0
    out = " ".join(out.split())  # undo the help formatter's line wrapping
    for needle in ("(default: 1e-05)", "(default: 1e-08)", "(default: 20000)", "(default: 1e8)", "(default: 1e4)",
                   "(default: 2048)", "tiny-shakespeare", "float64", "--prompt-ids", "--tokenizer"):
        assert needle in out, needle
    rc, out, _ = _run(capsys, "models")
    assert rc == 0 and "tiny-shakespeare  (default)" in out and "tiny-shakespeare-neg" in out


def test_knobs_reach_the_analysis(capsys, tiny, tmp_path):
    out = tmp_path / "r"
    rc, table, _ = _run(capsys, "analyze", str(tiny), "--prompt", "abcd", "--t-max", "50", "--rtol", "1e-6",
                        "--atol", "1e-9", "--max-steps", "3000", "--blowup-factor", "1e6", "--backend", "reference",
                        "--max-tokens", "10", "--quiet", "--out", str(out))
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())["settings"]
    assert (s["t_max"], s["rtol"], s["atol"], s["max_steps"], s["blowup_factor"], s["backend"], s["max_tokens"]) == \
        (50.0, 1e-6, 1e-9, 3000, 1e6, "reference", 10)
    assert (s["dtype"], s["model_dtype"]) == ("float64", "float32")  # trajectories; the --dtype of the weights
    header, row = table.splitlines()[:2]
    for column in ("finite-time", "undetermined", "integrated to"):  # numbers end where their header ends
        end = header.index(column) + len(column)
        assert row[end - 1].isdigit() and row[end:end + 1] == " ", (column, header, row)


@pytest.mark.parametrize("args,needle", [
    (["--rtol", "0"], "--rtol"), (["--atol", "nan"], "--atol"), (["--max-steps", "0"], "--max-steps"),
    (["--blowup-factor", "1"], "--blowup-factor"), (["--backend", "gpu"], "--backend"),
    (["--max-tokens", "-3"], "--max-tokens"), (["--prompt", ""], "--prompt"), (["--prompt-ids", "-1"], "--prompt-ids"),
    (["--prompt-ids", "99999999999999999999"], "--prompt-ids"), (["--layers", "7"], "--layers"),
    (["--tokenizer", "/no/such/tokenizer.json"], "/no/such/tokenizer.json"), (["--t-max", "inf"], "--t-max"),
    (["--backend", "triton"], "--backend"),  # a CPU model: the Triton kernels need CUDA tensors (was exit 1)
])
def test_bad_knobs_exit_2_with_one_line(capsys, tiny, tmp_path, args, needle):
    rc, _, err = _run(capsys, "analyze", str(tiny), *args, "--out", str(tmp_path / "o"))
    assert rc == 2
    assert needle in _one_line_error(err)


# ---------------------------------------------------------------------------------------------- fuzz

_FLAGS = st.sampled_from([
    ["--prompt", "ab"], ["--prompt", ""], ["--prompt", "\x00\udcff"], ["--prompt-ids", "1", "2"],
    ["--prompt-ids", "-5"],
    ["--prompt-ids", "300"], ["--prompt-ids"], ["--layers", "0"], ["--layers", "-1"], ["--layers", "3"],
    ["--layers", "x"], ["--t-max", "5"], ["--t-max", "-1"], ["--t-max", "nan"], ["--t-max", "1e400"],
    ["--rtol", "1e-3"], ["--rtol", "abc"], ["--atol", "0"], ["--max-steps", "30"], ["--max-steps", "2.5"],
    ["--blowup-factor", "0.5"], ["--blowup-factor", "1e4"], ["--max-tokens", "1"], ["--max-tokens", "0"],
    ["--backend", "fast"], ["--backend", "tpu"], ["--dtype", "float64"], ["--dtype", "int8"], ["--device", "tpu"],
    ["--svg"], ["--quiet"], ["--tokenizer", "nowhere/none"], ["--unknown-flag"], ["--prompt-file", "/dev/null"],
    ["--prompt-file", "/no/such"], ["--out", "/proc/x"], ["--out", ""],
])


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_FLAGS, min_size=0, max_size=4))
def test_cli_fuzz_exits_0_or_2_never_1(capsys, tiny, tmp_path, flags):
    argv = ["analyze", str(tiny), "--t-max", "3", "--max-steps", "400", "--out", str(tmp_path / "fz")]
    for f in flags:
        argv += f
    rc, _, err = _run(capsys, *argv)
    assert rc in (0, 2), (argv, err)
    if rc == 2:
        _one_line_error(err)


def test_version_matches_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11
    meta = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert mamba_ode.__version__ == meta["project"]["version"]
