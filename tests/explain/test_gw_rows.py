"""Clouds read in place by the fused solver (explain/_gw_rows.py) against the size-chunked path."""

from __future__ import annotations

import numpy as np
import torch

from poisonlab.explain._gw_rows import fused_settings, solve_sources, stack_sources
from poisonlab.explain.gw_barycenter import gw_barycenters, update_structure
from poisonlab.explain.gw_batches import gw_to_spaces
from tests.explain.test_gw_fused import _clouds

CLUSTERING = {"check_every": 1, "value_rtol": 1e-5, "max_iter": 50}


def _spaces(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    two = _clouds(2, [8, 8], dtype)
    return two.C, two.p


def test_distances_of_several_batches_as_the_chunked_tensor_path() -> None:
    """gw_to_spaces: one batch against two spaces and a second batch against the first space,
    read in place (no size chunks): the values, plans and iterations of the tensor path."""
    clouds = _clouds(1, np.random.default_rng(1).integers(5, 41, size=30).tolist())
    other = _clouds(3, [12, 33, 7])
    (C0, C1), (p0, p1) = _spaces()
    pairs = [(clouds, C0, p0), (clouds, C1, p1), (other, C0, p0)]
    ref = gw_to_spaces(pairs, epsilon=0.02, fused=False, chunk_elements=20_000, **CLUSTERING)  # type: ignore[arg-type]
    res = gw_to_spaces(pairs, epsilon=0.02, **CLUSTERING)  # type: ignore[arg-type]
    for ours, theirs in zip(res, ref, strict=True):
        assert torch.equal(ours.n_iter, theirs.n_iter)
        torch.testing.assert_close(ours.value, theirs.value, rtol=1e-11, atol=0)
        assert ours.plan is not None and theirs.plan is not None
        assert ours.plan.shape == theirs.plan.shape
        torch.testing.assert_close(ours.plan, theirs.plan, rtol=0, atol=1e-12)


def test_barycenter_sums_are_the_structure_update_of_the_plans() -> None:
    """With weights, solve_sources returns per group Σ λ Tᵀ C T of its final plans, as
    update_structure computes it from the returned plans (times p̄ p̄ᵀ)."""
    clouds = _clouds(4, [9, 25, 14, 31, 6, 18])
    C, p = _spaces()
    group = torch.tensor([0, 1, 1, 0, 1, 0])
    weights = torch.tensor([0.2, 0.3, 0.3, 0.5, 0.4, 0.3], dtype=torch.float64)
    settings = fused_settings((clouds.C, C), ((clouds.p,), p), 0.02, CLUSTERING)  # type: ignore[arg-type]
    assert settings is not None
    res, total = solve_sources(
        (clouds.C, clouds.p),
        torch.arange(6),
        C,
        p,
        group,
        epsilon=0.02,
        settings=settings,
        weights=weights,
        groups=group,
        n_groups=2,
    )
    assert total is not None and res.plan is not None
    uniform = torch.ones(8, dtype=torch.float64)
    for g in range(2):
        sel = group == g
        want = update_structure(clouds.C[sel], res.plan[sel], weights[sel], uniform)
        torch.testing.assert_close(total[g], want, rtol=1e-12, atol=1e-15)


def test_barycenters_read_in_place_equal_a_copy() -> None:
    """gw_barycenters given its groups as rows of one set of clouds (members_of) computes
    exactly what it computes on the groups' own copies."""
    clouds = _clouds(5, np.random.default_rng(5).integers(6, 30, size=24).tolist())
    rows = [torch.tensor([0, 3, 5, 8, 9, 13, 20]), torch.tensor([1, 2, 4, 6, 7, 21, 23])]
    groups = [clouds.subset(r) for r in rows]
    init = _spaces()[0]
    kw = {"n_support": 8, "epsilon": 0.05, "max_iter": 4, "rtol": 1e-4, "inexact": 1e-2}
    copied = gw_barycenters(groups, init, **kw)  # type: ignore[arg-type]
    in_place = gw_barycenters(groups, init, members_of=(clouds, rows), **kw)  # type: ignore[arg-type]
    for a, b in zip(copied, in_place, strict=True):
        assert torch.equal(a.C, b.C) and torch.equal(a.plans, b.plans) and a.n_iter == b.n_iter
        assert a.plans.shape[1] == b.plans.shape[1]


def test_one_source_is_read_in_place_several_are_stacked() -> None:
    a, b = _clouds(6, [5, 9]), _clouds(7, [4, 12, 3])
    C, p, rows = stack_sources([a, a], torch.tensor([0, 1, 0]), torch.tensor([1, 0, 0]))
    assert C is a.C and p is a.p and rows.tolist() == [1, 0, 0]
    C, p, rows = stack_sources([a, b], torch.tensor([1, 0, 1]), torch.tensor([2, 1, 1]))
    assert C.shape == (5, 12, 12)
    for r, (src, i) in zip(rows.tolist(), [(b, 2), (a, 1), (b, 1)], strict=True):
        n = int(src.sizes[i])
        assert torch.equal(C[r, :n, :n], src.C[i, :n, :n]) and torch.equal(p[r, :n], src.p[i, :n])


def test_settings_it_cannot_take_leave_the_chunked_path() -> None:
    clouds = _clouds(8, [6, 7])
    C, q = _spaces()
    both, masses = (clouds.C, C), ((clouds.p,), q)
    assert fused_settings(both, masses, 0.02, {"fused": False}) is None
    assert fused_settings(both, masses, 0.02, {"inner": "sinkhorn"}) is None
    assert fused_settings(both, masses, 0.02, {"park": 3}) is None
    assert fused_settings((clouds.C.half(), C.half()), masses, 0.02, {}) is None
    assert fused_settings(both, masses, -1.0, {}) is None
    # totals 1 and 1.001: no inner solve can meet its tolerance (see _gw_dispatch.totals_match)
    assert fused_settings(both, ((clouds.p,), q * 1.001), 0.02, {}) is None
    settings = fused_settings(both, masses, 0.02, {"max_iter": 7})
    assert settings is not None and settings["max_iter"] == 7 and settings["tol"] is not None
