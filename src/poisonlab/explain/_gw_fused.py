"""Entropic GW with Newton inner solves, one problem at a time in compiled loops (numba), on CPU.

:func:`~poisonlab.explain.gromov.entropic_gw` runs every outer iteration of a batch as a dozen
batched tensor calls over ``(B, n, m)`` tensors: for Heatmap Clustering's thousand clouds of
~60 points against 10-point barycenters these tensors are several MB (out of the cache), and
the slowest problems of a batch iterate on alone, each iteration paying the calls' dispatch.
Here a compiled loop takes one problem at a time through its whole outer loop, every array
of it (a few KB) staying in the L1 cache, so an outer iteration costs its arithmetic only:
measured 5.6-9 µs per outer iteration on the cold k-means++ distances of 1,000 clouds of 31-93
points against a 10-point space (float32, one thread) where the batched tensor calls took
15-31 µs, and a warm Lloyd update of Heatmap Clustering's k-means 2.7× cheaper; with the loops
vectorised (whole padded rows, the gradient's products as vector code, below) 0.17 CPU-s per
warm update where the tensor calls took 0.96 (bench/results/gromov.md).

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
within 4e-14 (relative).  In float32 the two differ by round-off (other summation orders, a
polynomial exp for the kernel, within 5 ulp where the C library's is within 2, and a polynomial
log in the Newton trials, within 0.52 ulp where the C library's is within 0.81), which the
stopping rules turn into an iteration more or less on slowly drifting problems: on Heatmap
Clustering's thousand clouds the same assignments and distances within 6e-6 of the tensor
path's (median; up to 6e-3 where the barycenter that stops unconverged takes another path,
itself 9e-3 from a tightly converged one).

Used by ``entropic_gw`` on CPU tensors of float32 or float64 with Newton inner solves when
numba is importable; the tensor path stays the reference (and the GPU path).  Every problem
runs to its own end, so nothing is ever parked.  The loops are compiled as one function per
dtype (the helpers inlined, among them the inner solve of
:mod:`~poisonlab.explain._gw_fused_newton`: compiled separately, the copy numba loaded from its
cache computed other round-off than the freshly compiled one), to numba's on-disk cache: 20-24 s
per dtype the first time on a machine (measured on the project machine), then ~0.5 s per
process.  Its cache key covers the inlined code of other files through a closure value
(:func:`_compiled_loops`).

References
----------
Peyré, Cuturi, Solomon, "Gromov–Wasserstein averaging of kernel and distance matrices", ICML 2016.
Cuturi, Peyré, "A smoothed dual approach for variational Wasserstein problems", SIAM J. Imaging
Sci. 9(1), 2016.
Schmitzer, "Stabilized sparse scaling algorithms for entropy regularized transport problems",
SIAM J. Sci. Comput. 41(3), 2019.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
from torch import Tensor

from poisonlab import progress
from poisonlab.explain._gw_fused_newton import (
    _ERRORS,
    _FASTMATH,
    _FOUR,
    _HALF,
    _INF,
    _PAD,
    _TWO,
    _ZERO,
    _constants,
    _newton,
    _row_terms,
)
from poisonlab.explain._newton_ot import ABSORB, ARMIJO, NEWTON_MAX_STEPS
from poisonlab.explain._sinkhorn import PAD_COST

__all__ = ["solve", "solve_rows"]


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
    rows = torch.zeros(batch, 5, dtype=torch.int64)
    every = torch.arange(batch)
    for col, (x, dims) in enumerate(((C1, 3), (p, 2), (C2, 3), (q, 2))):
        if x.dim() == dims:
            rows[:, col] = every
    value, plan, n_iter, converged, f, g, capped, _ = solve_rows(
        C1 if C1.dim() == 3 else C1.unsqueeze(0),
        p if p.dim() == 2 else p.unsqueeze(0),
        C2 if C2.dim() == 3 else C2.unsqueeze(0),
        q if q.dim() == 2 else q.unsqueeze(0),
        rows,
        epsilon=epsilon,
        max_iter=max_iter,
        tol=tol,
        T0=None if T0 is None else T0.expand(batch, *T0.shape[-2:]),
        potentials=None
        if potentials is None
        else (potentials[0].expand(batch, -1), potentials[1].expand(batch, -1)),
        sinkhorn_max_iter=sinkhorn_max_iter,
        sinkhorn_tol=sinkhorn_tol,
        inexact=inexact,
        check_every=check_every,
        value_rtol=value_rtol,
    )
    return value, plan, n_iter, converged, f, g, capped


def solve_rows(
    C1: Tensor,
    p: Tensor,
    C2: Tensor,
    q: Tensor,
    rows: Tensor,
    *,
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
    weights: Tensor | None = None,
    groups: int = 0,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, int, Tensor | None]:
    """:func:`solve` for problems given as rows of stores, read in place (no copies).

    Problem ``b`` pairs ``C1[rows[b, 0]]`` (stores of shapes (S, n, n), zero-padded clouds)
    with masses ``p[rows[b, 1]]`` and ``C2[rows[b, 2]]`` (R, m, m) with ``q[rows[b, 3]]``.
    ``T0`` (B, ≥ n, m) and ``potentials`` (B, ≥ n) and (B, m) are the warm starts in problem
    order.  With ``weights`` (B,): also the barycenter update's sums
    ``Σ_b λ_b T_bᵀ C1_b T_b`` of the final plans per group ``rows[b, 4]`` in ``range(groups)``.

    Returns
    -------
    value, plan, n_iter, converged, f, g, capped
        As :func:`solve`, plans (B, n, m) and ``f`` (B, n).
    total : Tensor of shape (groups, m, m) or None
        The barycenter sums (with ``weights``).
    """
    batch, n, m = rows.shape[0], C1.shape[-1], C2.shape[-1]
    dt = C1.dtype
    plan = torch.empty(batch, n, m, dtype=dt) if T0 is None else _fit(T0, n)
    if potentials is None:
        f, g = torch.empty(batch, n, dtype=dt), torch.empty(batch, m, dtype=dt)
    else:
        f = _fit(potentials[0], n)
        g = potentials[1].clone(memory_format=torch.contiguous_format)
    C1n, C2n = C1.contiguous().numpy(), C2.contiguous().numpy()
    dtype = C1n.dtype
    value = np.empty(batch, dtype=dtype)
    n_iter = np.empty(batch, dtype=np.int64)
    converged = np.empty(batch, dtype=np.bool_)
    capped = np.zeros(1, dtype=np.int64)
    total = torch.zeros(groups, m, m, dtype=dt)
    lam = torch.empty(0, dtype=dt) if weights is None else weights.contiguous()
    args = (
        C1n,
        p.contiguous().numpy(),
        C2n,
        q.contiguous().numpy(),
        rows.contiguous().numpy(),
        plan.numpy(),
        f.numpy(),
        g.numpy(),
        T0 is not None,
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
        lam.numpy(),
        total.numpy(),
    )
    _ensure_compiled(args)
    _solve_batch(*args)
    as_torch = torch.from_numpy
    return (
        as_torch(value),
        plan,
        as_torch(n_iter),
        as_torch(converged),
        f,
        g,
        int(capped[0]),
        None if weights is None else total,
    )


def _ensure_compiled(args: tuple[object, ...]) -> None:
    """Compile the loops for these argument types, or load them from numba's cache, before the
    solve, in a progress stage of its own: a machine's first use compiles for ~20 s, which
    would otherwise show as a silent pause of the stage that solves."""
    signature = tuple(numba.typeof(a) for a in args)
    if signature in _solve_batch.overloads:
        return
    dtype = args[0].dtype  # type: ignore[attr-defined]
    stage = f"GW solver: loops for {dtype} (compiled on a machine's first use, then cached)"
    with progress.bar(stage, 1) as step:
        _solve_batch.compile(signature)
        step.advance()


def _fit(x: Tensor, n: int) -> Tensor:
    """A contiguous copy of ``x`` (B, w, ...) cut or zero-padded to ``n`` along dimension 1."""
    out = x.new_zeros(x.shape[0], n, *x.shape[2:])
    w = min(n, x.shape[1])
    out[:, :w] = x[:, :w]
    return out


# --- compiled loops -----------------------------------------------------------------------
# Layout: per problem, plans, costs and kernels are stored transposed, (m, n): every inner loop
# then runs over the n points of the cloud, contiguous, which vectorises.  Each problem gets its
# own compact arrays (rows of a multiple of 16 entries) and a copy of its cloud: read in place
# from a wide store (the clouds padded to the largest), a problem's working set spilled out of
# the L1 cache and a warm Heatmap Clustering update took 0.306 CPU-s of solves instead of 0.28.
# The loops run over whole rows, past the n points on padding that leaves every result unchanged
# (zero distances and plan, PAD_COST in the costs, so a zero kernel): the compiler's 16-wide
# vector loops take 64 entries at a time, and rows cut at n (58 at the median) ran in its 8-wide
# remainder loop.  With that, IEEE division (_ERRORS: numba's check of each division kept its
# loops scalar), loop-invariant reads held in locals and a vectorised float32 log, a warm Heatmap
# Clustering update took 0.29 -> 0.24 CPU-s (locked A/B, 7 December 2026, labels equal).


def _rows_product(rows: int):  # type: ignore[no-untyped-def]
    """A compiled-only ``product(A, B, out, j, p)``: ``out[j:j+rows, :w] = A[j:j+rows, :p] @
    B[:p, :w]`` with ``w = out.shape[1]``, a multiple of 16 (rows C-contiguous, float32 or
    float64), written as vector code (LLVM IR) that keeps each row's 16 (float64: 8) sums in a
    register over the whole ``k`` loop, one fused multiply-add per entry of ``A`` (where
    the CPU has FMA; else a multiply and an add, as numba's loops).

    numba's loops cannot: every store to ``out`` may alias the arrays read, so the compiler
    reloads and re-stores the sums at every step and checks the rows' overlap before each pass.
    The gradient ``C1 T C2`` took 2.3x longer that way (float32, m = 10, summed over n = 31-93;
    0.8 µs at n = 58).  The sums run over ``k`` in order, one rounding per multiply-add, as
    the compiler ordered numba's loops: the results are bitwise those of the loops."""

    @intrinsic
    def product(typingctx, A, B, out, j, p):  # type: ignore[no-untyped-def]
        arrays = (A, B, out)
        if not all(isinstance(x, types.Array) and x.ndim == 2 and x.layout == "C" for x in arrays):
            return None
        if A.dtype not in (types.float32, types.float64) or not A.dtype == B.dtype == out.dtype:
            return None

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            dtype = signature.args[0].dtype
            real = context.get_value_type(dtype)
            intp = context.get_value_type(types.intp)
            lanes = 16 if dtype == types.float32 else 8
            vector = ir.VectorType(real, lanes)
            # fmuladd, not fma: one rounding where the CPU has FMA (as numba's contracted loops),
            # a multiply and an add where it has none (llvm.fma called the C library's fmaf
            # there, per entry: 55 µs per product instead of 0.66 with FMA, 5.8 for the loops)
            fma = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(vector, [vector] * 3),
                f"llvm.fmuladd.v{lanes}f{32 if lanes == 16 else 64}",
            )
            a, b, o = (
                context.make_array(t)(context, builder, v)
                for t, v in zip(signature.args[:3], args[:3], strict=True)
            )
            first, depth = args[3], args[4]
            size = ir.Constant(intp, context.get_abi_sizeof(real))
            byte = ir.IntType(8).as_pointer()

            def at(arr, r, c, ty):  # type: ignore[no-untyped-def]
                step = builder.extract_value(arr.strides, 0)
                offset = builder.add(builder.mul(r, step), builder.mul(c, size))
                return builder.bitcast(builder.gep(builder.bitcast(arr.data, byte), [offset]), ty)

            def const(v):  # type: ignore[no-untyped-def]
                return ir.Constant(intp, v)

            zero = ir.Constant(vector, [ir.Constant(real, 0.0)] * lanes)
            undef = ir.Constant(vector, ir.Undefined)
            splat = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
            sums = [cgutils.alloca_once(builder, vector) for _ in range(rows)]  # registers
            chunks = builder.udiv(builder.extract_value(o.shape, 1), const(lanes))
            with cgutils.for_range(builder, chunks, intp=intp) as chunk:
                i0 = builder.mul(chunk.index, const(lanes))
                for acc in sums:
                    builder.store(zero, acc)
                with cgutils.for_range(builder, depth, intp=intp) as step:
                    k = step.index
                    row = builder.load(at(b, k, i0, vector.as_pointer()), align=4)
                    for r, acc in enumerate(sums):
                        x = builder.load(at(a, builder.add(first, const(r)), k, real.as_pointer()))
                        x = builder.insert_element(undef, x, ir.Constant(ir.IntType(32), 0))
                        x = builder.shuffle_vector(x, undef, splat)
                        builder.store(builder.call(fma, [x, row, builder.load(acc)]), acc)
                for r, acc in enumerate(sums):
                    target = at(o, builder.add(first, const(r)), i0, vector.as_pointer())
                    builder.store(builder.load(acc), target, align=4)
            return context.get_dummy_value()

        return types.void(A, B, out, types.intp, types.intp), codegen

    return product


_product5, _product2, _product1 = _rows_product(5), _rows_product(2), _rows_product(1)


@intrinsic
def _prefetch(typingctx, X, r, c):  # type: ignore[no-untyped-def]
    """Ask the CPU to fetch the cache line of ``X[r, c]`` (a C-contiguous matrix) ahead of its
    use (``llvm.prefetch``, for reading, into every cache level); no effect on results."""
    if not (isinstance(X, types.Array) and X.ndim == 2 and X.layout == "C"):
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        arr = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, signature.args[0], arr, args[1:])
        i32 = ir.IntType(32)
        byte = ir.IntType(8).as_pointer()
        fetch = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte, i32, i32, i32]), "llvm.prefetch"
        )
        flags = [ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)]
        builder.call(fetch, [builder.bitcast(ptr, byte), *flags])
        return context.get_dummy_value()

    return types.void(X, types.intp, types.intp), codegen


@numba.njit(cache=True, fastmath=_FASTMATH, error_model=_ERRORS, inline="always")
def _times(A, B, out, m, p):  # type: ignore[no-untyped-def]
    """``out[:m] = A[:m, :p] @ B[:p]`` over ``out``'s whole rows (:func:`_rows_product`), rows
    5, then 2, then 1 at a time."""
    j = 0
    while j + 5 <= m:
        _product5(A, B, out, j, p)
        j += 5
    while j + 2 <= m:
        _product2(A, B, out, j, p)
        j += 2
    while j < m:
        _product1(A, B, out, j, p)
        j += 1


@numba.njit(cache=True, fastmath=_FASTMATH, error_model=_ERRORS, inline="always")
def _gradient(C, T, C2, base, R, M, n, m, cst):  # type: ignore[no-untyped-def]
    """``M = base - 4 C2 (T C)`` for a transposed plan ``T`` (m × n) and symmetric ``C``
    (n × n), ``C2`` (m × m): the transposed gradient, ``R = T C`` left for the caller.  Rows
    run over their full width ``w`` (a multiple of 16): ``C``'s columns past ``n`` hold zeros,
    which leave ``M = base`` there."""
    _times(T, C, R, m, n)
    _times(C2, R, M, m, m)
    four = cst[_FOUR]
    for j in range(m):
        for i in range(R.shape[1]):
            M[j, i] = base[j, i] - four * M[j, i]


@numba.njit(cache=True, fastmath=_FASTMATH, error_model=_ERRORS, inline="always")
def _loss(M, T, m, cst):  # type: ignore[no-untyped-def]
    """``gromov.gw_loss`` of a transposed plan ``T`` from its gradient ``M`` (:func:`_gradient`):
    ``<M, T> / 2``.  ``M`` holds PAD_COST on padded points where ``gw_loss`` has their plain
    marginal terms: the plans of the solves are 0 there."""
    s = cst[_ZERO]
    for j in range(m):
        for i in range(T.shape[1]):
            s += M[j, i] * T[j, i]
    return cst[_HALF] * s


def _compiled_loops(digest: str):  # type: ignore[no-untyped-def]
    """``_solve_batch`` as a closure over ``digest``, the source digest of what it compiles in
    from other files (:func:`_foreign_digest`).

    numba's disk cache tells a stale entry only by this file's time stamp and the function's own
    bytecode (and closure values): an edit of the inlined inner solve in
    :mod:`~poisonlab.explain._gw_fused_newton` alone would otherwise load loops compiled from
    the old code.  The digest, a closure value, is part of every cache key."""

    @numba.njit(cache=True, fastmath=_FASTMATH, error_model=_ERRORS)
    def _solve_batch(  # type: ignore[no-untyped-def]
        C1, p, C2, q, rows, plan, f, g, start, warm, cst, max_iter, check_every, value_rtol,
        inexact, tol, sk_tol, sk_max, value, n_iter, converged, capped, lam, total,
    ):  # fmt: skip
        """``entropic_gw``'s outer loop, problem by problem.  Problem ``b`` pairs ``C1[rows[b, 0]]``
        (stores of shapes (S, N, N) and ``p`` (S', N)) with masses ``p[rows[b, 1]]`` and
        ``C2[rows[b, 2]]`` (R, M, M) with masses ``q[rows[b, 3]]``; ``plan`` (B, N, M) holds the
        starting plans (if ``start``; else ``p qᵀ``) and receives the final ones, ``f`` and ``g``
        (B, N) and (B, M) likewise the potentials.  Each problem runs on its real points only (the
        last row and column with mass bound them; zero-mass points inside are padded as in
        ``entropic_gw``, by PAD_COST).  With ``lam`` (B,), the barycenter update's sum
        ``λ_b T_bᵀ C1_b T_b`` of the final plans goes to ``total[rows[b, 4]]`` (G, M, M)."""
        digest  # noqa: B018  (the cache key: see _compiled_loops)
        B, N, Mw = plan.shape
        dt = plan.dtype
        zero = cst[_ZERO]
        H = np.empty((Mw, Mw), dt)
        wide = (max(N, Mw) + 15) // 16 * 16  # the widest row of a problem
        c1, c2 = np.empty(wide, dt), np.empty(Mw, dt)
        vec = np.empty((18, wide), dt)
        bits = np.empty(wide, np.int32)
        f_b, g_b = np.empty(N, dt), np.empty(Mw, dt)
        for b in range(B):
            C_in, pb, C2b, qb = C1[rows[b, 0]], p[rows[b, 1]], C2[rows[b, 2]], q[rows[b, 3]]
            n, m = 0 * N, 0 * Mw  # (not the literal 0: callees would compile twice)
            for i in range(N):
                n = i + 1 if pb[i] > 0 else n
            for j in range(Mw):
                m = j + 1 if qb[j] > 0 else m
            if b + 1 < B:  # the next problem's cloud (read from memory), while this one solves
                p_next, n_next = p[rows[b + 1, 1]], 0 * N
                for i in range(N):
                    n_next = i + 1 if p_next[i] > 0 else n_next
                C_next = C1[rows[b + 1, 0]]
                for k in range(n_next):
                    for i in range(0, n_next, 64 // C1.itemsize):
                        _prefetch(C_next, k, i)
                    _prefetch(C_next, k, n_next - 1)  # (rows need not start a line)
            # the problem's arrays, rows of a multiple of 16 entries (64-byte lines), compact: with
            # its cloud copied in, it stays in the L1 cache whatever the width of the store.  The
            # loops run over whole rows, past n on padding (zero distances, zero plan, PAD_COST)
            w = (n + 15) // 16 * 16
            Cb = np.empty((n, w), dt)
            for k in range(n):
                for i in range(n):
                    Cb[k, i] = C_in[k, i]
                for i in range(n, w):
                    Cb[k, i] = zero
            T, T_new, R, M, base, K = (
                np.empty((Mw, w), dt),
                np.empty((Mw, w), dt),
                np.empty((Mw, w), dt),
                np.empty((Mw, w), dt),
                np.empty((Mw, w), dt),
                np.empty((Mw, w), dt),
            )
            # POT's marginal terms pᵀ (C1 ⊙ C1) and qᵀ (C2 ⊙ C2); PAD_COST on padded points
            for i in range(n):
                s = zero
                for k in range(n):  # (C1 symmetric: along a row, not a strided column)
                    s += pb[k] * (Cb[i, k] * Cb[i, k])
                c1[i] = s if pb[i] > 0 else cst[_PAD]
            for i in range(n, w):
                c1[i] = cst[_PAD]
            for j in range(m):
                s = zero
                for k in range(m):
                    s += qb[k] * (C2b[k, j] * C2b[k, j])
                c2[j] = s if qb[j] > 0 else cst[_PAD]
            for j in range(m):
                for i in range(w):
                    base[j, i] = (c1[i] + c2[j]) * cst[_TWO]
                for i in range(n):
                    T[j, i] = plan[b, i, j] if start else pb[i] * qb[j]
                for i in range(n, w):
                    T[j, i] = zero
                    T_new[j, i] = zero
            _row_terms(pb, vec, n, w, cst)
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
                    new_loss = _loss(M, T, m, cst)
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
                    for i in range(w):
                        diff = T_new[j, i] - T[j, i]
                        s += diff * diff
                step = math.sqrt(s)
                T, T_new = T_new, T
                if it % check_every == 0 and step <= tol:
                    iters, conv = it + 1, True
                    break
            if not by_value:  # stopped by the plan test or max_iter: the loss of the last plan
                _gradient(Cb, T, C2b, base, R, M, n, m, cst)
                val = _loss(M, T, m, cst)
            value[b], n_iter[b], converged[b] = val, iters, conv
            if lam.shape[0] > 0:  # the barycenter update's share of this member: λ Tᵀ C1 T, where
                # R = T C1 of the final plan is left by its gradient (the value test's or the loss's)
                out = total[rows[b, 4]]
                for j in range(m):
                    for l in range(m):  # noqa: E741
                        s = zero
                        for i in range(w):
                            s += R[j, i] * T[l, i]
                        out[j, l] += lam[b] * s
            plan[b] = zero
            f[b] = zero
            g[b] = zero
            for i in range(n):
                for j in range(m):
                    plan[b, i, j] = T[j, i]
                f[b, i] = f_b[i] if pb[i] > 0 else zero
            for j in range(m):
                g[b, j] = g_b[j] if qb[j] > 0 else zero

    return _solve_batch


def _foreign_digest() -> str:
    """SHA-256 of the source of :mod:`~poisonlab.explain._gw_fused_newton` and of the values
    the compiled code freezes from other modules (everything it reads outside this file)."""
    from poisonlab.explain import _gw_fused_newton

    digest = hashlib.sha256(Path(_gw_fused_newton.__file__).read_bytes())
    digest.update(repr((NEWTON_MAX_STEPS, ABSORB, ARMIJO, PAD_COST)).encode())
    return digest.hexdigest()


_solve_batch = _compiled_loops(_foreign_digest())
