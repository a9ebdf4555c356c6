"""Batched entropic Gromov–Wasserstein distance with the square loss, in torch.

One call solves many independent problems ``GW(C1[b], p[b], C2[b], q[b])`` at once; spaces of
unequal size share a batch by zero padding (points with zero mass are ignored exactly).

The iteration is the one of POT's ``ot.gromov.entropic_gromov_wasserstein`` with
``loss_fun="square_loss"`` and ``solver="PGD"`` (Peyré, Cuturi & Solomon 2016, Prop. 2):

- ``T0 = p qᵀ`` unless a starting plan is given;
- repeat ``T ← Sinkhorn(p, q, M(T), ε)`` with the gradient ``M(T) = 2 (c1 1ᵀ + 1 c2ᵀ - 2 C1 T C2)``,
  ``c1 = (C1 ⊙ C1) p`` and ``c2 = (C2 ⊙ C2) q`` (POT's ``gwggrad``, which includes the factor 2);
- measure ``‖T - T_prev‖_F`` at iterations 0, 10, 20, ... and stop once it is ``≤ tol``
  (default 1e-9, at most ``max_iter`` = 1000 iterations);
- the returned value is the square-loss GW objective ``Σ_ijkl (C1_ik - C2_jl)² T_ij T_kl`` of the
  final plan, without the entropy term (what ``entropic_gromov_wasserstein2`` returns).

Each inner problem is solved to POT's ``sinkhorn_knopp`` criterion (rows exact, column-marginal
error below 1e-9, at most 1000 sweeps), warm-started from the potentials of the previous outer
iteration: same solutions, far fewer steps, and no NaN for small ε or in float32.  The solver
(``inner``): when the second space has at most :data:`NEWTON_MAX_POINTS` points (Heatmap
Clustering's barycenters have 10) a damped Newton method on the semi-dual, one small linear
system per problem and step (:mod:`poisonlab.explain._newton_ot`; ~2 steps per warm-started
solve where Sinkhorn needs ~10-20 sweeps, and a Heatmap Clustering run 1.5× faster with identical
assignments, bench/results/gromov.md), otherwise the batched, stabilised and over-relaxed
Sinkhorn of :mod:`poisonlab.explain._sinkhorn`.  Outer iterations whose plan no convergence test
looks at may be solved less tightly (``inexact``).  Every problem of a batch stops on its own
criterion, as it would alone, and finished problems leave the batch.

On CPU, in float32 or float64, with Newton inner solves, the same iterations run by default one
problem at a time in compiled loops (:mod:`poisonlab.explain._gw_fused`, numba): every array of a
problem stays in the L1 cache and no iteration pays tensor-call dispatch, so an outer iteration
costs 2-4× less than as batched tensor calls, and a warm k-means update of Heatmap Clustering
2.7× less (bench/results/gromov.md).  In float64 it reproduces this module's iterations exactly
(same iteration counts, values within 1e-13); in float32 up to round-off.  Which batches go
there is decided in :mod:`poisonlab.explain._gw_dispatch`.  ``fused=False`` runs the batched
tensor path below, the reference, which also runs on GPU.  The result types (:class:`GWResult`,
:class:`GWState`) are defined in :mod:`poisonlab.explain._gw_state` and re-exported here.  Measured agreement with
POT: relative differences of 1e-9 to 1e-7 in the value (tests/explain/test_gromov.py,
tests/explain/test_newton_ot.py, bench/bench_gromov.py).

float32: inner solves stop at a marginal error of 1e-6 and the outer loop at
``‖T - T_prev‖_F ≤ 1e-6`` (the float64 defaults are POT's 1e-9, below float32 round-off);
values then agree with POT's float64 ones to ~1e-5 relative (worst 3e-5 measured, median 1e-6)
at about half the cost, which is what clustering uses (:mod:`poisonlab.explain.gw_kmeans`).

Limits: the structure matrices must be symmetric (distance matrices are); asymmetric inputs would
need POT's averaged gradient, which is not implemented.  Memory is a few ``(B, n, m)`` tensors
plus ``C1`` and ``C2``: callers chunk large workloads (:mod:`poisonlab.explain.gw_batches`).

References
----------
Peyré, Cuturi, Solomon, "Gromov–Wasserstein averaging of kernel and distance matrices", ICML 2016.
Cuturi, Peyré, "A smoothed dual approach for variational Wasserstein problems", SIAM J. Imaging
Sci. 9(1), 2016.
Schmitzer, "Stabilized sparse scaling algorithms for entropy regularized transport problems",
SIAM J. Sci. Comput. 41(3), 2019.
"""

from __future__ import annotations

import torch
from torch import Tensor

from poisonlab.explain._gw_checks import check_values

# GWResult, GWState, totals_match and _fused_unavailable are imported from here (re-exported)
from poisonlab.explain._gw_dispatch import (
    _fused_unavailable,
    _solve_fused,
    log_capped,
    totals_match,
)
from poisonlab.explain._gw_state import GWResult, GWState, _check_resume
from poisonlab.explain._newton_ot import NEWTON_MAX_STEPS, gauge_terms, newton_semidual
from poisonlab.explain._sinkhorn import PAD_COST, sinkhorn

__all__ = ["INNER_SOLVERS", "GWResult", "GWState", "entropic_gw", "gw_loss"]


#: Inner OT solvers of :func:`entropic_gw`: ``"auto"`` picks Newton for few columns.
INNER_SOLVERS = ("auto", "newton", "sinkhorn")

#: ``"auto"`` solves the inner problems by Newton when the second space has at most this many
#: points (the m × m system per Newton step stays cheap), else by Sinkhorn.  Measured on 150
#: clouds of 40-80 points against one space of m points (ε = 0.01, float32, clustering
#: criteria, one thread): Newton 1.7× faster than Sinkhorn at m = 10, 1.5× at 20, 1.3× at 32,
#: 1.2× at 48, even at 64.
NEWTON_MAX_POINTS = 32


def _default_tol(dtype: torch.dtype) -> float:
    # POT's 1e-9 is below float32 round-off for marginal errors; scale it to the precision.
    return 1e-9 if dtype == torch.float64 else 1e-6


def _default_outer_tol(dtype: torch.dtype) -> float:
    # In float32 the inner solves stop at marginal errors of 1e-6, so successive plans differ by
    # about that much: a tighter outer tolerance is met late or never (measured: 1e-7 left 4-11%
    # of cloud-to-barycenter problems running to max_iter); values then agree with float64 to
    # ~3e-5 relative at worst (median 2e-6).
    return 1e-9 if dtype == torch.float64 else 1e-6


def gw_loss(C1: Tensor, p: Tensor, C2: Tensor, q: Tensor, plan: Tensor) -> Tensor:
    """Square-loss GW objective ``Σ_ijkl (C1_ik - C2_jl)² T_ij T_kl`` of given plans.

    Parameters
    ----------
    C1 : Tensor of shape (B, n, n) or (n, n)
        Symmetric structure matrices (the marginal term and the product below assume it, as
        :func:`entropic_gw` does).
    p : Tensor of shape (B, n) or (n,)
    C2 : Tensor of shape (B, m, m) or (m, m)
        Symmetric, likewise.
    q : Tensor of shape (B, m) or (m,)
    plan : Tensor of shape (B, n, m)

    Returns
    -------
    Tensor of shape (B,)
        ``<c1 1ᵀ + 1 c2ᵀ - 2 C1 T C2, T>`` with POT's marginal terms ``c1 = C1² p``, ``c2 = C2² q``.
    """
    c1, c2 = _squared_mass(C1, p), _squared_mass(C2, q)
    # C1 T C2 as (C2 Tᵀ C1)ᵀ (symmetric C1, C2): CPU GEMMs with n-wide outputs run 2-3x
    # faster than with m-wide ones when the second space is small (_gradient)
    product = (C2 @ (plan.transpose(-1, -2) @ C1)).transpose(-1, -2)
    tens = c1.unsqueeze(-1) + c2.unsqueeze(-2) - 2.0 * product
    return (tens * plan).sum(dim=(-2, -1))


def _squared_mass(C: Tensor, p: Tensor) -> Tensor:
    """POT's marginal term ``(C ⊙ C) p`` of symmetric ``C`` ((B, n, n) or (n, n); ``p`` (B, n)
    or (n,)), computed as ``pᵀ (C ⊙ C)``:
    on CPU a batched matrix-vector product runs several times faster with the vector on the
    left (measured 9× on 438 spaces of 78 points, one thread; bench/results/gromov.md)."""
    return torch.matmul(p.unsqueeze(-2), C * C).squeeze(-2)


def _batched(x: Tensor, dims: int, batch: int) -> Tensor:
    return x.expand(batch, *x.shape[-dims:]) if x.dim() == dims else x


def entropic_gw(
    C1: Tensor,
    p: Tensor,
    C2: Tensor,
    q: Tensor,
    *,
    epsilon: float = 0.02,
    max_iter: int = 1000,
    tol: float | None = None,
    T0: Tensor | None = None,
    potentials: tuple[Tensor, Tensor] | None = None,
    sinkhorn_max_iter: int = 1000,
    sinkhorn_tol: float | None = None,
    inexact: float = 1e-2,
    check_every: int = 10,
    value_rtol: float = 0.0,
    inner: str = "auto",
    park: int = 0,
    resume: GWState | None = None,
    fused: bool | None = None,
) -> GWResult:
    """Entropic GW (square loss) for a batch of metric-measure space pairs, as POT computes it.

    Parameters
    ----------
    C1 : Tensor of shape (B, n, n) or (n, n)
        Symmetric structure matrices of the first spaces (shared when 2-D); zero-padded.
    p : Tensor of shape (B, n) or (n,)
        Masses of the first spaces, summing to 1, zero on padding.
    C2 : Tensor of shape (B, m, m) or (m, m)
        Symmetric structure matrices of the second spaces (shared when 2-D).
    q : Tensor of shape (B, m) or (m,)
        Masses of the second spaces, summing to 1, zero on padding.
    epsilon : float
        Entropic regularisation ε (POT's ``epsilon``), in units of the squared structure values.
    max_iter : int
        Maximum outer iterations per problem (POT: 1000).
    tol : float, optional
        Outer tolerance on ``‖T - T_prev‖_F``, checked every ``check_every`` iterations (POT:
        1e-9; default 1e-9 in float64, 1e-6 otherwise, the level of the float32 inner solves).
    T0 : Tensor of shape (B, n, m), optional
        Starting plans (POT's ``G0``); default ``p qᵀ``.  A different start can reach a different
        local solution, as in POT.
    potentials : tuple of Tensor of shapes (B, n) and (B, m), optional
        Sinkhorn potentials to start the first inner solve from (e.g. ``GWResult.potentials`` of
        the problem ``T0`` came from); they change only the number of sweeps, not the solution.
    sinkhorn_max_iter : int
        Sinkhorn sweeps per outer iteration (POT: 1000).
    sinkhorn_tol : float, optional
        Sinkhorn marginal tolerance (POT: 1e-9; default 1e-9 in float64, 1e-6 otherwise).
    inexact : float
        Outer iterations whose plan no convergence test uses (all but the iterations
        ``c·k - 1`` and ``c·k`` for ``c = check_every``, and the last) solve Sinkhorn only to
        ``inexact`` times the last change of the plan (never below ``sinkhorn_tol``), halving
        the sweeps.  Every plan test compares two fully solved plans, and when the outer loop
        runs to a tight ``tol`` the perturbation (a hundredth of each step) vanishes with the
        steps: values stayed within 1e-7 of POT's.  With a loose ``tol`` the returned plan is an
        early iterate that the perturbation moves, so pass 0 there (as
        :func:`~poisonlab.explain.gw_barycenter.gw_barycenter` does).
    check_every : int
        Outer iterations between plan tests (POT: 10, so a problem runs 11, 21, ... iterations);
        1 tests every iteration and stops at the first plan within ``tol``.
    value_rtol : float
        If > 0, a problem also stops once its GW loss changed by at most ``value_rtol`` (relative)
        in one iteration: ``|L(T_k) - L(T_k-1)| ≤ value_rtol·L(T_k)``, returning ``T_k``.  The
        loss of ``T_k`` falls out of the gradient at ``T_k`` (no extra product), which the next
        iteration computes anyway.  Distances need the loss, not the plan, and the loss settles
        long before the plan does (measured on heatmap clouds: within 1e-4 of its limit after
        ~7 iterations, where ``‖ΔT‖ ≤ 1e-6`` takes 13-110), so clustering uses this
        (:mod:`~poisonlab.explain.gw_kmeans`); 0 keeps POT's plan criterion only.
    inner : {"auto", "newton", "sinkhorn"}, optional
        Inner OT solver, both to POT's ``sinkhorn_knopp`` criterion (module docstring):
        ``"sinkhorn"`` (:func:`~poisonlab.explain._sinkhorn.sinkhorn`), ``"newton"``
        (:func:`~poisonlab.explain._newton_ot.newton_semidual`, for a small second space),
        ``"auto"`` (default) Newton when the second space has at most
        :data:`NEWTON_MAX_POINTS` points.
    park : int
        If > 0: once at most ``park`` problems are left (after the first iteration), stop and
        return them unfinished in ``GWResult.parked`` (:class:`GWState`), to be resumed.  The
        fused path (``fused``) finishes every problem and parks none.
    resume : GWState, optional
        Continue parked problems, given here as the batch in the state's order (padded to the
        width of its plans): each resumes from the state's plan and potentials (so pass no
        ``T0`` or ``potentials``), with its iteration count, last plan change and last loss.
    fused : bool, optional
        Solve the problems one at a time in compiled loops
        (:mod:`~poisonlab.explain._gw_fused`: same iterations and stopping rules, 2-4× faster
        per outer iteration) instead of as batched tensor calls.  None (default): whenever it
        applies, i.e. on CPU, in float32 or float64, with Newton inner solves, without
        ``resume``, and with numba installed and a folder it can write its cache to, unless the two spaces' mass totals differ by
        more than the inner tolerance allows
        (:func:`~poisonlab.explain._gw_dispatch.totals_match`); False: the tensor path;
        True: the fused path (a ValueError where it does not apply).

    Returns
    -------
    GWResult
        Values, plans, iteration counts and convergence flags, in the dtype and on the device of
        the inputs.

    Raises
    ------
    ValueError
        On inconsistent shapes, ``epsilon <= 0``, ``max_iter < 1`` or an unknown ``inner``; on
        a ``resume`` state that is empty, does not match the batch, or comes with ``T0`` or
        ``potentials``; on ``fused=True`` where the fused path does not apply.
    NumericalError
        If a (non-parked) value is NaN or inf, on either path: the message names the problem,
        the dtype and the ratio of the costs to ``epsilon`` (or the non-finite input).
    """
    if inner not in INNER_SOLVERS:
        raise ValueError(f"inner must be one of {INNER_SOLVERS}, got {inner!r}")
    if epsilon <= 0 or max_iter < 1 or sinkhorn_max_iter < 1 or check_every < 1:
        raise ValueError(
            f"need epsilon > 0 and max_iter, sinkhorn_max_iter, check_every >= 1, got {epsilon}, "
            f"{max_iter}, {sinkhorn_max_iter}, {check_every}"
        )
    # the batch size: every batched input has one batch dimension, all of one size (a plain
    # check: torch.broadcast_shapes costs ~2 ms, called once per solve)
    batched = [x.shape[0] for x, dims in ((C1, 3), (p, 2), (C2, 3), (q, 2)) if x.dim() == dims]
    if resume is not None:
        if T0 is not None or potentials is not None:
            raise ValueError(
                "resume carries the plans and potentials to continue from: pass neither T0 nor "
                "potentials with it"
            )
        if resume.index.numel() == 0:
            raise ValueError("resume holds no problems (an empty GWState)")
        if not batched:  # every input shared: the state gives the batch
            batched.append(resume.plan.shape[0])
    if T0 is not None:
        batched.append(T0.shape[0] if T0.dim() == 3 else -1)
    sizes = set(batched)
    if any(x.dim() not in (dims - 1, dims) for x, dims in ((C1, 3), (p, 2), (C2, 3), (q, 2))) or (
        len(sizes - {1}) > 1 or not sizes or -1 in sizes
    ):
        raise ValueError("entropic_gw expects exactly one batch dimension on some input")
    batch = max(sizes)
    n, m = C1.shape[-1], C2.shape[-1]
    if C1.shape[-2] != n or C2.shape[-2] != m or p.shape[-1] != n or q.shape[-1] != m:
        raise ValueError(
            f"shape mismatch: C1 {tuple(C1.shape)}, p {tuple(p.shape)}, "
            f"C2 {tuple(C2.shape)}, q {tuple(q.shape)}"
        )
    if resume is not None:
        _check_resume(resume, batch, n, m)
        T0, potentials = resume.plan, (resume.f, resume.g)
    newton = inner == "newton" or (inner == "auto" and m <= NEWTON_MAX_POINTS)
    sk_tol = _default_tol(C1.dtype) if sinkhorn_tol is None else sinkhorn_tol
    tol = _default_outer_tol(C1.dtype) if tol is None else tol
    if fused is not False:
        why_not = _fused_unavailable(newton, resume, (C1, p, C2, q, T0, *(potentials or ())))
        if fused and why_not:
            raise ValueError(f"fused=True needs {why_not}")
        if not why_not and (fused or totals_match((p,), q, sk_tol)):
            return _solve_fused(
                C1,
                p,
                C2,
                q,
                batch=batch,
                epsilon=epsilon,
                max_iter=max_iter,
                tol=tol,
                T0=T0,
                potentials=potentials,
                sinkhorn_max_iter=sinkhorn_max_iter,
                sinkhorn_tol=sk_tol,
                inexact=inexact,
                check_every=check_every,
                value_rtol=value_rtol,
            )
    p, q = _batched(p, 1, batch), _batched(q, 1, batch)
    c1, c2 = _squared_mass(C1, p), _squared_mass(C2, q)
    # Padded points get a prohibitive cost through c1 / c2 (the gradient's row and column
    # terms), so their kernel entries underflow to 0 without a mask (see _sinkhorn.PAD_COST).
    padded = bool((p <= 0).any() or (q <= 0).any())
    if padded:
        c1 = torch.where(p > 0, c1, PAD_COST)
        c2 = torch.where(q > 0, c2, PAD_COST)
    T = p.unsqueeze(2) * q.unsqueeze(1) if T0 is None else _batched(T0, 2, batch).clone()
    plan = torch.empty_like(T)
    value = torch.full((batch,), torch.nan, dtype=T.dtype, device=T.device)
    n_iter = torch.full((batch,), max_iter, dtype=torch.int64, device=T.device)
    converged = torch.zeros(batch, dtype=torch.bool, device=T.device)
    # Working set: shared (2-D) structure matrices stay unbatched through compaction.
    todo = torch.arange(batch, device=T.device)
    work = {"C1": C1, "C2": C2, "p": p, "q": q, "c1": c1, "c2": c2, "T": T}
    if newton:  # the Newton Hessians' constant terms, from q: once per solve
        work["gauge"] = gauge_terms(q)
    shared = {name for name, x in (("C1", C1), ("C2", C2)) if x.dim() == 2}
    f, g = (None, None) if potentials is None else potentials
    capped = 0  # inner solves stopped by sinkhorn_max_iter
    pot_f, pot_g = torch.zeros_like(p), torch.zeros_like(q)
    step = torch.full((batch,), torch.inf, dtype=T.dtype, device=T.device)
    loss = torch.full((batch,), torch.inf, dtype=T.dtype, device=T.device)
    # resumed problems: iteration offsets (their own count is it + offset), else none
    offset: Tensor | None = None
    if resume is not None:
        step, loss = resume.step.clone(), resume.loss.clone()
        offset = work["offset"] = resume.done_iter.clone()

    # Rows of work["C1"] of the problems still iterating (None: all, in order).  C1 is the
    # largest tensor (B, n, n) and copying its rows when a few problems finish costs about three
    # gradient products on them: it is compacted only once a quarter of its rows are finished
    # problems, whose rows the gradient product computes meanwhile and drops (_gradient).
    live: Tensor | None = None
    lazy = C1.dim() == 3 and C2.dim() == 3  # (the product with a shared C2 compacts at once)

    def finish(
        done: Tensor, it: int, plans: Tensor, losses: Tensor | None, conv: bool = True
    ) -> None:
        nonlocal todo, f, g, step, loss, work, offset, live
        # one index for every tensor: index_select gathers 2-5x faster than a boolean mask
        sel = done.nonzero().squeeze(1)
        idx = todo.index_select(0, sel)
        plan[idx], converged[idx] = plans.index_select(0, sel), conv
        n_iter[idx] = _own_iteration(it, offset, sel)
        pot_f[idx], pot_g[idx] = f.index_select(0, sel), g.index_select(0, sel)  # type: ignore[union-attr]
        if losses is not None:
            value[idx] = losses.index_select(0, sel)
        keep = (~done).nonzero().squeeze(1)
        todo, f, g = todo.index_select(0, keep), f.index_select(0, keep), g.index_select(0, keep)  # type: ignore[union-attr]
        step, loss = step.index_select(0, keep), loss.index_select(0, keep)
        C1_rows = work["C1"]
        work = {
            k: v if k in shared or k in ("C1", "T_rows") else v.index_select(0, keep)
            for k, v in work.items()
        }
        offset = work.get("offset")
        if not lazy and "C1" not in shared:
            work["C1"] = C1_rows.index_select(0, keep)
        elif lazy:
            live = keep if live is None else live.index_select(0, keep)
            if 4 * live.numel() <= 3 * C1_rows.shape[0]:
                work["C1"], live = C1_rows.index_select(0, live), None
                work.pop("T_rows", None)

    first = 0 if resume is None else int(resume.done_iter.min())
    for it in range(max_iter - first):
        if park > 0 and it > 0 and todo.numel() <= park:
            done_iter = torch.zeros_like(todo).add_(_own_iteration(it, offset))
            state = GWState(todo, work["T"], f, g, step, loss, done_iter)  # type: ignore[arg-type]
            parked = torch.zeros_like(converged)
            parked[todo] = True
            _fill_values(value, C1, p, C2, q, plan, skip=parked)
            check_values(value, n_iter, epsilon=epsilon, spaces=(C1, p, C2, q), skip=parked)
            plan[todo], pot_f[todo], pot_g[todo] = torch.nan, torch.nan, torch.nan
            n_iter[todo] = done_iter
            return GWResult(value, plan, n_iter, converged, (pot_f, pot_g), state)
        w = work
        grad = _gradient(w, live)
        if value_rtol > 0 and (it > 0 or offset is not None):
            # L(T) = ½ <grad(T), T> (padded entries: T = 0 against a finite PAD_COST)
            new_loss = 0.5 * (grad * w["T"]).sum(dim=(1, 2))
            done = (new_loss - loss).abs() <= value_rtol * new_loss.abs()
            loss = new_loss
            if bool(done.any()):
                finish(done, it, w["T"], new_loss)
                if todo.numel() == 0:
                    break
                w, grad = work, grad.index_select(0, (~done).nonzero().squeeze(1))
        own = _own_iteration(it, offset)
        tol_in = _inner_tol(own, step, check_every, max_iter, inexact, sk_tol)
        T_new, f, g, sweeps = _inner_ot(
            newton,
            w["p"],
            w["q"],
            grad,
            epsilon,
            f=f,
            g=g,
            tol=tol_in,
            padded_cost=padded,
            sweeps=sinkhorn_max_iter,
            gauge=w.get("gauge"),
        )
        # Newton counts its steps before a fallback's sweeps (newton_semidual's n_iter)
        capped += int((sweeps >= sinkhorn_max_iter + (NEWTON_MAX_STEPS if newton else 0)).sum())
        step = torch.linalg.matrix_norm(T_new - w["T"])
        w["T"] = T_new
        passed = _plan_test(step, tol, own, check_every)
        if passed is not None and bool(passed.any()):
            finish(passed, it + 1, T_new, None)
            if todo.numel() == 0:
                break
        if offset is not None:  # resumed problems at their own max_iter stop unconverged
            out = offset + it + 1 >= max_iter
            if bool(out.any()):
                finish(out, it + 1, work["T"], None, conv=False)
                if todo.numel() == 0:
                    break
    plan[todo] = work["T"]
    if f is not None and g is not None:
        pot_f[todo], pot_g[todo] = f, g
    log_capped(capped, sinkhorn_max_iter)
    _fill_values(value, C1, p, C2, q, plan)
    check_values(value, n_iter, epsilon=epsilon, spaces=(C1, p, C2, q))
    return GWResult(value, plan, n_iter, converged, (pot_f, pot_g))


def _own_iteration(it: int, offset: Tensor | None, sel: Tensor | None = None) -> int | Tensor:
    """Each problem's own outer iteration at the loop's iteration ``it``: ``it`` itself, or for
    resumed problems ``it`` plus their offsets (those of ``sel`` if given), per problem."""
    if offset is None:
        return it
    return (offset if sel is None else offset[sel]) + it


def _inner_tol(
    own: int | Tensor, step: Tensor, check_every: int, max_iter: int, inexact: float, sk_tol: float
) -> float | Tensor:
    """Inner tolerance at the problems' own iteration ``own``: ``sk_tol`` where a plan test
    uses the plan (iterations ``c·k - 1``, ``c·k`` and the last), else ``inexact`` times the
    last plan change (at least ``sk_tol``); per problem when ``own`` is (resumed problems)."""
    if check_every > 1:
        exact = (own % check_every == 0) | (own % check_every == check_every - 1)
    else:
        exact = own == 0
    exact = (own == max_iter - 1) | exact
    if inexact <= 0 or exact is True:
        return sk_tol
    if exact is False:
        return torch.clamp(inexact * step, min=sk_tol)
    return torch.where(exact, sk_tol, torch.clamp(inexact * step, min=sk_tol))


def _plan_test(step: Tensor, tol: float, own: int | Tensor, check_every: int) -> Tensor | None:
    """Problems whose plan test (``‖T - T_prev‖_F ≤ tol``, on own iterations ``c·k``) stops
    them after own iteration ``own``; None when no problem is tested at it."""
    tested = own % check_every == 0
    if tested is False:
        return None
    return step <= tol if tested is True else (step <= tol) & tested


def _fill_values(
    value: Tensor,
    C1: Tensor,
    p: Tensor,
    C2: Tensor,
    q: Tensor,
    plan: Tensor,
    skip: Tensor | None = None,
) -> None:
    """The GW loss of the final plans of the problems whose value is still NaN (those stopped by
    the plan test or by ``max_iter``), except ``skip``."""
    missing = torch.isnan(value) if skip is None else torch.isnan(value) & ~skip
    if bool(missing.any()):
        rows = missing.nonzero().flatten()
        sub = lambda x: x if x.dim() == 2 else x[rows]  # noqa: E731
        value[rows] = gw_loss(sub(C1), p[rows], sub(C2), q[rows], plan[rows])


def _inner_ot(
    newton: bool,
    a: Tensor,
    b: Tensor,
    M: Tensor,
    epsilon: float,
    *,
    f: Tensor | None,
    g: Tensor | None,
    tol: float | Tensor,
    padded_cost: bool,
    sweeps: int,
    gauge: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One batch of inner entropic OT problems, by Newton or by Sinkhorn (same criterion and
    outputs); ``sweeps`` is Sinkhorn's budget, also that of Newton's Sinkhorn fallback."""
    if newton:
        return newton_semidual(
            a,
            b,
            M,
            epsilon,
            f=f,
            g=g,
            tol=tol,
            padded_cost=padded_cost,
            sinkhorn_max_iter=sweeps,
            gauge=gauge,
        )
    return sinkhorn(a, b, M, epsilon, f=f, g=g, tol=tol, padded_cost=padded_cost, max_iter=sweeps)


def _gradient(w: dict[str, Tensor], live: Tensor | None = None) -> Tensor:
    """POT's ``gwggrad``: ``2 (c1 1ᵀ + 1 c2ᵀ - 2 C1 T C2)``, shared (2-D) matrices as one GEMM.

    Batched, it is computed transposed, ``(C2 Tᵀ C1)ᵀ`` (C1 and C2 are symmetric): on CPU a
    batched GEMM whose output is n wide runs 2-3x faster than one whose output is m wide when m
    is small (Heatmap Clustering's 10-point barycenters; bench/results/gromov.md, session 15).
    ``live``: the rows of a batched ``w["C1"]`` that belong to the problems of ``w["T"]``, in
    order (the others are finished problems'): the product runs on all rows, each with the
    plan last placed there (``w["T_rows"]``, kept), and only the live rows are kept.
    """
    C1, T, C2 = w["C1"], w["T"], w["C2"]
    if C1.dim() == 3 and C2.dim() == 3:
        base = torch.add(w["c1"].unsqueeze(1), w["c2"].unsqueeze(2)).mul_(2.0)
        if live is None:
            right = torch.bmm(T.transpose(1, 2), C1)
        else:
            if "T_rows" not in w:
                w["T_rows"] = T.new_zeros(C1.shape[0], *T.shape[1:])
            rows = w["T_rows"].index_copy_(0, live, T)
            right = torch.bmm(rows.transpose(1, 2), C1).index_select(0, live)
        return torch.baddbmm(base, C2, right, alpha=-4.0).transpose(1, 2).contiguous()
    left = torch.bmm(C1, T) if C1.dim() == 3 else (T.transpose(1, 2) @ C1).transpose(1, 2)
    base = torch.add(w["c1"].unsqueeze(2), w["c2"].unsqueeze(1)).mul_(2.0)
    if C2.dim() == 3:
        return torch.baddbmm(base, left, C2, alpha=-4.0)
    b, n, m = T.shape
    return torch.addmm(base.view(b * n, m), left.reshape(b * n, m), C2, alpha=-4.0).view(b, n, m)
