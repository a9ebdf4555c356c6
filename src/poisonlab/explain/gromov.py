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

Each inner problem is solved to POT's ``sinkhorn_knopp`` criterion (column-marginal error below
1e-9, at most 1000 sweeps) by the batched, stabilised and over-relaxed Sinkhorn of
:mod:`poisonlab.explain._sinkhorn`, warm-started from the potentials of the previous outer
iteration: same solutions, far fewer sweeps, and no NaN for small ε or in float32.  Outer
iterations whose plan no convergence test looks at may be solved less tightly (``inexact``).
Every problem of a batch stops on its own criterion, as it would alone, and finished problems
leave the batch.  Measured agreement with POT: relative differences of 1e-9 to 1e-7 in the value
(tests/explain/test_gromov.py, bench/bench_gromov.py).

float32: inner solves stop at a marginal error of 1e-6 and the outer loop at
``‖T - T_prev‖_F ≤ 1e-6`` (the float64 defaults are POT's 1e-9, below float32 round-off);
values then agree with POT's float64 ones to ~1e-5 relative (worst 3e-5 measured, median 1e-6)
at about half the cost, which is what clustering uses (:mod:`poisonlab.explain.gw_kmeans`).

Limits: the structure matrices must be symmetric (distance matrices are); asymmetric inputs would
need POT's averaged gradient, which is not implemented.  Memory is a few ``(B, n, m)`` tensors
plus ``C1`` and ``C2``: callers chunk large workloads (see ``gw_barycenter`` / ``gw_kmeans``).

References
----------
Peyré, Cuturi, Solomon, "Gromov–Wasserstein averaging of kernel and distance matrices", ICML 2016.
Schmitzer, "Stabilized sparse scaling algorithms for entropy regularized transport problems",
SIAM J. Sci. Comput. 41(3), 2019.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from poisonlab.explain._sinkhorn import PAD_COST, sinkhorn
from poisonlab.explain.point_cloud import PointClouds

__all__ = [
    "GWResult",
    "chunk_clouds",
    "entropic_gw",
    "gather_chunks",
    "gw_loss",
    "gw_to_centers",
    "gw_to_one",
    "gw_to_spaces",
    "size_chunks",
    "solve_pairs",
]

logger = logging.getLogger(__name__)

#: Default memory budget of one chunk, in tensor elements (2**24 float64 = 128 MiB per tensor).
CHUNK_ELEMENTS = 2**24


@dataclass(frozen=True, eq=False)
class GWResult:
    """The outcome of a batch of entropic GW problems.

    Attributes
    ----------
    value : Tensor of shape (B,)
        Square-loss GW objective of the final plan, without the entropy term.
    plan : Tensor of shape (B, n, m), or None
        Final couplings, zero on padded rows and columns (None when not kept, see
        :func:`gw_to_one`).
    n_iter : Tensor of shape (B,), int64
        Outer (projected-gradient) iterations run for each problem.
    converged : Tensor of shape (B,), bool
        True where ``‖T - T_prev‖_F ≤ tol`` was reached before ``max_iter``.
    potentials : tuple of Tensor of shapes (B, n) and (B, m)
        Dual potentials of the last Sinkhorn solve, to warm-start a related problem.
    """

    value: Tensor
    plan: Tensor | None
    n_iter: Tensor
    converged: Tensor
    potentials: tuple[Tensor, Tensor]


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
    p : Tensor of shape (B, n) or (n,)
    C2 : Tensor of shape (B, m, m) or (m, m)
    q : Tensor of shape (B, m) or (m,)
    plan : Tensor of shape (B, n, m)

    Returns
    -------
    Tensor of shape (B,)
        ``<c1 1ᵀ + 1 c2ᵀ - 2 C1 T C2, T>`` with POT's marginal terms ``c1 = C1² p``, ``c2 = C2² q``.
    """
    c1 = ((C1 * C1) @ p.unsqueeze(-1)).squeeze(-1)
    c2 = ((C2 * C2) @ q.unsqueeze(-1)).squeeze(-1)
    tens = c1.unsqueeze(-1) + c2.unsqueeze(-2) - 2.0 * (C1 @ plan @ C2)
    return (tens * plan).sum(dim=(-2, -1))


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

    Returns
    -------
    GWResult
        Values, plans, iteration counts and convergence flags, in the dtype and on the device of
        the inputs.

    Raises
    ------
    ValueError
        On inconsistent shapes, ``epsilon <= 0`` or ``max_iter < 1``.
    """
    if epsilon <= 0 or max_iter < 1 or sinkhorn_max_iter < 1 or check_every < 1:
        raise ValueError(
            f"need epsilon > 0 and max_iter, sinkhorn_max_iter, check_every >= 1, got {epsilon}, "
            f"{max_iter}, {sinkhorn_max_iter}, {check_every}"
        )
    # the batch size: every batched input has one batch dimension, all of one size (a plain
    # check: torch.broadcast_shapes costs ~2 ms, called once per solve)
    batched = [x.shape[0] for x, dims in ((C1, 3), (p, 2), (C2, 3), (q, 2)) if x.dim() == dims]
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
    sk_tol = _default_tol(C1.dtype) if sinkhorn_tol is None else sinkhorn_tol
    tol = _default_outer_tol(C1.dtype) if tol is None else tol
    p, q = _batched(p, 1, batch), _batched(q, 1, batch)
    c1 = ((C1 * C1) @ p.unsqueeze(-1)).squeeze(-1) if C1.dim() == 3 else (p @ (C1 * C1))
    c2 = ((C2 * C2) @ q.unsqueeze(-1)).squeeze(-1) if C2.dim() == 3 else (q @ (C2 * C2))
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
    shared = {name for name, x in (("C1", C1), ("C2", C2)) if x.dim() == 2}
    f, g = (None, None) if potentials is None else potentials
    capped = 0  # inner solves stopped by sinkhorn_max_iter
    pot_f, pot_g = torch.zeros_like(p), torch.zeros_like(q)
    step = torch.full((batch,), torch.inf, dtype=T.dtype, device=T.device)
    loss = torch.full((batch,), torch.inf, dtype=T.dtype, device=T.device)

    def finish(done: Tensor, it: int, plans: Tensor, losses: Tensor | None) -> None:
        nonlocal todo, f, g, step, loss, work
        idx = todo[done]
        plan[idx], n_iter[idx], converged[idx] = plans[done], it, True
        pot_f[idx], pot_g[idx] = f[done], g[done]  # type: ignore[index]
        if losses is not None:
            value[idx] = losses[done]
        keep = ~done
        todo, f, g, step, loss = todo[keep], f[keep], g[keep], step[keep], loss[keep]  # type: ignore[index]
        work = {k: v if k in shared else v[keep] for k, v in work.items()}

    for it in range(max_iter):
        w = work
        grad = _gradient(w)
        if value_rtol > 0 and it > 0:
            # L(T) = ½ <grad(T), T> (padded entries: T = 0 against a finite PAD_COST)
            new_loss = 0.5 * (grad * w["T"]).sum(dim=(1, 2))
            done = (new_loss - loss).abs() <= value_rtol * new_loss.abs()
            loss = new_loss
            if bool(done.any()):
                finish(done, it, w["T"], new_loss)
                if todo.numel() == 0:
                    break
                w, grad = work, grad[~done]
        if check_every > 1:
            exact = inexact <= 0 or it % check_every in (0, check_every - 1) or it == max_iter - 1
        else:
            exact = inexact <= 0 or it == 0 or it == max_iter - 1
        T_new, f, g, sweeps = sinkhorn(
            w["p"],
            w["q"],
            grad,
            epsilon,
            f=f,
            g=g,
            max_iter=sinkhorn_max_iter,
            tol=sk_tol if exact else torch.clamp(inexact * step, min=sk_tol),
            padded_cost=padded,
        )
        capped += int((sweeps >= sinkhorn_max_iter).sum())
        step = torch.linalg.matrix_norm(T_new - w["T"])
        w["T"] = T_new
        if it % check_every == 0:
            done = step <= tol
            if bool(done.any()):
                finish(done, it + 1, T_new, None)
                if todo.numel() == 0:
                    break
    plan[todo] = work["T"]
    if f is not None and g is not None:
        pot_f[todo], pot_g[todo] = f, g
    if capped:
        logger.info(
            "%d inner Sinkhorn solves stopped at sinkhorn_max_iter=%d (POT warns 'Sinkhorn did "
            "not converge' there too); a larger epsilon converges faster",
            capped,
            sinkhorn_max_iter,
        )
    missing = torch.isnan(value)
    if bool(missing.any()):
        rows = missing.nonzero().flatten()
        sub = lambda x: x if x.dim() == 2 else x[rows]  # noqa: E731
        value[rows] = gw_loss(sub(C1), p[rows], sub(C2), q[rows], plan[rows])
    return GWResult(value, plan, n_iter, converged, (pot_f, pot_g))


def _gradient(w: dict[str, Tensor]) -> Tensor:
    """POT's ``gwggrad``: ``2 (c1 1ᵀ + 1 c2ᵀ - 2 C1 T C2)``, shared (2-D) matrices as one GEMM."""
    C1, T, C2 = w["C1"], w["T"], w["C2"]
    left = torch.bmm(C1, T) if C1.dim() == 3 else (T.transpose(1, 2) @ C1).transpose(1, 2)
    base = torch.add(w["c1"].unsqueeze(2), w["c2"].unsqueeze(1)).mul_(2.0)
    if C2.dim() == 3:
        return torch.baddbmm(base, left, C2, alpha=-4.0)
    b, n, m = T.shape
    return torch.addmm(base.view(b * n, m), left.reshape(b * n, m), C2, alpha=-4.0).view(b, n, m)


def gw_to_one(
    clouds: PointClouds,
    C: Tensor,
    p: Tensor,
    *,
    epsilon: float,
    T0: Tensor | None = None,
    potentials: tuple[Tensor, Tensor] | None = None,
    keep_plans: bool = True,
    chunk_elements: int = CHUNK_ELEMENTS,
    chunks: list[tuple[Tensor, PointClouds]] | None = None,
    **solver: float,
) -> GWResult:
    """Entropic GW from every cloud of a batch to one shared space, in size-sorted chunks.

    Clouds are sorted by size and solved in chunks padded only to their own largest size, each
    chunk holding at most ``chunk_elements`` elements per ``(B, n, n)``/``(B, n, m)`` tensor,
    so memory stays bounded and padding waste small.  Values are exactly those of
    :func:`entropic_gw` on each pair (cloud first, shared space second).

    Parameters
    ----------
    clouds : PointClouds
        The B first spaces, ``C`` of shape (B, n_max, n_max).
    C : Tensor of shape (m, m)
        Shared second structure matrix (a center or barycenter).
    p : Tensor of shape (m,)
        Its masses.
    epsilon : float
        Entropic regularisation (see :func:`entropic_gw`).
    T0 : Tensor of shape (B, n_max, m), optional
        Starting plans (warm start), e.g. the plans to a previous version of ``C``.
    potentials : tuple of Tensor of shapes (B, n_max) and (B, m), optional
        Sinkhorn potentials matching ``T0``.
    keep_plans : bool
        Return the plans (B × n_max × m numbers); False for cloud-to-cloud distances.
    chunk_elements : int
        Memory budget per chunk, in elements.
    chunks : list of (Tensor, PointClouds), optional
        Precomputed :func:`chunk_clouds` of ``clouds`` (saves copying them on repeated calls).
    **solver
        ``max_iter``, ``tol``, ``sinkhorn_max_iter``, ``sinkhorn_tol`` or ``inexact`` for
        :func:`entropic_gw`.

    Returns
    -------
    GWResult
        ``value`` (B,), ``plan`` (B, n_max, m) or None, ``n_iter`` and ``converged`` (B,), and
        ``potentials`` of shapes (B, n_max) and (B, m).
    """
    return _solve_chunks(
        chunks if chunks is not None else chunk_clouds(clouds, C.shape[0], chunk_elements),
        lambda idx: (C, p),
        batch=len(clouds),
        width=clouds.n_max,
        like=clouds.C,
        m=C.shape[0],
        epsilon=epsilon,
        T0=T0,
        potentials=potentials,
        keep_plans=keep_plans,
        solver=solver,
    )


def _solve_chunks(
    chunks: list[tuple[Tensor, PointClouds]],
    second: Callable[[Tensor], tuple[Tensor, Tensor]],
    *,
    batch: int,
    width: int,
    like: Tensor,
    m: int,
    epsilon: float,
    T0: Tensor | None,
    potentials: tuple[Tensor, Tensor] | None,
    keep_plans: bool,
    solver: dict[str, float],
) -> GWResult:
    """:func:`entropic_gw` chunk by chunk, the second space of chunk ``idx`` being
    ``second(idx)``, gathered into one batch-sized :class:`GWResult` (dtype and device of
    ``like``; plans and first potentials ``width`` wide)."""
    dev, dt = like.device, like.dtype
    value = torch.empty(batch, dtype=dt, device=dev)
    n_iter = torch.empty(batch, dtype=torch.int64, device=dev)
    converged = torch.empty(batch, dtype=torch.bool, device=dev)
    plan = torch.zeros(batch, width, m, dtype=dt, device=dev) if keep_plans else None
    pot_f = torch.zeros(batch, width, dtype=dt, device=dev)
    pot_g = torch.zeros(batch, m, dtype=dt, device=dev)
    for idx, sub in chunks:
        n = sub.n_max
        C2, p2 = second(idx)
        res = entropic_gw(
            sub.C,
            sub.p,
            C2,
            p2,
            epsilon=epsilon,
            T0=None if T0 is None else T0[idx, :n],
            potentials=None if potentials is None else (potentials[0][idx, :n], potentials[1][idx]),
            **solver,  # type: ignore[arg-type]
        )
        value[idx], n_iter[idx], converged[idx] = res.value, res.n_iter, res.converged
        pot_f[idx, :n], pot_g[idx] = res.potentials
        if plan is not None and res.plan is not None:
            plan[idx, :n] = res.plan
    return GWResult(value, plan, n_iter, converged, (pot_f, pot_g))


def gw_to_centers(
    clouds: PointClouds,
    centers: list[tuple[Tensor, Tensor]],
    *,
    epsilon: float,
    T0: list[Tensor] | None = None,
    potentials: list[tuple[Tensor, Tensor]] | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
    **solver: float,
) -> list[GWResult]:
    """:func:`gw_to_one` for several shared spaces of one size at once: one batched solve.

    Every cloud is paired with every center in the same batch (:func:`gw_to_spaces`), so the
    per-iteration overhead of the solver (many small kernels, one Python loop) is paid once for
    all centers instead of once per center; each problem still iterates and stops on its own.

    Parameters
    ----------
    clouds : PointClouds
        The B first spaces.
    centers : list of (Tensor, Tensor)
        k shared spaces ``(C, p)``, all with the same number m of points.
    epsilon : float
        Entropic regularisation.
    T0 : list of Tensor of shape (B, n_max, m), optional
        Starting plans per center (all or none).
    potentials : list of (Tensor, Tensor), optional
        Matching Sinkhorn potentials per center, shapes (B, n_max) and (B, m).
    chunk_elements : int
        Memory budget per chunk, in elements, for all centers together.
    **solver
        As for :func:`gw_to_one`.

    Returns
    -------
    list of GWResult
        One per center, plans included.
    """
    return gw_to_spaces(
        [(clouds, C, p) for C, p in centers],
        epsilon=epsilon,
        T0=T0,
        potentials=potentials,
        chunk_elements=chunk_elements,
        **solver,
    )


def gw_to_spaces(
    pairs: list[tuple[PointClouds, Tensor, Tensor]],
    *,
    epsilon: float,
    T0: Sequence[Tensor | None] | None = None,
    potentials: Sequence[tuple[Tensor, Tensor] | None] | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
    **solver: float,
) -> list[GWResult]:
    """Entropic GW from every cloud of several batches to that batch's own space, in one solve.

    ``pairs[j] = (clouds_j, C_j, p_j)`` asks for the distances of every cloud of ``clouds_j`` to
    the space ``(C_j, p_j)``; all spaces have the same number m of points.  All these problems
    are sorted by cloud size and solved together in size chunks (:func:`solve_pairs`), so
    the Python loops of the solver (outer iterations, Sinkhorn sweeps) run once for all of them
    instead of once per batch: this is how Heatmap Clustering solves the k-means steps of all
    classes and restarts at once (:func:`~poisonlab.explain.gw_kmeans.gw_kmeans_many`).  Each
    problem iterates and stops on its own criterion, as it would alone.

    Parameters
    ----------
    pairs : list of (PointClouds, Tensor, Tensor)
        Clouds ``(B_j, n_j, n_j)`` and a space ``C`` of shape (m, m) with masses ``p`` (m,).
    epsilon : float
        Entropic regularisation.
    T0 : list of (Tensor of shape (B_j, n_j, m) or None), optional
        Starting plans per pair (warm start); None entries (or None) start from ``p qᵀ``.
        Where some pairs start warm, the others must too (all or none).
    potentials : list of ((Tensor, Tensor) or None), optional
        Matching Sinkhorn potentials, shapes (B_j, n_j) and (B_j, m).
    chunk_elements : int
        Memory budget per chunk, in elements.
    **solver
        As for :func:`gw_to_one`.

    Returns
    -------
    list of GWResult
        One per pair: values (B_j,), plans (B_j, n_j, m), iterations, flags and potentials.
    """
    if not pairs:
        return []
    m = pairs[0][1].shape[0]
    if any(C.shape != (m, m) or p.shape != (m,) for _, C, p in pairs):
        raise ValueError("gw_to_spaces needs spaces of one size")
    sources = [clouds for clouds, _, _ in pairs]
    which = torch.cat(
        [torch.full((len(c),), j, dtype=torch.int64) for j, c in enumerate(sources)]
    ).to(sources[0].C.device)
    index = torch.cat([torch.arange(len(c), device=which.device) for c in sources])
    C2 = torch.stack([C for _, C, _ in pairs])[which]
    q = torch.stack([p for _, _, p in pairs])[which]
    warm_T0 = _stack_padded(T0, sources, m) if T0 is not None and T0[0] is not None else None
    pots = None
    if potentials is not None and potentials[0] is not None:
        f = _stack_padded([fg[0] for fg in potentials], sources, None)  # type: ignore[index]
        pots = (f, torch.cat([fg[1] for fg in potentials]))  # type: ignore[index]
    chunks = gather_chunks(sources, which, index, m, chunk_elements)
    res = solve_pairs(chunks, C2, q, epsilon=epsilon, T0=warm_T0, potentials=pots, **solver)  # type: ignore[arg-type]
    out, start = [], 0
    for clouds in sources:
        part, n = slice(start, start + len(clouds)), clouds.n_max
        start += len(clouds)
        out.append(
            GWResult(
                res.value[part],
                None if res.plan is None else _width(res.plan[part], n),
                res.n_iter[part],
                res.converged[part],
                (_width(res.potentials[0][part], n), res.potentials[1][part]),
            )
        )
    return out


def _width(x: Tensor, n: int) -> Tensor:
    """``x`` (B, w, ...) cut or zero-padded to width ``n`` along dimension 1."""
    if x.shape[1] >= n:
        return x[:, :n]
    pad = x.new_zeros(x.shape[0], n - x.shape[1], *x.shape[2:])
    return torch.cat([x, pad], dim=1)


def _stack_padded(
    parts: Sequence[Tensor | None], sources: list[PointClouds], m: int | None
) -> Tensor:
    """Concatenate per-batch tensors (B_j, n_j[, m]) into one (ΣB_j, max n_j[, m]), zero-padded."""
    width = max(c.n_max for c in sources)
    if any(x is None for x in parts):
        raise ValueError("warm starts must be given for all batches or none")
    return torch.cat([_width(x, width) for x in parts])  # type: ignore[arg-type]


def gather_chunks(
    sources: list[PointClouds],
    which: Tensor,
    index: Tensor,
    m: int,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> list[tuple[Tensor, PointClouds]]:
    """Size chunks (:func:`size_chunks`) of the clouds ``sources[which[i]]`` cloud ``index[i]``.

    Returns ``(positions, clouds)`` per chunk: ``positions`` index the list ``(which, index)``
    and ``clouds`` holds those clouds, padded only to the chunk's largest size.
    """
    offsets = torch.tensor([0] + [len(c) for c in sources[:-1]]).cumsum(0).to(which.device)
    sizes = torch.cat([c.sizes for c in sources])[offsets[which] + index]
    chunks = []
    for ids in size_chunks(sizes, m, chunk_elements):
        src, rows = which[ids], index[ids]
        used = torch.unique(src).tolist()
        if len(used) == 1:
            chunks.append((ids, sources[used[0]].subset(rows)))
            continue
        chunk_sizes = sizes[ids]
        n = int(chunk_sizes.max())
        first = sources[used[0]]
        C = first.C.new_zeros(len(ids), n, n)
        p = first.p.new_zeros(len(ids), n)
        for s in used:
            pos = torch.nonzero(src == s).flatten()
            w = min(n, sources[s].n_max)
            C[pos, :w, :w] = sources[s].C[rows[pos], :w, :w]
            p[pos, :w] = sources[s].p[rows[pos], :w]
        chunks.append((ids, PointClouds(C, p, chunk_sizes)))
    return chunks


def solve_pairs(
    chunks: list[tuple[Tensor, PointClouds]],
    C: Tensor,
    p: Tensor,
    *,
    epsilon: float,
    T0: Tensor | None = None,
    potentials: tuple[Tensor, Tensor] | None = None,
    keep_plans: bool = True,
    **solver: float,
) -> GWResult:
    """Entropic GW of P pairs (cloud, own second space), the clouds given as size chunks.

    Parameters
    ----------
    chunks : list of (Tensor, PointClouds)
        ``(positions, clouds)`` covering ``range(P)`` once (:func:`gather_chunks`).
    C : Tensor of shape (P, m, m)
        The second space of each pair.
    p : Tensor of shape (P, m)
        Its masses.
    epsilon : float
        Entropic regularisation.
    T0 : Tensor of shape (P, w, m), optional
        Starting plans, w at least the largest cloud size.
    potentials : tuple of Tensor of shapes (P, w) and (P, m), optional
        Matching Sinkhorn potentials.
    keep_plans : bool
        Return the plans.
    **solver
        As for :func:`entropic_gw`.

    Returns
    -------
    GWResult
        Per pair, plans (P, w, m) and first potentials (P, w) with w the largest chunk width.
    """
    return _solve_chunks(
        chunks,
        lambda idx: (C[idx], p[idx]),
        batch=C.shape[0],
        width=max(sub.n_max for _, sub in chunks),
        like=C,
        m=C.shape[-1],
        epsilon=epsilon,
        T0=T0,
        potentials=potentials,
        keep_plans=keep_plans,
        solver=solver,
    )


def chunk_clouds(
    clouds: PointClouds, m: int, chunk_elements: int = CHUNK_ELEMENTS
) -> list[tuple[Tensor, PointClouds]]:
    """``(index, clouds.subset(index))`` for each of :func:`size_chunks`."""
    return [(idx, clouds.subset(idx)) for idx in size_chunks(clouds.sizes, m, chunk_elements)]


def size_chunks(
    sizes: Tensor, m: int, chunk_elements: int = CHUNK_ELEMENTS, *, min_elements: int = 2**21
) -> list[Tensor]:
    """Indices of clouds grouped by size, ascending, for batched solves with little padding.

    A chunk closes when adding the next cloud would exceed ``B·(n² + 8 n m) > chunk_elements``
    (memory), or, once its padded problems hold ``B·n·(n + m) > min_elements`` numbers, when the
    next cloud is more than 25% larger than its smallest (padding waste: the cost grows as n²).
    Below that size a solver step costs its tensor calls' dispatch rather than arithmetic, and
    every chunk is a separate run of the solver's loops, its slowest problems iterating alone:
    on the digits scan (Heatmap Clustering of ten classes of 9-28-point clouds in one batch)
    one chunk per solve took 22.6 CPU-s against 27.2 s for chunks split at 25% once they held
    32 clouds (five chunks; this rule makes two there, and leaves the chunks of the ~60-point
    clouds of a 1,000-image class about as they were).

    Parameters
    ----------
    sizes : Tensor of shape (B,), int64
        Cloud sizes.
    m : int
        Size of the other space of each pair.
    chunk_elements : int
        Memory budget per chunk (a chunk holds at least one cloud whatever the budget).
    min_elements : int
        Chunks smaller than this (in ``B·n·(n + m)``) are not split for padding.

    Returns
    -------
    list of Tensor
        Index tensors covering ``range(B)`` exactly once.
    """
    order = torch.argsort(sizes.cpu(), stable=True)
    n_sorted = sizes.cpu()[order].tolist()
    chunks, start = [], 0
    for end in range(1, len(order) + 1):
        if end < len(order):
            count, n = end + 1 - start, n_sorted[end]
            too_big = count * (n * n + 8 * n * m) > chunk_elements
            too_uneven = count * n * (n + m) > min_elements and 4 * n > 5 * max(n_sorted[start], 1)
            if not (too_big or too_uneven):
                continue
        chunks.append(order[start:end].to(sizes.device))
        start = end
    return chunks
