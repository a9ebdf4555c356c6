"""What :func:`~poisonlab.explain.gromov.entropic_gw` returns (:class:`GWResult`) and the
unfinished problems it parks and resumes (:class:`GWState`, checked by :func:`_check_resume`).

The types only, apart from the solver's iterations; import them from
:mod:`poisonlab.explain.gromov`, which re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["GWResult", "GWState"]


@dataclass(frozen=True, eq=False)
class GWResult:
    """The outcome of a batch of entropic GW problems.

    Attributes
    ----------
    value : Tensor of shape (B,)
        Square-loss GW objective of the final plan, without the entropy term.
    plan : Tensor of shape (B, n, m), or None
        Final couplings, zero on padded rows and columns (None when not kept, see
        :func:`~poisonlab.explain.gw_batches.gw_to_one`).
    n_iter : Tensor of shape (B,), int64
        Outer (projected-gradient) iterations run for each problem.
    converged : Tensor of shape (B,), bool
        True where ``‖T - T_prev‖_F ≤ tol`` was reached before ``max_iter``.
    potentials : tuple of Tensor of shapes (B, n) and (B, m)
        Dual potentials of the last Sinkhorn solve, to warm-start a related problem.
    parked : GWState, optional
        With ``park``: the problems set aside unfinished.  Their entries in the other fields are
        not final: NaN values, plans and potentials, ``n_iter`` the iterations run so far,
        ``converged`` False.
    """

    value: Tensor
    plan: Tensor | None
    n_iter: Tensor
    converged: Tensor
    potentials: tuple[Tensor, Tensor]
    parked: GWState | None = None


@dataclass(frozen=True, eq=False)
class GWState:
    """Unfinished problems of :func:`~poisonlab.explain.gromov.entropic_gw` at the start of an
    outer iteration, to resume.

    ``entropic_gw(C1, p, C2, q, resume=state)`` on these problems (in the order of ``index``,
    alone or with others, ``plan`` and ``f`` zero-padded or cut to the batch's width) runs the
    very iterations they would have run where they were: the plans, potentials, iteration
    counts, last plan change (inexact tolerances) and last loss (the value test) carry over.
    :mod:`~poisonlab.explain.gw_batches` parks the last few problems of each size chunk and
    finishes them together, so that the chunks' long tails of slow problems (each iteration
    then costs its tensor calls' dispatch, not arithmetic) run once.

    Attributes
    ----------
    index : Tensor of shape (P,), int64
        The problems' positions in the batch they were parked from.
    plan : Tensor of shape (P, n, m)
        Current plans (the next gradient's point).
    f, g : Tensor of shapes (P, n) and (P, m)
        Potentials of their last inner solve.
    step, loss : Tensor of shape (P,)
        Last ``‖T - T_prev‖_F`` and last GW loss (inf if none yet).
    done_iter : Tensor of shape (P,), int64
        Outer iterations already run.
    """

    index: Tensor
    plan: Tensor
    f: Tensor
    g: Tensor
    step: Tensor
    loss: Tensor
    done_iter: Tensor


def _check_resume(state: GWState, batch: int, n: int, m: int) -> None:
    """A ValueError naming every field of ``state`` whose shape is not that of ``batch``
    problems of ``n`` × ``m`` points."""
    want = {
        "index": (batch,),
        "plan": (batch, n, m),
        "f": (batch, n),
        "g": (batch, m),
        "step": (batch,),
        "loss": (batch,),
        "done_iter": (batch,),
    }
    bad = [
        f"{name} {tuple(getattr(state, name).shape)} (expected {shape})"
        for name, shape in want.items()
        if tuple(getattr(state, name).shape) != shape
    ]
    if bad:
        raise ValueError(
            f"resume state does not match the batch of {batch} problems of {n} x {m} points: "
            + ", ".join(bad)
        )
