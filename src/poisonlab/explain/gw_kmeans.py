"""k-means with Gromov–Wasserstein distances and GW barycenters as means (Heatmap Clustering).

Seed 004 §5.3–5.5 / METHODS §7.5(d): the heatmap point clouds of one (suspicious) class are split
into k = 2 clusters and the smaller one is flagged as poisoned.

1. **k-means++ seeding** (Arthur & Vassilvitskii 2007): the first center is a cloud drawn
   uniformly; each further center is drawn with probability ∝ D_i², where D_i is the GW distance
   of cloud i to its nearest center, normalised by its maximum, centers excluded (uniform among
   the others if all D_i are 0).  Centers are clouds at this stage.
2. **Assign** each cloud to its nearest center (ties to the lower index).  A cluster left empty is
   reseeded with the cloud farthest from its own center, taken from a cluster with ≥ 2 members.
3. **Update** each cluster's center to the GW barycenter of its members
   (:func:`~poisonlab.explain.gw_barycenter.gw_barycenter`: N points, ε_b), recompute all
   distances, reassign; stop when no assignment changes, or after ``max_iter`` updates
   (seed: 5).  A cluster whose membership did not change keeps its barycenter and distances.

Distances are entropic GW values (square loss, ε, POT's criteria) from every cloud to a center,
all solved in batches (:func:`~poisonlab.explain.gromov.gw_to_one`).  All randomness (the first
center, the D² draws, the barycenters' random starts) comes from the explicit ``generator``, so a
run is deterministic for a fixed generator state.

Choice of ε_b (METHODS §10 lists 0.02, 0.1 and 5e-4): we use ε_b = ε = 0.02.  The seed's
helpers default to ε_b = 0.1, but on max-normalised clouds that collapses the barycenter of a
homogeneous cluster to a constant matrix (it keeps only the mean pairwise distance), and the
iterations then alternate between two different objectives: on 300 synthetic heatmap clouds
(blob vs blob + corner patch) they wandered away from the planted split that the seeding had
found (accuracy 81–97%, not converged after 5 updates), whereas with ε_b = ε every update
lowers the same objective Σ_i GW_ε(cloud_i, its center) and the run converged after one update
with 100%.

Speed rules (issue 5; measured in bench/bench_gromov.py, results in bench/results/gromov.md):

- **float32** by default (``dtype``): batched products and Sinkhorn sweeps cost about half, and
  float32 uses the tolerances of :mod:`~poisonlab.explain.gromov` (inner 1e-6, outer 1e-6 on
  ``‖T - T_prev‖_F``).  Distances then agree with POT's float64 values to ~1e-5 relative
  (median 1e-6), and on 1,000 synthetic clouds the nearest-center assignments and the final
  flags were identical to a float64 run.  Distances and centers are returned in the dtype of
  ``clouds``.  ``dtype=None`` computes in the clouds' own dtype (float64: POT's criteria).
- **Barycenters** stop at ``‖C - C_prev‖_F ≤ bary_tol·‖C‖_F`` with ``bary_tol = 1e-4``
  (relative; POT stops at 1e-9 absolute, which the update map does not even reproduce, see
  ``bary_tol``), at most ``bary_max_iter = 100`` updates: the change falls geometrically,
  and at 1e-4 the barycenter objective is within ~1e-4 of its limit, far below the distance
  gaps that decide assignments.  Their couplings are always warm-started from the previous
  update (same fixed points, POT's ``warmstartT``), capped at ``bary_gw_max_iter = 50``
  iterations per update (a capped coupling resumes in the next update; convergence needs all
  couplings converged), with inexact inner Sinkhorn solves (``bary_inexact``).
- **k-means warm starts** (``warm_start=True``, default): after the first update a cluster's
  barycenter restarts from its previous one, and clouds that stay in the cluster from their
  previous couplings; a cluster whose members did not change is not recomputed at all.  The
  loop stops as soon as an update changes no assignment.
- Cloud size is bounded upstream (pooling and ``max_points`` in
  :func:`~poisonlab.explain.point_cloud.heatmaps_to_clouds`).

Measured with these rules (2 cores shared with other jobs, 1 torch thread): a full run on
1,000 synthetic heatmap clouds of ~58 points (pool 2) takes about 1 minute, half of it the
2·B cloud-to-cloud solves of the k-means++ seeding.

Limits: GW k-means is a local method; the result depends on the seeding, and the entropic
distance of a cloud to itself is small but not 0.  The seeding's cloud-to-cloud solves
(n × n plans) grow as n³ per iteration, so bound the cloud size (``max_points`` / ``pool`` in
:func:`~poisonlab.explain.point_cloud.heatmaps_to_clouds`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from poisonlab.explain.gromov import CHUNK_ELEMENTS, gw_to_one
from poisonlab.explain.gw_barycenter import GWBarycenter, gw_barycenter
from poisonlab.explain.point_cloud import PointClouds

__all__ = ["GWKMeansResult", "gw_kmeans"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class GWKMeansResult:
    """Outcome of :func:`gw_kmeans`.

    Attributes
    ----------
    labels : Tensor of shape (B,), int64
        Cluster of each cloud, in ``range(k)``.
    distances : Tensor of shape (B, k)
        GW distance of each cloud to each final center.
    centers : tuple of (Tensor, Tensor)
        Final ``(C, p)`` of each center: a barycenter (N, N), (N,) after at least one update,
        otherwise the seeding cloud.
    seeds : Tensor of shape (k,), int64
        Indices of the k-means++ seed clouds.
    n_iter : int
        Center updates performed (0 when the seeding assignment was returned).
    converged : bool
        True if the last update changed no assignment.
    minority : int
        The smaller cluster (ties to the higher index), flagged as poisoned by Heatmap Clustering.
    """

    labels: Tensor
    distances: Tensor
    centers: tuple[tuple[Tensor, Tensor], ...]
    seeds: Tensor
    n_iter: int
    converged: bool
    minority: int

    @property
    def in_minority(self) -> Tensor:
        """Bool mask (B,) of the clouds in the smaller cluster."""
        return self.labels == self.minority


def gw_kmeans(
    clouds: PointClouds,
    *,
    k: int = 2,
    epsilon: float = 0.02,
    bary_epsilon: float = 0.02,
    n_support: int = 10,
    max_iter: int = 5,
    generator: torch.Generator,
    gw_max_iter: int = 1000,
    gw_tol: float | None = None,
    seed_gw_max_iter: int = 100,
    bary_max_iter: int = 100,
    bary_tol: float = 1e-4,
    bary_gw_max_iter: int = 50,
    bary_inexact: float = 1e-2,
    warm_start: bool = True,
    chunk_elements: int = CHUNK_ELEMENTS,
    dtype: torch.dtype | None = torch.float32,
) -> GWKMeansResult:
    """Cluster metric-measure spaces with GW k-means++ (see the module docstring).

    Parameters
    ----------
    clouds : PointClouds
        The B clouds to cluster (B ≥ k).
    k : int
        Number of clusters (Heatmap Clustering: 2).
    epsilon : float
        ε of the distances (seed clustering script: 0.02).
    bary_epsilon : float
        ε of the barycenter couplings; default ε (the seed helpers' 0.1: see the module
        docstring for why not).
    n_support : int
        Barycenter size N (seed clustering script: 10).
    max_iter : int
        Maximum center updates (seed: 5).
    generator : torch.Generator
        Randomness for the seeding and the barycenters' starts (CPU generator).
    gw_max_iter, gw_tol : int, float or None
        Outer iteration cap and tolerance of the distance solves (POT: 1000, 1e-9; None = 1e-9
        in float64, 1e-6 in float32, see :func:`~poisonlab.explain.gromov.entropic_gw`).
    seed_gw_max_iter : int
        Outer iteration cap of the cloud-to-cloud solves of the seeding.  These dominate the
        cost (n × n plans; on near-isotropic clouds ε = 0.02 trajectories often run the full
        1000 iterations), yet only set the D² sampling weights and the first assignment, and
        after 100 iterations their values are within ~1% of POT's (bench/bench_gromov.py).
    bary_max_iter, bary_tol : int, float
        Update cap and *relative* tolerance ``‖C - C_prev‖_F ≤ bary_tol·‖C‖_F`` of the
        barycenters (POT: 1000 updates, 1e-9 absolute).  POT's 1e-9 lies below the level at
        which the update map is itself reproducible (its couplings stop at the loose tolerance
        1e-4, so the last bits of the arithmetic decide their last iterate): on synthetic
        heatmap clusters ``‖C - C_prev‖`` fell geometrically to ~2e-8 and then stalled there
        for hundreds of updates.  Measured on 200 heatmap clouds, the relative change fell by
        ~10× every 5 updates; at 1e-4 (15-20 updates from a random start) the mean GW loss of
        the members was within 1e-4 of its limit, and flags equalled those of a run at 1e-6 in
        float64 with fully solved couplings (bench).
    bary_gw_max_iter : int
        Outer iterations per coupling and barycenter update (warm-started, so capped couplings
        resume in the next update; POT solves each coupling to the end, up to 1000).
    bary_inexact : float
        ``inexact`` of the coupling solves (see :func:`~poisonlab.explain.gromov.entropic_gw`):
        inner Sinkhorn stopped at 1% of the last step, except on tested iterations.
    warm_start : bool
        Start each barycenter after the first from the cluster's previous one, the couplings of
        clouds that stay in the cluster from their previous plans, and the distances of members
        from the barycenter's couplings.  Much faster (a few updates instead of ~20); it can in
        principle end in a different local solution than cold starts from a random structure
        (POT's behaviour, ``False``); on the bench's 1,000 clouds the flags were identical.
    chunk_elements : int
        Memory budget per batched solve, in elements.
    dtype : torch.dtype or None
        Compute dtype (default float32, see the module docstring); None = that of ``clouds``.

    Returns
    -------
    GWKMeansResult

    Raises
    ------
    ValueError
        If there are fewer clouds than clusters or parameters are out of range.
    """
    out_dtype = clouds.C.dtype
    if dtype is not None and dtype != out_dtype:
        clouds = PointClouds(clouds.C.to(dtype), clouds.p.to(dtype), clouds.sizes, None)
    n_clouds = len(clouds)
    if k < 1 or n_clouds < k:
        raise ValueError(f"need 1 <= k <= number of clouds, got k={k} for {n_clouds} clouds")
    if max_iter < 0:
        raise ValueError(f"max_iter must be >= 0, got {max_iter}")

    def distances_to(C: Tensor, p: Tensor, max_iter: int = gw_max_iter, **warm: object) -> Tensor:
        res = gw_to_one(
            clouds,
            C,
            p,
            epsilon=epsilon,
            keep_plans=False,
            chunk_elements=chunk_elements,
            max_iter=max_iter,
            tol=gw_tol,
            **warm,  # type: ignore[arg-type]
        )
        return res.value

    # 1. k-means++ seeding.
    dist = clouds.C.new_empty(n_clouds, k)
    seeds = [int(torch.randint(n_clouds, (1,), generator=generator))]
    centers: list[tuple[Tensor, Tensor]] = [clouds.cloud(seeds[0])]
    dist[:, 0] = distances_to(*centers[0], max_iter=seed_gw_max_iter)
    for j in range(1, k):
        nearest = dist[:, :j].amin(dim=1).clamp(min=0).cpu().double()
        top = float(nearest.max())
        weights = (nearest / top) ** 2 if top > 0 else torch.ones_like(nearest)
        weights[seeds] = 0.0
        if float(weights.sum()) <= 0:  # every other cloud coincides with a center
            weights = torch.ones_like(nearest)
            weights[seeds] = 0.0
        seeds.append(int(torch.multinomial(weights, 1, generator=generator)))
        centers.append(clouds.cloud(seeds[-1]))
        dist[:, j] = distances_to(*centers[j], max_iter=seed_gw_max_iter)
        logger.debug("k-means++ seed %d: cloud %d", j, seeds[-1])
    labels = _assign(dist, k)

    # 2-3. Lloyd iterations with barycenters.
    barys: list[GWBarycenter | None] = [None] * k
    members: list[Tensor | None] = [None] * k
    n_iter, converged = 0, False
    for _ in range(max_iter):
        n_iter += 1
        for j in range(k):
            idx = torch.nonzero(labels == j).flatten()
            if members[j] is not None and torch.equal(members[j], idx):
                continue  # same members: same barycenter and distances
            prev, prev_idx, members[j] = barys[j], members[j], idx
            init_plans = None
            if warm_start and prev is not None and prev_idx is not None:
                init_plans = _continued_plans(clouds, idx, prev_idx, prev)
            bary = gw_barycenter(
                clouds.subset(idx),
                n_support=n_support,
                epsilon=bary_epsilon,
                max_iter=bary_max_iter,
                tol=0.0,
                rtol=bary_tol,
                gw_max_iter=bary_gw_max_iter,
                inexact=bary_inexact,
                init_C=prev.C if (warm_start and prev is not None) else None,
                init_plans=init_plans,
                warm_start=True,
                generator=generator,
                chunk_elements=chunk_elements,
            )
            barys[j] = bary
            centers[j] = (bary.C, bary.p)
            warm = {}
            if warm_start:
                T0 = clouds.C.new_zeros(n_clouds, clouds.n_max, n_support)
                T0[:] = clouds.p.unsqueeze(2) * bary.p  # non-members: product start
                T0[idx, : bary.plans.shape[1]] = bary.plans
                warm = {"T0": T0}
            dist[:, j] = distances_to(bary.C, bary.p, **warm)
            logger.debug("update %d, cluster %d: %d members", n_iter, j, idx.numel())
        new = _assign(dist, k)
        if torch.equal(new, labels):
            converged = True
            break
        labels = new
    counts = torch.bincount(labels, minlength=k)
    minority = int(k - 1 - torch.argmin(counts.flip(0)))
    return GWKMeansResult(
        labels=labels,
        distances=dist.to(out_dtype),
        centers=tuple((C.to(out_dtype), p.to(out_dtype)) for C, p in centers),
        seeds=torch.tensor(seeds, dtype=torch.int64),
        n_iter=n_iter,
        converged=converged,
        minority=minority,
    )


def _continued_plans(
    clouds: PointClouds, idx: Tensor, prev_idx: Tensor, prev: GWBarycenter
) -> Tensor:
    """Starting couplings for a cluster's new members: the previous barycenter's plan for clouds
    that stay, the product coupling for clouds that join."""
    sub_p = clouds.p[idx, : int(clouds.sizes[idx].max())]
    plans = sub_p.unsqueeze(2) * prev.p
    pos = torch.full((len(clouds),), -1, dtype=torch.int64, device=idx.device)
    pos[prev_idx] = torch.arange(prev_idx.numel(), device=idx.device)
    stay = pos[idx] >= 0
    width = min(plans.shape[1], prev.plans.shape[1])
    plans[stay, :width] = prev.plans[pos[idx][stay], :width]
    return plans


def _assign(dist: Tensor, k: int) -> Tensor:
    """Nearest center per row (lowest index on ties), no empty cluster (farthest-point reseed)."""
    labels = torch.argmin(dist, dim=1)
    own = dist.gather(1, labels.unsqueeze(1)).squeeze(1).clone()
    for j in range(k):
        if bool((labels == j).any()):
            continue
        counts = torch.bincount(labels, minlength=k)
        movable = counts[labels] >= 2
        candidate = torch.where(movable, own, -torch.inf)
        i = int(torch.argmax(candidate))
        labels[i], own[i] = j, -torch.inf
    return labels
