"""Whether :func:`~poisonlab.explain.gromov.entropic_gw` hands a batch to the fused solver
(:mod:`poisonlab.explain._gw_fused`, compiled by numba), and the hand-over itself.

Apart from the tensor path so that the conditions of the fused path (Newton inner solves, CPU,
one float dtype, numba, matching mass totals) stand together; :mod:`~poisonlab.explain._gw_rows`
applies the same ones.
"""

from __future__ import annotations

import functools
import importlib
import logging

import torch
from torch import Tensor

from poisonlab.explain._gw_checks import check_values
from poisonlab.explain._gw_state import GWResult, GWState

# entropic_gw's messages, under the name of the module its users import
logger = logging.getLogger("poisonlab.explain.gromov")


@functools.cache
def _numba_missing() -> str:
    """What the fused solver's compiled loops lack here ("" if nothing): numba itself, or a
    folder numba can write its cache to (the module's ``__pycache__`` or the user's cache
    folder; without one numba refuses ``cache=True`` functions when the module is imported).
    Imported only when a solve needs it; the tensor path solves otherwise."""
    try:
        importlib.import_module("poisonlab.explain._gw_fused")
    except ImportError:
        return "numba installed"
    except RuntimeError as error:  # numba's "cannot cache function ...: no locator available"
        logger.warning(
            "the GW solver runs on its tensor path, about 3x slower: numba found no writable "
            "folder for its compiled loops (%s); set NUMBA_CACHE_DIR to a writable folder",
            error,
        )
        return "a folder numba can write its cache to (NUMBA_CACHE_DIR)"
    return ""


def totals_match(firsts: tuple[Tensor, ...], q: Tensor, tol: float) -> bool:
    """Whether every mass total of ``firsts`` (tensors of masses, last dimension the points)
    agrees with every total of ``q`` closely enough for an inner solve to meet ``tol``.

    With the rows of a plan exact its column errors sum to ``Σp - Σq``, so their L2 norm is at
    least ``|Σp - Σq| / √m``: beyond that no Newton step meets the tolerance, and the fused
    path (:mod:`~poisonlab.explain._gw_fused`) would finish every inner solve by its plain
    log-domain Sinkhorn, slower than the tensor path's stabilised one where the gap is a
    round-off (float64 masses normalised in float32, totals ~1e-7 apart: 200 clouds at the
    clustering settings 1.2 CPU-s fused, 0.54 on the tensor path), so ``entropic_gw`` gives
    such problems to the tensor path.  (Totals 1.001 apart, every inner solve running its whole
    sweep budget: the fused fallback was the faster there, 7.0 against 11.2 CPU-s.)
    """
    sums = torch.cat([x.reshape(-1, x.shape[-1]).sum(-1) for x in firsts])
    other = q.reshape(-1, q.shape[-1]).sum(-1)
    gap = torch.maximum(sums.max() - other.min(), other.max() - sums.min())
    return bool(gap < tol * q.shape[-1] ** 0.5)


def _fused_unavailable(newton: bool, resume: GWState | None, tensors: tuple) -> str:
    """Why :mod:`~poisonlab.explain._gw_fused` cannot solve these problems ("" if it can)."""
    if not newton:
        return "Newton inner solves (inner='newton', or 'auto' with a small second space)"
    if resume is not None:
        return "no resume state (it finishes every problem, so nothing is ever parked)"
    kinds = {(x.device.type, x.dtype) for x in tensors if x is not None}
    if len(kinds) != 1 or next(iter(kinds)) not in {
        ("cpu", torch.float32),
        ("cpu", torch.float64),
    }:
        return "CPU tensors of one dtype, float32 or float64"
    return _numba_missing()


def _solve_fused(C1: Tensor, p: Tensor, C2: Tensor, q: Tensor, **kw: object) -> GWResult:
    """:func:`~poisonlab.explain.gromov.entropic_gw` by :func:`poisonlab.explain._gw_fused.solve`."""
    from poisonlab.explain import _gw_fused

    value, plan, n_iter, converged, f, g, capped = _gw_fused.solve(C1, p, C2, q, **kw)  # type: ignore[arg-type]
    log_capped(capped, kw["sinkhorn_max_iter"])  # type: ignore[arg-type]
    check_values(value, n_iter, epsilon=kw["epsilon"], spaces=(C1, p, C2, q))  # type: ignore[arg-type]
    return GWResult(value, plan, n_iter, converged, (f, g))


def log_capped(capped: int, sinkhorn_max_iter: int) -> None:
    """Log how many inner solves stopped at the Sinkhorn budget (none: nothing)."""
    if capped:
        logger.info(
            "%d inner Sinkhorn solves stopped at sinkhorn_max_iter=%d (POT warns 'Sinkhorn did "
            "not converge' there too); a larger epsilon converges faster",
            capped,
            sinkhorn_max_iter,
        )
