"""Heatmap → metric-measure space (docs/methods.md#point-clouds): mass cut, size bound, padding,
degenerate maps."""

from __future__ import annotations

import math

import pytest
import torch

from poisonlab.explain.point_cloud import PointClouds, heatmaps_to_clouds, pad_clouds


def _maps(batch: int = 6, size: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = 3 + 6 * torch.rand(batch, 2, generator=g)
    sigma = 1.0 + 1.5 * torch.rand(batch, generator=g)
    d2 = (yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2
    maps = torch.exp(-d2 / (2 * sigma[:, None, None] ** 2))
    return maps * (1 + 0.2 * torch.randn(batch, size, size, generator=g)) - 0.05


def _normalised(maps: torch.Tensor) -> torch.Tensor:
    r = maps.double().flatten(1)
    r = (r - r.amin(1, keepdim=True)) / (r.amax(1, keepdim=True) - r.amin(1, keepdim=True))
    return r / r.sum(1, keepdim=True)


def test_cut_keeps_smallest_prefix_above_mass() -> None:
    maps = _maps()
    clouds = heatmaps_to_clouds(maps, pool=1, max_points=None)
    r_sorted = _normalised(maps).sort(dim=1, descending=True).values
    for i, k in enumerate(clouds.sizes.tolist()):
        assert r_sorted[i, :k].sum() > 0.99  # at least 99% of the relevance is kept...
        assert r_sorted[i, : k - 1].sum() <= 0.99  # ...by the smallest such prefix
        kept = clouds.p[i, :k] * r_sorted[i, :k].sum()
        torch.testing.assert_close(kept, r_sorted[i, :k])  # p = kept masses, renormalised


def test_structure_is_a_normalised_distance_matrix_with_zero_padding() -> None:
    clouds = heatmaps_to_clouds(_maps(), pool=1, max_points=None)
    assert clouds.C.dtype == torch.float64 and clouds.p.dtype == torch.float64
    torch.testing.assert_close(clouds.p.sum(1), torch.ones(len(clouds), dtype=torch.float64))
    torch.testing.assert_close(clouds.C, clouds.C.transpose(1, 2))
    for i, k in enumerate(clouds.sizes.tolist()):
        C, p = clouds.C[i], clouds.p[i]
        assert float(C[:k, :k].max()) == pytest.approx(1.0)
        assert torch.all(C.diagonal() == 0)
        assert torch.all(C[k:] == 0) and torch.all(C[:, k:] == 0) and torch.all(p[k:] == 0)
        assert torch.all(p[:k] > 0)
        xy = clouds.coords[i, :k]  # type: ignore[index]
        dist = torch.cdist(xy, xy)
        torch.testing.assert_close(C[:k, :k], dist / dist.max())


def test_max_points_caps_size_and_keeps_the_heaviest_points() -> None:
    maps = _maps()
    full = heatmaps_to_clouds(maps, pool=1, max_points=None)
    capped = heatmaps_to_clouds(maps, pool=1, max_points=10)
    assert capped.n_max == 10 and torch.all(capped.sizes == full.sizes.clamp(max=10))
    torch.testing.assert_close(capped.p.sum(1), torch.ones(len(maps), dtype=torch.float64))
    for i in range(len(maps)):
        torch.testing.assert_close(capped.coords[i], full.coords[i, :10])  # type: ignore[index]


def test_batched_build_equals_one_by_one() -> None:
    maps = _maps(batch=4)
    batched = heatmaps_to_clouds(maps, max_points=40)
    for i in range(len(maps)):
        single = heatmaps_to_clouds(maps[i : i + 1], max_points=40)
        C1, p1 = batched.cloud(i)
        C2, p2 = single.cloud(0)
        torch.testing.assert_close(C1, C2)
        torch.testing.assert_close(p1, p2)


def test_pooling_averages_blocks_before_the_cut() -> None:
    maps = _maps(batch=2, size=12)
    pooled = heatmaps_to_clouds(maps, pool=2, max_points=None)
    direct = heatmaps_to_clouds(
        torch.nn.functional.avg_pool2d(maps.unsqueeze(1), 2).squeeze(1), pool=1, max_points=None
    )
    torch.testing.assert_close(pooled.C, direct.C)
    assert float(pooled.coords.max()) <= 5  # type: ignore[union-attr]  # 6×6 grid
    with pytest.raises(ValueError, match="pool"):
        heatmaps_to_clouds(maps, pool=5)
    with pytest.raises(ValueError, match="pool"):
        heatmaps_to_clouds(_maps(batch=1, size=5))  # the default pool=2 needs even sizes


def test_degenerate_maps_give_defined_clouds() -> None:
    constant = torch.full((1, 4, 4), 3.0)
    spike = torch.zeros(1, 4, 4)
    spike[0, 2, 1] = 5.0
    clouds = heatmaps_to_clouds(torch.cat([constant, spike]), pool=1, max_points=None)
    assert clouds.sizes.tolist() == [16, 1]  # constant map: uniform mass, all pixels
    torch.testing.assert_close(clouds.p[0], torch.full((16,), 1 / 16, dtype=torch.float64))
    C, p = clouds.cloud(1)  # single pixel: C = [[0]], p = [1]
    assert C.tolist() == [[0.0]] and p.tolist() == [1.0]
    assert clouds.coords[1, 0].tolist() == [2.0, 1.0]  # type: ignore[index]
    assert torch.isfinite(clouds.C).all() and torch.isfinite(clouds.p).all()


def test_bad_input_raises() -> None:
    bad = torch.zeros(1, 4, 4)
    bad[0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        heatmaps_to_clouds(bad)
    with pytest.raises(ValueError, match="shape"):
        heatmaps_to_clouds(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="mass"):
        heatmaps_to_clouds(_maps(batch=1, size=4), mass=0.0)


def test_dtype_and_pad_clouds_roundtrip() -> None:
    clouds = heatmaps_to_clouds(_maps(batch=3), dtype=torch.float32, max_points=30)
    assert clouds.C.dtype == torch.float32 and clouds.coords.dtype == torch.float32  # type: ignore[union-attr]
    again = pad_clouds(*zip(*(clouds.cloud(i) for i in range(3)), strict=True))  # type: ignore[arg-type]
    torch.testing.assert_close(again.C, clouds.C)
    sub = clouds.subset(torch.tensor([2, 0]))
    assert isinstance(sub, PointClouds) and sub.n_max == int(clouds.sizes[[2, 0]].max())
