"""Batched entropic GW: POT as the oracle, GW invariants, padding, dtype and device."""

from __future__ import annotations

import math
import warnings

import numpy as np
import ot
import pytest
import torch

from poisonlab.explain._sinkhorn import sinkhorn
from poisonlab.explain.gromov import _gradient, entropic_gw, gw_loss
from poisonlab.explain.gw_batches import gw_to_centers, gw_to_one, gw_to_spaces
from poisonlab.explain.point_cloud import pad_clouds


def _cloud(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = rng.normal(size=(n, 2))
    C = ot.dist(x, x, metric="euclidean")
    p = rng.random(n) + 0.2
    return C / C.max(), p / p.sum(), x


def _pot(C1, p, C2, q, eps):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(ot.gromov.entropic_gromov_wasserstein2(C1, C2, p, q, "square_loss", eps))


def _t(*arrays: np.ndarray) -> list[torch.Tensor]:
    return [torch.as_tensor(a, dtype=torch.float64) for a in arrays]


@pytest.mark.parametrize("inner", ["newton", "sinkhorn"])
@pytest.mark.parametrize("eps", [0.02, 0.1])
def test_values_equal_pot_for_unequal_sizes_in_one_batch(eps: float, inner: str) -> None:
    rng = np.random.default_rng(0)
    firsts = [_cloud(rng, n) for n in (5, 17, 11, 23, 8)]
    seconds = [_cloud(rng, m) for m in (14, 6, 20, 9, 25)]
    a = pad_clouds(*zip(*[_t(C, p) for C, p, _ in firsts], strict=True))  # type: ignore[arg-type]
    b = pad_clouds(*zip(*[_t(C, p) for C, p, _ in seconds], strict=True))  # type: ignore[arg-type]
    res = entropic_gw(a.C, a.p, b.C, b.p, epsilon=eps, inner=inner)
    ref = [_pot(C1, p, C2, q, eps) for (C1, p, _), (C2, q, _) in zip(firsts, seconds, strict=True)]
    torch.testing.assert_close(res.value, torch.tensor(ref, dtype=torch.float64), rtol=1e-4, atol=0)
    for i, (n, m) in enumerate(zip(a.sizes.tolist(), b.sizes.tolist(), strict=True)):
        plan = res.plan[i]  # type: ignore[index]
        torch.testing.assert_close(plan[:n, :m].sum(1), a.p[i, :n])  # marginals...
        torch.testing.assert_close(plan[:n, :m].sum(0), b.p[i, :m], atol=1e-8, rtol=0)
        assert plan[n:].abs().sum() == 0 and plan[:, m:].abs().sum() == 0  # ...and no padding mass


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_clustering_path_equals_pot_for_clouds_of_unequal_size(dtype: torch.dtype) -> None:
    # gw_to_one (size-sorted chunks, one shared second space, inexact inner solves) is what
    # k-means runs; float32 is its default compute dtype, with looser tolerances.
    rng = np.random.default_rng(7)
    clouds = [_cloud(rng, n) for n in (4, 31, 12, 26, 9, 18)]
    C2, q, _ = _cloud(rng, 10)
    batch = pad_clouds(*zip(*[_t(C, p) for C, p, _ in clouds], strict=True))  # type: ignore[arg-type]
    batch = type(batch)(batch.C.to(dtype), batch.p.to(dtype), batch.sizes)
    C2t, qt = (t.to(dtype) for t in _t(C2, q))
    res = gw_to_one(batch, C2t, qt, epsilon=0.02, keep_plans=False, chunk_elements=4000)
    ref = [_pot(C1, p, C2, q, 0.02) for C1, p, _ in clouds]
    assert res.value.dtype == dtype and bool(res.converged.all())
    torch.testing.assert_close(
        res.value.double(), torch.tensor(ref, dtype=torch.float64), rtol=1e-4, atol=0
    )


def test_several_centers_in_one_batch_equal_one_center_at_a_time() -> None:
    """gw_to_centers (k-means' refresh of both centers at once) gives each center's gw_to_one
    values, plans and potentials, cold and warm-started, across size chunks."""
    rng = np.random.default_rng(3)
    clouds = [_cloud(rng, n) for n in (4, 31, 12, 26, 9, 18)]
    batch = pad_clouds(*zip(*[_t(C, p) for C, p, _ in clouds], strict=True))  # type: ignore[arg-type]
    centers = [tuple(_t(*_cloud(rng, 7)[:2])) for _ in range(2)]
    kw = {"epsilon": 0.05, "chunk_elements": 6000, "check_every": 1, "value_rtol": 1e-5}
    together = gw_to_centers(batch, centers, **kw)  # type: ignore[arg-type]
    alone = [gw_to_one(batch, C, p, **kw) for C, p in centers]  # type: ignore[arg-type]
    warm = gw_to_centers(
        batch,
        centers,  # type: ignore[arg-type]
        T0=[r.plan for r in alone],  # type: ignore[misc]
        potentials=[r.potentials for r in alone],
        **kw,  # type: ignore[arg-type]
    )
    for r, ref in zip(together, alone, strict=True):
        torch.testing.assert_close(r.value, ref.value, rtol=1e-12, atol=0)
        torch.testing.assert_close(r.plan, ref.plan, rtol=0, atol=1e-12)
        torch.testing.assert_close(r.potentials[1], ref.potentials[1], rtol=0, atol=1e-10)
    for r, ref, (C, p) in zip(warm, alone, centers, strict=True):
        again = gw_to_one(batch, C, p, T0=ref.plan, potentials=ref.potentials, **kw)  # type: ignore[arg-type]
        torch.testing.assert_close(r.value, again.value, rtol=1e-12, atol=0)


def test_padding_and_sharing_do_not_change_values() -> None:
    rng = np.random.default_rng(1)
    (C1, p, _), (C2, q, _) = _cloud(rng, 9), _cloud(rng, 12)
    C1t, pt, C2t, qt = _t(C1, p, C2, q)
    alone = entropic_gw(C1t[None], pt[None], C2t[None], qt[None], epsilon=0.05)
    padded = pad_clouds([C1t, torch.zeros(20, 20, dtype=torch.float64)], [pt, torch.ones(20) / 20])
    shared = entropic_gw(padded.C, padded.p, C2t, qt, epsilon=0.05)  # (n, n) batched, C2 shared
    torch.testing.assert_close(shared.value[0], alone.value[0], rtol=1e-10, atol=0)
    chunked = gw_to_one(padded, C2t, qt, epsilon=0.05, chunk_elements=1)  # one chunk per cloud
    torch.testing.assert_close(chunked.value, shared.value, rtol=1e-10, atol=0)


def test_invariances_symmetry_permutation_rigid_motion() -> None:
    rng = np.random.default_rng(2)
    (C1, p, x), (C2, q, _) = _cloud(rng, 10), _cloud(rng, 13)
    perm = rng.permutation(10)
    theta = 0.7
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    y = x @ rot.T + np.array([3.0, -1.0])  # rotated and translated points
    Cy = ot.dist(y, y, metric="euclidean")
    Cy /= Cy.max()
    cases = [
        _t(C1, p, C2, q),
        _t(C2, q, C1, p),  # symmetry
        _t(C1[np.ix_(perm, perm)], p[perm], C2, q),  # permutation of the points
        _t(Cy, p, C2, q),  # rigid motion of the coordinates
    ]
    values = [entropic_gw(*(t[None] for t in case), epsilon=0.05).value[0] for case in cases]
    for v in values[1:]:
        torch.testing.assert_close(v, values[0], rtol=1e-6, atol=0)


def test_self_distance_is_small_and_exact_plan_gives_zero() -> None:
    rng = np.random.default_rng(3)
    (C, p, _), (C2, q, _) = _cloud(rng, 15), _cloud(rng, 15)
    Ct, pt, C2t, qt = _t(C, p, C2, q)
    # Entropic GW of a cloud with itself is not 0 (the entropic plan is blurred): we assert it
    # shrinks with ε, stays below the product coupling's loss and far below another cloud's.
    d_self = [entropic_gw(Ct, pt, Ct[None], pt[None], epsilon=e).value[0] for e in (0.1, 0.01)]
    product = gw_loss(Ct, pt, Ct, pt, torch.outer(pt, pt)[None])[0]
    d_other = entropic_gw(Ct, pt, C2t[None], qt[None], epsilon=0.01).value[0]
    assert 0 <= d_self[1] < d_self[0] < product
    assert d_self[1] < 0.1 * d_other
    assert gw_loss(Ct, pt, Ct, pt, torch.diag(pt)[None])[0].abs() < 1e-15  # identity coupling


def test_gw_loss_and_sinkhorn_match_pot() -> None:
    rng = np.random.default_rng(4)
    (C1, p, _), (C2, q, _) = _cloud(rng, 7), _cloud(rng, 9)
    T = rng.random((7, 9))
    constC, hC1, hC2 = ot.gromov.init_matrix(C1, C2, p, q, "square_loss")
    C1t, pt, C2t, qt, Tt = _t(C1, p, C2, q, T)
    ours = gw_loss(C1t, pt, C2t, qt, Tt[None])[0]
    assert float(ours) == pytest.approx(ot.gromov.gwloss(constC, hC1, hC2, T), rel=1e-12)
    M = rng.random((7, 9))
    plan, *_ = sinkhorn(pt[None], qt[None], torch.as_tensor(M)[None], 0.05)
    torch.testing.assert_close(
        plan[0], torch.as_tensor(ot.sinkhorn(p, q, M, 0.05)), atol=1e-9, rtol=0
    )


def test_batched_gradient_equals_pots_per_problem_gradient() -> None:
    """The solver's gradient (computed transposed for speed) is POT's ``gwggrad`` of each pair,
    for batched and shared structure matrices alike."""
    rng = np.random.default_rng(11)
    firsts, seconds = [_cloud(rng, 12) for _ in range(3)], [_cloud(rng, 5) for _ in range(3)]
    plans = [rng.random((12, 5)) / 60 for _ in range(3)]
    expected = []
    for (C1, p, _), (C2, q, _), T in zip(firsts, seconds, plans, strict=True):
        constC, hC1, hC2 = ot.gromov.init_matrix(C1, C2, p, q, "square_loss")
        expected.append(ot.gromov.gwggrad(constC, hC1, hC2, T))
    C1, p = (torch.stack(_t(*x)) for x in zip(*[f[:2] for f in firsts], strict=True))
    C2, q = (torch.stack(_t(*x)) for x in zip(*[s[:2] for s in seconds], strict=True))
    T = torch.stack(_t(*plans))
    work = {"C1": C1, "C2": C2, "T": T}
    work["c1"] = ((C1 * C1) @ p.unsqueeze(-1)).squeeze(-1)
    work["c2"] = ((C2 * C2) @ q.unsqueeze(-1)).squeeze(-1)
    ours = _gradient(work)
    assert ours.is_contiguous()
    torch.testing.assert_close(ours, torch.as_tensor(np.stack(expected)), rtol=1e-12, atol=1e-14)
    # one shared first space: the 2-D path gives the same as the batched one
    shared = dict(work, C1=C1[0], c1=work["c1"][0].expand(3, -1))
    batched = dict(work, C1=C1[0].expand(3, -1, -1), c1=work["c1"][0].expand(3, -1))
    torch.testing.assert_close(_gradient(shared), _gradient(batched), rtol=1e-12, atol=1e-14)
    # the rows of problems that finished stay in C1 until it is compacted: the product runs on
    # every row and keeps the live ones, the same numbers as on the live rows alone
    rows = dict(work, C1=torch.cat([C1[2:], C1[:2]]))  # rows 0, 1, 2 are problems 2, 0, 1...
    live = torch.tensor([1, 2, 0])  # ...and the batch's problems 0, 1, 2 sit in rows 1, 2, 0
    torch.testing.assert_close(_gradient(rows, live), ours, rtol=1e-12, atol=1e-14)


def test_dtype_preserved_and_small_epsilon_finite() -> None:
    rng = np.random.default_rng(5)
    (C1, p, _), (C2, q, _) = _cloud(rng, 12), _cloud(rng, 10)
    f64 = _t(C1, p, C2, q)
    res64 = entropic_gw(*(t[None] for t in f64), epsilon=0.05)
    res32 = entropic_gw(*(t[None].float() for t in f64), epsilon=0.05)
    assert res32.value.dtype == res32.plan.dtype == torch.float32  # type: ignore[union-attr]
    torch.testing.assert_close(res32.value.double(), res64.value, rtol=1e-3, atol=0)
    tiny = entropic_gw(*(t[None] for t in f64), epsilon=1e-3, max_iter=50)  # kernel underflows
    assert torch.isfinite(tiny.value).all() and torch.isfinite(tiny.plan).all()  # type: ignore[arg-type]
    torch.testing.assert_close(tiny.plan[0].sum(1), f64[1])  # type: ignore[index]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda() -> None:
    rng = np.random.default_rng(6)
    (C1, p, _), (C2, q, _) = _cloud(rng, 8), _cloud(rng, 11)
    cpu = entropic_gw(*(t[None] for t in _t(C1, p, C2, q)), epsilon=0.05)
    gpu = entropic_gw(*(t[None].cuda() for t in _t(C1, p, C2, q)), epsilon=0.05)
    assert gpu.value.device.type == "cuda"
    torch.testing.assert_close(gpu.value.cpu(), cpu.value, rtol=1e-8, atol=0)


def test_spaces_of_several_batches_solved_together_equal_each_pair_alone() -> None:
    """gw_to_spaces (Heatmap Clustering's lockstep solve: every batch of clouds to its own
    space, all problems in one batch) gives each batch's gw_to_one values, cold and warm."""
    rng = np.random.default_rng(5)
    batches = [
        pad_clouds(*zip(*[_t(*_cloud(rng, n)[:2]) for n in sizes], strict=True))  # type: ignore[arg-type]
        for sizes in ((4, 31, 12), (26, 9), (18, 7, 22, 5))
    ]
    spaces = [tuple(_t(*_cloud(rng, 7)[:2])) for _ in batches]
    kw = {"epsilon": 0.05, "chunk_elements": 6000, "check_every": 1, "value_rtol": 1e-5}
    alone = [gw_to_one(b, C, p, **kw) for b, (C, p) in zip(batches, spaces, strict=True)]  # type: ignore[arg-type]
    pairs = [(b, C, p) for b, (C, p) in zip(batches, spaces, strict=True)]
    together = gw_to_spaces(pairs, **kw)  # type: ignore[arg-type]
    warm = gw_to_spaces(
        pairs,  # type: ignore[arg-type]
        T0=[r.plan for r in alone],
        potentials=[r.potentials for r in alone],
        **kw,  # type: ignore[arg-type]
    )
    for b, r, ref, w, (C, p) in zip(batches, together, alone, warm, spaces, strict=True):
        assert r.plan is not None and r.plan.shape == (len(b), b.n_max, 7)
        torch.testing.assert_close(r.value, ref.value, rtol=1e-9, atol=0)
        torch.testing.assert_close(r.plan, ref.plan, rtol=0, atol=1e-9)
        again = gw_to_one(b, C, p, T0=ref.plan, potentials=ref.potentials, **kw)  # type: ignore[arg-type]
        torch.testing.assert_close(w.value, again.value, rtol=1e-9, atol=0)
    with pytest.raises(ValueError, match="one size"):
        gw_to_spaces([(batches[0], *_t(*_cloud(rng, 5)[:2])), pairs[1]], epsilon=0.05)  # type: ignore[list-item]
