"""Entropic GW with Newton inner solves, one problem at a time in compiled loops (numba), on CPU.

:func:`~poisonlab.explain.gromov.entropic_gw` runs every outer iteration of a batch as a dozen
batched tensor calls over ``(B, n, m)`` tensors: for Heatmap Clustering's thousand clouds of
~60 points against 10-point barycenters these tensors are several MB (out of the cache), and
the slowest problems of a batch iterate on alone, each iteration paying the calls' dispatch.
Here a compiled loop takes one problem at a time through its whole outer loop, every array
of it (a few KB) staying in the L1 cache, so an outer iteration costs its arithmetic only:
measured 5.6-9 µs per outer iteration on the cold k-means++ distances of 1,000 clouds of 31-93
points against a 10-point space (float32, one thread) where the batched tensor calls took
15-31 µs, and a warm Lloyd update of Heatmap Clustering's k-means 2.7× cheaper
(bench/results/gromov.md).

The algorithm and every stopping rule are those of ``entropic_gw`` with ``inner="newton"``
(Peyré, Cuturi & Solomon 2016, Prop. 2; Newton on the semi-dual of Cuturi & Peyré 2016 as in
:mod:`~poisonlab.explain._newton_ot`): the start ``p qᵀ`` or ``T0``, the gradient
``2 (c1 1ᵀ + 1 c2ᵀ - 2 C1 T C2)`` with :data:`~poisonlab.explain._sinkhorn.PAD_COST` on padded
points, the value test (``value_rtol``), the inexact inner tolerances, the plan test every
``check_every`` iterations and ``max_iter``; each inner solve is the damped Newton method with
its Armijo line search, step cap, Hessian gauge terms, Jacobi fallback, warm-kernel check and
re-referencing (``ABSORB``, Schmitzer 2019), and a problem Newton leaves unsolved after
:data:`~poisonlab.explain._newton_ot.NEWTON_MAX_STEPS` steps is finished by Sinkhorn in the log
domain from Newton's potentials, to the same criterion.  Measured on the problems of a Heatmap
Clustering run in float64: every outer iteration count equal to the tensor path's, values
within 4e-14 (relative).  In float32 the two differ by round-off (other summation orders, and
a polynomial exp for the kernel, within 5 ulp where the C library's is within 2), which the
stopping rules turn into an iteration more or less on slowly drifting problems: on Heatmap
Clustering's thousand clouds the same assignments and distances within 6e-6 of the tensor
path's (median; up to 6e-3 where the barycenter that stops unconverged takes another path,
itself 9e-3 from a tightly converged one).

Used by ``entropic_gw`` on CPU tensors of float32 or float64 with Newton inner solves when
numba is importable; the tensor path stays the reference (and the GPU path).  Every problem
runs to its own end, so nothing is ever parked.  The loops are compiled as one function per
dtype (the helpers inlined, among them the inner solve of
:mod:`~poisonlab.explain._gw_fused_newton`: compiled separately, the copy numba loaded from its
cache computed other round-off than the freshly compiled one), to numba's on-disk cache: about
17 s the first time on a machine, then ~0.5 s per process.

References
----------
Peyré, Cuturi, Solomon, "Gromov–Wasserstein averaging of kernel and distance matrices", ICML 2016.
Cuturi, Peyré, "A smoothed dual approach for variational Wasserstein problems", SIAM J. Imaging
Sci. 9(1), 2016.
Schmitzer, "Stabilized sparse scaling algorithms for entropy regularized transport problems",
SIAM J. Sci. Comput. 41(3), 2019.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from torch import Tensor

from poisonlab.explain._gw_fused_newton import (
    _FASTMATH,
    _FOUR,
    _HALF,
    _INF,
    _PAD,
    _TWO,
    _ZERO,
    _constants,
    _newton,
)
from poisonlab.explain._newton_ot import NEWTON_MAX_STEPS

__all__ = ["solve"]


def solve(
    C1: Tensor,
    p: Tensor,
    C2: Tensor,
    q: Tensor,
    *,
    batch: int,
    epsilon: float,
    max_iter: int,
    tol: float,
    T0: Tensor | None,
    potentials: tuple[Tensor, Tensor] | None,
    sinkhorn_max_iter: int,
    sinkhorn_tol: float,
    inexact: float,
    check_every: int,
    value_rtol: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, int]:
    """The ``batch`` problems of :func:`~poisonlab.explain.gromov.entropic_gw` (arguments
    checked there; CPU, float32 or float64), solved one by one with the same iterations.

    Returns
    -------
    value, plan, n_iter, converged, f, g : Tensor
        As ``GWResult``'s fields (potentials ``f`` and ``g``).
    capped : int
        Inner solves whose Sinkhorn fallback stopped at ``sinkhorn_max_iter`` sweeps.
    """
    n, m = C1.shape[-1], C2.shape[-1]
    p = p.expand(batch, n).contiguous()
    q = q.expand(batch, m).contiguous()
    if T0 is None:
        plan = p.unsqueeze(2) * q.unsqueeze(1)
    else:
        plan = T0.expand(batch, n, m).clone(memory_format=torch.contiguous_format)
    if potentials is None:
        f, g = p.new_zeros(batch, n), q.new_zeros(batch, m)
    else:
        f = potentials[0].expand(batch, n).clone(memory_format=torch.contiguous_format)
        g = potentials[1].expand(batch, m).clone(memory_format=torch.contiguous_format)
    C1n = (C1 if C1.dim() == 3 else C1.unsqueeze(0)).contiguous().numpy()
    C2n = (C2 if C2.dim() == 3 else C2.unsqueeze(0)).contiguous().numpy()
    dtype = C1n.dtype
    value = np.empty(batch, dtype=dtype)
    n_iter = np.empty(batch, dtype=np.int64)
    converged = np.empty(batch, dtype=np.bool_)
    capped = np.zeros(1, dtype=np.int64)
    _solve_batch(
        C1n,
        p.numpy(),
        C2n,
        q.numpy(),
        plan.numpy(),
        f.numpy(),
        g.numpy(),
        potentials is not None,
        _constants(dtype, epsilon),
        int(max_iter),
        int(check_every),
        dtype.type(value_rtol),
        dtype.type(inexact),
        dtype.type(tol),
        dtype.type(sinkhorn_tol),
        int(sinkhorn_max_iter),
        value,
        n_iter,
        converged,
        capped,
    )
    as_torch = torch.from_numpy
    return as_torch(value), plan, as_torch(n_iter), as_torch(converged), f, g, int(capped[0])


# --- compiled loops -----------------------------------------------------------------------
# Layout: per problem, plans, costs and kernels are stored transposed, (m, n): every inner loop
# then runs over the n points of the cloud, contiguous, which vectorises.


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _gradient(C, T, C2, base, R, M, n, m, cst):  # type: ignore[no-untyped-def]
    """``M = base - 4 C2 (T C)`` for a transposed plan ``T`` (m × n) and symmetric ``C``
    (n × n), ``C2`` (m × m): the transposed gradient.  Blocked by 4 rows of ``C`` and 2 of
    ``T`` so that each pass over a row of ``R`` does 8 multiply-adds (2x faster)."""
    zero = cst[_ZERO]
    for j in range(m):
        for i in range(n):
            R[j, i] = zero
    k = 0
    while k + 4 <= n:
        j = 0
        while j + 2 <= m:
            a0, a1, a2, a3 = T[j, k], T[j, k + 1], T[j, k + 2], T[j, k + 3]
            b0, b1, b2, b3 = T[j + 1, k], T[j + 1, k + 1], T[j + 1, k + 2], T[j + 1, k + 3]
            for i in range(n):
                c0, c1, c2, c3 = C[k, i], C[k + 1, i], C[k + 2, i], C[k + 3, i]
                R[j, i] += a0 * c0 + a1 * c1 + a2 * c2 + a3 * c3
                R[j + 1, i] += b0 * c0 + b1 * c1 + b2 * c2 + b3 * c3
            j += 2
        while j < m:
            a0, a1, a2, a3 = T[j, k], T[j, k + 1], T[j, k + 2], T[j, k + 3]
            for i in range(n):
                R[j, i] += a0 * C[k, i] + a1 * C[k + 1, i] + a2 * C[k + 2, i] + a3 * C[k + 3, i]
            j += 1
        k += 4
    while k < n:
        for j in range(m):
            t = T[j, k]
            for i in range(n):
                R[j, i] += t * C[k, i]
        k += 1
    four = cst[_FOUR]
    for j in range(m):
        for i in range(n):
            M[j, i] = zero
        l = 0  # noqa: E741
        while l + 4 <= m:
            c0, c1, c2, c3 = C2[j, l], C2[j, l + 1], C2[j, l + 2], C2[j, l + 3]
            for i in range(n):
                M[j, i] += c0 * R[l, i] + c1 * R[l + 1, i] + c2 * R[l + 2, i] + c3 * R[l + 3, i]
            l += 4  # noqa: E741
        while l < m:
            c0 = C2[j, l]
            for i in range(n):
                M[j, i] += c0 * R[l, i]
            l += 1  # noqa: E741
        for i in range(n):
            M[j, i] = base[j, i] - four * M[j, i]


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _gw_loss(C, C2, T, c1, c2, R, n, m, cst):  # type: ignore[no-untyped-def]
    """``<c1 1ᵀ + 1 c2ᵀ - 2 C1 T C2, T>`` (``gromov.gw_loss``) of a transposed plan."""
    zero = cst[_ZERO]
    for j in range(m):
        for i in range(n):
            R[j, i] = zero
    for j in range(m):
        for k in range(n):
            t = T[j, k]
            for i in range(n):
                R[j, i] += t * C[k, i]
    value = zero
    for j in range(m):
        for i in range(n):
            s = zero
            for l in range(m):  # noqa: E741
                s += C2[j, l] * R[l, i]
            value += (c1[i] + c2[j] - cst[_TWO] * s) * T[j, i]
    return value


@numba.njit(cache=True, fastmath=_FASTMATH)
def _solve_batch(  # type: ignore[no-untyped-def]
    C1, p, C2, q, plan, f, g, warm, cst, max_iter, check_every, value_rtol, inexact, tol,
    sk_tol, sk_max, value, n_iter, converged, capped,
):  # fmt: skip
    """``entropic_gw``'s outer loop, problem by problem.  ``C1`` (B or 1, N, N), ``C2``
    (B or 1, M, M); ``plan`` (B, N, M) holds the starting plans and receives the final ones,
    ``f`` and ``g`` likewise the potentials.  Each problem runs on its real points only (the
    last row and column with mass bound them; zero-mass points inside are padded as in
    ``entropic_gw``, by PAD_COST)."""
    B, N, Mw = plan.shape
    dt = plan.dtype
    zero = cst[_ZERO]
    T, T_new = np.empty((Mw, N), dt), np.empty((Mw, N), dt)
    R, M, base, K = (
        np.empty((Mw, N), dt),
        np.empty((Mw, N), dt),
        np.empty((Mw, N), dt),
        np.empty((Mw, N), dt),
    )
    H = np.empty((Mw, Mw), dt)
    c1, c1_raw, c2, c2_raw = np.empty(N, dt), np.empty(N, dt), np.empty(Mw, dt), np.empty(Mw, dt)
    vec = np.empty((17, max(N, Mw)), dt)
    bits = np.empty(max(N, Mw), np.int32)
    f_b, g_b = np.empty(N, dt), np.empty(Mw, dt)
    for b in range(B):
        Cb = C1[b if C1.shape[0] > 1 else 0]
        C2b = C2[b if C2.shape[0] > 1 else 0]
        pb, qb = p[b], q[b]
        n, m = 0 * N, 0 * Mw  # (not the literal 0: callees would compile twice)
        for i in range(N):
            n = i + 1 if pb[i] > 0 else n
        for j in range(Mw):
            m = j + 1 if qb[j] > 0 else m
        # POT's marginal terms pᵀ (C1 ⊙ C1) and qᵀ (C2 ⊙ C2); PAD_COST on padded points
        for i in range(n):
            s = zero
            for k in range(n):
                s += pb[k] * (Cb[k, i] * Cb[k, i])
            c1_raw[i] = s
            c1[i] = s if pb[i] > 0 else cst[_PAD]
        for j in range(m):
            s = zero
            for k in range(m):
                s += qb[k] * (C2b[k, j] * C2b[k, j])
            c2_raw[j] = s
            c2[j] = s if qb[j] > 0 else cst[_PAD]
        for j in range(m):
            for i in range(n):
                base[j, i] = (c1[i] + c2[j]) * cst[_TWO]
                T[j, i] = plan[b, i, j]
        for i in range(n):
            f_b[i] = f[b, i]
        for j in range(m):
            g_b[j] = g[b, j]
        have_potentials = warm
        step, loss = cst[_INF], cst[_INF]
        val, iters, conv, by_value = zero, max_iter, False, False
        for it in range(max_iter):
            _gradient(Cb, T, C2b, base, R, M, n, m, cst)
            if value_rtol > 0 and it > 0:  # the loss of T falls out of its gradient
                s = zero
                for j in range(m):
                    for i in range(n):
                        s += M[j, i] * T[j, i]
                new_loss = cst[_HALF] * s
                done = abs(new_loss - loss) <= value_rtol * abs(new_loss)
                loss = new_loss
                if done:
                    val, iters, conv, by_value = new_loss, it, True, True
                    break
            if check_every > 1:
                exact = it % check_every == 0 or it % check_every == check_every - 1
            else:
                exact = it == 0
            if inexact <= 0 or exact or it == max_iter - 1:
                tol_in = sk_tol
            else:
                tol_in = max(inexact * step, sk_tol)
            steps = _newton(
                M, pb, qb, f_b, g_b, have_potentials, tol_in, sk_max, n, m, cst, K, H, vec, bits,
                T_new,
            )  # fmt: skip
            have_potentials = True
            if steps >= NEWTON_MAX_STEPS + sk_max:
                capped[0] += 1
            s = zero
            for j in range(m):
                for i in range(n):
                    diff = T_new[j, i] - T[j, i]
                    s += diff * diff
            step = math.sqrt(s)
            T, T_new = T_new, T
            if it % check_every == 0 and step <= tol:
                iters, conv = it + 1, True
                break
        if not by_value:  # stopped by the plan test or max_iter: the loss of the last plan
            val = _gw_loss(Cb, C2b, T, c1_raw, c2_raw, R, n, m, cst)
        value[b], n_iter[b], converged[b] = val, iters, conv
        plan[b] = zero
        f[b] = zero
        g[b] = zero
        for i in range(n):
            for j in range(m):
                plan[b, i, j] = T[j, i]
            f[b, i] = f_b[i] if pb[i] > 0 else zero
        for j in range(m):
            g[b, j] = g_b[j] if qb[j] > 0 else zero
