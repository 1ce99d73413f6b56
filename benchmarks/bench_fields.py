"""Field and solve benchmark: the S6 field in scan form vs explicit matrix form, and a full solve.

Usage: python benchmarks/bench_fields.py [--lengths 64 256 1024] [--matrix-max 256] [--solve-length 256]
       [--repeat 3] [--threads 1] [--out benchmarks/results/bench_fields.json]

A mamba-130m-shaped layer (Dm = 768, E = 1536, N = 16, R = 48), randomly initialised the way
mamba-ssm initialises it (A = -(1..N), Δ bias so that softplus gives Δ log-uniform in [1e-3, 0.1]),
float32, B = 1. One field evaluation is timed for each L (minimum over repeats); the matrix form is
O(L²) and is extrapolated quadratically from the largest measured length above ``--matrix-max``.
Then the field is integrated with ``mamba_ode.solve`` (dopri5, rtol 1e-5, atol 1e-7) to t = 10
from real token states: the SSM input u = SiLU(conv(in_proj(norm(embedding(ids))))) of that layer for
random token ids. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch
from timing import best_time  # benchmarks/timing.py (the script's directory is on sys.path)

from mamba_ode import MambaConfig, MambaLM, S6Field, solve


def mamba130m_layer(seed: int = 0) -> MambaLM:
    """A one-layer model with mamba-130m's layer shape and mamba-ssm's initialisation of A and Δ."""
    torch.manual_seed(seed)
    cfg = MambaConfig(d_model=768, n_layer=1, vocab_size=1024, d_state=16, expand=2, dt_rank=48)
    model = MambaLM(cfg).eval()
    mixer = model.layers[0].mixer
    with torch.no_grad():
        r = mixer.dt_rank
        mixer.dt_proj.weight.uniform_(-(r ** -0.5), r ** -0.5)
        dt = torch.exp(torch.rand(mixer.d_inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        mixer.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
    return model


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--matrix-max", type=int, default=256, help="largest L for which the matrix form is run")
    ap.add_argument("--solve-length", type=int, default=256)
    ap.add_argument("--t-end", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_fields.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    model = mamba130m_layer()
    field = S6Field.from_layer(model, 0)
    matrix = field.matrix_form(block=32)
    e, n = field.d_inner, field.d_state

    def token_states(length: int, seed: int = 1) -> torch.Tensor:
        ids = torch.randint(0, model.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            x = model.layers[0].norm(model.embed(ids))
            u, _ = model.layers[0].mixer.ssm_input(x)
        return u.detach()

    rows = []
    measured: dict[int, float] = {}
    for length in args.lengths:
        u = token_states(length)
        with torch.no_grad():
            t_scan = best_time(lambda u=u: field(0.0, u), args.repeat)
            if length <= args.matrix_max:
                t_mat = best_time(lambda u=u: matrix(0.0, u), max(1, args.repeat - 1))
                y_s, y_m = field(0.0, u), matrix(0.0, u)
                agree = float((y_s - y_m).abs().max() / y_s.abs().max())
                measured[length] = t_mat
                extrapolated = False
            else:
                base = max(measured)
                t_mat = measured[base] * (length / base) ** 2
                agree = math.nan
                extrapolated = True
        rows.append(dict(L=length, scan_s=t_scan, matrix_s=t_mat, matrix_extrapolated=extrapolated,
                         speedup=t_mat / t_scan, max_rel_diff=agree))

    u0 = token_states(args.solve_length, seed=2)
    field.reset_nfev()
    t0 = time.perf_counter()
    sol = solve(field, u0, (0.0, args.t_end), t_eval=[0.0, args.t_end / 2, args.t_end], rtol=1e-5, atol=1e-7)
    wall = time.perf_counter() - t0
    norms = sol.ys.flatten(1).norm(dim=1).tolist()
    solve_row = dict(L=args.solve_length, E=e, N=n, t_end=args.t_end, method=sol.method, rtol=1e-5, atol=1e-7,
                     status=[s.value for s in sol.status], message=sol.messages[0], wall_s=wall,
                     nfev=sol.stats["nfev"], n_accepted=sol.stats["n_accepted"],
                     n_rejected=sol.stats["n_rejected"], s_per_eval=wall / sol.stats["nfev"],
                     norm_u_at=dict(zip(["0", str(args.t_end / 2), str(args.t_end)], norms)))

    result = dict(
        benchmark="bench_fields",
        machine=dict(platform=platform.platform(), processor=platform.processor(), torch=torch.__version__,
                     threads=torch.get_num_threads()),
        layer=dict(d_model=768, E=e, N=n, R=model.config.dt_rank, dtype="float32", B=1),
        field_evaluation=rows, solve=solve_row,
    )
    print(f"S6 field, one evaluation, E={e}, N={n}, B=1, float32, {torch.get_num_threads()} thread(s)")
    print(f"{'L':>6} {'scan [ms]':>11} {'matrix [ms]':>13} {'speed-up':>9}  note")
    for r in rows:
        note = "matrix extrapolated (O(L^2))" if r["matrix_extrapolated"] else f"max rel diff {r['max_rel_diff']:.1e}"
        print(f"{r['L']:>6} {1e3 * r['scan_s']:>11.2f} {1e3 * r['matrix_s']:>13.1f} {r['speedup']:>8.0f}x  {note}")
    s = solve_row
    print(f"solve to t={s['t_end']:g} from token states (L={s['L']}), dopri5 rtol 1e-5: status {s['status'][0]}, "
          f"nfev {s['nfev']} ({s['n_accepted']} accepted, {s['n_rejected']} rejected), wall {s['wall_s']:.2f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
