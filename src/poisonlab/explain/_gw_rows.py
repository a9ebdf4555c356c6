"""Many clouds against their second spaces by the fused solver, read in place (no size chunks).

:mod:`~poisonlab.explain.gw_batches` cuts a workload into size chunks, each a padded copy of
its clouds, so that batched tensor calls waste little on padding and stay within a memory
budget.  The fused solver (:mod:`~poisonlab.explain._gw_fused`) runs every problem alone on its
own points, so it needs neither: here the clouds are read where they are, by row, and the
couplings' share of a barycenter update (``Σ λ Tᵀ C T``) is summed as each problem finishes.
Same iterations and values as the chunked path (to round-off in the barycenter sums: another
summation order than the batched matrix products).  On a warm Heatmap Clustering k-means update
this saves the chunks' copies and the barycenter's products (bench/results/gromov.md).
"""

from __future__ import annotations

import functools
import inspect

import torch
from torch import Tensor

from poisonlab.explain._gw_checks import check_values
from poisonlab.explain.gromov import (
    INNER_SOLVERS,
    NEWTON_MAX_POINTS,
    GWResult,
    _default_outer_tol,
    _default_tol,
    _fused_unavailable,
    entropic_gw,
    log_capped,
    totals_match,
)
from poisonlab.explain.point_cloud import PointClouds, fit_width

__all__ = ["fused_settings", "solve_sources", "stack_sources"]

#: The settings of ``entropic_gw`` that the fused solver takes (others: the chunked path).
_SETTINGS = (
    "max_iter",
    "tol",
    "sinkhorn_max_iter",
    "sinkhorn_tol",
    "inexact",
    "check_every",
    "value_rtol",
)


@functools.cache
def _defaults() -> dict[str, object]:
    """``entropic_gw``'s defaults, read from its signature (one source of truth)."""
    params = inspect.signature(entropic_gw).parameters
    return {name: params[name].default for name in (*_SETTINGS, "inner", "fused")}


def fused_settings(
    tensors: tuple[Tensor | None, ...],
    masses: tuple[tuple[Tensor, ...], Tensor],
    epsilon: float,
    solver: dict[str, object],
) -> dict[str, object] | None:
    """``entropic_gw``'s settings for :func:`solve_sources` when ``entropic_gw`` would solve
    problems of these ``tensors`` (clouds, second spaces, warm starts) with these ``masses``
    (the clouds' masses, the second spaces' masses (R, m)) by its fused path, else None (also
    for settings it does not take or would reject: the chunked path decides)."""
    given = _defaults() | solver
    if set(solver) - {*_SETTINGS, "inner", "fused"} or given["fused"] is False:
        return None
    inner, m = given["inner"], masses[1].shape[-1]
    if inner not in INNER_SOLVERS or not epsilon > 0:
        return None
    counts = (given["max_iter"], given["sinkhorn_max_iter"], given["check_every"])
    if any(not isinstance(c, int) or c < 1 for c in counts):
        return None
    newton = inner == "newton" or (inner == "auto" and m <= NEWTON_MAX_POINTS)
    if _fused_unavailable(newton, None, tensors):
        return None
    dtype = next(x for x in tensors if x is not None).dtype
    sk_tol = _default_tol(dtype) if given["sinkhorn_tol"] is None else given["sinkhorn_tol"]
    if not totals_match(masses[0], masses[1], sk_tol):  # type: ignore[arg-type]
        return None
    out = {name: given[name] for name in _SETTINGS}
    if out["tol"] is None:
        out["tol"] = _default_outer_tol(dtype)
    if out["sinkhorn_tol"] is None:
        out["sinkhorn_tol"] = _default_tol(dtype)
    return out


def stack_sources(
    sources: list[PointClouds], which: Tensor, index: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """One store ``(C, p)`` holding the clouds ``index[i]`` of ``sources[which[i]]`` and their
    rows in it: the one source itself if all are one object (read in place), else one padded
    copy of the distinct sources."""
    distinct: dict[int, int] = {}
    kept: list[PointClouds] = []
    for s in sources:
        if id(s) not in distinct:
            distinct[id(s)] = len(kept)
            kept.append(s)
    if len(kept) == 1:
        return sources[0].C, sources[0].p, index
    width = max(s.n_max for s in kept)
    C = torch.cat([fit_width(s.C, width, 2) for s in kept])
    p = torch.cat([fit_width(s.p, width) for s in kept])
    starts = torch.tensor([0] + [len(s) for s in kept[:-1]]).cumsum(0)
    slot = torch.tensor([distinct[id(s)] for s in sources])
    return C, p, starts[slot][which] + index


def solve_sources(
    store: tuple[Tensor, Tensor],
    rows: Tensor,
    spaces: Tensor,
    masses: Tensor,
    space_rows: Tensor,
    *,
    mass_rows: Tensor | None = None,
    epsilon: float,
    settings: dict[str, object],
    T0: Tensor | None = None,
    potentials: tuple[Tensor, Tensor] | None = None,
    weights: Tensor | None = None,
    groups: Tensor | None = None,
    n_groups: int = 0,
) -> tuple[GWResult, Tensor | None]:
    """Entropic GW of the pairs (cloud ``rows[i]`` of ``store = (C, p)``, space
    ``spaces[space_rows[i]]`` with masses ``masses[mass_rows[i]]``, by default
    ``masses[space_rows[i]]``), by the fused solver, the clouds read in place.

    ``settings`` come from :func:`fused_settings`; ``T0`` (P, ≥ n, m) and ``potentials`` are
    warm starts in pair order.  With ``weights`` (P,) and ``groups`` (P,) in
    ``range(n_groups)``: also ``Σ λ_i T_iᵀ C_i T_i`` per group, shape (n_groups, m, m).
    Plans and first potentials of the result are as wide as the store.
    """
    all_rows = torch.stack(
        [
            rows,
            rows,
            space_rows,
            space_rows if mass_rows is None else mass_rows,
            torch.zeros_like(rows) if groups is None else groups,
        ],
        dim=1,
    )
    from poisonlab.explain import _gw_fused

    value, plan, n_iter, converged, f, g, capped, total = _gw_fused.solve_rows(
        store[0],
        store[1],
        spaces,
        masses,
        all_rows,
        epsilon=epsilon,
        T0=T0,
        potentials=potentials,
        weights=weights,
        groups=n_groups,
        **settings,  # type: ignore[arg-type]
    )
    log_capped(capped, settings["sinkhorn_max_iter"])  # type: ignore[arg-type]
    check_values(
        value,
        n_iter,
        epsilon=epsilon,
        spaces=(store[0], store[1], spaces, masses),
        name=lambda b: f"problem {b} (cloud row {int(rows[b])}, space {int(space_rows[b])})",
    )
    return GWResult(value, plan, n_iter, converged, (f, g)), total
