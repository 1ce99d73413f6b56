"""Many prompts, saved analyses and the CLI around them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mamba_ode as mo
from mamba_ode.analysis.many import Interval, _bootstrap, layer_stats, read_prompts
from mamba_ode.cli import main

PROMPTS = ["To be", "or not", "To be", "that is"]  # two of equal length share a batch; one repeats
FAST = {"layers": [0, 2], "t_max": 100.0}


@pytest.fixture(scope="module")
def model():
    return mo.load()


@pytest.fixture(scope="module")
def serial(model):
    return mo.analyze_many(model, PROMPTS, executor="serial", **FAST)


# ---------------------------------------------------------------------------------------------- prompts file


def test_read_prompts_text_and_jsonl(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("first prompt\n\n  second one \n", encoding="utf-8")
    assert read_prompts(f) == ["first prompt", "  second one "]
    j = tmp_path / "p.jsonl"
    j.write_text('{"text": "a b"}\n{"ids": [1, 2, 3]}\n', encoding="utf-8")
    assert read_prompts(j) == ["a b", [1, 2, 3]]
    # a byte-order mark is not text; U+2028 and form feeds stay inside their prompt; CRLF line ends
    b = tmp_path / "bom.jsonl"
    b.write_bytes("\ufeff".encode() + json.dumps({"text": "x\u2028y"}, ensure_ascii=False).encode() + b"\r\n")
    assert read_prompts(b) == ["x\u2028y"]
    t = tmp_path / "ff.txt"
    t.write_bytes("\ufeffpage1\x0cpage2\r\nnext\n".encode())
    assert read_prompts(t) == ["page1\x0cpage2", "next"]


@pytest.mark.parametrize(("content", "err", "needle"), [
    (b"\xff\xfe bad", ValueError, "UTF-8"),
    (b"\n\n", ValueError, "holds no prompt"),
    (b'{"text": "ok"}\n{"ids": "x"}\n', ValueError, "line 2"),
    (b'{"text": "ok"}\n{not json\n', ValueError, "line 2"),
])
def test_bad_prompts_files_name_the_file_and_line(tmp_path, content, err, needle):
    f = tmp_path / "p.jsonl"
    f.write_bytes(content)
    with pytest.raises(err, match=needle) as info:
        read_prompts(f)
    assert "p.jsonl" in str(info.value)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_prompts(tmp_path / "nope.txt")


# ---------------------------------------------------------------------------------------------- results and statistics


def test_each_prompt_matches_a_single_prompt_analysis(model, serial):
    """Independent path: mo.analyze on each prompt gives the same per-token labels and t*."""
    for res, prompt in zip(serial.results, PROMPTS):
        single = mo.analyze(model, prompt, **FAST).summary()
        for rec, lay in zip(res.layers, single["layers"]):
            assert rec["layer"] == lay["layer"]
            assert [t["label"] for t in rec["tokens"]] == [t["label"] for t in lay["tokens"]]
            assert [t["t_blowup"] for t in rec["tokens"]] == [t["t_blowup"] for t in lay["tokens"]]
        assert res.tokens == single["prompt"]["tokens"]


def test_statistics_count_what_the_prompts_hold(serial):
    for st in serial.stats:
        recs = [r.layer(st.layer) for r in serial.results]
        labels = [t["label"] for rec in recs for t in rec["tokens"]]
        assert st.n_tokens == len(labels) and st.n_prompts == len(PROMPTS)
        for lab, iv in st.label_fractions.items():
            share = labels.count(lab) / len(labels)
            assert iv.value == pytest.approx(share) if labels.count(lab) else iv.value in (0.0, None)
            if iv.low is not None:
                assert iv.low <= iv.value <= iv.high
        tb = sorted(t["t_blowup"] for rec in recs for t in rec["tokens"] if t["label"] == "divergent-finite-time")
        assert st.t_blowup_quantiles["n"] == len(tb)
        if tb:
            assert tb[0] <= st.t_blowup_quantiles["q50"] <= tb[-1]


def test_batched_equals_serial_up_to_rounding(model, serial):
    batched = mo.analyze_many(model, PROMPTS, executor="batched", **FAST)
    for a, b in zip(serial.results, batched.results):
        for ra, rb in zip(a.layers, b.layers):
            assert [t["label"] for t in ra["tokens"]] == [t["label"] for t in rb["tokens"]]
            for ta, tb in zip(ra["tokens"], rb["tokens"]):
                if ta["t_blowup"] is not None:
                    assert tb["t_blowup"] == pytest.approx(ta["t_blowup"], rel=1e-6)


def test_bootstrap_interval_covers_the_true_rate():
    """Clusters of Bernoulli(p) tokens: the 90 % interval covers p in about 90 % of repetitions."""
    gen = torch.Generator().manual_seed(1)
    p, hits, reps = 0.3, 0, 120
    for _ in range(reps):
        sizes = torch.randint(3, 12, (30,), generator=gen)
        num = [int((torch.rand(int(n), generator=gen) < p).sum()) for n in sizes]
        iv = _bootstrap(num, sizes.tolist(), n_boot=400, confidence=0.9, gen=gen)
        hits += iv.low <= p <= iv.high
    assert 0.8 <= hits / reps <= 0.97


def test_identical_prompts_give_a_degenerate_interval(model):
    many = mo.analyze_many(model, ["To be"] * 3, executor="serial", layers=[0], t_max=100.0)
    st = layer_stats(many.results, 0)
    for iv in st.label_fractions.values():
        assert iv.value is None or iv.low == pytest.approx(iv.value) and iv.high == pytest.approx(iv.value)
    assert _bootstrap([0, 0], [0, 0], n_boot=10, confidence=0.9, gen=torch.Generator()) == Interval(None, None,
                                                                                                     None, 0)
    # one prompt (or one with tokens) says nothing of the spread between prompts: no interval
    assert _bootstrap([3, 0], [10, 0], n_boot=10, confidence=0.9, gen=torch.Generator()) == Interval(0.3, None,
                                                                                                      None, 10)


@pytest.mark.parametrize(("kwargs", "err", "needle"), [
    ({"prompts": []}, ValueError, "empty"),
    ({"prompts": "To be"}, TypeError, "list of prompts"),
    ({"prompts": ["ok", ""]}, ValueError, "prompt 1"),
    ({"prompts": ["ok"], "executor": "threads"}, ValueError, "executor"),
    ({"prompts": ["ok"], "confidence": 1.5}, ValueError, "confidence"),
    ({"prompts": ["ok"], "t_max": -1.0}, ValueError, "t_max"),
])
def test_bad_arguments_are_refused(model, kwargs, err, needle):
    with pytest.raises(err, match=needle):
        mo.analyze_many(model, **kwargs)


def test_many_report_has_three_figures_and_valid_json(serial, tmp_path):
    page = mo.write_many_report(serial, tmp_path / "rep")
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 3
    stats = json.loads((tmp_path / "rep" / "stats.json").read_text())
    assert [s["layer"] for s in stats["stats"]] == FAST["layers"] and len(stats["prompts"]) == len(PROMPTS)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        mo.write_many_report(serial, tmp_path / "foreign")


@pytest.mark.slow
def test_ray_sweep_on_two_cpus_equals_the_serial_result(model, serial):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        distributed = mo.analyze_many(model, PROMPTS, executor="ray", **FAST)
    finally:
        ray.shutdown()
    a, b = serial.summary(), distributed.summary()
    for s in (a, b):
        s.pop("timings")
        s["settings"].pop("executor")
    assert a == b


# ---------------------------------------------------------------------------------------------- saved analyses


def _analysis_of(kind: str):
    if kind == "mamba1":
        return mo.analyze(mo.load(), "To be, or", layers=[0, 1], t_max=100.0)
    torch.manual_seed(0)
    m2 = mo.Mamba2LM(mo.Mamba2Config(d_model=16, n_layer=2, vocab_size=32, d_state=4, headdim=8, ngroups=2,
                                     chunk_size=8)).double().eval()
    return mo.analyze(m2, [3, 1, 4, 1, 5], t_max=100.0)


@pytest.mark.parametrize("kind", ["mamba1", "mamba2"])
def test_save_load_render_round_trip(kind, tmp_path):
    a = _analysis_of(kind)
    a.save(tmp_path / "saved")
    b = mo.load_analysis(tmp_path / "saved")
    assert b.summary() == a.summary() == json.loads((tmp_path / "saved" / "summary.json").read_text())
    for la, lb in zip(a.layers, b.layers):
        torch.testing.assert_close(lb.solution.norms, la.solution.norms, rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(lb.solution.t_blowup, la.solution.t_blowup, rtol=0, atol=0, equal_nan=True)
        assert lb.classification == la.classification and lb.predictions == la.predictions
    torch.testing.assert_close(b.hidden_attention, a.hidden_attention, rtol=0, atol=0)
    mo.write_report(a, tmp_path / "ra")
    mo.write_report(b, tmp_path / "rb")
    ja, jb = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("ra", "rb"))
    assert ja == jb
    b.save(tmp_path / "saved")  # a loaded analysis saves again, over its own directory
    assert mo.load_analysis(tmp_path / "saved").summary() == a.summary()


def test_an_analysis_saved_before_a_record_gained_a_field_still_loads(tmp_path):
    """TokenSolution.end_exponent and initial_speed (default None) are new: an analysis saved without them loads,
    and its labels are those it was saved with; a field that is required, or one the record does not declare, is
    still refused."""
    a = _analysis_of("mamba1")
    d = a.save(tmp_path / "saved")
    doc = json.loads((d / "analysis.json").read_text())
    records = [r for r in _records(doc) if r.get("__record__", "").endswith(":TokenSolution")]
    assert records
    for r in records:
        del r["fields"]["end_exponent"]
        del r["fields"]["initial_speed"]
    (d / "analysis.json").write_text(json.dumps(doc))
    b = mo.load_analysis(d)
    assert all(lay.solution.end_exponent is None and lay.solution.initial_speed is None for lay in b.layers)
    assert b.summary()["layers"] == a.summary()["layers"]
    records[0]["fields"]["not_a_field"] = 1
    (d / "analysis.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="TokenSolution record needs the fields"):
        mo.load_analysis(d)
    del records[0]["fields"]["not_a_field"], records[0]["fields"]["ts"]
    (d / "analysis.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="TokenSolution record needs the fields"):
        mo.load_analysis(d)
    d = a.save(tmp_path / "again")  # a field with a default that was always saved is still required
    doc = json.loads((d / "analysis.json").read_text())
    verdict = next(r for r in _records(doc) if r.get("__record__", "").endswith(":TokenVerdict"))
    del verdict["fields"]["t_end"]
    (d / "analysis.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="TokenVerdict record needs the fields"):
        mo.load_analysis(d)


def _records(obj):
    """Every encoded record in a saved analysis tree, depth first."""
    if isinstance(obj, dict):
        if "__record__" in obj:
            yield obj
        for v in obj.values():
            yield from _records(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _records(v)


def test_loading_refuses_what_is_not_a_saved_analysis(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        mo.load_analysis(tmp_path / "nowhere")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="not a saved analysis"):
        mo.load_analysis(tmp_path / "plain")
    a = _analysis_of("mamba1")
    d = a.save(tmp_path / "saved")
    doc = json.loads((d / "analysis.json").read_text())
    for bad in ({"__record__": "os:system", "fields": {}},  # nothing outside the fixed list is built:
                {"__enum__": "mamba_ode.__main__:X", "value": 1},  # not even a module of the package
                {"__record__": "mamba_ode.io:hub.huggingface_hub.CommitOperationAdd", "fields": {}},
                {"__list__": "mamba_ode.regimes.labels:Label", "items": []},  # a known type of the wrong kind
                {"__record__": "mamba_ode.regimes.tokens:TokenVerdict", "fields": {"index": 0}}):  # fields missing
        doc["analysis"]["prompt"] = bad
        (d / "analysis.json").write_text(json.dumps(doc))
        with pytest.raises(ValueError, match="analysis.json"):
            mo.load_analysis(d)
    doc["analysis"]["prompt"] = {"__tensor__": ["not", "a", "key"]}
    (d / "analysis.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="malformed"):
        mo.load_analysis(d)
    (d / "analysis.json").write_text("{not json")
    with pytest.raises(ValueError, match="analysis.json"):
        mo.load_analysis(d)
    (d / "tensors.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="tensors.safetensors"):
        mo.load_analysis(d)


# ---------------------------------------------------------------------------------------------- command line


def test_attaching_another_model_is_refused(tmp_path):
    a = _analysis_of("mamba1")
    d = a.save(tmp_path / "saved")
    assert mo.load_analysis(d, model=a.model).model is a.model
    other = mo.MambaLM(mo.MambaConfig(d_model=8, n_layer=1, vocab_size=32, d_state=2))
    with pytest.raises(ValueError, match="argument 'model'"):
        mo.load_analysis(d, model=other)


def test_cli_prompts_file_and_save_then_report(tmp_path, capsys):
    f = tmp_path / "prompts.txt"
    f.write_text("To be\nor not\n", encoding="utf-8")
    rc = main(["analyze", "--prompts", str(f), "--layers", "0", "--t-max", "100", "--executor", "serial",
               "--out", str(tmp_path / "many"), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "2 prompts" in out and (tmp_path / "many" / "stats.json").is_file()
    rc = main(["analyze", "--prompt", "To be", "--layers", "0", "--t-max", "100", "--out", str(tmp_path / "one"),
               "--save", str(tmp_path / "saved"), "--quiet"])
    assert rc == 0
    rc = main(["report", str(tmp_path / "saved"), "--out", str(tmp_path / "again")])
    assert rc == 0
    one, again = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "again"))
    assert one == again


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "mamba_ode", *args], capture_output=True, text=True, timeout=300,
                          check=False, env=env)


@pytest.mark.parametrize(("args", "needle"), [
    (["analyze", "--prompts", "/no/such/prompts.txt"], "/no/such/prompts.txt"),
    (["report", "/no/such/saved"], "/no/such/saved"),
    (["analyze", "--prompts", "PROMPTS", "--save", "SAVED"], "--save"),
    (["analyze", "--prompt", "To be", "--save", "OUT"], "separate directories"),
])
def test_bad_many_and_report_arguments_exit_2_with_one_line(tmp_path, args, needle):
    (tmp_path / "p.txt").write_text("To be\n")
    args = [a.replace("PROMPTS", str(tmp_path / "p.txt")).replace("SAVED", str(tmp_path / "s"))
            .replace("OUT", str(tmp_path / "out")) for a in args]
    res = _cli(*args, "--out", str(tmp_path / "out"))
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in res.stderr


def test_report_of_a_directory_that_is_not_saved_exits_2(tmp_path):
    (tmp_path / "plain").mkdir()
    res = _cli("report", str(tmp_path / "plain"), "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and "not a saved analysis" in res.stderr
    assert Path(tmp_path / "out").exists() is False


def test_a_bad_prompt_in_the_file_is_named_by_its_index(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"text": "To be"}\n{"ids": [1, 99999]}\n')
    res = _cli("analyze", "--prompts", str(f), "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and "prompt 1" in res.stderr and "[0, 256)" in res.stderr
    assert "--prompt-ids" not in res.stderr
