"""Raw benchmark JSON (benchmarks/results/*.json) → docs/benchmarks.md. No number is typed by hand.

Usage: python benchmarks/make_page.py [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _ms(s: float) -> str:
    return f"{1e3 * s:.1f} ms" if s < 1 else f"{s:.2f} s"


def render() -> str:
    """The page as markdown."""
    out = ["# Benchmarks", "",
           "Speed is measured by scripts under `benchmarks/`, never by timed tests. Each script writes JSON to",
           "`benchmarks/results/`; this page is generated from those files by `python benchmarks/make_page.py`.",
           "Ratios are computed within one run (the machines are noisy); absolute times are for a 2-core CPU.", ""]
    scan = _load("bench_scan")
    if scan:
        out += ["## Selective scan", "",
                f"`python benchmarks/bench_scan.py` — B = {scan['B']}, E = {scan['E']}, N = {scan['N']}, "
                f"{scan['dtype']}, chunk {scan['chunk']}, torch {scan['torch']}, {scan['threads']} threads. "
                "`exp` is one bare `torch.exp` over a (B, E, L, N) tensor: the work no scan can avoid.", "",
                "| L | reference | fast | bare exp | fast vs reference | fast / exp | largest tensor / BELN |",
                "|---|---|---|---|---|---|---|"]
        for r in scan["rows"]:
            out.append(f"| {r['L']} | {_ms(r['reference_s'])} | {_ms(r['fast_s'])} | {_ms(r['exp_s'])} | "
                       f"{r['speedup_vs_reference']:.1f}× | {r['fast_over_exp']:.2f} | {r['largest_over_BELN']:.4f} |")
        out += ["", "Targets: fast ≥ 5× faster than reference; fast ≤ 2× the bare exp at L = 2048; peak memory well "
                "below one (B, E, L, N) tensor.", ""]
    fields = _load("bench_fields")
    if fields:
        lay = fields["layer"]
        out += ["## Vector field: scan form vs matrix form", "",
                f"`python benchmarks/bench_fields.py` — one evaluation of the S6 field at E = {lay['E']}, "
                f"N = {lay['N']}, {lay['dtype']}, {fields['machine']['threads']} thread(s).", "",
                "| L | scan form | matrix form | speed-up |", "|---|---|---|---|"]
        for r in fields["field_evaluation"]:
            extra = " (extrapolated, O(L²))" if r["matrix_extrapolated"] else ""
            out.append(f"| {r['L']} | {_ms(r['scan_s'])} | {_ms(r['matrix_s'])}{extra} | {r['speedup']:.0f}× |")
        sv = fields["solve"]
        out += ["", f"A full `solve` of that field from real token states (L = {sv['L']}) to t = {sv['t_end']:g} at "
                f"rtol {sv['rtol']:g}: {sv['nfev']} field evaluations ({sv['n_accepted']} accepted, "
                f"{sv['n_rejected']} rejected steps), {_ms(sv['wall_s'])}, status {sv['status'][0]}.", ""]
    fe = _load("bench_field_eval")
    if fe:
        lay = fe["layer"]
        out += ["## One field evaluation inside the token integrator", "",
                f"`python benchmarks/bench_field_eval.py` — the {lay['dtype']} S6 field of layer {lay['layer']} of the "
                f"130m-shaped random checkpoint (E = {lay['E']}, N = {lay['N']}), loaded as an analysis loads it, "
                "under `torch.no_grad()` as `integrate_tokens` calls it, for the first L prompt tokens: this package "
                f"against commit {fe['ref']}, each side in fresh processes, alternated over {fe['rounds']} rounds "
                f"(mean time per call of the best round; equal outputs checked), {fe['machine']['threads']} "
                "thread(s).", "",
                f"| L | at {fe['ref']} | now | speed-up |", "|---|---|---|---|"]
        for r in fe["rows"]:
            out.append(f"| {r['L']} | {r['ref_s'] * 1e3:.3f} ms | {r['new_s'] * 1e3:.3f} ms | {r['speedup']:.2f}× |")
        out += [""]
    ssd = _load("bench_ssd")
    if ssd:
        lay = ssd["layer"]
        out += ["## Mamba-2: the scan in SSD's matrix form", "",
                f"`python benchmarks/bench_ssd.py` — the scan of a mamba2-130m-shaped layer (E = {lay['E']}, "
                f"{lay['heads']} heads of P = {lay['P']}, G = {lay['G']}, N = {lay['N']}, {lay['dtype']}) at the "
                "inputs of its idealised field at real token states: the general per-channel recurrence against "
                f"`selective_scan(..., head_dim=P)` (chunks of {ssd['ssd_chunk']} tokens), best mean of "
                f"{ssd['rounds']} alternated rounds, equal outputs checked, {ssd['machine']['threads']} thread(s). "
                "The whole field evaluation (projections included) now, and the SSD form per chunk size.", "",
                "| L | recurrence | SSD form | speed-up | whole field now | "
                + " | ".join(f"chunk {c}" for c in ssd["rows"][0]["chunk_s"]) + " |",
                "|---|---|---|---|---|" + "---|" * len(ssd["rows"][0]["chunk_s"])]
        for r in ssd["rows"]:
            out.append(f"| {r['L']} | {r['general_s'] * 1e3:.2f} ms | {r['ssd_s'] * 1e3:.2f} ms | "
                       f"{r['speedup']:.1f}× | {r['field_s'] * 1e3:.2f} ms | "
                       + " | ".join(f"{s * 1e3:.2f} ms" for s in r["chunk_s"].values()) + " |")
        out += [""]
    reg = _load("bench_regimes")
    if reg:
        out += ["## Spectrum of Sym(M) from the low-rank factors", "",
                "`python benchmarks/bench_regimes.py` — the ≤ 2N non-zero eigenvalues from a 2N×2N problem, "
                "against a dense `torch.linalg.eigvalsh` of the E×E matrix.", "",
                "| E | N | dtype | low rank | dense | speed-up | max difference |", "|---|---|---|---|---|---|---|"]
        for r in reg["spectrum"]:
            out.append(f"| {r['E']} | {r['N']} | {r['dtype']} | {_ms(r['low_rank_s'])} | "
                       f"{_ms(r['dense_eigvalsh_s'])} | {r['speedup']:.0f}× | {r['max_abs_diff']:.1e} |")
        tb = reg["table"]
        out += ["", f"Whole-model regime table of a randomly initialised mamba-130m-shaped model ({tb['n_layer']} "
                f"layers, E = {tb['d_inner']}, N = {tb['d_state']}): {_ms(tb['table_s'])}.", ""]
    an = _load("bench_analyze")
    if an:
        out += ["## `mamba-ode analyze`", "",
                "`python benchmarks/bench_analyze.py` — each case as a fresh process (imports, load, analysis, "
                "figures, report: what a user waits for).", "",
                "| case | best wall time | target | runs |", "|---|---|---|---|"]
        for c in an["cases"]:
            runs = ", ".join(f"{r['wall_s']:.1f} s" for r in c["runs"])
            out.append(f"| {c['case']} | {c['best_wall_s']:.1f} s | under {c['target_s']:.0f} s | {runs} |")
        out += [""]
        for c in an["cases"]:
            r = c["runs"][-1]
            if "stages_s" in r:
                stages = ", ".join(f"{k} {v:.2f} s" for k, v in r["stages_s"].items())
                nfev = sum(lay["stats"]["nfev"] for lay in r["layers"])
                vjp = sum(lay["stats"].get("n_vjp", 0) for lay in r["layers"])
                extra = f" and {vjp} reverse-mode products" if vjp else ""
                out.append(f"- {c['case']}: {stages}; {nfev} field evaluations{extra} over {len(r['layers'])} layers.")
        out += [""]
    sg = _load("bench_segments")
    if sg:
        out += ["### Where the 130m-shaped analysis spends its time", "",
                "`python benchmarks/bench_segments.py` — every layer of that checkpoint integrated as analyze does "
                f"({sg['settings']['rtol']:g} / {sg['settings']['atol']:g}, t_max {sg['settings']['t_max']:g}), one "
                f"thread, one process: {sg['n_segments']} segments (the active prefix between two events), "
                f"{sg['total_nfev']} field evaluations, {sg['total_seconds']:.1f} s.", "",
                "| active tokens | segments | evaluations | seconds | share of the time | ms per evaluation |",
                "|---|---|---|---|---|---|"]
        for r in sg["by_prefix"]:
            out.append(f"| {r['prefix']} | {r['segments']} | {r['nfev']} | {r['seconds']:.1f} | "
                       f"{r['time_share']:.0%} | {r['ms_per_eval']:.2f} |")
        out += ["", "| segments | count | evaluations | seconds | share of the time |", "|---|---|---|---|---|"]
        for name, r in sg["by_kind"].items():
            out.append(f"| {name} | {r['segments']} | {r['nfev']} | {r['seconds']:.1f} | {r['time_share']:.0%} |")
        out += [""]
    sf = _load("bench_stiff")
    if sf:
        out += ["## Stiff steps: tracked stiff subspace vs GMRES", "",
                "`python benchmarks/bench_stiff.py` — `integrate_tokens` with the settings of `mamba-ode analyze` "
                f"({sf['settings']['rtol']:g} / {sf['settings']['atol']:g}, t_max {sf['settings']['t_max']:g}), "
                "the ROS34PW2 stages solved with the W of the tracked stiff subspace (`krylov_w=True`, the "
                "default) and by GMRES at every stage (`krylov_w=False`), alternated in one process, one thread, "
                f"best of {sf['rounds']}. A reverse-mode product costs three to four evaluations.", "",
                "| case | GMRES | subspace | time ratio | evaluations (GMRES → subspace) | reverse-mode products | "
                "labels equal | largest t* difference |", "|---|---|---|---|---|---|---|---|"]
        for r in sf["rows"]:
            out.append(f"| {r['case']} | {r['gmres_s']:.1f} s | {r['subspace_s']:.1f} s | "
                       f"{r['subspace_s'] / r['gmres_s']:.2f} | {r['gmres']['nfev']} → {r['subspace']['nfev']} | "
                       f"{r['subspace']['n_vjp']} | {r['same_labels']}/{r['tokens']} | "
                       f"{r['t_blowup_max_rel_diff']:.1e} |")
        g, sb = sf["total"]["gmres"], sf["total"]["subspace"]
        out += [f"| all | {g['wall_s']:.1f} s | {sb['wall_s']:.1f} s | {sb['wall_s'] / g['wall_s']:.2f} | "
                f"{g['nfev']} → {sb['nfev']} | {sb['n_vjp']} | | |", ""]
        changed = [(r["case"], c) for r in sf["rows"] for c in r["changed"]]
        if changed:
            out += ["Labels that differ (token, GMRES, subspace): " + "; ".join(
                f"{case}: token {i} {a} → {b}" for case, (i, a, b) in changed) + ".", ""]
    mn = _load("bench_many")
    if mn:
        out += ["## Many prompts", "",
                f"`python benchmarks/bench_many.py` — `analyze_many` on {mn['n_prompts']} prompts of "
                f"{mn['tokens_per_prompt']} tokens of the embedded model, all {mn['layers']} layers, t_max = "
                f"{mn['t_max']:g}, on {mn['cores']} cores (Ray: a local instance with {mn['ray_cpus']} CPUs, its "
                "start-up included).", "", "| executor | wall time | speed-up vs serial | same results |",
                "|---|---|---|---|"]
        for r in mn["rows"]:
            out.append(f"| {r['executor']} | {r['wall_s']:.1f} s | {r['speedup_vs_serial']:.2f}× | "
                       f"{'yes' if mn['equal_to_serial'][r['executor']] else 'no'} |")
        out += [""]
    hk = _load("bench_hooks")
    if hk:
        out += ["## Activation points (hooks)", "",
                "`python benchmarks/bench_hooks.py` — forward pass without any hook registered, with the activation "
                f"points (working tree) and without them (the package at commit {hk['ref']}, imported beside it), "
                "the same weights, calls alternated in one process, best of each, one thread.", "",
                "| model | L | without points | with points | ratio |", "|---|---|---|---|---|"]
        for r in hk["rows"]:
            out.append(f"| {r['case']} ({r['n_layer']} layers, d_model {r['d_model']}) | {r['L']} | "
                       f"{_ms(r['without_s'])} | {_ms(r['with_s'])} | {r['ratio']:.3f} |")
        e = hk["empty_points"]
        out += ["", f"The {e['points']} empty points of the 130m-shaped model, each called once: "
                f"{1e6 * e['all_points_s']:.1f} µs, {100 * e['fraction_of_forward']:.3f} % of one forward pass "
                "Target: within 3 %.", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def write_page(path: str | Path = ROOT / "docs" / "benchmarks.md") -> Path:
    """Write the page; returns its path."""
    path = Path(path)
    path.write_text(render())
    return path


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    print(write_page(ap.parse_args().out))
