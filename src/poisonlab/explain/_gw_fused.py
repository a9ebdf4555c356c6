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
dtype (the helpers inlined: compiled separately, the copy numba loaded from its cache computed
other round-off than the freshly compiled one), to numba's on-disk cache: about 17 s the first
time on a machine, then ~0.5 s per process.

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
from numba import types
from numba.extending import overload
from torch import Tensor

from poisonlab.explain._newton_ot import ABSORB, ARMIJO, NEWTON_MAX_STEPS
from poisonlab.explain._sinkhorn import PAD_COST

__all__ = ["solve"]

#: numba's fast-math flags that keep NaN and inf semantics (the line search rejects NaN
#: trials): contraction to FMA, reassociation (vectorised sums), reciprocal multiplication.
_FASTMATH = {"contract", "reassoc", "arcp", "nsz"}

# Positions in the constants array (one array in the problems' dtype, so that the compiled
# arithmetic stays in that dtype: a Python float would promote float32 to float64).
(_ZERO, _ONE, _HALF, _TWO, _FOUR, _EPS, _INV_EPS, _NEG_INV_EPS, _TINY3, _LOG_TINY1, _ABSORB,
 _ARMIJO, _ULPS, _PAD, _INF, _BIG, _STEP_CAP) = range(17)  # fmt: skip


def _constants(dtype: np.dtype, epsilon: float) -> np.ndarray:
    info = np.finfo(dtype)
    tiny = float(info.tiny)
    values = {
        _ZERO: 0.0,
        _ONE: 1.0,
        _HALF: 0.5,
        _TWO: 2.0,
        _FOUR: 4.0,
        _EPS: epsilon,
        _INV_EPS: 1.0 / epsilon,
        _NEG_INV_EPS: -1.0 / epsilon,
        _TINY3: 3 * tiny,
        _LOG_TINY1: math.log(tiny) + 1.0,
        _ABSORB: ABSORB,
        _ARMIJO: ARMIJO,
        _ULPS: 16 * float(info.eps),
        _PAD: PAD_COST,
        _INF: math.inf,
        _BIG: float(info.max),
        _STEP_CAP: ABSORB * epsilon,
    }
    return np.array([values[k] for k in range(len(values))], dtype=dtype)


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


def _exp_into(src, dst, tmp, bits, n, cst):  # type: ignore[no-untyped-def]
    """``dst[:n]`` = the kernel's exp of ``src[:n]`` (``src`` may be ``dst``), as
    :func:`~poisonlab.explain._sinkhorn._exp_`: arguments clamped at ``log(tiny) + 1``, results
    up to ``3·tiny`` set to 0, NaN kept.  Implemented per dtype below (compiled only)."""
    raise NotImplementedError("compiled only")


@overload(_exp_into, jit_options={"fastmath": _FASTMATH})
def _exp_into_impl(src, dst, tmp, bits, n, cst):  # type: ignore[no-untyped-def]
    if src.dtype == types.float32:
        # float32: a polynomial exp the compiler vectorises (the C library's expf, a call per
        # element, took 6x longer here): x = k ln 2 + r (Cody–Waite), |r| <= ln 2 / 2,
        # exp(r) by its Taylor polynomial of degree 7 (truncation 5e-9, below the last bit),
        # and 2^k from the exponent bits.  Measured on [log(3 tiny), 0]: at most 4.5 ulp
        # (mean 1.4) from the exact value, against 2.4 (0.5) for the C library's expf.
        def exp32(src, dst, tmp, bits, n, cst):  # type: ignore[no-untyped-def]
            scale = bits.view(np.float32)
            lo, hi = cst[_LOG_TINY1], np.float32(88.0)
            for i in range(n):
                x = src[i]
                x = lo if x < lo else x
                x = hi if x > hi else x
                k = np.floor(x * np.float32(1.4426950408889634) + np.float32(0.5))
                r = x - k * np.float32(0.693145751953125)
                r = r - k * np.float32(1.428606765330187e-06)
                e = np.float32(1.0 / 5040)
                e = e * r + np.float32(1.0 / 720)
                e = e * r + np.float32(1.0 / 120)
                e = e * r + np.float32(1.0 / 24)
                e = e * r + np.float32(1.0 / 6)
                e = e * r + np.float32(0.5)
                e = e * r + np.float32(1.0)
                e = e * r + np.float32(1.0)
                tmp[i] = e
                bits[i] = (np.int32(k) + np.int32(127)) << np.int32(23)
            for i in range(n):
                x = src[i]
                y = tmp[i] * scale[i]
                y = cst[_ZERO] if y <= cst[_TINY3] else y
                y = cst[_INF] if x > np.float32(88.72) else y
                dst[i] = x if x != x else y

        return exp32

    def exp64(src, dst, tmp, bits, n, cst):  # type: ignore[no-untyped-def]
        for i in range(n):
            dst[i] = _kernel_exp(src[i], cst)

    return exp64


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _kernel_exp(x, cst):  # type: ignore[no-untyped-def]
    """One kernel entry's exp (:func:`_exp_into`), by the C library."""
    if x < cst[_LOG_TINY1]:
        x = cst[_LOG_TINY1]
    y = math.exp(x)
    if y <= cst[_TINY3]:
        y = cst[_ZERO]
    return y


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


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _rereference(M, a, log_a, K, f0, g0, h, n, m, cst, work, tmp, bits):  # type: ignore[no-untyped-def]
    """``_Newton.reset`` for one problem: reference ``g0 + h``, ``h = 0``, ``f0`` making every
    kernel row sum to ``a`` (a log-sum-exp per row); returns the objective at ``h = 0``."""
    eps, inv, zero = cst[_EPS], cst[_INV_EPS], cst[_ZERO]
    for j in range(m):
        g0[j] = g0[j] + h[j]
        h[j] = zero
    top = f0  # the rows' largest exponents (f0 is rewritten at the end)
    for i in range(n):
        top[i] = -cst[_INF]
    for j in range(m):
        for i in range(n):
            v = (g0[j] - M[j, i]) * inv
            top[i] = v if v > top[i] else top[i]
    total = work
    for i in range(n):
        total[i] = zero
    for j in range(m):
        row = K[j]
        for i in range(n):
            row[i] = (g0[j] - M[j, i]) * inv - top[i]
        _exp_into(row, row, tmp, bits, n, cst)
        for i in range(n):
            total[i] += row[i]
    F = zero
    shift = work
    for i in range(n):
        if a[i] > 0:
            s = log_a[i] - (top[i] + math.log(total[i]))
            F += a[i] * log_a[i]
        else:
            s = zero
        shift[i] = s
    for j in range(m):
        row = K[j]
        for i in range(n):
            row[i] = (g0[j] - M[j, i]) * inv + shift[i]
        _exp_into(row, row, tmp, bits, n, cst)
        for i in range(n):
            row[i] = row[i] if a[i] > 0 else zero
    for i in range(n):
        f0[i] = eps * shift[i]
    return -eps * F


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _trial(K, a, b, pad_a, h, d, t, e, kv, u, col, grad, log_kv, h_try, n, m, cst):  # type: ignore[no-untyped-def]
    """``_Newton.trial`` for one problem at ``h + t d``: fills the scalings, the column sums
    and the gradient; returns the gradient's norm, the objective and ``max |h + t d|``."""
    inv, zero = cst[_INV_EPS], cst[_ZERO]
    for j in range(m):
        h_try[j] = h[j] + t * d[j]
        e[j] = math.exp(h_try[j] * inv)
    for i in range(n):
        kv[i] = pad_a[i]
    for j in range(m):
        for i in range(n):
            kv[i] += e[j] * K[j, i]
    Fa = zero
    for i in range(n):
        u[i] = a[i] / kv[i]
        log_kv[i] = math.log(kv[i])
        Fa += a[i] * log_kv[i]
    err, Fb, largest = zero, zero, zero
    for j in range(m):
        s = zero
        for i in range(n):
            s += u[i] * K[j, i]
        col[j] = s * e[j]
        grad[j] = b[j] - col[j]
        err += grad[j] * grad[j]
        Fb += b[j] * h_try[j]
        largest = max(largest, abs(h_try[j]))
    return math.sqrt(err), Fb - cst[_EPS] * Fa, largest


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _cholesky_solve(H, rhs, out, m):  # type: ignore[no-untyped-def]
    """Solve ``H x = rhs`` by Cholesky in place (lower triangle); False if ``H`` is not
    positive definite (a pivot ≤ 0 or NaN, as LAPACK's potrf reports)."""
    for j in range(m):
        s = H[j, j]
        for k in range(j):
            s -= H[j, k] * H[j, k]
        if not s > 0:
            return False
        s = math.sqrt(s)
        H[j, j] = s
        for i in range(j + 1, m):
            v = H[i, j]
            for k in range(j):
                v -= H[i, k] * H[j, k]
            H[i, j] = v / s
    for i in range(m):
        v = rhs[i]
        for k in range(i):
            v -= H[i, k] * out[k]
        out[i] = v / H[i, i]
    for i in range(m - 1, -1, -1):
        v = out[i]
        for k in range(i + 1, m):
            v -= H[k, i] * out[k]
        out[i] = v / H[i, i]
    return True


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _log_sinkhorn(M, a, b, f, g, tol, max_sweeps, n, m, cst, P):  # type: ignore[no-untyped-def]
    """Sinkhorn in the log domain from ``f, g`` (columns then rows, so rows are exact) until
    the column-marginal L2 error is below ``tol``: the fallback of a problem Newton did not
    finish.  Writes the plan to ``P``; returns the sweeps run."""
    eps, inv, zero = cst[_EPS], cst[_INV_EPS], cst[_ZERO]
    sweeps = max_sweeps
    for sweep in range(max_sweeps):
        for j in range(m):
            if b[j] > 0:
                top = -cst[_INF]
                for i in range(n):
                    if a[i] > 0:
                        top = max(top, (f[i] - M[j, i]) * inv)
                s = zero
                for i in range(n):
                    if a[i] > 0:
                        s += math.exp((f[i] - M[j, i]) * inv - top)
                g[j] = eps * (math.log(b[j]) - top - math.log(s))
            else:
                g[j] = zero
        for i in range(n):
            if a[i] > 0:
                top = -cst[_INF]
                for j in range(m):
                    if b[j] > 0:
                        top = max(top, (g[j] - M[j, i]) * inv)
                s = zero
                for j in range(m):
                    if b[j] > 0:
                        s += math.exp((g[j] - M[j, i]) * inv - top)
                f[i] = eps * (math.log(a[i]) - top - math.log(s))
            else:
                f[i] = zero
        err = zero
        for j in range(m):
            s = zero
            for i in range(n):
                if a[i] > 0 and b[j] > 0:
                    s += math.exp((f[i] + g[j] - M[j, i]) * inv)
            err += (b[j] - s) * (b[j] - s)
        if math.sqrt(err) < tol:
            sweeps = sweep + 1
            break
    for j in range(m):
        for i in range(n):
            real = a[i] > 0 and b[j] > 0
            P[j, i] = _kernel_exp((f[i] + g[j] - M[j, i]) * inv, cst) if real else zero
    return sweeps


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _newton(M, a, b, f, g, warm, tol, sk_max, n, m, cst, K, H, vec, bits, P):  # type: ignore[no-untyped-def]
    """:func:`~poisonlab.explain._newton_ot.newton_semidual` for one problem with transposed
    costs ``M`` (m × n): the plan goes to ``P`` (m × n), the potentials to ``f`` and ``g``
    (read as the warm start when ``warm``); returns the steps (plus fallback sweeps)."""
    eps, inv, zero, one = cst[_EPS], cst[_INV_EPS], cst[_ZERO], cst[_ONE]
    pad_a, log_a, f0, kv, u, log_kv, work, tmp = (
        vec[0], vec[1], vec[2], vec[3], vec[4], vec[5], vec[6], vec[7],
    )  # fmt: skip
    g0, h, d, e, col, grad, h_try, step_d, diag = (
        vec[8], vec[9], vec[10], vec[11], vec[12], vec[13], vec[14], vec[15], vec[16],
    )  # fmt: skip
    if not warm:  # initial_potentials: row minima of M, then column minima of M - f
        for i in range(n):
            v = cst[_BIG]
            for j in range(m):
                if b[j] > 0 and M[j, i] < v:
                    v = M[j, i]
            f[i] = v if a[i] > 0 else zero
        for j in range(m):
            v = cst[_BIG]
            for i in range(n):
                if a[i] > 0 and M[j, i] - f[i] < v:
                    v = M[j, i] - f[i]
            g[j] = v if b[j] > 0 else zero
    for i in range(n):
        real = a[i] > 0
        pad_a[i] = zero if real else one
        log_a[i] = math.log(a[i]) if real else zero
        f0[i] = f[i] if real else zero
    # gauge terms: mean column mass on the real columns' all-ones block, a ridge of a few
    # ulps of it, 1 on padded columns' diagonal (gauge_terms)
    mass, n_real = zero, zero
    for j in range(m):
        g0[j] = g[j] if b[j] > 0 else zero
        h[j], d[j] = zero, zero
        mass += b[j]
        n_real += one if b[j] > 0 else zero
    mass = mass / max(n_real, one)
    for j in range(m):
        row = K[j]
        for i in range(n):
            row[i] = (f0[i] + g0[j]) * inv + M[j, i] * cst[_NEG_INV_EPS]
        _exp_into(row, row, tmp, bits, n, cst)
    F, slope, t = zero, zero, one
    first, checked = True, False
    for step in range(NEWTON_MAX_STEPS):
        err, F_try, largest = _trial(
            K, a, b, pad_a, h, d, t, e, kv, u, col, grad, log_kv, h_try, n, m, cst
        )
        if not checked:  # a warm kernel badly scaled (row sums beyond a·e^±ABSORB, or NaN)
            checked = True
            bad = False
            for i in range(n):
                if not abs(log_kv[i] - log_a[i]) <= cst[_ABSORB]:
                    bad = True
            if bad:
                F = _rereference(M, a, log_a, K, f0, g0, h, n, m, cst, work, tmp, bits)
                first = True
                err, F_try, largest = _trial(
                    K, a, b, pad_a, h, d, t, e, kv, u, col, grad, log_kv, h_try, n, m, cst
                )
        met = err < tol
        if first:  # the starting point itself
            first, accept = False, True
        else:  # Armijo on the concave objective, up to its round-off, or meeting tol
            slack = cst[_ULPS] * (eps + largest)
            accept = F + cst[_ARMIJO] * t * slope - slack <= F_try or met
        if accept:
            for j in range(m):
                h[j] = h_try[j]
            F, t = F_try, one
        else:
            t = cst[_HALF] * t
        if accept and met:
            for i in range(n):
                f[i] = f0[i] + eps * (log_a[i] - log_kv[i])
            for j in range(m):
                g[j] = g0[j] + h_try[j]
                for i in range(n):
                    P[j, i] = K[j, i] * e[j] * u[i]
            return step + 1
        if accept:  # Newton direction: (diag(col) - diag(e) Kᵀ diag(u / Ke) K diag(e)) d = ε ∇F
            for i in range(n):
                work[i] = u[i] / kv[i]
            for j in range(m):
                for l in range(j + 1):  # noqa: E741
                    s = zero
                    for i in range(n):
                        s += K[j, i] * (K[l, i] * work[i])
                    s = s * e[j] * e[l]
                    both = b[j] > 0 and b[l] > 0
                    gauge = mass if both else zero
                    if j == l:
                        ridge = mass * cst[_ULPS] if b[j] > 0 else one
                        H[j, j] = col[j] - s + (gauge + ridge)
                    else:
                        H[j, l] = gauge - s
                        H[l, j] = H[j, l]
            for j in range(m):
                diag[j] = H[j, j]
            if not _cholesky_solve(H, grad, step_d, m):  # indefinite by round-off: Jacobi
                for j in range(m):
                    step_d[j] = grad[j] / diag[j]
            cap = cst[_ABSORB]  # no potential moves by more than ABSORB·ε in one step
            for j in range(m):
                cap = max(cap, abs(step_d[j]))
            scale = cst[_STEP_CAP] / cap
            slope = zero
            for j in range(m):
                d[j] = step_d[j] * scale
                slope += grad[j] * d[j]
        largest = zero
        for j in range(m):
            largest = max(largest, abs(h[j]))
        if largest > cst[_STEP_CAP]:  # the reference absorbs the offsets
            F = _rereference(M, a, log_a, K, f0, g0, h, n, m, cst, work, tmp, bits)
    # not met within NEWTON_MAX_STEPS: Sinkhorn from the accepted point's potentials
    for i in range(n):
        kv[i] = pad_a[i]
    for j in range(m):
        e[j] = math.exp(h[j] * inv)
        for i in range(n):
            kv[i] += e[j] * K[j, i]
    for i in range(n):
        f[i] = f0[i] + eps * (log_a[i] - math.log(kv[i]))
    for j in range(m):
        g[j] = g0[j] + h[j]
    return NEWTON_MAX_STEPS + _log_sinkhorn(M, a, b, f, g, tol, sk_max, n, m, cst, P)


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
