"""Parking and resuming entropic GW problems (the chunks' shared tail) and the kernel's exp."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import poisonlab.explain.gw_batches as gw_batches
from poisonlab.explain import gromov
from poisonlab.explain._newton_ot import _exp_
from poisonlab.explain.gromov import entropic_gw
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


@pytest.mark.parametrize(
    "solver",
    [
        {"check_every": 1, "value_rtol": 1e-5},  # the clustering path (inexact inner solves)
        {"check_every": 3, "max_iter": 31, "tol": 1e-5},  # plan tests only; two hit max_iter
    ],
)
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
    rest = entropic_gw(
        clouds.C[st.index],
        clouds.p[st.index],
        C,
        p,
        T0=st.plan,
        potentials=(st.f, st.g),
        resume=st,
        **kw,  # type: ignore[arg-type]
    )
    done = torch.ones(len(clouds), dtype=torch.bool)
    done[st.index] = False
    torch.testing.assert_close(first.value[done], ref.value[done], rtol=1e-12, atol=0)
    assert torch.equal(first.n_iter[done], ref.n_iter[done])
    torch.testing.assert_close(rest.value, ref.value[st.index], rtol=1e-9, atol=0)
    assert torch.equal(rest.n_iter, ref.n_iter[st.index])
    assert torch.equal(rest.converged, ref.converged[st.index])
    assert rest.plan is not None and ref.plan is not None
    torch.testing.assert_close(rest.plan, ref.plan[st.index], rtol=0, atol=1e-9)


@pytest.mark.parametrize("park", [2, 1000])
def test_chunked_solve_with_a_shared_tail_equals_chunks_alone(
    park: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several size chunks whose last problems finish together (padded to the largest cloud)
    give the values, iterations and plans of each chunk solved to the end on its own."""
    clouds = _clouds(2, (5, 6, 7, 9, 11, 12, 15, 18, 21, 24, 26, 30))
    C, p = _space(3, 7)
    kw = {"epsilon": 0.02, "chunk_elements": 4000, "check_every": 1, "value_rtol": 1e-5}
    assert len(gw_batches.chunk_clouds(clouds, 7, 4000)) > 2
    monkeypatch.setattr(gw_batches, "TAIL_PARK", 0)
    alone = gw_batches.gw_to_one(clouds, C, p, **kw)  # type: ignore[arg-type]
    monkeypatch.setattr(gw_batches, "TAIL_PARK", park)
    tail = gw_batches.gw_to_one(clouds, C, p, **kw)  # type: ignore[arg-type]
    torch.testing.assert_close(tail.value, alone.value, rtol=1e-9, atol=0)
    assert torch.equal(tail.n_iter, alone.n_iter)
    assert torch.equal(tail.converged, alone.converged)
    assert tail.plan is not None and alone.plan is not None
    torch.testing.assert_close(tail.plan, alone.plan, rtol=0, atol=1e-9)
    torch.testing.assert_close(tail.potentials[1], alone.potentials[1], rtol=0, atol=1e-7)


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
    kw = {"epsilon": 0.02, "chunk_elements": budget, "check_every": 1, "value_rtol": 1e-5}
    chunks = gw_batches.chunk_clouds(clouds, m, budget)
    assert len(chunks) > 5 and max(len(idx) for idx, _ in chunks) <= gw_batches.TAIL_PARK

    def run() -> gromov.GWResult:
        if solve == "one":
            return gw_batches.gw_to_one(clouds, C, p, **kw)  # type: ignore[arg-type]
        return gw_batches.solve_pairs(
            chunks,
            C.expand(len(clouds), m, m),
            p.expand(len(clouds), m),
            **kw,  # type: ignore[arg-type]
        )

    monkeypatch.setattr(gw_batches, "TAIL_PARK", 0)
    alone = run()
    monkeypatch.setattr(gw_batches, "TAIL_PARK", 64)
    resumed: list[tuple[int, int]] = []
    solve_one = gw_batches.entropic_gw

    def spy(C1: torch.Tensor, *args: object, **kwargs: object) -> gromov.GWResult:
        if kwargs.get("resume") is not None:
            resumed.append((C1.shape[0], C1.shape[-1]))
        return solve_one(C1, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(gw_batches, "entropic_gw", spy)
    tail = run()
    assert sum(b for b, _ in resumed) == len(clouds)  # all parked at the first iteration
    assert all(b == 1 or b * (n * n + 8 * n * m) <= budget for b, n in resumed)
    torch.testing.assert_close(tail.value, alone.value, rtol=1e-9, atol=0)
    assert torch.equal(tail.n_iter, alone.n_iter)
    assert tail.plan is not None and alone.plan is not None
    torch.testing.assert_close(tail.plan, alone.plan, rtol=0, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_exp_changes_only_results_below_the_normal_range(dtype: torch.dtype) -> None:
    """_exp_ equals exp wherever the result is a normal number above e·tiny, and gives 0
    (never more than e·tiny off) for underflowing arguments, -inf and padding costs."""
    tiny = torch.finfo(dtype).tiny
    floor = math.log(tiny)
    x = torch.cat(
        [
            torch.linspace(floor - 30, 5, 2001, dtype=torch.float64),
            torch.tensor([-torch.inf, -1e8, floor, floor + 1, floor + 1.5, 0.0]),
        ]
    ).to(dtype)
    want = torch.exp(x)
    got = _exp_(x.clone())
    keep = x >= floor + 1
    assert torch.equal(got[keep], want[keep])
    assert bool((got[~keep] == 0).all())
    assert float((got - want).abs().max()) <= math.e * tiny
