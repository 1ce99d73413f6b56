"""The label vocabulary of the regimes, as ``str`` enums (members compare equal to their text).

* `Label` — regimes predicted from parameters (``convergent``, ``static``,
  ``divergent-finite-time``, ``divergent-logarithmic``, ``divergent``, ``undecided``, and the one-sided
  ``non-divergent`` / ``non-convergent`` of a semi-definite layer) and labels read from trajectories
  (``convergent``, ``divergent-finite-time``, ``divergent``, ``bounded``, ``undetermined``).
* `Definiteness` — the sign structure of the spectrum of Sym(M).
* `EXPECTED_LABEL` — the trajectory label each parameter regime predicts.
"""

from __future__ import annotations

from .._enums import StrEnum

__all__ = ["StrEnum", "Label", "Definiteness", "CRITERIA_REGIMES", "TRAJECTORY_LABELS", "EXPECTED_LABEL",
           "COMPATIBLE", "SIGN_SYMBOL"]


class Label(StrEnum):
    """A token's regime: predicted from parameters, or read from its trajectory."""

    CONVERGENT = "convergent"
    STATIC = "static"
    FINITE = "divergent-finite-time"
    LOGARITHMIC = "divergent-logarithmic"
    DIVERGENT = "divergent"
    BOUNDED = "bounded"
    UNDETERMINED = "undetermined"
    UNDECIDED = "undecided"
    NONDIVERGENT = "non-divergent"
    NONCONVERGENT = "non-convergent"


class Definiteness(StrEnum):
    """Sign structure of the spectrum of ``Sym(M) = (M + Mᵀ)/2``."""

    POSITIVE = "positive semi-definite"
    NEGATIVE = "negative semi-definite"
    INDEFINITE = "indefinite"
    ZERO = "zero"

    @classmethod
    def of_counts(cls, n_pos: int, n_neg: int) -> Definiteness:
        """The label of a spectrum with ``n_pos`` positive and ``n_neg`` negative eigenvalues."""
        if n_pos and n_neg:
            return cls.INDEFINITE
        if n_pos:
            return cls.POSITIVE
        if n_neg:
            return cls.NEGATIVE
        return cls.ZERO


#: Regimes the parameter criteria give.
CRITERIA_REGIMES = (Label.CONVERGENT, Label.STATIC, Label.FINITE, Label.LOGARITHMIC, Label.DIVERGENT, Label.UNDECIDED)
#: Labels read from trajectories.
TRAJECTORY_LABELS = (Label.CONVERGENT, Label.FINITE, Label.DIVERGENT, Label.BOUNDED, Label.UNDETERMINED)
#: The trajectory label each parameter regime predicts (static → bounded, logarithmic → divergent).
EXPECTED_LABEL = {Label.CONVERGENT: Label.CONVERGENT, Label.STATIC: Label.BOUNDED, Label.FINITE: Label.FINITE,
                  Label.LOGARITHMIC: Label.DIVERGENT, Label.DIVERGENT: Label.DIVERGENT,
                  Label.UNDECIDED: Label.UNDETERMINED}
#: The trajectory labels that agree with each prediction (``divergent`` predicts unbounded growth, in
#: finite time or not; the one-sided labels admit a bounded limit).
COMPATIBLE: dict[Label, frozenset[Label]] = {
    Label.CONVERGENT: frozenset({Label.CONVERGENT}),
    Label.STATIC: frozenset({Label.BOUNDED}),
    Label.FINITE: frozenset({Label.FINITE}),
    Label.LOGARITHMIC: frozenset({Label.DIVERGENT}),
    Label.DIVERGENT: frozenset({Label.DIVERGENT, Label.FINITE}),
    Label.NONDIVERGENT: frozenset({Label.CONVERGENT, Label.BOUNDED}),
    Label.NONCONVERGENT: frozenset({Label.DIVERGENT, Label.FINITE, Label.BOUNDED}),
}
#: A one-character symbol per definiteness: what an input–output matrix can do to a token's norm.
SIGN_SYMBOL = {Definiteness.POSITIVE: "+", Definiteness.NEGATIVE: "-", Definiteness.INDEFINITE: "±",
               Definiteness.ZERO: "0"}
