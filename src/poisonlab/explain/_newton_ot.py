"""Damped Newton on the semi-dual, for batches of entropic OT problems with few columns.

Solves the problem of :func:`~poisonlab.explain._sinkhorn.sinkhorn`, ``min_T <M, T> - ε H(T)``
over couplings of ``a`` (n rows) and ``b`` (m columns), to the same criterion (POT's
``ot.bregman.sinkhorn_knopp``): stop at the first plan whose rows sum to ``a`` exactly and
whose column-marginal L2 error is below ``tol``.  Heatmap Clustering's inner problems all have
one small side: clouds of n ≈ 30-130 points against ``n_support`` = 10-point barycenters.

Semi-dual (Cuturi & Peyré 2016): for column potentials ``g ∈ R^m`` the best row potentials are
``f_i = ε log a_i - ε log Σ_j exp((g_j - M_ij)/ε)``, which makes every row of
``P = exp((f ⊕ g - M)/ε)`` sum to ``a_i``; what remains is the concave function

    F(g) = Σ_j b_j g_j + Σ_i a_i f_i(g),

whose gradient ``b - Pᵀ1`` is exactly the column-marginal error that the stopping rule
measures, and whose negative Hessian ``(diag(Pᵀ1) - Pᵀ diag(1/a) P) / ε`` is a small m × m
matrix per problem (one batched product).  Newton's method on ``F`` converges quadratically
near the solution where Sinkhorn's alternating projections converge linearly, at a rate that
degrades as ε shrinks (tens to hundreds of sweeps at Heatmap Clustering's ε = 0.01): on warm
starts a few Newton steps replace tens of sweeps.  The Hessian is singular along the all-ones
direction (``g + c`` and ``g`` give the same plan); a rank-one term fixes that gauge without
changing the step's component orthogonal to it.  A backtracking (Armijo) line search on the
concave ``F`` makes every accepted step an ascent step, the usual globalisation of Newton's
method (Nocedal & Wright 2006, §3.1); Kitagawa, Mérigot & Thibert 2019 prove global convergence
of a damped Newton method for semi-discrete OT whose damping backtracks on the marginal error
instead.

Arithmetic follows the stabilised form of the Sinkhorn solver (Schmitzer 2019): the kernel
``K = exp((f0 ⊕ g0 - M)/ε)`` is formed once from reference potentials, normalised so that
each row sums to its mass, and the iterates are the small offsets ``h = g - g0`` through the
scaling ``exp(h/ε)``; the reference absorbs ``h`` when it grows.  Rounding then perturbs the
plans as it does Sinkhorn's (the returned plan is formed from the potentials the same way).

Problems that do not meet ``tol`` within ``max_iter`` Newton steps (none measured on Heatmap
Clustering's problems) are finished by Sinkhorn from Newton's last potentials, to the same
criterion.  Far from the solution (a warm start more than ~``max_iter·ABSORB·ε`` off, where the
capped steps cannot arrive) that start can leave Sinkhorn more, or fewer, sweeps to go than its
own start would.  Every problem's arithmetic is its own: masks and gauge terms are built per
problem, and a NaN trial of one problem (rejected by the line search) does not change the steps
of the others.

References
----------
Cuturi, Peyré, "A smoothed dual approach for variational Wasserstein problems", SIAM J. Imaging
Sci. 9(1), 2016.  Nocedal, Wright, "Numerical Optimization", 2nd ed., Springer, 2006.
Kitagawa, Mérigot, Thibert, "Convergence of a Newton algorithm for
semi-discrete optimal transport", J. Eur. Math. Soc. 21(9), 2019 (arXiv:1603.05579).
Schmitzer, "Stabilized sparse scaling algorithms for entropy regularized transport problems",
SIAM J. Sci. Comput. 41(3), 2019.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from poisonlab.explain._sinkhorn import _exp_, _log0, initial_potentials, padding_mask, sinkhorn

logger = logging.getLogger(__name__)

#: Armijo constant: a step is kept when it gains this fraction of its first-order prediction.
ARMIJO = 1e-4

#: Bound on the scalings: a Newton step moves no potential by more than ``ABSORB·ε``; the
#: reference absorbs the offsets once one exceeds that, and a warm-started kernel whose row sums
#: leave ``a·e^(±ABSORB)`` is renormalised first (float32 keeps every product finite then).
ABSORB = 20.0

#: Newton steps (line-search trials included) before a problem is handed to Sinkhorn.
NEWTON_MAX_STEPS = 50


def newton_semidual(
    a: Tensor,
    b: Tensor,
    M: Tensor,
    epsilon: float,
    *,
    f: Tensor | None = None,
    g: Tensor | None = None,
    max_iter: int = NEWTON_MAX_STEPS,
    tol: float | Tensor = 1e-9,
    sinkhorn_max_iter: int = 1000,
    padded_cost: bool = False,
    gauge: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Batched entropic OT by damped Newton on the column potentials (module docstring).

    Same inputs and outputs as :func:`~poisonlab.explain._sinkhorn.sinkhorn`, for problems
    whose second side (``m`` columns) is small: each Newton step solves one m × m system per
    problem.

    Parameters
    ----------
    a, b, M, epsilon, f, g
        As for :func:`~poisonlab.explain._sinkhorn.sinkhorn`: marginals (B, n) and (B, m),
        zero on padding; costs (B, n, m); ε; optional warm-start potentials.
    max_iter : int
        Newton steps per problem (line-search trials included) before Sinkhorn takes over.
    tol : float or Tensor of shape (B,)
        Column-marginal tolerance per problem (POT: 1e-9).
    sinkhorn_max_iter : int
        Sweep budget of the Sinkhorn fallback.
    padded_cost : bool
        ``M`` is at least :data:`~poisonlab.explain._sinkhorn.PAD_COST` on padded entries, so
        no mask is built (as for ``sinkhorn``).
    gauge : Tensor of shape (B, m, m), optional
        :func:`gauge_terms` of ``b`` (computed here when not given; a caller solving many
        problems with the same ``b`` passes it once computed).

    Returns
    -------
    plan : Tensor of shape (B, n, m)
        ``diag(u) K diag(e)`` at each problem's stop (rows summing to ``a``, columns within
        ``tol``), equal to ``exp((f ⊕ g - M) / ε)`` up to round-off.
    f, g : Tensor of shape (B, n) and (B, m)
        Its potentials, zero on padding.
    n_iter : Tensor of shape (B,), int64
        Newton steps per problem, plus the Sinkhorn sweeps of problems that fell back.
    """
    batch = M.shape[0]
    if f is None or g is None:
        f, g = initial_potentials(a, b, M)
    tols = torch.as_tensor(tol, dtype=M.dtype, device=M.device).expand(batch)
    pad = None if padded_cost else padding_mask(a, b)
    st = _Newton(a, b, M, f, g, epsilon, pad, gauge)
    todo = torch.arange(batch, device=M.device)
    plan = torch.zeros_like(M)
    f_out, g_out = torch.zeros_like(a), torch.zeros_like(b)
    n_iter = torch.full((batch,), max_iter, dtype=torch.int64, device=M.device)
    checked = False
    for step in range(max_iter):
        done, accept, stats = st.trial(tols if todo.numel() == batch else tols[todo], checked)
        n_done, n_accept, big, *scale = torch.stack(stats).tolist()  # one sync
        if not checked:
            checked = True
            if scale[0]:  # a warm kernel badly scaled: renormalise those problems
                st.reset(st.bad)
                st.first = True
                done, accept, stats = st.trial(tols[todo], True)
                n_done, n_accept, big = torch.stack(stats).tolist()
        width = todo.numel()
        st.commit(accept, n_accept == width)
        if n_done:
            every = n_done == width
            f_sel, g_sel, plan_sel = st.solution(None if every else done)
            if every and width == batch:
                return plan_sel, f_sel, g_sel, torch.full_like(n_iter, step + 1)
            idx = todo if every else todo[done]
            plan[idx], f_out[idx], g_out[idx], n_iter[idx] = plan_sel, f_sel, g_sel, step + 1
            if every:
                break
            left = (~done).nonzero().squeeze(1)
            todo, n_accept = todo.index_select(0, left), n_accept - n_done
            accept = None if accept is None else accept.index_select(0, left)
            st.keep(left)
        st.direction(accept, n_accept == todo.numel())
        if big > ABSORB:
            st.absorb()
    else:
        # Newton did not finish these (not seen on Heatmap Clustering's problems): Sinkhorn
        # goes on from the last accepted potentials, to the same criterion.
        f_sel, g_sel = st.potentials()
        logger.debug("Newton hit max_iter=%d on %d of %d", max_iter, todo.numel(), batch)
        plan_sk, f_sk, g_sk, sweeps = sinkhorn(
            a[todo],
            b[todo],
            M[todo],
            epsilon,
            f=f_sel,
            g=g_sel,
            max_iter=sinkhorn_max_iter,
            tol=tols[todo],
            padded_cost=padded_cost,
        )
        plan[todo], f_out[todo], g_out[todo], n_iter[todo] = plan_sk, f_sk, g_sk, max_iter + sweeps
    return plan, f_out, g_out, n_iter


class _Newton:
    """Working set of the damped Newton iteration, in the stabilised kernel form.

    Per problem: reference potentials ``f0, g0`` and their kernel ``K = exp((f0 ⊕ g0 - M)/ε)``,
    the accepted offset ``h`` (column potentials ``g0 + h``) with its objective ``F`` (up to a
    constant of the reference), the ascent direction ``d`` with its slope ``<∇F, d>``, and the
    step length ``t`` to try next (None: 1 for all).  At an offset ``h`` with scalings
    ``e = exp(h/ε)`` the plan is ``diag(u) K diag(e)`` with ``u = a / (K e)`` (rows exact) and
    ``F(h) = <b, h> - ε Σ_i a_i log (K e)_i``.  Shapes: (B, 1, n) and (B, 1, m) rows, so every
    kernel product is a row vector times a matrix, the fast form of a batched matrix-vector
    product on CPU (as in :mod:`~poisonlab.explain._sinkhorn`).

    Padding: padded rows and columns have kernel 0; ``K e`` gets 1 added on padded rows (so
    ``u = 0 / 1`` and ``log (K e) = 0`` there), and the Hessian gets 1 on the diagonal of padded
    columns (their gradient is 0, so is their step, and their offset stays 0).
    """

    names = ("a", "b", "M", "pad_a", "log_a", "f0", "g0", "K", "h", "F", "d", "slope")
    trials = ("h_try", "e", "kv", "log_kv", "u", "col", "grad", "F_try")
    K: Tensor
    Kt: Tensor  # K.transpose(1, 2), a view
    t: Tensor | None

    def __init__(
        self,
        a: Tensor,
        b: Tensor,
        M: Tensor,
        f: Tensor,
        g: Tensor,
        eps: float,
        pad: Tensor | None,
        fix: Tensor | None = None,
    ) -> None:
        batch = M.shape[0]
        self.eps, self.pad, self.M = eps, pad, M
        self.a, self.b = a.unsqueeze(1), b.unsqueeze(1)  # (B, 1, n) and (B, 1, m)
        self.pad_a = (self.a <= 0).to(a.dtype)
        self.log_a = _log0(self.a)
        self.fix = gauge_terms(b) if fix is None else fix
        self.f0 = torch.where(a > 0, f, 0.0).unsqueeze(1)
        self.g0 = torch.where(b > 0, g, 0.0).unsqueeze(1)
        self.h = torch.zeros_like(self.b)
        self.K = _kernel(self.f0, self.g0, M, eps, pad)
        self.Kt = self.K.transpose(1, 2)
        # the first trial is h itself, always accepted
        self.first = True
        self.F = torch.zeros((batch,), dtype=M.dtype, device=M.device)
        self.d = torch.zeros_like(self.b)
        self.slope, self.t = torch.zeros_like(self.F), None

    def reset(self, sel: Tensor) -> None:
        """For the problems ``sel``: reference ``g0 + h``, ``h = 0``, and ``f0`` making every
        kernel row sum to ``a`` (one log-domain row normalisation: the kernel is then finite
        whatever the start).  Per problem, so that no problem's arithmetic depends on the
        others in its batch."""
        idx = sel.nonzero().flatten()
        a, log_a = self.a[idx], self.log_a[idx]
        g0 = self.g0[idx] + self.h[idx]
        logk = (g0.transpose(1, 2) - self.M[idx].transpose(1, 2)).mul_(1.0 / self.eps)
        if self.pad is not None:
            logk.masked_fill_(self.pad[idx].transpose(1, 2), -torch.inf)
        row = a > 0
        lse = torch.logsumexp(logk, dim=1, keepdim=True)  # (b, 1, n)
        shift = torch.where(row, log_a - torch.where(row, lse, 0.0), 0.0)
        Kt = _exp_(logk.add_(shift))
        if self.pad is None:  # PAD_COST rows: exp(-huge) is 0 already (real rows: unchanged)
            Kt = torch.where(row, Kt, 0.0)
        self.K = self.K.index_put((idx,), Kt.transpose(1, 2))
        self.Kt = self.K.transpose(1, 2)
        self.f0 = self.f0.index_put((idx,), self.eps * shift)
        self.g0 = self.g0.index_put((idx,), g0)
        self.h = self.h.index_put((idx,), torch.zeros_like(g0))
        # F at h = 0 of this reference: every (K e)_i is a_i
        self.F = self.F.index_put((idx,), -self.eps * (a * log_a).sum(dim=(1, 2)))

    def absorb(self) -> None:
        """Move the accepted offsets of the problems with a potential moved by more than
        ``ABSORB·ε`` into their reference (same iterates, now ``h = 0``)."""
        self.reset(self.h.abs().amax(dim=(1, 2)) > ABSORB * self.eps)

    def trial(self, tol: Tensor, checked: bool) -> tuple[Tensor, Tensor | None, list[Tensor]]:
        """Evaluate ``h + t d`` for every problem: which trials meet ``tol`` and are accepted,
        which are accepted (Armijo on the concave ``F`` up to its round-off, or meeting
        ``tol``: a valid stop whatever ``F`` says), and the statistics the loop syncs on."""
        eps = self.eps
        if self.t is None:
            h = self.h + self.d
        else:
            h = torch.addcmul(self.h, self.t.view(-1, 1, 1), self.d)
        e = torch.exp(h * (1.0 / eps))
        kv = torch.baddbmm(self.pad_a, e, self.Kt)  # +1 on padded rows, +0 elsewhere
        u = self.a / kv
        col = torch.bmm(u, self.K).mul_(e)
        grad = self.b - col
        err = torch.linalg.vector_norm(grad, dim=(1, 2))
        log_kv = torch.log(kv)
        F = torch.baddbmm(
            torch.bmm(self.b, h.transpose(1, 2)), self.a, log_kv.transpose(1, 2), alpha=-eps
        ).view(-1)
        met = err < tol
        self.h_try, self.e, self.kv, self.log_kv, self.u, self.col, self.grad = (
            h,
            e,
            kv,
            log_kv,
            u,
            col,
            grad,
        )
        self.F_try = F
        if self.first:  # the starting point itself: accepted (None: all)
            self.first, accept, done = False, None, met
            stats = [done.sum(), torch.full_like(err[0], err.numel()), _largest(h) * (1.0 / eps)]
        else:
            t = 1.0 if self.t is None else self.t
            slack = 16 * torch.finfo(F.dtype).eps * (eps + h.abs().amax(dim=(1, 2)))
            accept = (self.F + ARMIJO * t * self.slope - slack <= F) | met
            done = accept & met
            stats = [done.sum(), accept.sum(), _largest(h) * (1.0 / eps)]
        if not checked:  # warm start: are the kernel's row sums within a·e^(±ABSORB)? (NaN: no)
            self.bad = ~((log_kv - self.log_a).abs().amax(dim=(1, 2)) <= ABSORB)
            stats.append(self.bad.any())
        return done, accept, stats

    def commit(self, accept: Tensor | None, every: bool) -> None:
        """Accepted trials become the current points; the others halve their step."""
        if every or accept is None:
            self.h, self.F, self.t = self.h_try, self.F_try, None
            return
        t = torch.ones_like(self.F) if self.t is None else self.t
        self.h = torch.where(accept.view(-1, 1, 1), self.h_try, self.h)
        self.F = torch.where(accept, self.F_try, self.F)
        self.t = torch.where(accept, 1.0, 0.5 * t)

    def direction(self, accept: Tensor | None, every: bool) -> None:
        """Newton direction at the accepted trials (the rejected ones keep theirs):
        ``(diag(col) - Pᵀ diag(1/a) P) d = ε ∇F``, where ``Pᵀ diag(1/a) P`` is
        ``diag(e) Kᵀ diag(a / (K e)²) K diag(e)``, solved by Cholesky."""
        w = (self.u / self.kv).transpose(1, 2)  # (B, n, 1)
        S = torch.bmm(self.Kt, self.K * w).mul_(self.e.transpose(1, 2)).mul_(self.e)
        hess = torch.diag_embed(self.col[:, 0]).sub_(S).add_(self.fix)
        L, info = torch.linalg.cholesky_ex(hess)
        d = torch.cholesky_solve(self.grad.transpose(1, 2), L).transpose(1, 2)
        # where round-off made a Hessian indefinite: a diagonally scaled gradient step
        jacobi = self.grad / hess.diagonal(dim1=1, dim2=2).unsqueeze(1)
        d = torch.where((info > 0).view(-1, 1, 1), jacobi, d)
        # step cap: no potential moves by more than ABSORB·ε in one step
        cap = d.abs().amax(dim=(1, 2), keepdim=True).clamp(min=ABSORB)
        d = d.mul_(ABSORB * self.eps / cap)
        slope = (self.grad * d).sum(dim=(1, 2))
        if every or accept is None:
            self.d, self.slope = d, slope
        else:
            self.d = torch.where(accept.view(-1, 1, 1), d, self.d)
            self.slope = torch.where(accept, slope, self.slope)

    def solution(self, sel: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Potentials ``(f, g)`` and plan of the last trials (accepted) of the problems ``sel``
        (None: all).  Zero on padding by construction: there ``f0``, ``log a``, ``log (K e)``,
        ``g0`` and ``h`` are 0."""
        f = self.f0 + self.eps * (self.log_a - self.log_kv)
        g = self.g0 + self.h_try
        if sel is None:
            plan = torch.mul(self.K, self.e).mul_(self.u.transpose(1, 2))
            return f[:, 0], g[:, 0], plan
        idx = sel.nonzero().squeeze(1)  # index_select gathers faster than a boolean mask
        K, e, u = (x.index_select(0, idx) for x in (self.K, self.e, self.u))
        plan = torch.mul(K, e).mul_(u.transpose(1, 2))
        return f.index_select(0, idx)[:, 0], g.index_select(0, idx)[:, 0], plan

    def potentials(self) -> tuple[Tensor, Tensor]:
        """Potentials ``(f, g)`` of the accepted points (0 on padding)."""
        e = torch.exp(self.h * (1.0 / self.eps))
        kv = torch.baddbmm(self.pad_a, e, self.Kt)
        return (self.f0 + self.eps * (self.log_a - torch.log(kv)))[:, 0], (self.g0 + self.h)[:, 0]

    def keep(self, sel: Tensor) -> None:
        """Keep only the problems at indices ``sel`` (index_select: faster than a mask)."""
        for name in self.names:
            setattr(self, name, getattr(self, name).index_select(0, sel))
        if self.fix.shape[0] > 1:
            self.fix = self.fix.index_select(0, sel)
        if self.t is not None:
            self.t = self.t.index_select(0, sel)
        for name in self.trials:
            setattr(self, name, getattr(self, name).index_select(0, sel))
        self.Kt = self.K.transpose(1, 2)
        if self.pad is not None:
            self.pad = self.pad.index_select(0, sel)


def gauge_terms(b: Tensor) -> Tensor:
    """Gauge, padding and round-off terms (B, m, m) added to every Newton Hessian of problems
    with column masses ``b`` (B, m).

    The rank-one term (mean column mass) · r rᵀ on the real columns r (the all-ones direction
    of the real columns, along which the Hessian vanishes), 1 on the diagonal of padded columns,
    and a ridge of a few ulps of that mass (columns that carry no mass at all stay solvable).
    Any positive mass fixes the gauge (the gradient has no component along r).  Built per
    problem, padded or not, so that no problem's arithmetic depends on its batch.
    """
    ulps = 16 * torch.finfo(b.dtype).eps
    real = (b > 0).to(b.dtype)
    mass = (b.sum(dim=1) / real.sum(dim=1).clamp(min=1)).view(-1, 1, 1)
    outer = real.unsqueeze(2) * real.unsqueeze(1)
    return mass * (outer + ulps * torch.diag_embed(real)) + torch.diag_embed(1.0 - real)


def _largest(h: Tensor) -> Tensor:
    """Largest ``|h|`` of the batch, NaN counted as 0: one problem's NaN trial (rejected by the
    line search) must not hide the other problems' need to absorb their offsets."""
    return torch.nan_to_num(h.abs(), nan=0.0).amax()


def _kernel(f: Tensor, g: Tensor, M: Tensor, eps: float, pad: Tensor | None) -> Tensor:
    """``exp((f ⊕ g - M) / ε)`` from (B, 1, n) and (B, 1, m) potentials in two passes over
    ``M`` (the sum as a rank-2 product), 0 where ``pad`` is set."""
    ones_n, ones_m = torch.ones_like(f), torch.ones_like(g)
    left = torch.cat([f, ones_n], dim=1).transpose(1, 2)  # (B, n, 2)
    right = torch.cat([ones_m, g], dim=1)  # (B, 2, m)
    logk = torch.baddbmm(M, left, right, beta=-1.0 / eps, alpha=1.0 / eps)
    if pad is not None:
        logk.masked_fill_(pad, -torch.inf)
    return _exp_(logk)
