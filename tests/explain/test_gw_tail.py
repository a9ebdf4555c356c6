"""Parking and resuming entropic GW problems (the chunks' shared tail) and the kernel's exp."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import poisonlab.explain.gw_batches as gw_batches
from poisonlab.explain._sinkhorn import _exp_
from poisonlab.explain.gromov import GWResult, GWState, entropic_gw
from poisonlab.explain.point_cloud import PointClouds, pad_clouds


def _clouds(seed: int, sizes: tuple[int, ...]) -> PointClouds:
    rng = np.random.default_rng(seed)
    Cs, ps = [], []
    for n in sizes:
        x = torch.as_tensor(rng.normal(size=(n, 2)))
        C = torch.cdist(x, x)
        Cs.append(C / C.max())
        p = torch.as_tensor(rng.random(n) + 0.2)
        ps.append(p / p.sum())
    return pad_clouds(Cs, ps)


def _space(seed: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    one = _clouds(seed, (m,))
    return one.C[0], one.p[0]


def _spy_resumed(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """Record the cloud sizes of every resumed batch gw_batches solves."""
    resumed: list[torch.Tensor] = []
    solve = gw_batches.entropic_gw

    def spy(C1: torch.Tensor, p: torch.Tensor, *args: object, **kwargs: object) -> GWResult:
        if kwargs.get("resume") is not None:
            resumed.append((p > 0).sum(dim=-1))
        return solve(C1, p, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(gw_batches, "entropic_gw", spy)
    return resumed


# parking is the tensor path's (fused=False: the fused path finishes every problem)
PLAN_TESTS = {"check_every": 3, "max_iter": 31, "tol": 1e-6, "fused": False}  # some hit max_iter
VALUE_TEST = {"check_every": 1, "value_rtol": 1e-5, "fused": False}  # the clustering path


@pytest.mark.parametrize("solver", [VALUE_TEST, PLAN_TESTS])
def test_parked_problems_resume_as_if_never_stopped(solver: dict[str, float]) -> None:
    """entropic_gw(park=P) + a resume of the parked problems (in a batch of their own) gives
    every problem the iterations, flags and values of one uninterrupted solve."""
    clouds = _clouds(0, (9, 14, 6, 17, 11, 13, 8, 16, 12, 10))
    C, p = _space(1, 6)
    kw = {"epsilon": 0.02, "inner": "newton", **solver}
    ref = entropic_gw(clouds.C, clouds.p, C, p, **kw)  # type: ignore[arg-type]
    assert int(ref.n_iter.max()) > int(ref.n_iter.min()) + 2  # problems stop at different times
    first = entropic_gw(clouds.C, clouds.p, C, p, park=4, **kw)  # type: ignore[arg-type]
    st = first.parked
    assert st is not None and 0 < len(st.index) <= 4
    # the parked problems' entries say they are not final
    assert first.plan is not None and bool(first.plan[st.index].isnan().all())
    assert bool(first.value[st.index].isnan().all()) and not bool(first.converged[st.index].any())
    assert torch.equal(first.n_iter[st.index], st.done_iter)
    rest = entropic_gw(clouds.C[st.index], clouds.p[st.index], C, p, resume=st, **kw)  # type: ignore[arg-type]
    done = torch.ones(len(clouds), dtype=torch.bool)
    done[st.index] = False
    torch.testing.assert_close(first.value[done], ref.value[done], rtol=1e-12, atol=0)
    assert torch.equal(first.n_iter[done], ref.n_iter[done])
    torch.testing.assert_close(rest.value, ref.value[st.index], rtol=1e-9, atol=0)
    assert torch.equal(rest.n_iter, ref.n_iter[st.index])
    assert torch.equal(rest.converged, ref.converged[st.index])
    assert rest.plan is not None and ref.plan is not None
    torch.testing.assert_close(rest.plan, ref.plan[st.index], rtol=0, atol=1e-9)
    if solver is PLAN_TESTS:
        assert bool((ref.n_iter[st.index] == 31).any())  # a resumed problem stops at max_iter


def test_resume_rejects_a_state_that_does_not_fit() -> None:
    """A resume state that is empty, of another batch or width, or given with T0/potentials
    is refused with a ValueError naming the problem."""
    clouds = _clouds(0, (9, 14, 6, 17, 11, 13, 8, 16, 12, 10))
    C, p = _space(1, 6)
    st = entropic_gw(clouds.C, clouds.p, C, p, epsilon=0.02, park=4, fused=False).parked
    assert st is not None and len(st.index) >= 2
    C1, p1 = clouds.C[st.index], clouds.p[st.index]
    with pytest.raises(ValueError, match="pass neither T0 nor potentials"):
        entropic_gw(C1, p1, C, p, epsilon=0.02, T0=st.plan, resume=st)
    with pytest.raises(ValueError, match="pass neither T0 nor potentials"):
        entropic_gw(C1, p1, C, p, epsilon=0.02, potentials=(st.f, st.g), resume=st)
    empty = GWState(*(x[:0] for x in vars(st).values()))
    with pytest.raises(ValueError, match="no problems"):
        entropic_gw(C1[:0], p1[:0], C, p, epsilon=0.02, resume=empty)
    k = len(st.index)
    with pytest.raises(ValueError, match=rf"batch of 1 problems of 17 x 6 points: index \({k},\)"):
        entropic_gw(C1[:1], p1[:1], C, p, epsilon=0.02, resume=st)
    wide_C, wide_p = F.pad(C1, (0, 3, 0, 3)), F.pad(p1, (0, 3))  # padded to 20 points
    with pytest.raises(ValueError, match=rf"plan \({k}, 17, 6\) \(expected \({k}, 20, 6\)\)"):
        entropic_gw(wide_C, wide_p, C, p, epsilon=0.02, resume=st)


@pytest.mark.parametrize("solver", [VALUE_TEST, PLAN_TESTS])
@pytest.mark.parametrize("park", [2, 1000])
def test_chunked_solve_with_a_shared_tail_equals_chunks_alone(
    park: int, solver: dict[str, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several size chunks whose last problems finish together (clouds of several chunks in
    one resumed batch, padded to its largest) give the values, iterations and plans of each
    chunk solved to the end on its own."""
    sizes = (5, 6, 7, 9, 11, 12, 15, 18, 21, 24, 26, 30)
    clouds = _clouds(2, sizes)
    C, p = _space(3, 7)
    kw = {"epsilon": 0.02, "chunk_elements": 4000, **solver}
    chunks = gw_batches.chunk_clouds(clouds, 7, 4000)
    assert len(chunks) > 2
    chunk_of = {sizes[int(i)]: c for c, (idx, _) in enumerate(chunks) for i in idx}
    alone = gw_batches.gw_to_one(clouds, C, p, tail_park=0, **kw)  # type: ignore[arg-type]
    resumed = _spy_resumed(monkeypatch)
    tail = gw_batches.gw_to_one(clouds, C, p, tail_park=park, **kw)  # type: ignore[arg-type]
    if park == 2:  # a resumed batch holds clouds of several chunks (of other widths)
        mixed = [{chunk_of[int(n)] for n in batch} for batch in resumed]
        assert max(len(m) for m in mixed) > 1
    else:  # all parked after their first iteration
        assert sum(len(batch) for batch in resumed) == len(clouds)
    torch.testing.assert_close(tail.value, alone.value, rtol=1e-9, atol=0)
    assert torch.equal(tail.n_iter, alone.n_iter)
    assert torch.equal(tail.converged, alone.converged)
    assert tail.plan is not None and alone.plan is not None
    torch.testing.assert_close(tail.plan, alone.plan, rtol=0, atol=1e-9)
    torch.testing.assert_close(tail.potentials[1], alone.potentials[1], rtol=0, atol=1e-7)
    if solver is PLAN_TESTS:  # some stop unconverged at max_iter
        assert bool((alone.n_iter == 31).any()) and not bool(alone.converged.all())


@pytest.mark.parametrize("solve", ["one", "pairs"])
def test_the_shared_tail_keeps_the_chunk_memory_budget(
    solve: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a small chunk budget every chunk parks all its problems after one iteration; the
    resumed batches still hold at most the budget (B·(n² + 8nm) elements, as size_chunks cuts
    them), and the values equal the solve without a shared tail."""
    clouds = _clouds(4, tuple(range(14, 38)))  # 24 clouds of 14-37 points
    C, p = _space(5, 6)
    m, budget = 6, 4000  # 1-5 clouds per chunk
    kw = {"epsilon": 0.02, "chunk_elements": budget, **VALUE_TEST}
    chunks = gw_batches.chunk_clouds(clouds, m, budget)
    assert len(chunks) > 5 and max(len(idx) for idx, _ in chunks) <= 64

    def run(tail_park: int) -> GWResult:
        if solve == "one":
            return gw_batches.gw_to_one(clouds, C, p, tail_park=tail_park, **kw)  # type: ignore[arg-type]
        return gw_batches.solve_pairs(
            chunks,
            C.expand(len(clouds), m, m),
            p.expand(len(clouds), m),
            tail_park=tail_park,
            **kw,  # type: ignore[arg-type]
        )

    alone = run(0)
    resumed = _spy_resumed(monkeypatch)
    tail = run(64)
    assert sum(len(b) for b in resumed) == len(clouds)  # all parked at the first iteration
    width = [int(b.max()) for b in resumed]
    assert all(
        len(b) == 1 or len(b) * (n * n + 8 * n * m) <= budget
        for b, n in zip(resumed, width, strict=True)
    )
    torch.testing.assert_close(tail.value, alone.value, rtol=1e-9, atol=0)
    assert torch.equal(tail.n_iter, alone.n_iter)
    assert tail.plan is not None and alone.plan is not None
    torch.testing.assert_close(tail.plan, alone.plan, rtol=0, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_exp_zeroes_only_results_below_three_tiny(dtype: torch.dtype) -> None:
    """_exp_ equals exp wherever the result is at least 3·tiny (tiny: the smallest normal
    number), and gives 0 below: subnormal results, normal ones in [tiny, 3·tiny), -inf and
    padding costs (never more than 3·tiny off); NaN stays NaN."""
    tiny = torch.finfo(dtype).tiny
    floor = math.log(tiny)
    x = torch.cat(
        [
            torch.linspace(floor - 30, 5, 2001, dtype=torch.float64),
            torch.tensor([-torch.inf, -1e8, floor, floor + 1, floor + 1.05, floor + 1.5, 0.0]),
        ]
    ).to(dtype)
    want = torch.exp(x)
    got = _exp_(x.clone())
    keep = want >= 3 * tiny
    assert torch.equal(got[keep], want[keep])
    assert bool((got[~keep] == 0).all())
    assert float((got - want).abs().max()) <= 3 * tiny
    assert bool((want[~keep] > math.e * tiny).any())  # normal results below 3·tiny are zeroed too
    assert bool(_exp_(torch.tensor([torch.nan], dtype=dtype)).isnan().all())
