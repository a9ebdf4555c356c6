"""Entropic Gromov–Wasserstein barycenters (square loss), with all couplings solved in one batch.

The barycenter of metric-measure spaces ``(C_s, p_s)`` with weights ``λ_s`` is a structure
``C`` on ``N`` points with uniform masses ``p̄`` minimising ``Σ_s λ_s GW_ε(C, p̄, C_s, p_s)``
(Peyré, Cuturi & Solomon 2016).  The algorithm is POT's ``ot.gromov.entropic_gromov_barycenters``
with ``loss_fun="square_loss"`` and ``stop_criterion="barycenter"``:

1. start from ``init_C``, or from the distance matrix of N standard-normal points in the plane,
   divided by its maximum;
2. solve all couplings ``T_s`` between ``(C, p̄)`` and the members (entropic GW, ``ε``, inner
   tolerance 1e-4 as in POT) — here as one batch per size chunk, or where the fused solver
   applies (CPU, Newton inner solves) one by one from the clouds in place, each coupling's
   share of step 3 summed as it finishes (:mod:`~poisonlab.explain._gw_rows`);
3. ``C ← Σ_s λ_s T_s C_s T_sᵀ / (p̄ p̄ᵀ)``;
4. repeat until ``‖C - C_prev‖_F ≤ max(tol, rtol·‖C‖_F)`` (POT: 1e-9, rtol 0) or ``max_iter``
   (1000) updates.

Warm starts (default, ``warm_start=True``, POT's ``warmstartT=True``): each coupling starts from
its previous plan and Sinkhorn potentials.  The update map and therefore its fixed points are
unchanged; only the path to one differs, and most couplings then converge in one GW iteration.

Speed options used by clustering (:func:`~poisonlab.explain.gw_kmeans.gw_kmeans`), all off by
default so that the defaults follow POT:

- ``rtol``: stop when ``‖C - C_prev‖_F ≤ rtol·‖C‖_F`` (clustering: 1e-4).  Measured on heatmap
  clusters the relative change falls ~10× every 5 updates, so 1e-4 takes 15-20 updates from a
  random start, against hundreds (or the 1000 cap) for POT's absolute 1e-9;
- ``gw_max_iter`` small with warm starts (clustering: 50): the first update from a random start
  otherwise solves every coupling to the end (mean ~90, up to ~400 iterations on 220-point
  clouds), although the next update moves the target anyway.  A capped coupling resumes from
  its plan in the next update, and the run only counts as converged once every coupling met
  ``gw_tol``, so the fixed point is the same;
- ``inexact`` inner Sinkhorn solves (clustering: 1e-2): barycenter moved by ~2e-7 relative.

Observed on max-normalised heatmap clouds: with ε = 0.1 the barycenter of a homogeneous group
collapses to a constant matrix (all couplings become product couplings, a fixed point of the
update), i.e. it only retains the mean pairwise distance of the members; heterogeneous groups
keep structure.  Smaller ε keeps more structure and costs more iterations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from poisonlab.explain._gw_rows import fused_settings, solve_sources, stack_sources
from poisonlab.explain.gromov import GWResult
from poisonlab.explain.gw_batches import CHUNK_ELEMENTS, gather_chunks, solve_pairs
from poisonlab.explain.point_cloud import PointClouds, fit_width

__all__ = [
    "GWBarycenter",
    "gw_barycenter",
    "gw_barycenters",
    "random_structure",
    "update_structure",
]


@dataclass(frozen=True, eq=False)
class GWBarycenter:
    """A GW barycenter and the couplings that produced it.

    Attributes
    ----------
    C : Tensor of shape (N, N)
        Barycenter structure matrix (symmetric).
    p : Tensor of shape (N,)
        Its masses (uniform).
    plans : Tensor of shape (S, n_max, N)
        Couplings of the last iteration, member points × barycenter points (transpose of POT's).
    potentials : tuple of Tensor of shapes (S, n_max) and (S, N)
        Their Sinkhorn potentials (for warm starts).
    values : Tensor of shape (S,)
        GW losses of those couplings (to the barycenter before its last update).
    n_iter : int
        Barycenter updates performed.
    converged : bool
        Whether ``‖C - C_prev‖_F ≤ tol`` was reached.
    """

    C: Tensor
    p: Tensor
    plans: Tensor
    potentials: tuple[Tensor, Tensor]
    values: Tensor
    n_iter: int
    converged: bool


def random_structure(
    n_support: int, *, generator: torch.Generator, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """POT's default start: distances of ``n_support`` standard-normal 2-D points, max-normalised.

    Parameters
    ----------
    n_support : int
        Number of points N.
    generator : torch.Generator
        Source of randomness (CPU generator; the points are moved to ``device``).
    dtype, device
        Of the result.

    Returns
    -------
    Tensor of shape (N, N)
    """
    x = torch.randn(n_support, 2, generator=generator, dtype=torch.float64).to(device, dtype)
    C = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    return C / C.max() if n_support > 1 else C


def gw_barycenter(
    clouds: PointClouds,
    *,
    n_support: int = 10,
    epsilon: float = 0.1,
    weights: Tensor | None = None,
    max_iter: int = 1000,
    tol: float = 1e-9,
    gw_tol: float = 1e-4,
    gw_max_iter: int = 1000,
    rtol: float = 0.0,
    inexact: float = 0.0,
    init_C: Tensor | None = None,
    init_plans: Tensor | None = None,
    init_potentials: tuple[Tensor, Tensor] | None = None,
    warm_start: bool = True,
    generator: torch.Generator | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
    check_every: int = 10,
    gw_value_rtol: float = 0.0,
    objective_rtol: float = 0.0,
    inner: str = "auto",
) -> GWBarycenter:
    """Square-loss entropic GW barycenter of a batch of clouds (POT's algorithm, batched).

    Parameters
    ----------
    clouds : PointClouds
        The S members.
    n_support : int
        Number N of barycenter points (the paper's clustering script: 10).
    epsilon : float
        Entropic regularisation of the couplings (POT's default and the paper's helpers': 0.1).
    weights : Tensor of shape (S,), optional
        Weights λ_s summing to 1; default uniform.
    max_iter : int
        Maximum barycenter updates (POT: 1000).
    tol : float
        Stop when ``‖C - C_prev‖_F ≤ tol`` (POT: 1e-9).
    gw_tol : float
        Outer tolerance of the coupling solves (POT uses 1e-4 inside barycenters).
    gw_max_iter : int
        Maximum outer iterations of each coupling solve per update (POT: ``max_iter``, 1000).
        With ``warm_start`` a smaller cap (clustering: 50) is safe: a coupling stopped by the
        cap resumes from where it stopped in the next update, and the run only counts as
        converged once every coupling met ``gw_tol`` in the last update.
    rtol : float
        Also stop when ``‖C - C_prev‖_F ≤ rtol·‖C‖_F`` (relative; 0 = only ``tol``, POT).
    inexact : float
        Passed to :func:`~poisonlab.explain.gromov.entropic_gw`: inner Sinkhorn tolerance of
        the non-tested outer iterations relative to the last step (0 = POT's criteria).
    init_C : Tensor of shape (N, N), optional
        Starting structure, e.g. the previous barycenter of the same cluster.
    init_plans : Tensor of shape (S, n_max, N), optional
        Starting couplings for the first solve (only with ``warm_start``).
    init_potentials : tuple of Tensor of shapes (S, n_max) and (S, N), optional
        Their Sinkhorn potentials.
    warm_start : bool
        Start each coupling from its previous plan (see the module docstring); False is POT's
        default (every solve starts from ``p̄ p_sᵀ``).
    generator : torch.Generator, optional
        Needed when ``init_C`` is None.
    chunk_elements : int
        Memory budget per batched solve (see :func:`~poisonlab.explain.gw_batches.gw_to_one`).
    check_every : int
        Outer iterations between the couplings' plan tests (POT: 10; clustering: 1, so a
        warm-started coupling that moved little stops after the iterations it needs).
    gw_value_rtol : float
        ``value_rtol`` of the coupling solves (:func:`~poisonlab.explain.gromov.entropic_gw`;
        0 = POT's plan criterion only).
    objective_rtol : float
        Also stop once the barycenter objective ``Σ_s λ_s GW(C, C_s)`` (the couplings' losses
        before an update) fell by at most this fraction in one update, or rose (0 = off, POT).
        Measured on heatmap clusters with warm-started couplings: the objective settles within
        5-10 updates while ``‖ΔC‖ / ‖C‖`` stalls near 2e-4 for hundreds of updates, the
        structure drifting along directions that do not lower the objective (it even rose by
        1e-4 relative over 50 such updates), so the relative ``rtol`` alone would spend its
        whole update budget there.
    inner : {"auto", "newton", "sinkhorn"}
        Inner OT solver of the coupling solves (:func:`~poisonlab.explain.gromov.entropic_gw`).

    Returns
    -------
    GWBarycenter

    Raises
    ------
    ValueError
        On an empty batch, bad weights, or neither ``init_C`` nor ``generator``.
    """
    if len(clouds) == 0:
        raise ValueError("gw_barycenter needs at least one cloud")
    if init_C is None:
        if generator is None:
            raise ValueError("gw_barycenter needs init_C or a generator")
        init_C = random_structure(
            n_support, generator=generator, dtype=clouds.C.dtype, device=clouds.C.device
        )
    return gw_barycenters(
        [clouds],
        init_C[None],
        n_support=n_support,
        epsilon=epsilon,
        weights=None if weights is None else [weights],
        max_iter=max_iter,
        tol=tol,
        gw_tol=gw_tol,
        gw_max_iter=gw_max_iter,
        rtol=rtol,
        inexact=inexact,
        init_plans=None if init_plans is None else [init_plans],
        init_potentials=None if init_potentials is None else [init_potentials],
        warm_start=warm_start,
        chunk_elements=chunk_elements,
        check_every=check_every,
        gw_value_rtol=gw_value_rtol,
        objective_rtol=objective_rtol,
        inner=inner,
    )[0]


def gw_barycenters(
    groups: list[PointClouds],
    init_C: Tensor,
    *,
    n_support: int = 10,
    epsilon: float = 0.1,
    weights: list[Tensor] | None = None,
    max_iter: int = 1000,
    tol: float = 1e-9,
    gw_tol: float = 1e-4,
    gw_max_iter: int = 1000,
    rtol: float = 0.0,
    inexact: float = 0.0,
    init_plans: list[Tensor] | None = None,
    init_potentials: list[tuple[Tensor, Tensor]] | None = None,
    warm_start: bool = True,
    chunk_elements: int = CHUNK_ELEMENTS,
    check_every: int = 10,
    gw_value_rtol: float = 0.0,
    objective_rtol: float = 0.0,
    inner: str = "auto",
    members_of: tuple[PointClouds, list[Tensor]] | None = None,
) -> list[GWBarycenter]:
    """The barycenters of several groups of clouds, all updated in lockstep.

    Every group runs exactly :func:`gw_barycenter`'s iteration with its own stopping rule; the
    couplings of all groups still iterating are solved in one batch per update
    (:func:`~poisonlab.explain.gw_batches.solve_pairs`), so the solver's Python loops run once per
    update for all groups instead of once per group.  A group that stops leaves the batch.
    Heatmap Clustering updates the centers of all classes and restarts this way
    (:func:`~poisonlab.explain.gw_kmeans.gw_kmeans_many`).

    Parameters
    ----------
    groups : list of PointClouds
        The members of each of the G groups.
    init_C : Tensor of shape (G, N, N)
        Starting structure of each barycenter.
    weights : list of Tensor of shape (S_g,), optional
        Member weights per group (each summing to 1); default uniform.
    init_plans : list of Tensor of shape (S_g, n_g, N), optional
        Starting couplings per group (all groups or none; only with ``warm_start``).
    init_potentials : list of (Tensor, Tensor), optional
        Their Sinkhorn potentials, shapes (S_g, n_g) and (S_g, N).
    n_support, epsilon, max_iter, tol, gw_tol, gw_max_iter, rtol, inexact, warm_start, \
chunk_elements, check_every, gw_value_rtol, objective_rtol, inner
        As for :func:`gw_barycenter`.
    members_of : (PointClouds, list of Tensor), optional
        The groups as rows of one set of clouds (``groups[g]`` is ``clouds.subset(rows[g])``):
        where the fused solver applies it reads them there instead of a copy.

    Returns
    -------
    list of GWBarycenter
        One per group, plans of shape (S_g, n_g, N) with n_g the group's ``n_max``.
    """
    n_groups = len(groups)
    if n_groups == 0 or init_C.shape != (n_groups, n_support, n_support):
        raise ValueError(
            f"need init_C of shape {(n_groups, n_support, n_support)} for {n_groups} groups"
        )
    if any(len(g) == 0 for g in groups):
        raise ValueError("gw_barycenter needs at least one cloud")
    if n_support < 1 or max_iter < 1:
        raise ValueError(f"n_support and max_iter must be >= 1, got {n_support}, {max_iter}")
    dt, dev = groups[0].C.dtype, groups[0].C.device
    if weights is None:
        weights = [torch.full((len(g),), 1.0 / len(g), dtype=dt, device=dev) for g in groups]
    elif any(
        w.shape != (len(g),) or bool((w < 0).any()) for w, g in zip(weights, groups, strict=True)
    ):
        raise ValueError("weights must be non-negative, one per member")
    which = torch.cat(
        [torch.full((len(g),), j, dtype=torch.int64) for j, g in enumerate(groups)]
    ).to(dev)
    index = torch.cat([torch.arange(len(g), device=dev) for g in groups])
    lam = torch.cat(weights)
    width = max(g.n_max for g in groups)
    p_bar = torch.full((n_support,), 1.0 / n_support, dtype=dt, device=dev)
    plans = pots = None
    if warm_start and init_plans is not None:
        plans = torch.cat([fit_width(T, width) for T in init_plans])
        if init_potentials is not None:
            f = torch.cat([fit_width(fg[0], width) for fg in init_potentials])
            pots = (f, torch.cat([fg[1] for fg in init_potentials]))
    C = init_C.to(dev, dt).clone()
    objective = [torch.inf] * n_groups
    out: list[GWBarycenter | None] = [None] * n_groups
    live = torch.arange(len(which), device=dev)  # members of groups still iterating
    chunks = None
    solver = {
        "tol": gw_tol,
        "max_iter": gw_max_iter,
        "inexact": inexact,
        "check_every": check_every,
        "value_rtol": gw_value_rtol,
        "inner": inner,
    }
    tensors = (*(g.C for g in groups), C, plans)
    fused = fused_settings(tensors, (tuple(g.p for g in groups), p_bar), epsilon, solver)
    if fused is not None:  # the clouds as rows of one store, read in place
        if members_of is not None:
            store, at = (members_of[0].C, members_of[0].p), torch.cat(members_of[1]).to(dev)
        else:
            *store, at = stack_sources(groups, which, index)  # type: ignore[assignment]
    for it in range(1, max_iter + 1):
        member_group = which[live]
        T0 = None if plans is None else plans[live]
        warm = None if plans is None or pots is None else (pots[0][live], pots[1][live])
        if fused is not None:  # no size chunks; the sums Σ λ Tᵀ C T come with the plans
            res, total = solve_sources(
                (store[0], store[1]),
                at[live],
                C,
                p_bar.unsqueeze(0),
                member_group,
                mass_rows=torch.zeros_like(member_group),
                epsilon=epsilon,
                settings=fused,
                T0=T0,
                potentials=warm,
                weights=lam[live],
                groups=member_group,
                n_groups=n_groups,
            )
            assert res.plan is not None
            cut = (res.potentials[0][:, :width], res.potentials[1])  # zero beyond the clouds
            res = GWResult(res.value, res.plan[:, :width], res.n_iter, res.converged, cut)
        else:
            if chunks is None:
                chunks = gather_chunks(groups, member_group, index[live], n_support, chunk_elements)
            res = solve_pairs(
                chunks,
                C[member_group],
                p_bar.expand(len(live), n_support),
                epsilon=epsilon,
                T0=T0,
                potentials=warm,
                chunk_elements=chunk_elements,
                **solver,  # type: ignore[arg-type]
            )
            # C ← Σ_s λ_s T_sᵀ C_s T_s / (p̄ p̄ᵀ) per group, summed over the chunks
            total = C.new_zeros(n_groups, n_support, n_support)
            for idx, sub in chunks:
                T = res.plan[idx, : sub.n_max]  # type: ignore[index]
                left = torch.bmm((T * lam[live[idx], None, None]).transpose(1, 2), sub.C)
                total.index_add_(0, member_group[idx], torch.bmm(left, T))
        plan = res.plan
        assert total is not None  # solve_sources sums with weights
        assert plan is not None  # solve_pairs keeps plans by default
        if warm_start:
            if plans is None or pots is None:
                plans = plan.new_zeros(len(which), width, n_support)
                pots = (plan.new_zeros(len(which), width), plan.new_zeros(len(which), n_support))
            plans[live, : plan.shape[1]] = plan
            pots[0][live, : plan.shape[1]] = res.potentials[0]
            pots[1][live] = res.potentials[1]
        active = torch.unique(member_group)
        C_new = C.clone()
        C_new[active] = total[active] / torch.outer(p_bar, p_bar)
        norms = torch.linalg.matrix_norm(torch.stack([C_new[active] - C[active], C_new[active]]))
        open_count = torch.bincount(member_group[~res.converged], minlength=n_groups)
        values = torch.zeros(n_groups, dtype=dt, device=dev).index_add_(
            0, member_group, lam[live] * res.value
        )
        C = C_new
        finished = []
        rows = zip(
            active.tolist(),
            *norms.tolist(),
            open_count[active].tolist(),
            values[active].tolist(),
            strict=True,
        )
        for g, change, size, n_open, obj in rows:
            couplings_done = not warm_start or n_open == 0
            if change <= max(tol, rtol * size) and couplings_done:
                converged = True
            else:
                previous, objective[g] = objective[g], obj
                if objective_rtol > 0 and previous - obj <= objective_rtol * abs(obj):
                    converged = couplings_done
                elif it == max_iter:
                    converged = False
                else:
                    continue
            sel = torch.nonzero(member_group == g).flatten()
            n_g = groups[g].n_max
            out[g] = GWBarycenter(
                C[g],
                p_bar,
                fit_width(res.plan[sel], n_g),  # type: ignore[index]
                (fit_width(res.potentials[0][sel], n_g), res.potentials[1][sel]),
                res.value[sel],
                it,
                converged,
            )
            finished.append(g)
        if finished:
            keep = ~torch.isin(member_group, torch.tensor(finished, device=dev))
            live, chunks = live[keep], None
            if live.numel() == 0:
                break
    return out  # type: ignore[return-value]


def update_structure(Cs: Tensor, plans: Tensor, weights: Tensor, p_bar: Tensor) -> Tensor:
    """Square-loss barycenter update ``Σ_s λ_s T_sᵀ C_s T_s / (p̄ p̄ᵀ)``.

    Parameters
    ----------
    Cs : Tensor of shape (S, n, n)
        Member structures (zero-padded).
    plans : Tensor of shape (S, n, N)
        Couplings member × barycenter (zero on padded rows).
    weights : Tensor of shape (S,)
    p_bar : Tensor of shape (N,)

    Returns
    -------
    Tensor of shape (N, N)
    """
    n_members, n, n_support = plans.shape
    left = torch.bmm((plans * weights[:, None, None]).transpose(1, 2), Cs)  # (S, N, n)
    total = left.transpose(0, 1).reshape(n_support, n_members * n)
    total = total @ plans.reshape(n_members * n, n_support)
    return total / torch.outer(p_bar, p_bar)
