"""The GW code's finiteness checks: non-finite or invalid clouds and centers refused where they
enter (naming the cloud), non-finite solver values refused where they leave, on both paths."""

from __future__ import annotations

import math

import pytest
import torch

from poisonlab.errors import DataError, NumericalError
from poisonlab.explain.gromov import entropic_gw
from poisonlab.explain.gw_kmeans import gw_distances_to_centers, gw_kmeans, gw_kmeans_many
from poisonlab.explain.point_cloud import PointClouds, heatmaps_to_clouds
from tests.explain.test_gw_kmeans import _heatmaps


def _clouds() -> PointClouds:
    return heatmaps_to_clouds(_heatmaps(n_one=6, n_two=3)[0], max_points=16)


def _with(clouds: PointClouds, *, C: torch.Tensor | None = None, p: torch.Tensor | None = None):
    return PointClouds(
        clouds.C if C is None else C, clouds.p if p is None else p, clouds.sizes, None
    )


def test_kmeans_refuses_a_non_finite_cloud_naming_it() -> None:
    clouds = _clouds()
    C = clouds.C.clone()
    C[4, 1, 2] = C[4, 2, 1] = math.nan
    with pytest.raises(DataError, match=r"^cloud 4 of 9: its structure matrix C holds NaN; exp"):
        gw_kmeans(_with(clouds, C=C), generator=torch.Generator().manual_seed(0))
    p = clouds.p.clone()
    p[2, 0] = math.inf  # on the old code: no error, the inner solves ran for minutes
    with pytest.raises(DataError, match=r"^batch 1, cloud 2 of 9: its masses p holds inf"):
        gw_kmeans_many(
            [clouds, _with(clouds, p=p)],
            generators=[torch.Generator(), torch.Generator()],
            max_iter=0,
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (-0.5, r"cloud 3 of 9: its masses p sum to 0\.5; expected 1"),
        (-2.0, r"cloud 3 of 9: its masses p hold a negative value"),
    ],
)
def test_kmeans_refuses_invalid_masses(change: float, message: str) -> None:
    clouds = _clouds()
    p = clouds.p.clone()
    p[3] = p[3] * (1 + change) if change > -1 else p[3]
    if change <= -1:
        p[3, 0], p[3, 1] = p[3, 0] + 1.0, p[3, 1] - 1.0  # still sums to 1
    with pytest.raises(DataError, match=message):
        gw_kmeans(_with(clouds, p=p), generator=torch.Generator(), max_iter=0)


def test_a_cloud_beyond_the_compute_dtype_is_named_as_such() -> None:
    """A float64 cloud that float32 (the default compute dtype) cannot hold: finite as given,
    inf once converted; the message says so and names float64."""
    clouds = _clouds()
    C = clouds.C.clone()
    C[5] *= 1e39
    with pytest.raises(DataError, match=r"cloud 5 of 9: .* up to 1e\+39, beyond torch\.float32"):
        gw_kmeans(_with(clouds, C=C), generator=torch.Generator(), max_iter=0)


def test_distances_to_centers_refuse_a_non_finite_center() -> None:
    clouds = _clouds()
    run = gw_kmeans(clouds, generator=torch.Generator().manual_seed(0), max_iter=0)
    (C0, p0), (C1, p1) = run.centers
    C1 = C1.clone()
    C1[0, 0] = -math.inf
    with pytest.raises(DataError, match=r"^center 1 of 2: its structure matrix C holds inf"):
        gw_distances_to_centers(clouds, [(C0, p0), (C1, p1)])


def test_heatmaps_to_clouds_names_the_non_finite_heatmap() -> None:
    maps = _heatmaps(n_one=2, n_two=1)[0]
    maps[2, 3, 3] = math.inf
    with pytest.raises(DataError, match=r"^heatmap 2 of 3 holds inf; expected finite relevance"):
        heatmaps_to_clouds(maps)


def test_all_zero_heatmap_gets_a_uniform_cloud_and_finite_distances() -> None:
    """An all-zero heatmap (no positive relevance) is a constant map: uniform mass over the
    pooled grid, not 0/0; the k-means distances of its cloud are finite."""
    maps = _heatmaps(n_one=6, n_two=3)[0]
    maps[1] = 0.0
    clouds = heatmaps_to_clouds(maps, max_points=None)  # 10×10 pooled by 2: 25 pixels
    assert int(clouds.sizes[1]) == 25
    torch.testing.assert_close(clouds.p[1, :25], torch.full((25,), 0.04, dtype=torch.float64))
    run = gw_kmeans(clouds, generator=torch.Generator().manual_seed(0), max_iter=1)
    assert torch.isfinite(run.distances).all() and run.distances[1].min() > 0


# -- the values leaving the solvers ----------------------------------------------------------


def _pairs(dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    clouds = _clouds()
    C2 = clouds.C[0, :8, :8]
    q = torch.full((8,), 1 / 8, dtype=torch.float64)
    return clouds.C.to(dtype), clouds.p.to(dtype), ((C2 + C2.T) / 2).to(dtype), q.to(dtype)


@pytest.mark.parametrize("fused", [False, True])
def test_an_overflow_in_float32_is_refused_naming_dtype_and_scale(fused: bool) -> None:
    """ε = 1e-10 on clouds of unit scale: costs / ε ~ 1e10 overflow the float32 solves (every
    value NaN on the old code, on both paths), float64 solves it."""
    if fused:
        pytest.importorskip("numba")
    args = _pairs(torch.float32)
    message = (
        r"^entropic GW gave NaN for problem 0 \(\d of 9 problems\) in torch\.float32, stopping "
        r"after \d+ outer iterations: an overflow, .* epsilon=1e-10 .*; compute in float64"
    )
    with pytest.raises(NumericalError, match=message):
        entropic_gw(*args, epsilon=1e-10, max_iter=5, fused=fused)
    again = entropic_gw(*_pairs(torch.float64), epsilon=1e-10, max_iter=5, fused=fused)
    assert torch.isfinite(again.value).all()


def test_the_fused_rows_check_their_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """The k-means distances solved by the fused rows (read in place) are checked too: a NaN
    value from the compiled loops (here planted) stops the run, naming the problem's rows."""
    pytest.importorskip("numba")
    from poisonlab.explain import _gw_fused

    solve_rows = _gw_fused.solve_rows

    def poisoned(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = solve_rows(*args, **kwargs)
        out[0][-1] = math.nan
        return out

    monkeypatch.setattr(_gw_fused, "solve_rows", poisoned)
    with pytest.raises(NumericalError, match=r"NaN for problem \d+ \(cloud row \d+, space \d+\)"):
        gw_kmeans(_clouds(), generator=torch.Generator().manual_seed(0), max_iter=0)
