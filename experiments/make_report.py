"""Raw experiment JSON → ``docs/results.md`` (+ PNG plots under ``docs/assets/results/``).

Every number on the page is computed here from the committed files
``experiments/results/exp_a/*.json``, ``experiments/results/exp_b/*.json``,
``experiments/results/timing.json`` and the shipped models' ``meta.json``; nothing is typed by
hand. The markdown is deterministic (a test regenerates it and compares with the committed page).

Usage::

    python experiments/make_report.py            # writes docs/results.md and the plots
    python experiments/make_report.py --no-plots # markdown only
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
DOCS = ROOT / "docs"
MODELS = ROOT / "mamba_ode" / "models"
ASSETS = "assets/results"
VARIANTS = ("baseline", "positive", "negative", "mixed")
ARMS = ("baseline", "reorder", "reorder-hard")
SHORT = {"positive semi-definite": "PSD", "negative semi-definite": "NSD", "indefinite": "indef.", "zero": "zero"}


# ----------------------------------------------------------------------------- statistics


def mean_std(xs: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value)."""
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, 0.0
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def welch_t(a: list[float], b: list[float]) -> float:
    """Welch's t statistic of mean(a) − mean(b) (0 when both spreads vanish)."""
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    se = math.sqrt(sa**2 / len(a) + sb**2 / len(b))
    return (ma - mb) / se if se > 0 else 0.0


def pm(xs: list[float], digits: int = 3) -> str:
    m, s = mean_std(xs)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def mean_curve(runs: list[dict], series: str, key: str) -> tuple[list[int], list[float], list[float]]:
    """Steps, mean and std over runs of ``run[series][i][key]`` (steps shared by all runs)."""
    steps = sorted(set.intersection(*({h["step"] for h in r[series]} for r in runs)))
    means, stds = [], []
    for s in steps:
        m, sd = mean_std([next(h[key] for h in r[series] if h["step"] == s) for r in runs])
        means.append(m)
        stds.append(sd)
    return steps, means, stds


# ----------------------------------------------------------------------------- loading


def load_runs(results_dir: Path, exp: str) -> dict[str, list[dict]]:
    """``{arm: [run JSON, ... sorted by seed]}`` of one experiment."""
    runs: dict[str, list[dict]] = {}
    for path in sorted((results_dir / f"exp_{exp}").glob("*.json")):
        r = json.loads(path.read_text(encoding="utf-8"))
        runs.setdefault(r["arm"], []).append(r)
    for arm_runs in runs.values():
        arm_runs.sort(key=lambda r: r["seed"])
    return runs


def load_shipped(models_dir: Path) -> list[dict]:
    out = []
    for meta_path in sorted(models_dir.glob("tiny-shakespeare*/meta.json")):
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        out.append(meta)
    return out


# ----------------------------------------------------------------------------- plots


def make_plots(a: dict[str, list[dict]], b: dict[str, list[dict]], out_dir: Path) -> None:
    """Write the four PNG figures (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    colors = {"baseline": "tab:gray", "positive": "tab:blue", "negative": "tab:red", "mixed": "tab:green",
              "reorder": "tab:purple",
              "reorder-hard": "tab:orange"}
    if a:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for v in VARIANTS:
            if v not in a:
                continue
            steps, m, s = mean_curve(a[v], "history", "loss")
            bits = [x / math.log(2) for x in m]
            sb = [x / math.log(2) for x in s]
            axes[0].plot(steps, bits, color=colors[v], label=v)
            axes[0].fill_between(steps, [x - y for x, y in zip(bits, sb)], [x + y for x, y in zip(bits, sb)],
                                 color=colors[v], alpha=0.2)
            steps, m, s = mean_curve(a[v], "evals", "val_bpc")
            axes[1].errorbar(steps, m, yerr=s, color=colors[v], marker="o", capsize=3, label=v)
        axes[0].set(xlabel="step", ylabel="training loss (bits per byte)", title="Experiment A: training loss")
        axes[0].set_ylim(top=min(8.0, axes[0].get_ylim()[1]))
        axes[1].set(xlabel="step", ylabel="validation bits per byte", title="Experiment A: validation")
        for ax in axes:
            ax.legend()
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / "exp_a_curves.png", dpi=110)
        plt.close(fig)
    if b:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for arm in ARMS:
            if arm not in b:
                continue
            steps, m, s = mean_curve(b[arm], "history", "loss")
            axes[0].plot(steps, m, color=colors[arm], label=arm)
            axes[0].fill_between(steps, [x - y for x, y in zip(m, s)], [x + y for x, y in zip(m, s)],
                                 color=colors[arm], alpha=0.2)
            steps, m, s = mean_curve(b[arm], "evals", "test_accuracy")
            axes[1].plot(steps, m, color=colors[arm], label=arm)
            axes[1].fill_between(steps, [x - y for x, y in zip(m, s)], [x + y for x, y in zip(m, s)],
                                 color=colors[arm], alpha=0.2)
        axes[0].set(xlabel="step", ylabel="training cross-entropy", title="Experiment B: training loss")
        axes[1].set(xlabel="step", ylabel="test accuracy", title="Experiment B: test accuracy")
        for ax in axes:
            ax.legend()
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / "exp_b_curves.png", dpi=110)
        plt.close(fig)


# ----------------------------------------------------------------------------- markdown pieces


def _hyper_line(hp: dict, keys: tuple[str, ...]) -> str:
    return ", ".join(f"{k} {hp[k]}" for k in keys if k in hp)


def section_a(a: dict[str, list[dict]]) -> list[str]:
    lines = ["## Experiment A — sign of the input–output matrix", ""]
    if not a:
        return [*lines, "No runs recorded.", ""]
    first = next(iter(a.values()))[0]
    hp = first["run"]["hyper"]
    epochs = hp["steps"] * hp["batch_size"] * hp["seq_len"] / first["run"]["train_bytes"]
    lines += [
        f"Byte-level Mamba language model ({_hyper_line(hp, ('d_model', 'n_layer', 'd_state', 'expand'))}), "
        f"trained for {hp['steps']} steps of batch {hp['batch_size']} × {hp['seq_len']} bytes "
        f"({_hyper_line(hp, ('lr', 'warmup', 'weight_decay', 'grad_clip'))}; AdamW, cosine decay). "
        f"Data: {first['run']['data']} — {first['run']['train_bytes']:,} training bytes, "
        f"{first['run']['val_bytes']:,} held-out bytes (plays: {', '.join(first['run']['val_files'])}). "
        f"Validation bits per byte on the first {hp['eval_windows']} non-overlapping windows of "
        f"{hp['seq_len'] + 1} bytes of the held-out plays; mean ± sample std over seeds. "
        f"(The paper trains d_model 768 with 24 layers; d_model {hp['d_model']} and "
        f"{hp['steps']} steps are what fit a 2-core CPU budget — about {epochs:.2f} passes over the training bytes.)",
        "",
        "| variant | seeds | validation bits/byte | training loss, last 5 logged batches (bits/byte) | "
        "Sym(M) label per layer "
        "(all seeds) |",
        "|---|---|---|---|---|",
    ]
    for v in VARIANTS:
        if v not in a:
            continue
        runs = a[v]
        n_layer = len(runs[0]["spectra"])
        labels = []
        for k in range(n_layer):
            c = Counter(SHORT[r["spectra"][k]["label"]] for r in runs)
            labels.append("/".join(f"{lab}" + (f"×{n}" if len(c) > 1 else "") for lab, n in sorted(c.items())))
        final_loss = [sum(h["loss"] for h in r["history"][-5:]) / 5 / math.log(2) for r in runs]
        lines.append(f"| {v} | {', '.join(str(r['seed']) for r in runs)} | "
                     f"{pm([r['final']['val_bpc'] for r in runs])} | {pm(final_loss)} | "
                     f"{' · '.join(f'L{k}: {lab}' for k, lab in enumerate(labels))} |")
    lines += ["", "Per run (n₊ / n₋ = positive / negative eigenvalues of Sym(M) = (M + Mᵀ)/2, M = S_Cᵀ S_B, "
              "per layer; eigenvalues below 10⁻⁶·max|λ| count as zero):", "",
              "| variant | seed | validation bits/byte | training time (s) | n₊/n₋ per layer | labels |",
              "|---|---|---|---|---|---|"]
    for v in VARIANTS:
        for r in a.get(v, []):
            counts = " ".join(f"{s['n_positive']}/{s['n_negative']}" for s in r["spectra"])
            labels = " ".join(SHORT[s["label"]] for s in r["spectra"])
            lines.append(f"| {v} | {r['seed']} | {r['final']['val_bpc']:.4f} | {r['train_seconds']:.0f} | "
                         f"{counts} | {labels} |")
    lines += ["", f"![Experiment A curves]({ASSETS}/exp_a_curves.png)", ""]
    return lines


def section_b(b: dict[str, list[dict]]) -> list[str]:
    lines = ["## Experiment B — token reordering", ""]
    if not b:
        return [*lines, "No runs recorded.", ""]
    first = next(iter(b.values()))[0]
    hp = first["run"]["hyper"]
    lines += [
        f"A Mamba classifier on scikit-learn's bundled 8×8 digits, read as 64 pixel tokens (17 intensity levels) "
        f"in raster order ({_hyper_line(hp, ('d_model', 'n_layer', 'd_state', 'expand'))}); class logits = the "
        f"language-model head's logits of 10 class tokens averaged over the 64 positions. "
        f"{hp['steps']} steps of batch {hp['batch_size']} ({_hyper_line(hp, ('lr', 'warmup', 'weight_decay'))}). "
        f"Data: {first['run']['data']} ({first['run']['n_train']} train / {first['run']['n_test']} test). "
        f"*reorder* wraps the first block's mixer in `TokenReorder` (soft SoftSort, τ = 1, no permutation back), "
        f"as the paper does in the first block of each MambaVision stage"
        + ("; *reorder-hard* is the same with the straight-through hard permutation (an exact permutation in "
           "the forward pass, the soft matrix's gradient backward) — an extra arm, not in the paper."
           if "reorder-hard" in b else "."),
        "",
        "| arm | seeds | test accuracy | test loss | first step with mean test accuracy ≥ 0.5 | training time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for arm in ARMS:
        if arm not in b:
            continue
        runs = b[arm]
        steps, acc, _ = mean_curve(runs, "evals", "test_accuracy")
        reach = next((s for s, x in zip(steps, acc) if x >= 0.5), None)
        lines.append(f"| {arm} | {', '.join(str(r['seed']) for r in runs)} | "
                     f"{pm([r['final']['test_accuracy'] for r in runs])} | "
                     f"{pm([r['final']['test_loss'] for r in runs])} | {reach if reach is not None else 'never'} | "
                     f"{pm([r['train_seconds'] for r in runs], 0)} |")
    lines += ["", "Per run: test accuracy " + "; ".join(
        f"{arm}: " + ", ".join(f"{r['final']['test_accuracy']:.3f}" for r in b[arm]) for arm in ARMS if arm in b)
        + ".", "", f"![Experiment B curves]({ASSETS}/exp_b_curves.png)", ""]
    return lines


def reading(a: dict[str, list[dict]], b: dict[str, list[dict]]) -> list[str]:
    """The honest reading, phrased from the numbers (no figure typed by hand)."""
    lines = ["## Reading", ""]
    if all(v in a for v in VARIANTS):
        bpc = {v: [r["final"]["val_bpc"] for r in a[v]] for v in VARIANTS}
        means = {v: mean_std(bpc[v])[0] for v in VARIANTS}
        order = sorted(VARIANTS, key=lambda v: means[v])
        t_neg = {v: welch_t(bpc["negative"], bpc[v]) for v in VARIANTS if v != "negative"}
        worst = order[-1] == "negative"
        clear = all(t > 2 for t in t_neg.values())
        pairs = [(u, v) for i, u in enumerate(VARIANTS) for v in VARIANTS[i + 1:]]
        max_t = max(abs(welch_t(bpc[u], bpc[v])) for u, v in pairs)
        spread = means[order[-1]] - means[order[0]]
        verdict = ("**does not reproduce** the paper's effect at this scale: the four variants are statistically "
                   f"indistinguishable (all means within {spread:.3f} bits/byte of each other, every pairwise "
                   f"|Welch t| ≤ {max_t:.1f}) and the negative scenario is not the worst one" if not worst
                   and max_t < 2 else
                   "**agrees** with the paper: the negative (convergent) scenario is the worst variant, by a margin "
                   "well outside the seed-to-seed spread" if worst and clear else
                   "**partly agrees** with the paper: the negative scenario has the worst mean, but the margin is "
                   "not clearly outside the seed-to-seed spread (Welch t ≤ 2 against at least one variant)"
                   if worst else "**does not reproduce** the paper's ordering at this scale: the negative scenario is "
                   "not the worst variant")
        lines += [
            f"*Experiment A.* Ranking by mean validation bits/byte (best first): "
            f"{' < '.join(f'{v} ({means[v]:.3f})' for v in order)}. Welch t of negative minus each other "
            f"variant: {', '.join(f'{v} {t:+.1f}' for v, t in t_neg.items())}. This {verdict}. "
            f"The paper's claim (WikiText-103, 24 layers, d_model 768) is that the negative scenario hurts; "
            f"positive vs mixed differences here are "
            f"{abs(means['positive'] - means['mixed']):.3f} bits/byte "
            f"(Welch t {welch_t(bpc['positive'], bpc['mixed']):+.1f}).",
            "",
            "Caveats: the model is far smaller and trained far shorter than the paper's (a few minutes of one CPU "
            "core per run), so absolute bits/byte are high and the ranking could change with scale. The "
            "constrained variants also differ from the baseline in their initial scale of S_B and S_C (the "
            "unit-diagonal P̃), so a constrained-vs-baseline gap mixes the sign effect with an "
            "initialisation effect; the comparison among positive / negative / mixed is the cleaner one. "
            "The spectrum labels confirm the parametrisation does what it promises in every trained layer "
            "(the baseline is free to be anything).",
            "",
        ]
    if all(arm in b for arm in ARMS):
        acc = {arm: [r["final"]["test_accuracy"] for r in b[arm]] for arm in ARMS}
        m = {arm: mean_std(acc[arm])[0] for arm in ARMS}
        t = welch_t(acc["reorder"], acc["baseline"])
        reach = {}
        for arm in ARMS:
            if arm in b:
                steps, curve, _ = mean_curve(b[arm], "evals", "test_accuracy")
                reach[arm] = next((st for st, x in zip(steps, curve) if x >= 0.5), None)
        if m["reorder"] > m["baseline"] and t > 2:
            verdict = "**agrees** with the paper: reordering improves test accuracy, outside the seed spread"
        elif m["reorder"] > m["baseline"]:
            verdict = ("**points the same way** as the paper but is not conclusive: reordering has the higher mean "
                       "accuracy, within the seed-to-seed spread")
        elif t < -2:
            verdict = ("**disagrees** with the paper at this scale: reordering lowers test accuracy, outside the "
                       "seed spread")
        else:
            verdict = ("**does not reproduce** the paper's gain at this scale: reordering does not raise mean test "
                       "accuracy (difference within the seed spread)")
        lines += [
            f"*Experiment B.* Mean test accuracy {m['reorder']:.3f} with reordering vs {m['baseline']:.3f} "
            f"without (difference {m['reorder'] - m['baseline']:+.3f}, Welch t {t:+.1f}, "
            f"{len(acc['reorder'])} and {len(acc['baseline'])} seeds). This {verdict}. Convergence: the mean test "
            f"accuracy first reaches 0.5 at step {reach['reorder']} with reordering and {reach['baseline']} "
            f"without ({'faster' if (reach['reorder'] or 10**9) < (reach['baseline'] or 10**9) else 'not faster'} "
            "with reordering). The paper reports better "
            "ImageNet-1K accuracy and faster convergence with reordering in MambaVision; here the task is "
            "64-token 8×8 digits with a 2-layer model and a short budget, and the classifier averages the "
            "logits over all positions, so token order matters less than for a model that reads out the last token. "
            "With the soft matrix at τ = 1, P̂u is a convex mixture of tokens rather than a permutation of them, "
            "which blurs the pixels the first block sees.",
            "",
        ]
        if "reorder-hard" in b:
            hard = [r["final"]["test_accuracy"] for r in b["reorder-hard"]]
            th = welch_t(hard, acc["baseline"])
            lines += [
                f"With the hard (straight-through) permutation the mean test accuracy is {mean_std(hard)[0]:.3f} "
                f"(difference to the baseline {mean_std(hard)[0] - m['baseline']:+.3f}, Welch t {th:+.1f}, "
                f"{len(hard)} seeds): "
                + ("the blurring of the soft matrix accounts for part of the soft arm's deficit."
                   if mean_std(hard)[0] > m["reorder"] else
                   "no better than the soft arm, so the blurring is not what holds reordering back here.")
                + (" It beats the baseline." if th > 2 else " It does not beat the baseline outside the seed spread."),
                "",
            ]
    return lines


def timing_section(results_dir: Path, a: dict, b: dict) -> list[str]:
    path = results_dir / "timing.json"
    timing = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    lines = ["## Commands, hardware and time", ""]
    lines += ["Regenerate everything (runs skip finished results, resume interrupted ones; one torch thread "
              "per run):", "", "```bash",
              "rm -rf experiments/results   # to start from scratch",
              "python experiments/run_experiments.py --only b",
              "python experiments/run_experiments.py --only b --arms-b reorder-hard   # the extra hard arm",
              "python experiments/run_experiments.py --only a --ship   # also installs the seed-0 LMs",
              "python experiments/make_report.py",
              "```", "",
              "One run on its own: `python experiments/training.py lm --variant negative --seed 0 --out DIR` or "
              "`python experiments/training.py digits --reorder --seed 0 --out DIR`; the shipped models alone: "
              "`python experiments/training.py ship` (trains the four seed-0 LMs and installs them); check them: "
              "`python experiments/training.py evaluate all` (`--full` for the corpus-based figures).", ""]
    hw = next((t["hardware"] for t in timing.values()), None)
    if hw:
        lines += [f"Hardware: {hw['cpu']} ({hw['cores']} cores visible, shared with other jobs; runs used one "
                  "thread each, one run at a time — per-run times vary with the other jobs' load, so they do not "
                  f"compare the methods' cost), no GPU; Python {hw['python']}, torch {hw['torch']}, "
                  f"{hw['platform']}.", ""]
    rows = []
    for _, t in sorted(timing.items()):
        rows.append(f"| `{t['command'].strip()}` | {t['n_new_runs']} | {t['wall_seconds'] / 60:.1f} |")
    if rows:
        lines += ["| command | runs | wall time (min) |", "|---|---|---|", *rows, ""]
    total = sum(r["train_seconds"] for runs in (*a.values(), *b.values()) for r in runs)
    lines += [f"Total training time summed over all runs: {total / 60:.1f} min (excluding evaluation "
              "and process start-up).", ""]
    return lines


def shipped_section(shipped: list[dict]) -> list[str]:
    if not shipped:
        return []
    lines = ["## Shipped models", "",
             "The seed-0 runs of Experiment A ship inside the package (`mamba_ode.load(name)`; "
             "`mamba_ode.load()` is `tiny-shakespeare`). Figures recomputed from the stored weights at ship "
             "time; `val_bpc_small` (its bytes stored in `meta.json`) is re-checked by the test suite.", "",
             "| name | variant | val bits/byte | small slice | all held-out windows |", "|---|---|---|---|---|"]
    for meta in shipped:
        mt = meta["metrics"]
        full = f"{mt['val_bpc_full']:.4f}" if "val_bpc_full" in mt else "—"
        lines.append(f"| `{meta['name']}` | {meta['variant']} | {mt['val_bpc']:.4f} | {mt['val_bpc_small']:.4f} | "
                     f"{full} |")
    return [*lines, ""]


# ----------------------------------------------------------------------------- main


def make_report(results_dir: Path = RESULTS, docs_dir: Path = DOCS, models_dir: Path = MODELS,
                plots: bool = True) -> Path:
    """Write ``results.md`` (and the plots under ``assets/results/``) into ``docs_dir``.

    Arguments:
        results_dir: the raw JSON (``exp_a/``, ``exp_b/``, ``timing.json``).
        docs_dir: output directory.
        models_dir: where the shipped models' ``meta.json`` files are.
        plots: also draw the PNG figures.

    Returns:
        The path of the markdown file.
    """
    results_dir, docs_dir = Path(results_dir), Path(docs_dir)
    a, b = load_runs(results_dir, "a"), load_runs(results_dir, "b")
    lines = [
        "# Results: the paper's two refinements at laptop scale",
        "",
        "<!-- generated by experiments/make_report.py from experiments/results/*.json; do not edit -->",
        "",
        "Small-scale reproductions of the two experiments of Vo, Pham, Tong & Nguyen (ICLR 2025): "
        "(A) constraining the sign structure of the input–output matrix M = S_Cᵀ S_B (positive / negative / "
        "mixed, `mamba_ode.refine.constrain_input_output`) in a byte-level language model, and (B) reordering "
        "tokens by a learned importance score with SoftSort (`mamba_ode.refine.TokenReorder`) in a small "
        "image classifier. Both are scaled down to fit about an hour of one CPU core in total; read them "
        "as smoke-scale evidence, not as a reproduction of the paper's numbers.",
        "",
        *section_a(a),
        *section_b(b),
        *reading(a, b),
        *shipped_section(load_shipped(Path(models_dir))),
        *timing_section(results_dir, a, b),
    ]
    docs_dir.mkdir(parents=True, exist_ok=True)
    out = docs_dir / "results.md"
    out.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    if plots:
        make_plots(a, b, docs_dir / ASSETS)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--docs", default=str(DOCS))
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    print(make_report(Path(args.results), Path(args.docs), plots=not args.no_plots))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
