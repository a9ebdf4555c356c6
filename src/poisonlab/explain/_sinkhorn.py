"""Batched, stabilised Sinkhorn–Knopp for the inner problems of entropic Gromov–Wasserstein.

Solves ``min_T <M, T> - ε H(T)`` over couplings of ``a`` and ``b`` for a batch of (zero-padded)
problems to the criterion of POT's ``ot.bregman.sinkhorn_knopp``: a sweep is ``v ← b / Kᵀu``
then ``u ← a / K v``, and a problem stops once the L2 error of the column marginal of
``diag(u) K diag(v)`` is below ``tol`` (POT: 1e-9), returning that plan (row marginals exact),
or after ``max_iter`` sweeps (POT: 1000).  What differs from POT changes how fast, and how
safely, that solution is reached, not the solution (to within ``tol``):

- **checks**: after each of the first 10 sweeps (warm-started problems usually stop there), then
  every 10th as POT (which checks sweeps 1, 11, 21, ...), so a problem may stop a few sweeps
  earlier than in POT, on a plan that also meets ``tol``;
- **stabilised kernel** (Schmitzer 2019): ``K = exp((f ⊕ g - M) / ε)`` with dual potentials
  ``f, g`` that absorb the scalings whenever these leave ``[1/big, big]`` (``big`` = the fourth
  root of the dtype's largest number), so small ε or float32 never overflow to NaN; a warm start
  passes the potentials of a previous, similar problem;
- **over-relaxation** (Thibault et al. 2017): unchecked sweeps update the scalings as
  ``u ← u^(1-ω) (a / K v)^ω`` with ω = 1.5 (same fixed point, 2-3× fewer sweeps measured);
  checked sweeps update ``u`` plainly, so checks see POT's rows-exact plan; the first sweep after
  a (re)start is plain, and a problem whose error grows between two checks goes on with ω = 1
  (per problem: one slow problem no longer switches off the relaxation of its whole batch);
- **batching**: problems that meet their own criterion are frozen, as if solved alone, and leave
  the working set once half of it is frozen.

References
----------
Schmitzer, "Stabilized sparse scaling algorithms for entropy regularized transport problems",
SIAM J. Sci. Comput. 41(3), 2019.  Thibault, Chizat, Dossal, Papadakis, "Overrelaxed
Sinkhorn–Knopp algorithm for regularized optimal transport", arXiv:1711.01851, 2017.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

#: Over-relaxation factor between checks (1 = plain Sinkhorn–Knopp).
OMEGA = 1.5

#: Cost callers may put on padded entries instead of passing a mask: ``exp(-PAD_COST / ε)`` is 0
#: in float32 and float64 for every ε below 1e3.
PAD_COST = 1e6


def initial_potentials(a: Tensor, b: Tensor, M: Tensor) -> tuple[Tensor, Tensor]:
    """Row minima of ``M`` and column minima of ``M - f``: every kernel row and column has a 1."""
    row_ok, col_ok = a > 0, b > 0
    big = torch.finfo(M.dtype).max
    f = torch.where(col_ok[:, None, :], M, big).amin(dim=2)
    f = torch.where(row_ok, f, 0.0)
    g = torch.where(row_ok[:, :, None], M - f[:, :, None], big).amin(dim=1)
    return f, torch.where(col_ok, g, 0.0)


def _log0(x: Tensor) -> Tensor:
    """``log x`` where ``x > 0``, 0 elsewhere (padding)."""
    return torch.where(x > 0, x, 1.0).log()


def _exp_(x: Tensor) -> Tensor:
    """``exp`` in place, with every result below ``3·tiny`` set to 0 (``tiny`` the dtype's
    smallest normal number): the kernel's exp, here and in Newton's solver.

    CPU ``exp`` takes a slow path (measured 30-90× slower per element in float32) for every
    argument whose result underflows, and most kernel entries at ε = 0.01 do (far points, and
    the padded entries at ``-PAD_COST/ε``); the arguments are clamped at ``log(tiny) + 1`` and
    the results below ``3·tiny`` (those of the clamped arguments, ``e·tiny``, included) set to
    0 afterwards, by one in-place ``threshold`` on the results (a comparison of the arguments and a
    masked fill took 5× longer than the exp itself).  The clamp sits one above ``log(tiny)``
    because exp at ``log(tiny)`` itself rounds below ``tiny`` and takes the slow path; so the
    results that change (to 0, as flush-to-zero arithmetic gives the subnormal ones) are the
    subnormal ones and the normal ones in ``[tiny, 3·tiny)``: below 3.6e-38 in float32
    (6.7e-308 in float64) against row masses of 1/n.  NaN stays NaN, ``-inf`` gives 0.
    """
    tiny = torch.finfo(x.dtype).tiny
    x = x.clamp_(min=math.log(tiny) + 1.0).exp_()
    return torch.nn.functional.threshold(x, 3 * tiny, 0.0, inplace=True)


class _State:
    """Working set: kernel, scalings and potentials of the problems still iterating.

    Padding: padded rows/columns have kernel 0 and scaling 1: the kernel products add ``pad``
    (1 there, 0 elsewhere) in the same call (``baddbmm``) and the marginals ``a1``, ``b1`` hold 1
    there, so a padded scaling is 1 / 1 = 1 without branching or extra calls, and the real
    entries are computed exactly as without padding.  Both kernel products are written as row vector ×
    matrix, the fast form of a batched matrix-vector product on CPU; the scalings are kept as
    (B, 1, n) rows so a sweep needs no reshaping (each tensor call costs a few microseconds of
    dispatch, which dominates the sweeps of small problems).
    """

    names = (
        "todo", "active", "a", "b", "a1", "b1", "M", "f", "g", "pad_a", "pad_b", "K", "u", "v", "ktu",
    )  # fmt: skip
    K: Tensor
    Kt: Tensor  # K.transpose(1, 2), a view

    def __init__(
        self,
        a: Tensor,
        b: Tensor,
        M: Tensor,
        f: Tensor,
        g: Tensor,
        eps: float,
        pad: Tensor | None,
        warm: bool,
    ) -> None:
        self.todo = torch.arange(M.shape[0], device=M.device)
        self.active = torch.ones(M.shape[0], dtype=torch.bool, device=M.device)
        self.M, self.f, self.g, self.eps = M, f, g, eps
        self.a, self.b = a.unsqueeze(1), b.unsqueeze(1)  # (B, 1, n) and (B, 1, m)
        self.pad_a, self.pad_b = (self.a <= 0).to(a.dtype), (self.b <= 0).to(b.dtype)
        self.padded_a, self.padded_b = torch.stack([self.pad_a.any(), self.pad_b.any()]).tolist()
        self.a1, self.b1 = self.a + self.pad_a, self.b + self.pad_b  # marginals, 1 on padding
        self.pad = pad
        # per problem: the worst marginal error at the last check, and whether over-relaxation
        # was switched off (None: for none of them)
        self.last_err = torch.full((M.shape[0],), torch.inf, dtype=M.dtype, device=M.device)
        self.plain: Tensor | None = None
        self.reset(check=warm)

    def reset(self, check: bool = False) -> None:
        """Kernel of the current potentials, scalings 1; with ``check``, a kernel entry above
        the stabilisation bound (warm potentials from a different cost can be far off) first
        triggers :meth:`log_sweep`."""
        logk = _log_kernel(self.f, self.g, self.M, self.eps, self.pad)
        if check and float(logk.amax()) > math.log(_big(self.M.dtype)):
            self.log_sweep()
            return
        self.K = _exp_(logk)
        self.Kt = self.K.transpose(1, 2)
        self.u, self.v = torch.ones_like(self.a), torch.ones_like(self.b)
        self.ktu = self._ktu(self.u)

    def log_sweep(self) -> None:
        """One Sinkhorn sweep on the potentials in the log domain, then :meth:`reset`.

        Always finite: afterwards every column of the plan ``exp((f ⊕ g - M) / ε)`` sums to its
        marginal exactly, so no kernel entry exceeds 1.  Used when the kernel form would
        overflow or underflow (far-off warm starts, very small ε in float32).
        """
        a, b = self.a[:, 0], self.b[:, 0]
        logk = _log_kernel(self.f, self.g, self.M, self.eps, self.pad)
        f = self.f + self.eps * (_log0(a) - torch.logsumexp(logk, dim=2))
        self.f = torch.where(a > 0, f, 0.0)
        logk = _log_kernel(self.f, self.g, self.M, self.eps, self.pad)
        g = self.g + self.eps * (_log0(b) - torch.logsumexp(logk, dim=1))
        self.g = torch.where(b > 0, g, 0.0)
        self.reset()

    def sweep(self, omega: float, relax_rows: bool) -> None:
        v = self.b1 / self.ktu
        if omega != 1.0:
            v = self._relaxed(self.v, v, omega)
        self.v = v
        kv = torch.baddbmm(self.pad_a, v, self.Kt) if self.padded_a else torch.bmm(v, self.Kt)
        u = self.a1 / kv
        if omega != 1.0 and relax_rows:
            u = self._relaxed(self.u, u, omega)
        self.u = u
        self.ktu = self._ktu(u)

    def _ktu(self, u: Tensor) -> Tensor:
        """``uᵀK``, 1 on padded columns (where the kernel is 0), in one call."""
        return torch.baddbmm(self.pad_b, u, self.K) if self.padded_b else torch.bmm(u, self.K)

    def _relaxed(self, old: Tensor, new: Tensor, omega: float) -> Tensor:
        """Over-relaxed update, plain for the problems whose safeguard tripped (``plain``)."""
        relaxed = _relax(old, new, omega)
        return relaxed if self.plain is None else torch.where(self.plain, new, relaxed)

    def potentials(self, sel: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``f + ε log u`` and ``g + ε log v`` (0 on padding): the plan's own potentials, of
        the problems ``sel`` (default all)."""
        f, g, u, v = self.f, self.g, self.u[:, 0], self.v[:, 0]
        a, b = self.a[:, 0], self.b[:, 0]
        if sel is not None:
            f, g, u, v, a, b = f[sel], g[sel], u[sel], v[sel], a[sel], b[sel]
        f = torch.where(a > 0, f + self.eps * _log0(u), 0.0)
        g = torch.where(b > 0, g + self.eps * _log0(v), 0.0)
        return f, g

    def absorb(self) -> None:
        """Move the scalings into the potentials and restart from u = v = 1 (same iterates)."""
        self.f, self.g = self.potentials()
        self.reset()

    def keep(self, sel: Tensor) -> None:
        for name in self.names:
            setattr(self, name, getattr(self, name)[sel])
        self.Kt = self.K.transpose(1, 2)
        self.last_err = self.last_err[sel]
        if self.pad is not None:
            self.pad = self.pad[sel]
        if self.plain is not None:
            self.plain = self.plain[sel]


def _relax(old: Tensor, new: Tensor, omega: float) -> Tensor:
    """Over-relaxed scaling ``old^(1-ω) new^ω`` (padding: 1 in both, stays 1)."""
    if omega == 1.5:  # new·sqrt(new/old): two cheap ops instead of two powers
        return new * (new / old).sqrt_()
    return old ** (1.0 - omega) * new**omega


def padding_mask(a: Tensor, b: Tensor) -> Tensor | None:
    """Bool (B, n, m) mask of the padded entries of a batch of plans, None without padding."""
    row, col = a <= 0, b <= 0
    if not bool(row.any() or col.any()):
        return None
    return row.unsqueeze(2) | col.unsqueeze(1)


def _log_kernel(f: Tensor, g: Tensor, M: Tensor, eps: float, pad: Tensor | None) -> Tensor:
    """``(f ⊕ g - M) / ε``, -inf where ``pad`` is set."""
    logk = torch.add(f.unsqueeze(2), g.unsqueeze(1)).sub_(M).mul_(1.0 / eps)
    if pad is not None:
        logk.masked_fill_(pad, -torch.inf)
    return logk


def _kernel(f: Tensor, g: Tensor, M: Tensor, eps: float, pad: Tensor | None) -> Tensor:
    """``exp((f ⊕ g - M) / ε)``, 0 where ``pad`` is set (or where ``M`` is :data:`PAD_COST`)."""
    return _exp_(_log_kernel(f, g, M, eps, pad))


def _big(dtype: torch.dtype) -> float:
    """Bound on the scalings before they are absorbed: the fourth root of the largest float."""
    return float(torch.finfo(dtype).max) ** 0.25


def sinkhorn(
    a: Tensor,
    b: Tensor,
    M: Tensor,
    epsilon: float,
    *,
    f: Tensor | None = None,
    g: Tensor | None = None,
    max_iter: int = 1000,
    tol: float | Tensor = 1e-9,
    check_every: int = 10,
    padded_cost: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Batched entropic OT with POT ``sinkhorn_knopp``'s stopping rule (see the module docstring).

    Parameters
    ----------
    a, b : Tensor of shape (B, n) and (B, m)
        Marginals, zero on padding.
    M : Tensor of shape (B, n, m)
        Costs; ignored on padded rows and columns.
    epsilon : float
        Regularisation, in the units of ``M``.
    f, g : Tensor of shape (B, n) and (B, m), optional
        Potentials to warm-start from; default :func:`initial_potentials`.
    max_iter : int
        Sweeps per problem at most (POT: 1000).
    tol : float or Tensor of shape (B,)
        Marginal tolerance per problem (POT: 1e-9).
    check_every : int
        Sweeps between checks after the first 10, which are all checked.  POT checks sweeps
        1, 11, 21, ...; the extra early checks stop at the first plan within ``tol`` instead of
        up to 9 sweeps later, a difference below ``tol`` itself.
    padded_cost : bool
        The caller has set ``M`` to at least :data:`PAD_COST` on padded entries (rows where
        ``a`` is 0, columns where ``b`` is 0), so their kernel underflows to 0 by itself and no
        mask is built (:func:`~poisonlab.explain.gromov.entropic_gw` does this at no cost).

    Returns
    -------
    plan : Tensor of shape (B, n, m)
        ``diag(u) K diag(v)`` at each problem's stop, row marginals exact.
    f, g : Tensor of shape (B, n) and (B, m)
        Potentials of ``plan`` (``plan = exp((f ⊕ g - M) / ε)``), zero on padding.
    n_sweeps : Tensor of shape (B,), int64
        Sweeps run per problem; ``max_iter`` where ``tol`` was not reached.
    """
    batch = M.shape[0]
    warm = f is not None and g is not None
    if f is None or g is None:
        f, g = initial_potentials(a, b, M)
    tols = torch.as_tensor(tol, dtype=M.dtype, device=M.device).expand(batch)
    f_out, g_out = torch.zeros_like(f), torch.zeros_like(g)
    n_sweeps = torch.full((batch,), max_iter, dtype=torch.int64, device=M.device)
    pad = None if padded_cost else padding_mask(a, b)
    st = _State(a, b, M, f, g, epsilon, pad, warm)
    big = _big(M.dtype)
    omega, fresh = OMEGA, True
    saved = (st.u, st.v)

    def freeze(sel: Tensor, sweeps: int) -> None:
        f_sel, g_sel = st.potentials(sel)
        idx = st.todo[sel]
        f_out[idx], g_out[idx], n_sweeps[idx] = f_sel, g_sel, sweeps
        st.active &= ~sel

    for sweep in range(max_iter):
        # Check after each of the first 10 sweeps (warm starts usually stop there), then every
        # `check_every`-th; checked sweeps update u plainly, so checks see POT's rows-exact plan.
        check = sweep < 10 or sweep % check_every == 0 or sweep == max_iter - 1
        st.sweep(1.0 if fresh else omega, relax_rows=not check)
        fresh = False
        if not check:
            continue
        err = torch.linalg.vector_norm(st.v * st.ktu - st.b1, dim=(1, 2))  # 0 on padding
        err = torch.where(st.active, err, 0.0)
        done = st.active & (err < tols[st.todo])
        # extremes of the scalings (padding counted as 1: only values beyond [1/big, big] matter)
        u_lo, u_hi = torch.aminmax(st.u)
        v_lo, v_hi = torch.aminmax(st.v)
        # safeguard, per problem: over-relaxation is only locally convergent, so a problem whose
        # error grew between two checks goes on with plain sweeps
        grew = st.active & (err > st.last_err)
        st.last_err = err
        flags = [done.any(), st.active.sum() - done.sum(), err.max(), grew.any(), u_hi, v_hi]
        any_done, n_active, worst, any_grew, *bounds = torch.stack(
            [*flags, -u_lo, -v_lo]
        ).tolist()  # one sync
        if not math.isfinite(worst):  # max propagates NaN
            # POT stops at the last finite scalings; we restart from them, in the log domain
            # (a kernel row or column underflowed or overflowed: the kernel form cannot go on).
            st.u, st.v = saved
            st.absorb()
            st.log_sweep()
            saved, fresh, omega = (st.u, st.v), True, 1.0
            continue
        if any_done:
            freeze(done, sweep + 1)
        if n_active == 0:
            break
        if any_grew:
            plain = grew[:, None, None]
            st.plain = plain if st.plain is None else st.plain | plain
        if 2 * n_active <= st.active.numel():
            st.keep(st.active)
        hi, hi_v, lo, lo_v = bounds  # scalings leaving [1/big, big] move into the potentials
        if max(hi, hi_v) > big or -max(lo, lo_v) < 1.0 / big:
            st.absorb()
            fresh = True
        saved = (st.u, st.v)
    if bool(st.active.any()):
        logger.debug("Sinkhorn hit max_iter=%d on %d of %d", max_iter, int(st.active.sum()), batch)
        freeze(st.active.clone(), max_iter)
    return _kernel(f_out, g_out, M, epsilon, pad), f_out, g_out, n_sweeps
