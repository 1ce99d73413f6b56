"""Shape letters used in every docstring of mamba_ode (declared once).

======  ===========================================================  ==========
letter  meaning                                                      mamba-130m
======  ===========================================================  ==========
B       batch (sequences)                                            –
L       tokens per sequence                                          –
Dm      model width ``d_model`` / ``hidden_size``                    768
E       inner width ``d_inner = expand · Dm``                        1536
N       state size ``d_state`` / ``state_size``                      16
R       Δ rank ``dt_rank`` / ``time_step_rank``                      48
K       layers ``n_layer`` / ``num_hidden_layers``                   24
V       vocabulary rows of the embedding (padded)                    50280
G       groups of B/C (Mamba-2; 1 for Mamba-1)                       1
H       heads (Mamba-2; E = H · P)                                   –
P       head size ``head_dim`` / ``headdim`` (Mamba-2)               –
T       time points of a trajectory                                  –
======  ===========================================================  ==========

User-facing tensors of tokens are (B, L, E) or (B, L, Dm); only the scan works in (B, E, L),
as mamba-ssm does.
"""

SHAPE_LETTERS = {
    "B": "batch (sequences)",
    "L": "tokens per sequence",
    "Dm": "model width d_model / hidden_size",
    "E": "inner width d_inner = expand * d_model",
    "N": "state size d_state / state_size",
    "R": "delta rank dt_rank / time_step_rank",
    "K": "layers n_layer / num_hidden_layers",
    "V": "vocabulary rows of the embedding (padded)",
    "G": "groups of B/C (Mamba-2; 1 for Mamba-1)",
    "H": "heads (Mamba-2; E = H * P)",
    "P": "head size head_dim / headdim (Mamba-2)",
    "T": "time points of a trajectory",
}
