"""The inner solve of :mod:`~poisonlab.explain._gw_fused`: one entropic OT problem by Newton's
method on the semi-dual, with its Sinkhorn fallback, as numba functions inlined into the outer loop.

:func:`_newton` is :func:`~poisonlab.explain._newton_ot.newton_semidual` for one problem (Cuturi
& Peyré 2016): the damped Newton method with its Armijo line search, step cap, Hessian gauge
terms, Jacobi fallback, warm-kernel check and re-referencing (``ABSORB``, Schmitzer 2019); a
problem Newton leaves unsolved after :data:`~poisonlab.explain._newton_ot.NEWTON_MAX_STEPS`
steps is finished by Sinkhorn in the log domain from Newton's potentials (:func:`_log_sinkhorn`).
Every function here is compiled with ``inline="always"``: numba inlines them into
``_gw_fused._solve_batch``, which is compiled as one function per dtype (compiled separately,
the copy numba loaded from its cache computed other round-off than the freshly compiled one).
numba's on-disk cache key of ``_solve_batch`` covers this module through a digest of its source
(``_gw_fused._compiled_loops``): an edit here compiles the loops afresh.

Also the constants both modules share: the fast-math flags and the constants array (one array in
the problems' dtype, so that the compiled arithmetic stays in that dtype).

References
----------
Cuturi, Peyré, "A smoothed dual approach for variational Wasserstein problems", SIAM J. Imaging
Sci. 9(1), 2016.
Schmitzer, "Stabilized sparse scaling algorithms for entropy regularized transport problems",
SIAM J. Sci. Comput. 41(3), 2019.
"""

from __future__ import annotations

import math
from typing import Final

import numba
import numpy as np
from numba import types
from numba.extending import overload

from poisonlab.explain._newton_ot import ABSORB, ARMIJO, NEWTON_MAX_STEPS
from poisonlab.explain._sinkhorn import PAD_COST

#: numba's fast-math flags that keep NaN and inf semantics (the line search rejects NaN
#: trials): contraction to FMA, reassociation (vectorised sums), reciprocal multiplication.
_FASTMATH = {"contract", "reassoc", "arcp", "nsz"}

#: numba's error model: IEEE results for a division by zero (inf or NaN, as the tensor path's),
#: where numba's default checks every division to raise ZeroDivisionError, a branch that kept
#: the compiler from vectorising any loop with a division in it.
_ERRORS: Final = "numpy"

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


# Layout: per problem, plans, costs and kernels are stored transposed, (m, n): every inner loop
# then runs over the n points of the cloud, contiguous, which vectorises.


def _exp_into(src, dst, tmp, bits, n, cst):  # type: ignore[no-untyped-def]
    """``dst[:n]`` = the kernel's exp of ``src[:n]`` (``src`` may be ``dst``), as
    :func:`~poisonlab.explain._sinkhorn._exp_`: arguments clamped at ``log(tiny) + 1``, results
    up to ``3·tiny`` set to 0, NaN kept.  Implemented per dtype below (compiled only)."""
    raise NotImplementedError("compiled only")


@overload(_exp_into, jit_options={"fastmath": _FASTMATH, "error_model": _ERRORS})
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
            zero, tiny3, inf = cst[_ZERO], cst[_TINY3], cst[_INF]  # (read in a loop, they
            # would be read again after every store to dst: no vector loop)
            for i in range(n):
                x_in = src[i]
                x = lo if x_in < lo else x_in
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
                e = inf if x_in > np.float32(88.72) else e  # (inf · 2^k = inf)
                tmp[i] = x_in if x_in != x_in else e  # NaN kept (NaN · 2^k = NaN)
                bits[i] = (np.int32(k) + np.int32(127)) << np.int32(23)
            # (src is not read here: in place, the compiler's overlap check of src and dst
            # failed and this loop ran scalar)
            for i in range(n):
                y = tmp[i] * scale[i]
                dst[i] = zero if y <= tiny3 else y

        return exp32

    def exp64(src, dst, tmp, bits, n, cst):  # type: ignore[no-untyped-def]
        for i in range(n):
            dst[i] = _kernel_exp(src[i], cst)

    return exp64


def _log_into(src, dst, bits, n):  # type: ignore[no-untyped-def]
    """``dst[:n] = log(src[:n])`` (``src`` not ``dst``), as the C library's: ``-inf`` at 0,
    NaN below, inf and NaN kept.  Implemented per dtype below (compiled only)."""
    raise NotImplementedError("compiled only")


@overload(_log_into, jit_options={"fastmath": _FASTMATH, "error_model": _ERRORS})
def _log_into_impl(src, dst, bits, n):  # type: ignore[no-untyped-def]
    if src.dtype == types.float32:
        # float32: a log the compiler vectorises (the C library's logf, a call per element, was
        # 2.5x slower here): x = 2^k m with m in [√½, √2) from the bits (subnormals scaled by
        # 2^23 first), log m = 2 atanh(s) with s = (m - 1) / (m + 1), |s| < 0.172, by its series
        # to s^9 in float64 (truncation 3e-10 relative), then rounded to float32.  Measured on
        # 3 million arguments in [e^-80, e^10]: at most 0.52 ulp from the exact value (mean
        # 0.25), against 0.81 (0.25) for the C library's logf.
        def log32(src, dst, bits, n):  # type: ignore[no-untyped-def]
            tiny = np.float32(1.1754943508222875e-38)  # the smallest normal float32
            for i in range(n):
                x = src[i]
                dst[i] = x * np.float32(8388608.0) if x < tiny else x
            word = dst.view(np.int32)
            mantissa = bits.view(np.float32)
            for i in range(n):
                bits[i] = (word[i] & np.int32(0x007FFFFF)) | np.int32(0x3F800000)
            inf = np.float32(np.inf)
            for i in range(n):
                x = src[i]
                k = np.float64((word[i] >> np.int32(23)) - np.int32(127))
                k = k - 23.0 if x < tiny else k
                m = np.float64(mantissa[i])
                big = m > 1.4142135623730951
                m = 0.5 * m if big else m
                k = k + 1.0 if big else k
                s = (m - 1.0) / (m + 1.0)
                z = s * s
                y = 1.0 / 9
                y = y * z + 1.0 / 7
                y = y * z + 1.0 / 5
                y = y * z + 1.0 / 3
                y = y * z + 1.0
                v = np.float32(k * 0.6931471805599453 + (s + s) * y)
                v = -inf if x == np.float32(0.0) else v
                v = x if not x < inf else v  # inf, NaN
                dst[i] = np.float32(np.nan) if x < np.float32(0.0) else v

        return log32

    def log64(src, dst, bits, n):  # type: ignore[no-untyped-def]
        for i in range(n):
            dst[i] = math.log(src[i])

    return log64


@numba.njit(cache=True, fastmath=_FASTMATH, error_model=_ERRORS, inline="always")
def _kernel_exp(x, cst):  # type: ignore[no-untyped-def]
    """One kernel entry's exp (:func:`_exp_into`), by the C library."""
    if x < cst[_LOG_TINY1]:
        x = cst[_LOG_TINY1]
    y = math.exp(x)
    if y <= cst[_TINY3]:
        y = cst[_ZERO]
    return y


@numba.njit(cache=True, fastmath=_FASTMATH, error_model=_ERRORS, inline="always")
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


@numba.njit(cache=True, fastmath=_FASTMATH, error_model=_ERRORS, inline="always")
def _trial(K, a, b, pad_a, h, d, t, e, kv, u, col, grad, log_kv, h_try, m, cst, bits):  # type: ignore[no-untyped-def]
    """``_Newton.trial`` for one problem at ``h + t d``: fills the scalings, the column sums
    and the gradient; returns the gradient's norm, the objective and ``max |h + t d|``.  Rows
    run over the kernel's whole width, padding past the points (``a`` 0, ``pad_a`` 1, kernel 0)."""
    inv, zero = cst[_INV_EPS], cst[_ZERO]
    w = K.shape[1]
    for j in range(m):
        h_try[j] = h[j] + t * d[j]
        e[j] = math.exp(h_try[j] * inv)
    for i in range(w):
        kv[i] = pad_a[i]
    for j in range(m):
        ej = e[j]
        for i in range(w):
            kv[i] += ej * K[j, i]
    for i in range(w):
        u[i] = a[i] / kv[i]
    _log_into(kv, log_kv, bits, w)
    Fa = zero
    for i in range(w):
        Fa += a[i] * log_kv[i]
    err, Fb, largest = zero, zero, zero
    for j in range(m):
        s = zero
        for i in range(w):
            s += u[i] * K[j, i]
        col[j] = s * e[j]
        grad[j] = b[j] - col[j]
        err += grad[j] * grad[j]
        Fb += b[j] * h_try[j]
        largest = max(largest, abs(h_try[j]))
    return math.sqrt(err), Fb - cst[_EPS] * Fa, largest


@numba.njit(cache=True, fastmath=_FASTMATH, error_model=_ERRORS, inline="always")
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


@numba.njit(cache=True, fastmath=_FASTMATH, error_model=_ERRORS, inline="always")
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


@numba.njit(cache=True, fastmath=_FASTMATH, error_model=_ERRORS, inline="always")
def _row_terms(a, vec, n, w, cst):  # type: ignore[no-untyped-def]
    """The terms of the row masses ``a`` that every inner solve of a problem reads, computed
    once per problem, over rows of width ``w`` (past ``n``: padding): ``vec[0]`` 1 on padded
    points (else 0), ``vec[1]`` ``log a`` (0 on padded points), ``vec[17]`` ``a`` (0 past ``n``)."""
    zero, one = cst[_ZERO], cst[_ONE]
    for i in range(n):
        real = a[i] > 0
        vec[0, i] = zero if real else one
        vec[1, i] = math.log(a[i]) if real else zero
        vec[17, i] = a[i]
    for i in range(n, w):
        vec[0, i], vec[1, i], vec[17, i] = one, zero, zero


@numba.njit(cache=True, fastmath=_FASTMATH, error_model=_ERRORS, inline="always")
def _newton(M, a, b, f, g, warm, tol, sk_max, n, m, cst, K, H, vec, bits, P):  # type: ignore[no-untyped-def]
    """:func:`~poisonlab.explain._newton_ot.newton_semidual` for one problem with transposed
    costs ``M`` (m × w, rows padded past the n points with at least PAD_COST): the plan goes to
    ``P`` (m × w, its padding zero and kept zero), the potentials to ``f`` and ``g`` (read as the
    warm start when ``warm``); returns the steps (plus fallback sweeps).  ``vec``
    holds the work rows, ``vec[0]``, ``vec[1]`` and ``vec[17]`` filled by :func:`_row_terms`
    for ``a``."""
    eps, inv, zero, one = cst[_EPS], cst[_INV_EPS], cst[_ZERO], cst[_ONE]
    w = K.shape[1]  # rows run over the whole width where padding leaves results unchanged
    a_w = vec[17]
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
        f0[i] = f[i] if a[i] > 0 else zero
    for i in range(n, w):
        f0[i] = zero
    # gauge terms: mean column mass on the real columns' all-ones block, a ridge of a few
    # ulps of it, 1 on padded columns' diagonal (gauge_terms)
    mass, n_real = zero, zero
    for j in range(m):
        g0[j] = g[j] if b[j] > 0 else zero
        h[j], d[j] = zero, zero
        mass += b[j]
        n_real += one if b[j] > 0 else zero
    mass = mass / max(n_real, one)
    neg_inv = cst[_NEG_INV_EPS]
    for j in range(m):  # (0 past n: M is PAD_COST there)
        row, gj = K[j], g0[j]
        for i in range(w):
            row[i] = (f0[i] + gj) * inv + M[j, i] * neg_inv
        _exp_into(row, row, tmp, bits, w, cst)
    F, slope, t = zero, zero, one
    first, checked = True, False
    for step in range(NEWTON_MAX_STEPS):
        err, F_try, largest = _trial(
            K, a_w, b, pad_a, h, d, t, e, kv, u, col, grad, log_kv, h_try, m, cst, bits
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
                    K, a_w, b, pad_a, h, d, t, e, kv, u, col, grad, log_kv, h_try, m, cst, bits
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
                ej = e[j]
                for i in range(w):
                    P[j, i] = K[j, i] * ej * u[i]
            return step + 1
        if accept:  # Newton direction: (diag(col) - diag(e) Kᵀ diag(u / Ke) K diag(e)) d = ε ∇F
            for i in range(w):
                work[i] = u[i] / kv[i]
            for j in range(m):
                for l in range(j + 1):  # noqa: E741
                    s = zero
                    for i in range(w):
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
