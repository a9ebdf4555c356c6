"""GW barycenters against POT, and GW k-means++ on planted groups of heatmap clouds."""

from __future__ import annotations

import warnings

import numpy as np
import ot
import pytest
import torch

from poisonlab.explain.gw_barycenter import (
    gw_barycenter,
    gw_barycenters,
    random_structure,
    update_structure,
)
from poisonlab.explain.gw_kmeans import gw_distances_to_centers, gw_kmeans, gw_kmeans_many
from poisonlab.explain.gw_lloyd import assign_nearest
from poisonlab.explain.point_cloud import heatmaps_to_clouds, pad_clouds


def _members(seed: int, count: int = 5) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    Cs, ps = [], []
    for _ in range(count):
        x = rng.normal(size=(int(rng.integers(6, 14)), 2))
        x[: len(x) // 3] += 3.0  # two groups of points: the barycenter keeps structure
        C = ot.dist(x, x, metric="euclidean")
        p = rng.random(len(x)) + 0.2
        Cs.append(C / C.max())
        ps.append(p / p.sum())
    return Cs, ps


def _heatmaps(n_one: int, n_two: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """10×10 maps: a blob near the centre; the planted group adds a bright corner patch."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(10.0), torch.arange(10.0), indexing="ij")
    centre = 3.5 + 2 * torch.rand(n_one + n_two, 2, generator=g)
    d2 = (yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2
    maps = torch.exp(-d2 / 2.0) * (1 + 0.1 * torch.rand(n_one + n_two, 10, 10, generator=g))
    planted = torch.zeros(n_one + n_two, dtype=torch.bool)
    planted[torch.randperm(n_one + n_two, generator=g)[:n_two]] = True
    maps[planted, 7:9, 7:9] += 2.0
    return maps, planted


def test_update_structure_matches_pot() -> None:
    Cs, ps = _members(0)
    rng = np.random.default_rng(1)
    Ts = [rng.random((4, len(p))) for p in ps]
    lambdas = [0.1, 0.3, 0.2, 0.25, 0.15]
    ref = ot.gromov.update_barycenter_structure(Ts, Cs, lambdas, ot.unif(4), target=False)
    clouds = pad_clouds([torch.as_tensor(C) for C in Cs], [torch.as_tensor(p) for p in ps])
    plans = torch.zeros(5, clouds.n_max, 4, dtype=torch.float64)
    for s, T in enumerate(Ts):
        plans[s, : T.shape[1]] = torch.as_tensor(T.T)
    ours = update_structure(clouds.C, plans, torch.tensor(lambdas).double(), torch.full((4,), 0.25))
    torch.testing.assert_close(ours, torch.as_tensor(ref))


def test_barycenter_follows_pot_from_the_same_start() -> None:
    Cs, ps = _members(2, count=3)
    cpu = torch.device("cpu")
    init = random_structure(4, generator=torch.Generator().manual_seed(0), dtype=torch.float64,
                            device=cpu)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ot.gromov.entropic_gromov_barycenters(
            4, Cs, ps, ot.unif(4), None, "square_loss", 0.1, max_iter=10, tol=0,
            init_C=init.numpy(),
        )  # fmt: skip
    clouds = pad_clouds([torch.as_tensor(C) for C in Cs], [torch.as_tensor(p) for p in ps])
    ours = gw_barycenter(clouds, n_support=4, epsilon=0.1, max_iter=10, tol=0, init_C=init)
    # Ten updates, each from couplings solved to POT's inner tolerance 1e-4: same iterates up to
    # that tolerance (at convergence, 120 updates, the gap is ~1e-6).
    torch.testing.assert_close(ours.C, torch.as_tensor(ref), atol=1e-4, rtol=0)
    assert ours.n_iter == 10 and ours.plans.shape == (3, clouds.n_max, 4)


def test_capped_warm_started_couplings_reach_the_same_barycenter() -> None:
    Cs, ps = _members(4, count=4)
    clouds = pad_clouds([torch.as_tensor(C) for C in Cs], [torch.as_tensor(p) for p in ps])
    init = random_structure(5, generator=torch.Generator().manual_seed(2), dtype=torch.float64,
                            device=torch.device("cpu"))  # fmt: skip
    full = gw_barycenter(clouds, n_support=5, tol=0, rtol=1e-8, max_iter=300, init_C=init)
    fast = gw_barycenter(
        clouds, n_support=5, tol=0, rtol=1e-6, max_iter=300, init_C=init, gw_max_iter=3,
        inexact=1e-2,
    )  # fmt: skip
    assert full.converged and fast.converged and fast.n_iter < 300
    torch.testing.assert_close(fast.C, full.C, atol=1e-4, rtol=0)


def test_barycenter_is_unique_up_to_a_permutation_of_its_points() -> None:
    Cs, ps = _members(3, count=3)
    clouds = pad_clouds([torch.as_tensor(C) for C in Cs], [torch.as_tensor(p) for p in ps])
    init = random_structure(4, generator=torch.Generator().manual_seed(1), dtype=torch.float64,
                            device=torch.device("cpu"))  # fmt: skip
    perm = torch.tensor([2, 0, 3, 1])
    a = gw_barycenter(clouds, n_support=4, max_iter=10, tol=0, init_C=init)
    b = gw_barycenter(clouds, n_support=4, max_iter=10, tol=0, init_C=init[perm][:, perm])
    torch.testing.assert_close(b.C, a.C[perm][:, perm], atol=1e-9, rtol=0)
    torch.testing.assert_close(b.values, a.values, atol=1e-12, rtol=1e-9)


def test_assign_reseeds_an_empty_cluster_with_the_farthest_point() -> None:
    dist = torch.tensor([[0.1, 0.9], [0.2, 0.8], [0.7, 0.95], [0.3, 0.9]])
    labels = assign_nearest(dist, 2)
    assert labels.tolist() == [0, 0, 1, 0]  # cloud 2 is farthest from its own center


@pytest.mark.parametrize(("warm_start", "dtype"), [(True, torch.float32), (False, None)])
def test_kmeans_separates_planted_groups_and_is_deterministic(
    warm_start: bool, dtype: torch.dtype | None
) -> None:
    maps, planted = _heatmaps(n_one=12, n_two=5)
    clouds = heatmaps_to_clouds(maps, max_points=24)
    runs = [
        gw_kmeans(
            clouds, generator=torch.Generator().manual_seed(7), warm_start=warm_start, dtype=dtype
        )
        for _ in range(2)
    ]
    result = runs[0]
    assert torch.equal(result.in_minority, planted)  # the corner patch group, perfectly
    assert result.distances.shape == (17, 2) and result.seeds.unique().numel() == 2
    assert result.centers[0][0].shape == (10, 10)  # barycenters with N = 10 points
    assert result.distances.dtype == result.centers[0][0].dtype == torch.float64  # as clouds
    assert torch.equal(runs[1].labels, result.labels)
    torch.testing.assert_close(runs[1].distances, result.distances, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, None])
def test_distances_to_centers_are_the_runs_own(dtype: torch.dtype | None) -> None:
    """New clouds are measured against fitted centers as the run measures its clouds: the
    clustered clouds themselves get the distances of a run without warm starts (whose last
    distances are solved from the product coupling too), in the clouds' dtype."""
    maps, _ = _heatmaps(n_one=12, n_two=5)
    clouds = heatmaps_to_clouds(maps, max_points=24)
    run = gw_kmeans(
        clouds, generator=torch.Generator().manual_seed(7), warm_start=False, dtype=dtype
    )
    again = gw_distances_to_centers(clouds, run.centers, epsilon=0.02, dtype=dtype)
    assert again.shape == (17, 2) and again.dtype == clouds.C.dtype
    torch.testing.assert_close(again, run.distances, rtol=1e-5, atol=1e-7)


def test_kmeans_rejects_too_few_clouds() -> None:
    clouds = heatmaps_to_clouds(_heatmaps(1, 0)[0])
    with pytest.raises(ValueError, match="k"):
        gw_kmeans(clouds, generator=torch.Generator())


def test_farthest_seeding_takes_the_cloud_farthest_from_the_first_seed() -> None:
    """``init="farthest"`` (the paper's text): the same uniformly drawn first seed as k-means++,
    then the cloud with the largest GW distance to it (the seeding distances are the returned
    ones when no update runs), with no further draw from the generator."""
    maps, _ = _heatmaps(n_one=12, n_two=5)
    clouds = heatmaps_to_clouds(maps, max_points=24)
    runs = {
        init: gw_kmeans(clouds, generator=torch.Generator().manual_seed(5), max_iter=0, init=init)
        for init in ("k-means++", "farthest")
    }
    far = runs["farthest"]
    assert int(far.seeds[0]) == int(runs["k-means++"].seeds[0])
    to_first = far.distances[:, 0].clone()
    to_first[far.seeds[0]] = -1.0
    assert int(far.seeds[1]) == int(torch.argmax(to_first))
    assert far.n_iter == 0 and torch.equal(far.labels, torch.argmin(far.distances, dim=1))
    # the generator moved by exactly the first seed's draw (k-means++ also draws the second)
    gen, ref = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    gw_kmeans(clouds, generator=gen, max_iter=0, init="farthest")
    torch.randint(len(clouds), (1,), generator=ref)
    assert torch.equal(gen.get_state(), ref.get_state())


def test_kmeans_rejects_an_unknown_seeding() -> None:
    clouds = heatmaps_to_clouds(_heatmaps(3, 2)[0], max_points=24)
    with pytest.raises(ValueError, match="init must be one of"):
        gw_kmeans(clouds, generator=torch.Generator(), init="random")


def test_restarts_keep_the_lowest_objective() -> None:
    """``n_init`` k-means++ runs draw from one generator in turn: the first is the single run,
    and the result is the restart with the lowest objective (the mean GW distance of the clouds
    to their own center), whatever its position."""
    maps, _ = _heatmaps(n_one=12, n_two=5)
    clouds = heatmaps_to_clouds(maps, max_points=24)
    single = gw_kmeans(clouds, generator=torch.Generator().manual_seed(3), max_iter=1)
    many = gw_kmeans(clouds, generator=torch.Generator().manual_seed(3), max_iter=1, n_init=4)
    assert len(many.objectives) == 4 and many.objectives[0] == single.objective
    assert many.objective == min(many.objectives)
    assert many.restart == many.objectives.index(min(many.objectives))
    assert many.restart > 0  # here a later restart wins (measured: the third)
    own = many.distances.gather(1, many.labels[:, None])[:, 0]
    assert float(own.double().mean()) == pytest.approx(many.objective, rel=1e-6)


def test_kmeans_runs_on_one_thread_whatever_the_callers_count() -> None:
    """The solves run with one intra-op thread (their tensors are small: a second thread made
    them slower) and the caller's count is restored; the result does not depend on it."""
    maps, _ = _heatmaps(n_one=12, n_two=5)
    clouds = heatmaps_to_clouds(maps, max_points=24)
    seen: list[int] = []
    import poisonlab.explain.gw_lloyd as module

    original = module.gw_to_spaces

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    before = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            module.gw_to_spaces = spy
            try:
                results.append(gw_kmeans(clouds, generator=torch.Generator().manual_seed(7)))
            finally:
                module.gw_to_spaces = original
            assert torch.get_num_threads() == count  # restored
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {1}
    assert torch.equal(results[0].labels, results[1].labels)
    assert torch.equal(results[0].distances, results[1].distances)


def test_barycenters_in_lockstep_equal_each_group_alone() -> None:
    """gw_barycenters runs every group's own iteration and stopping rule; solving the groups'
    couplings in one batch does not change the barycenters beyond the solver's tolerances."""
    groups, starts = [], []
    for seed, count in ((3, 4), (4, 2), (5, 6)):
        Cs, ps = _members(seed, count=count)
        groups.append(
            pad_clouds([torch.as_tensor(C) for C in Cs], [torch.as_tensor(p) for p in ps])
        )
        starts.append(
            random_structure(
                4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64,
                device=torch.device("cpu"),
            )
        )  # fmt: skip
    kw = {"n_support": 4, "epsilon": 0.05, "max_iter": 30, "tol": 1e-7}
    alone = [gw_barycenter(g, init_C=C0, **kw) for g, C0 in zip(groups, starts, strict=True)]  # type: ignore[arg-type]
    together = gw_barycenters(groups, torch.stack(starts), **kw)  # type: ignore[arg-type]
    for a, b, g in zip(alone, together, groups, strict=True):
        assert b.n_iter == a.n_iter and b.converged == a.converged
        assert b.plans.shape == (len(g), g.n_max, 4)
        torch.testing.assert_close(b.C, a.C, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(b.values, a.values, rtol=1e-6, atol=1e-12)
    with pytest.raises(ValueError, match="init_C"):
        gw_barycenters(groups, torch.stack(starts[:2]), **kw)  # type: ignore[arg-type]


def test_many_batches_in_lockstep_match_separate_runs() -> None:
    """gw_kmeans_many clusters each batch as gw_kmeans alone would: the same seeds (each batch
    has its own generator, restarts draw from it in turn), splits and kept restart. The batched
    solves mix problems of all runs, so their arithmetic differs in the last bits; most distances
    agree to the solver's tolerances, but GW is not convex and a problem may settle on a nearby
    local solution (one of 34 moved by 2.4% on one CPU, none on another), so the distances are
    held to that and the objective to 1%."""
    batches = []
    for seed, (one, two) in enumerate(((12, 5), (9, 4), (14, 6))):
        maps, _ = _heatmaps(n_one=one, n_two=two, seed=seed)
        batches.append(heatmaps_to_clouds(maps, max_points=24))
    kw = {"n_init": 2, "max_iter": 3}
    alone = [
        gw_kmeans(b, generator=torch.Generator().manual_seed(i), **kw)  # type: ignore[arg-type]
        for i, b in enumerate(batches)
    ]
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    together = gw_kmeans_many(batches, generators=gens, **kw)  # type: ignore[arg-type]
    for a, b in zip(alone, together, strict=True):
        assert torch.equal(a.seeds, b.seeds) and torch.equal(a.labels, b.labels)
        assert a.restart == b.restart and len(b.objectives) == 2
        close = torch.isclose(b.distances, a.distances, rtol=1e-3, atol=1e-6)
        assert close.float().mean() >= 0.9, (b.distances, a.distances)
        assert b.objective == pytest.approx(a.objective, rel=1e-2)
    with pytest.raises(ValueError, match="one generator per batch"):
        gw_kmeans_many(batches, generators=gens[:2])
    with pytest.raises(ValueError, match=r"batch 1"):
        gw_kmeans_many([batches[0], batches[1].subset(torch.tensor([0]))], generators=gens[:2])
