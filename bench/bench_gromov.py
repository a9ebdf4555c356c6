"""Heatmap Clustering's GW core: our batched torch solvers vs per-pair POT loops, same clouds.

Synthetic 32×32 relevance maps stand in for LRP heatmaps: a noisy Gaussian blob near the centre
(σ 2–3.5 px) and, for a third of them ("poisoned"), a bright 3×3 patch near the bottom-right
corner.  The paper's cut (top 99% of relevance) leaves ~200 points per map at full resolution
(``--iteration-pool 1``) and ~60 after Heatmap Clustering's default 2×2 pooling (``auto_pool``
on 32×32, the default here); no point cap.  ε = ε_b = 0.01 by default, the detector's.

Part 1, one k-means iteration on 1,000 such clouds, the current assignment being the planted
split: recompute the 2 barycenters (N = 10 points, from the same random start for everyone)
and the GW distances of all clouds to both.  Rows:

- ours float32 / float64: ``gw_barycenter`` with the clustering settings of ``gw_kmeans``
  (relative tolerance 1e-4, warm-started couplings capped at 50 iterations per update, inexact
  inner solves) + ``gw_to_one`` on all clouds (POT's criteria for the dtype), batched;
- POT entropic: POT's barycenter loop (``entropic_gromov_wasserstein`` per member, cold start,
  as ``entropic_gromov_barycenters`` does) + ``entropic_gromov_wasserstein2`` per pair;
- POT exact: the same with ``gromov_wasserstein`` / ``gromov_wasserstein2``.

The POT loops take tens of minutes per iteration, so they run on a random subset of clouds and
are extrapolated linearly in the number of clouds (each barycenter update costs one GW solve per
member, each distance one solve).  POT's barycenter loops are written out rather than called:
POT passes the barycenter's ``max_iter`` to the coupling solves, so timing a few updates with
``max_iter=k`` would cap each coupling at k iterations.  They are timed over their first
``--pot-updates`` (3) updates and extrapolated to the number of updates ours needed (first
update as measured, the others at the mean of the later measured ones).  Agreement: POT's
``entropic_gromov_wasserstein2`` from the subset clouds to OUR float64 barycenters vs our
float64 values, and vs our float32 solver on the same pairs.

Part 1 ends with the ratio the target is stated in, ours per warm Lloyd update of a real run
against POT's exact loop per iteration, read from ``--repeats`` (5) pairs timed in turn (ours,
POT, ours, POT, ...: a host that drifts moves both sides of a pair) after the rest of Part 1,
whose first real run is the warm-up: the median of the per-pair ratios, with min and max.

Part 2, a full Heatmap Clustering run with our defaults (pooling 2 → ~60 points per cloud,
k-means++ seeding included, float32) on the same 1,000 maps, and the same with tight criteria
(float64, barycenters to 1e-6 relative with fully solved couplings): wall and CPU seconds,
ACC/TPR/TNR against the planted split, and how many flags differ between the two.

Timings come from a shared 2-core machine that runs other jobs: the load average is printed,
compare rows of the same run only.  CPU seconds are less sensitive to the load than wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

if __package__ in (None, ""):  # run as `python bench/bench_gromov.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import poisonlab.explain.gw_lloyd as gw_lloyd_module
from bench.common import load_average, markdown_table, write_result
from bench.gromov_pot import (
    extrapolated,
    pot_batch_barycenter,
    pot_batch_to_one,
    pot_iteration,
    progress,
    timed_call,
)
from poisonlab.explain.gw_barycenter import gw_barycenters, random_structure
from poisonlab.explain.gw_batches import gw_to_centers, gw_to_one
from poisonlab.explain.gw_kmeans import gw_kmeans
from poisonlab.explain.point_cloud import heatmaps_to_clouds


def synthetic_heatmaps(n: int, *, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 32, 32) relevance-like maps and the bool mask of the "poisoned" third."""
    size = 32
    grid = torch.arange(size, dtype=torch.float64)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    u = torch.rand(n, 3, generator=generator, dtype=torch.float64)
    cy, cx, sigma = (
        size / 2 + 6 * (u[:, 0] - 0.5),
        size / 2 + 6 * (u[:, 1] - 0.5),
        2 + 1.5 * u[:, 2],
    )
    d2 = (yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2
    maps = torch.exp(-d2 / (2 * sigma[:, None, None] ** 2))
    noise = torch.randn(n, size, size, generator=generator, dtype=torch.float64)
    maps = maps * (1 + 0.3 * noise).clamp(min=0)
    poisoned = torch.zeros(n, dtype=torch.bool)
    poisoned[torch.randperm(n, generator=generator)[: round(n / 3)]] = True
    for i in torch.nonzero(poisoned).flatten().tolist():
        r0, c0 = (size - 4 - torch.randint(0, 3, (2,), generator=generator)).tolist()
        maps[i, r0 : r0 + 3, c0 : c0 + 3] += 1.0
    return maps, poisoned


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.1f} s"


#: Barycenter settings of the clustering path (gw_kmeans' defaults).
FAST_BARY = {
    "tol": 0.0,
    "rtol": 1e-4,
    "objective_rtol": 1e-4,
    "gw_max_iter": 50,
    "gw_value_rtol": 1e-5,
    "inexact": 1e-2,
    "check_every": 1,
}
#: Distance settings of the clustering path (gw_kmeans' defaults: stop on the GW loss).
FAST_DIST = {"check_every": 1, "value_rtol": 1e-5}


def real_iteration(
    args: argparse.Namespace, maps: torch.Tensor, inner: str = "auto"
) -> tuple[str, float, torch.Tensor]:
    """One Heatmap Clustering run (defaults, one restart) with every batched solve timed.

    The Lloyd updates of a real run start warm (each barycenter from the previous one, every
    coupling and distance from its previous plan), unlike the cold iteration of Part 1; this
    times them inside :func:`~poisonlab.explain.gw_kmeans.gw_kmeans`.  ``inner``: the inner OT
    solver of every GW solve (``entropic_gw``'s; default "auto", Newton on these 10-point
    barycenters).  Returns the text and the CPU seconds of one Lloyd update (barycenters +
    distances, mean over the run's updates).
    """
    clouds = heatmaps_to_clouds(maps, pool=args.iteration_pool, max_points=None)
    spent: dict[str, float] = {"seeding": 0.0, "updates": 0.0}
    solve = gw_lloyd_module._solve

    def timed_solve(key, reqs, run):  # type: ignore[no-untyped-def]
        c0 = time.process_time()
        out = solve(key, reqs, run)
        warm = (key[0] == "distances" and key[2]) or (key[0] == "barycenter" and key[1])
        spent["updates" if warm else "seeding"] += time.process_time() - c0
        return out

    gw_lloyd_module._solve = timed_solve
    try:
        res, wall, cpu = timed_call(
            lambda: gw_kmeans(
                clouds,
                epsilon=args.epsilon,
                bary_epsilon=args.bary_epsilon,
                n_support=args.n_support,
                generator=torch.Generator().manual_seed(args.seed),
                inner=inner,
            )
        )
    finally:
        gw_lloyd_module._solve = solve
    per_update = spent["updates"] / max(res.n_iter, 1)
    progress(f"real run ({inner}): {cpu:.1f} s CPU, {spent}, {res.n_iter} updates")
    how = "Newton inner solves" if inner == "auto" else f"{inner} inner solves"
    text = (
        f"A real run of `gw_kmeans` on the same {len(clouds)} clouds (defaults: float32, one "
        f"restart, {how}): {cpu:.1f} CPU-s ({wall:.1f} s wall), of which k-means++ seeding "
        f"{spent['seeding']:.1f} s and {res.n_iter} warm-started Lloyd updates "
        f"{spent['updates']:.1f} s, i.e. **{per_update:.2f} CPU-s per k-means iteration as "
        f"Heatmap Clustering runs it** ({'converged' if res.converged else 'not converged'})."
    )
    return text, per_update, res.labels


class RatioSummary(NamedTuple):
    """Repeated pairs of timings, ours and POT's: each pair's ratio and the medians."""

    ratios: list[float]  #: POT / ours, pair by pair
    ours: float  #: median of ours
    pot: float  #: median of POT's
    ratio: float  #: median of the per-pair ratios (the reading)
    low: float  #: smallest per-pair ratio
    high: float  #: largest per-pair ratio


def ratio_summary(ours: list[float], pot: list[float]) -> RatioSummary:
    """Per-pair ratios ``pot[i] / ours[i]``, their median, min and max, and each side's median."""
    if not ours or len(ours) != len(pot):
        raise ValueError(f"need as many timings of POT as of ours, got {len(pot)} and {len(ours)}")
    ratios = [b / a for a, b in zip(ours, pot, strict=True)]
    return RatioSummary(
        ratios,
        statistics.median(ours),
        statistics.median(pot),
        statistics.median(ratios),
        min(ratios),
        max(ratios),
    )


def repeated_ratio(
    args: argparse.Namespace, maps: torch.Tensor, pot_exact: Callable[[], tuple[float, float]]
) -> str:
    """Ours per warm update against POT's exact loop per iteration, ``--repeats`` pairs in turn.

    Each pair is a fresh :func:`real_iteration` (one ``gw_kmeans`` run, CPU seconds per warm
    Lloyd update), then ``pot_exact()`` (CPU seconds of POT's exact loop per iteration and of its
    distances alone), so both sides of a ratio are timed seconds apart and a drift of the host
    moves both.  The caller's own first real run (it compiles or loads the compiled loops) is
    the warm-up and is not among them.
    """
    ours, pot, dist, loads = [], [], [], []
    for r in range(args.repeats):
        loads.append(load_average())
        ours.append(real_iteration(args, maps)[1])
        pot_r, dist_r = pot_exact()
        pot.append(pot_r)
        dist.append(dist_r)
        progress(f"repeat {r + 1}/{args.repeats}: ours {ours[-1]:.3f}, POT exact {pot_r:.2f} s")
    s = ratio_summary(ours, pot)
    rows = [
        [r + 1, f"{loads[r]:.2f}", f"{ours[r]:.3f}", f"{pot[r]:.2f}", f"{dist[r]:.2f}",
         f"{s.ratios[r]:.1f}×"]
        for r in range(args.repeats)
    ]  # fmt: skip
    rows.append(
        ["median", "-", f"{s.ours:.3f}", f"{s.pot:.2f}", f"{statistics.median(dist):.2f}",
         f"**{s.ratio:.1f}×** (min {s.low:.1f}×, max {s.high:.1f}×)"]
    )  # fmt: skip
    return (
        f"\n### Ours per warm update vs POT's exact loop, {args.repeats} interleaved pairs\n\n"
        f"Timed in turn after everything above, in one process: ours, POT, ours, POT, ... "
        f'({args.repeats} pairs).  Ours: a fresh real run of `gw_kmeans` (as the row "one warm '
        f'Lloyd update of a real run"), CPU-s per warm Lloyd update.  POT: its exact loop per '
        f'iteration, the same computation as the row "POT exact loop" (the same '
        f"{args.pot_subset}-cloud subset, barycenter loops from the same starts, distances to "
        f"our float64 barycenters, the same extrapolation).  The process's first real run (the "
        f'row "one warm Lloyd update of a real run"; it compiles or loads the compiled loops) '
        f"is the warm-up and is not among the pairs.  Each pair's ratio is POT's time over "
        f"ours; the reading is the median of the per-pair ratios.\n\n"
        + markdown_table(
            [
                "pair",
                "load (1 min)",
                "ours, CPU-s per warm update",
                "POT exact, CPU-s per iteration",
                "of which its distances",
                "POT / ours",
            ],
            rows,
        )
    )


def one_iteration(
    args: argparse.Namespace,
    maps: torch.Tensor,
    labels: torch.Tensor,
    real: tuple[str, float, torch.Tensor],
    real_sk: tuple[str, float, torch.Tensor],
) -> str:
    N = args.n_support
    cpu = torch.device("cpu")
    gen = torch.Generator().manual_seed(args.seed)
    starts = [random_structure(N, generator=gen, dtype=torch.float64, device=cpu) for _ in (0, 1)]

    def ours(dtype: torch.dtype, inner: str) -> tuple[list[Any], torch.Tensor]:
        clouds = heatmaps_to_clouds(maps, pool=args.iteration_pool, max_points=None, dtype=dtype)
        # both barycenters in lockstep, then all distances to both in one solve (HC's path)
        barys = gw_barycenters(
            [clouds.subset(members[j]) for j in (0, 1)],
            torch.stack([starts[j].to(dtype) for j in (0, 1)]),
            n_support=N,
            epsilon=args.bary_epsilon,
            inner=inner,
            **FAST_BARY,  # type: ignore[arg-type]
        )
        # float32 = the clustering path (distances stop on the GW loss); float64 = POT's criteria
        fast = FAST_DIST if dtype == torch.float32 else {}
        found = gw_to_centers(
            clouds, [(b.C, b.p) for b in barys], epsilon=args.epsilon, inner=inner, **fast
        )
        return barys, torch.stack([r.value for r in found], dim=1)

    clouds = heatmaps_to_clouds(maps, pool=args.iteration_pool, max_points=None)  # float64
    n = len(clouds)
    members = [torch.nonzero(labels == j).flatten() for j in (0, 1)]
    # "sinkhorn": the float32 clustering path with Sinkhorn inner solves (before Newton)
    variants = {
        torch.float32: (torch.float32, "auto"),
        torch.float64: (torch.float64, "auto"),
        "sinkhorn": (torch.float32, "sinkhorn"),
    }
    runs = {}
    for key, (dt, inner) in variants.items():
        (barys_d, dist_d), wall, cpu_s = timed_call(lambda dt=dt, inner=inner: ours(dt, inner))
        runs[key] = (barys_d, dist_d, wall, cpu_s)
        upd = [b.n_iter for b in barys_d]
        progress(f"ours {key}: {wall:.0f} s wall, {cpu_s:.0f} s CPU, barycenter updates {upd}")
    barys, dist, wall, cpu_s = runs[torch.float64]
    wall32 = runs[torch.float32][2]
    updates = [b.n_iter for b in barys]
    same_labels = torch.equal(
        runs[torch.float32][1].argmin(dim=1), runs[torch.float64][1].argmin(dim=1)
    )

    # POT's batch solver on ALL clouds (batching is its point): barycenter updates from the same
    # start, timed over the first --pot-updates and extrapolated to ours, + all distances.
    batch_wall = batch_cpu = 0.0
    batch_dist = torch.empty(n, 2, dtype=torch.float64)
    for j in (0, 1):
        k = min(updates[j], args.pot_updates)
        times = pot_batch_barycenter(clouds.subset(members[j]), starts[j], k, args)
        wall_j, cpu_j = (extrapolated(series, updates[j]) for series in zip(*times, strict=True))
        batch_wall, batch_cpu = batch_wall + wall_j, batch_cpu + cpu_j
        progress(f"POT batch barycenter {j}: {times} s (wall, CPU) per update")
        (value, _), wall_j, cpu_j = timed_call(
            lambda j=j: pot_batch_to_one(clouds, barys[j].C, barys[j].p, args)
        )
        batch_dist[:, j] = value
        batch_wall, batch_cpu = batch_wall + wall_j, batch_cpu + cpu_j
        progress(f"POT batch distances {j}: {wall_j:.0f} s wall")
    batch_nan = int(torch.isnan(batch_dist).any(dim=1).sum())

    sub_gen = torch.Generator().manual_seed(args.seed + 1)
    subset = torch.randperm(n, generator=sub_gen)[: args.pot_subset]
    pot: dict[str, float] = {}
    pot_cpu: dict[str, float] = {}
    pot["entropic"], pot_cpu["entropic"], _, ref = pot_iteration(
        "entropic", clouds, labels, subset, starts, barys, args
    )
    pot["exact"], pot_cpu["exact"], exact_dist_cpu, exact_sub = pot_iteration(
        "exact", clouds, labels, subset, starts, barys, args
    )
    pairs = [(i, j) for j in (0, 1) for i in subset.tolist()]  # the order of POT's values
    ours_sub = [float(dist[i, j]) for i, j in pairs]
    batch_sub = [float(batch_dist[i, j]) for i, j in pairs]
    # float32 distance solver on the same pairs (float64 barycenters, rounded to float32)
    sub32 = clouds.subset(subset)
    sub32 = type(sub32)(sub32.C.float(), sub32.p.float(), sub32.sizes)
    d32 = [
        gw_to_one(sub32, b.C.float(), b.p.float(), epsilon=args.epsilon, keep_plans=False).value
        for b in barys
    ]
    ours32_sub = torch.cat(d32).double().numpy()
    ref_np = np.array(ref)
    rel = np.abs(np.array(ours_sub) - ref_np) / np.abs(ref_np)
    rel32 = np.abs(ours32_sub - ref_np) / np.abs(ref_np)
    exact_np = np.array(exact_sub)
    rel_batch = np.abs(np.array(batch_sub) - exact_np) / np.abs(exact_np)
    # nearest barycenter per subset cloud: POT batch vs POT exact, ours f32 vs POT entropic
    half = len(subset)
    near_exact = exact_np[:half] > exact_np[half:]
    near_batch = np.array(batch_sub[:half]) > np.array(batch_sub[half:])
    near_ref = ref_np[:half] > ref_np[half:]
    near32 = ours32_sub[:half] > ours32_sub[half:]
    same_batch = int((near_exact == near_batch).sum())
    same32 = int((near_ref == near32).sum())
    how = f"extrapolated from {len(subset)} clouds"
    cpu32 = runs[torch.float32][3]
    real_text, real_cpu, real_labels = real
    sk_text, sk_cpu, sk_labels = real_sk
    wall_sk, cpu_sk = runs["sinkhorn"][2], runs["sinkhorn"][3]
    same_sk = torch.equal(runs[torch.float32][1].argmin(dim=1), runs["sinkhorn"][1].argmin(dim=1))
    rows = [
        ["ours float32 (clustering path, Newton inner solves)", _minutes(wall32), f"{cpu32:.1f}",
         "1.0×", "1.0×", "measured, all clouds"],
        ["ours float32, Sinkhorn inner solves", _minutes(wall_sk), f"{cpu_sk:.1f}",
         f"{wall_sk / wall32:.1f}×", f"{cpu_sk / cpu32:.2f}×", "measured, all clouds"],
        ["ours float32, one warm Lloyd update of a real run", "-", f"{real_cpu:.2f}", "-",
         f"{real_cpu / cpu32:.2f}×", "measured inside gw_kmeans (below)"],
        ["ours float32, one warm Lloyd update, Sinkhorn inner solves", "-", f"{sk_cpu:.2f}", "-",
         f"{sk_cpu / cpu32:.2f}×", "measured inside gw_kmeans (below)"],
        ["ours float64", _minutes(wall), f"{cpu_s:.0f}", f"{wall / wall32:.1f}×",
         f"{cpu_s / cpu32:.1f}×", "measured, all clouds"],
        *[[f"POT {name} loop", _minutes(t), f"{pot_cpu[name]:.0f}", f"{t / wall32:.1f}×",
           f"{pot_cpu[name] / cpu32:.1f}×", how]
          for name, t in pot.items()],
        ["POT batch (`ot.batch.solve_gromov_batch`)", _minutes(batch_wall), f"{batch_cpu:.0f}",
         f"{batch_wall / wall32:.1f}×", f"{batch_cpu / cpu32:.1f}×",
         "measured, all clouds (barycenter updates extrapolated as POT's)"],
    ]  # fmt: skip
    sizes = clouds.sizes.double()
    upd32 = [b.n_iter for b in runs[torch.float32][0]]

    def pot_exact() -> tuple[float, float]:
        timed = pot_iteration("exact", clouds, labels, subset, starts, barys, args)
        return timed[1], timed[2]

    repeats = repeated_ratio(args, maps, pot_exact) if args.repeats else ""
    return (
        f"## One k-means iteration, {n} clouds of {sizes.mean():.0f} points "
        f"(min {sizes.min():.0f}, max {sizes.max():.0f}; pool {args.iteration_pool}, no cap)\n\n"
        f"2 barycenters (N = {N}, ε_b = {args.bary_epsilon}, members {len(members[0])} and "
        f"{len(members[1])}, from the same random start for every solver; ours stop at "
        f"‖ΔC‖ ≤ 1e-4·‖C‖ with warm-started couplings capped at 50 iterations per update: "
        f"{upd32[0]} and {upd32[1]} updates in float32, {updates[0]} and {updates[1]} in "
        f"float64) + {2 * n} distances (ε = {args.epsilon}, POT's criteria).  POT's "
        f"barycenter loop (cold couplings, POT's defaults) is timed over its first "
        f"{args.pot_updates} updates on the subset's members and extrapolated to all members "
        f"and to our float64 update counts (first update as measured, later ones at the mean "
        f"of updates 2..{args.pot_updates}); the exact one is assumed to need as many updates. "
        f"POT distances: each subset cloud to our float64 barycenters, extrapolated to "
        f"{n} clouds.\n\n"
        + markdown_table(
            ["solver", "wall", "CPU s", "wall / ours f32", "CPU / ours f32", "how"], rows
        )
        + f"\n{real_text}\n\n{sk_text}  Final assignments of the two real runs: "
        f"{'identical' if torch.equal(real_labels, sk_labels) else 'DIFFERENT'}; nearest "
        f"centers of the cold iteration, Newton vs Sinkhorn inner solves: "
        f"{'identical' if same_sk else 'DIFFERENT'}.\n\n"
        f"POT's exact loop per iteration: {pot_cpu['exact']:.1f} CPU-s "
        f"({exact_dist_cpu:.1f} s of it the {2 * n} distances alone, a floor for any iteration "
        f"of its loop).  Ours per iteration vs POT exact: cold iteration "
        f"{pot_cpu['exact'] / cpu32:.1f}× ({pot_cpu['exact'] / cpu_sk:.1f}× with Sinkhorn inner "
        f"solves), warm update of a real run **{pot_cpu['exact'] / real_cpu:.1f}×** "
        f"({pot_cpu['exact'] / sk_cpu:.1f}× with Sinkhorn inner solves; against POT's distances "
        f"alone {exact_dist_cpu / real_cpu:.1f}×).\n"
        + f"\nNearest-center assignments of all {n} clouds, float32 vs float64 run: "
        f"{'identical' if same_labels else 'DIFFERENT'}.\n\n"
        f"Agreement with POT `entropic_gromov_wasserstein2` on {len(ref)} cloud-to-barycenter "
        f"pairs (POT to our float64 barycenters): ours float64 max relative difference "
        f"{rel.max():.1e}, median {np.median(rel):.1e}; our float32 solver on the same pairs "
        f"max {rel32.max():.1e}, median {np.median(rel32):.1e}; nearest barycenter, our float32 "
        f"vs POT entropic: {same32} of {half} subset clouds agree.\n\n"
        f"POT batch (proximal GW, reg = {args.pot_batch_reg}, POT's defaults: 50 outer x 50 inner "
        f"iterations, tol 1e-5) solves the unregularised GW problem, so it is compared with POT's "
        f"exact `gromov_wasserstein2` on the same pairs: max relative difference "
        f"{np.nanmax(rel_batch):.1e}, median {np.nanmedian(rel_batch):.1e}; nearest barycenter "
        f"agrees for {same_batch} of {half} subset clouds; {batch_nan} of {n} clouds got NaN. "
        f"It has no barycenter (its couplings + the same structure update here) and needs one "
        f"size per batch: clouds sorted by size in batches of {args.pot_batch_chunk}, padded "
        f"with points of mass 1e-12 (zero-mass padding gives NaN).\n" + repeats
    )


def full_kmeans(args: argparse.Namespace, maps: torch.Tensor, poisoned: torch.Tensor) -> str:
    clouds = heatmaps_to_clouds(maps, pool=args.pool)
    rows, labels = [], {}
    tight = {
        "dtype": None,
        "bary_tol": 1e-6,
        "bary_gw_max_iter": 1000,
        "bary_inexact": 0.0,
        "bary_max_iter": 1000,
    }
    settings = [("defaults (float32, fast)", {}), ("tight (float64, POT-like criteria)", tight)]
    for name, kwargs in settings:
        res, wall, cpu = timed_call(
            lambda kwargs=kwargs: gw_kmeans(
                clouds,
                epsilon=args.epsilon,
                bary_epsilon=args.bary_epsilon,
                n_support=args.n_support,
                generator=torch.Generator().manual_seed(args.seed),
                **kwargs,  # type: ignore[arg-type]
            )
        )
        progress(f"k-means ({name}): {wall:.0f} s wall, {cpu:.0f} s CPU")
        flag = res.in_minority
        labels[name] = flag
        tp, tn = int((flag & poisoned).sum()), int((~flag & ~poisoned).sum())
        rows.append([
            name, _minutes(wall), f"{cpu:.0f}",
            f"{res.n_iter} ({'converged' if res.converged else 'not converged'})",
            f"{100 * (tp + tn) / len(flag):.1f}", f"{100 * tp / max(int(poisoned.sum()), 1):.1f}",
            f"{100 * tn / max(int((~poisoned).sum()), 1):.1f}",
        ])  # fmt: skip
    a, b = labels.values()
    sizes = clouds.sizes.double()
    return (
        f"## Full Heatmap Clustering (k = 2, k-means++ seeding included), {len(clouds)} clouds\n\n"
        f"Synthetic heatmaps with a planted split (a third carry the corner patch).  "
        f"`heatmaps_to_clouds(pool={args.pool})` → {sizes.mean():.0f} points per cloud "
        f"(max {sizes.max():.0f}); ε = {args.epsilon}, ε_b = {args.bary_epsilon}, "
        f"N = {args.n_support}, max_iter = 5, seed_gw_max_iter = 100 (the detector's).  "
        f"Defaults: float32, barycenters to ‖ΔC‖ ≤ 1e-4·‖C‖, couplings warm-started and capped "
        f"at 50 iterations per update, inexact inner Sinkhorn.  Tight: float64, barycenters "
        f"to ‖ΔC‖ ≤ 1e-6·‖C‖ with every coupling solved to POT's 1e-4 each update, POT's "
        f"Sinkhorn criteria throughout.\n\n"
        + markdown_table(["k-means", "wall", "CPU s", "updates", "ACC %", "TPR %", "TNR %"], rows)
        + f"\nFlags of defaults vs tight: {int((a != b).sum())} of {len(a)} differ.\n"
    )


def main(argv: list[str]) -> None:
    """Run the benchmark; ``--quick`` for a smoke run on 200 maps."""
    parser = argparse.ArgumentParser(prog="python -m bench gromov")
    parser.add_argument("--quick", action="store_true", help="200 maps, 20-cloud POT subset")
    parser.add_argument("--n", type=int, default=1000, help="number of heatmaps")
    parser.add_argument("--pot-subset", type=int, default=40, help="clouds timed with POT")
    parser.add_argument(
        "--pot-updates", type=int, default=3, help="POT entropic barycenter updates timed"
    )
    parser.add_argument("--epsilon", type=float, default=0.01)
    parser.add_argument(
        "--pot-batch-reg", type=float, default=0.01, help="proximal step of POT's batch solver"
    )
    parser.add_argument(
        "--pot-batch-chunk", type=int, default=100, help="clouds per POT batch call"
    )
    parser.add_argument("--bary-epsilon", type=float, default=0.01)
    parser.add_argument("--n-support", type=int, default=10)
    parser.add_argument("--pool", type=int, default=2, help="pooling of the full k-means run")
    parser.add_argument(
        "--iteration-pool", type=int, default=2, help="pooling of the one-iteration comparison"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="pairs (ours, POT exact) timed in turn for the ratio's median; 0: none",
    )
    parser.add_argument("--skip", choices=["iteration", "kmeans"], default=None)
    parser.add_argument("--name", default="gromov", help="results file name")
    args = parser.parse_args(argv)
    if args.repeats < 0:
        parser.error(f"--repeats: expected 0 or more pairs, got {args.repeats}")
    if args.quick:
        args.n, args.pot_subset = 200, 20
    if args.threads:
        torch.set_num_threads(args.threads)
    maps, poisoned = synthetic_heatmaps(args.n, generator=torch.Generator().manual_seed(args.seed))
    load = os.getloadavg()[0]
    parts = []
    if args.skip != "iteration":
        real = real_iteration(args, maps)
        real_sk = real_iteration(args, maps, "sinkhorn")
        parts.append(one_iteration(args, maps, poisoned.long(), real, real_sk))
    if args.skip != "kmeans":
        parts.append(full_kmeans(args, maps, poisoned))
    body = "\n".join(parts) + (
        f"\nLoad average (1 min) at start {load:.1f}, at end {os.getloadavg()[0]:.1f}, on 2 cores: "
        "other jobs were running, so wall times are inflated; compare rows of one run.\n"
    )
    command = "python -m bench gromov " + " ".join(argv)
    path = write_result(args.name, "Heatmap Clustering GW core: ours vs POT", command.strip(), body)
    print(path.read_text())


if __name__ == "__main__":
    main(sys.argv[1:])
