"""k-means with Gromov–Wasserstein distances and GW barycenters as means (Heatmap Clustering).

Schulth, Berghoff & Neu 2022 (arXiv:2204.12848) §5.3–5.5, docs/methods.md: the heatmap point
clouds of one (suspicious) class are split into k = 2 clusters and the smaller one is flagged as
poisoned.

1. **Seeding** (``init``).  ``"k-means++"`` (Arthur & Vassilvitskii 2007; Heatmap
   Clustering's code): the first center is a cloud drawn uniformly; each further center is
   drawn with probability ∝ D_i², where D_i is the GW distance of cloud i to its nearest
   center, normalised by its maximum, centers excluded (uniform among the others if all D_i
   are 0).  ``"farthest"`` (the paper's text, §5.3: the further centers are chosen "depending
   on the maximum distance to the first one"): the same first draw, then each further center
   is the cloud with the largest D_i (no draw).  Centers are clouds at this stage.
2. **Assign** each cloud to its nearest center (ties to the lower index).  A cluster left empty is
   reseeded with the cloud farthest from its own center, taken from a cluster with ≥ 2 members.
3. **Update** each cluster's center to the GW barycenter of its members
   (:func:`~poisonlab.explain.gw_barycenter.gw_barycenter`: N points, ε_b), recompute all
   distances, reassign; stop when no assignment changes, or after ``max_iter`` updates
   (the paper: 5).  A cluster whose membership did not change keeps its barycenter and distances.

Distances are entropic GW values (square loss, ε, POT's criteria) from every cloud to a center,
all solved in batches (:func:`~poisonlab.explain.gw_batches.gw_to_one`).  All randomness (the first
center, the D² draws, the barycenters' random starts) comes from the explicit ``generator``, so a
run is deterministic for a fixed generator state.

Choice of ε_b (the paper's code uses 0.02, 0.1 and 5e-4 in different places): we use ε_b = ε
(Heatmap Clustering: 0.01).  The paper's helpers default to ε_b = 0.1, but on max-normalised clouds that collapses the barycenter of a
homogeneous cluster to a constant matrix (it keeps only the mean pairwise distance), and the
iterations then alternate between two different objectives: on 300 synthetic heatmap clouds
(blob vs blob + corner patch) they wandered away from the planted split that the seeding had
found (accuracy 81–97%, not converged after 5 updates), whereas with ε_b = ε every update
lowers the same objective Σ_i GW_ε(cloud_i, its center) and the run converged after one update
with 100%.

Speed rules (measured in bench/bench_gromov.py, results in bench/results/gromov.md):

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
- **Lockstep batching** (:func:`gw_kmeans_many`): the runs of several batches (Heatmap
  Clustering's classes) and their restarts run together, each yielding its solves, which are
  answered in one batched solve per kind (:mod:`~poisonlab.explain.gw_lloyd`: the run as a
  generator of requests and the driver).  On small clouds each solver step costs its tensor
  calls' dispatch, not arithmetic: on the digits scan (ten classes of ~180 clouds of ~18
  points, two restarts) Heatmap Clustering took 58 s class after class and 29 s in lockstep.
- **One thread** on CPU while the runs iterate (:func:`_one_thread`): the tensors are small
  and a second intra-op thread made the 1,000-coat class 1.5× slower.
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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch

from poisonlab.explain._gw_checks import check_spaces
from poisonlab.explain.gw_batches import CHUNK_ELEMENTS, gw_to_centers
from poisonlab.explain.gw_lloyd import GWKMeansResult, LloydRun, drive_lockstep, farthest_points
from poisonlab.explain.point_cloud import PointClouds

__all__ = [
    "INITS",
    "GWKMeansResult",
    "farthest_points",
    "gw_distances_to_centers",
    "gw_kmeans",
    "gw_kmeans_many",
]

#: Seedings of :func:`gw_kmeans` (module docstring, step 1).
INITS = ("k-means++", "farthest")

logger = logging.getLogger(__name__)


def gw_kmeans(
    clouds: PointClouds,
    *,
    k: int = 2,
    epsilon: float = 0.02,
    bary_epsilon: float = 0.02,
    n_support: int = 10,
    max_iter: int = 5,
    generator: torch.Generator,
    n_init: int = 1,
    gw_max_iter: int = 1000,
    gw_tol: float | None = None,
    value_rtol: float = 1e-5,
    seed_gw_max_iter: int = 100,
    bary_max_iter: int = 100,
    bary_tol: float = 1e-4,
    bary_objective_rtol: float = 1e-4,
    bary_gw_max_iter: int = 50,
    bary_inexact: float = 1e-2,
    warm_start: bool = True,
    chunk_elements: int = CHUNK_ELEMENTS,
    dtype: torch.dtype | None = torch.float32,
    init: str = "k-means++",
    inner: str = "auto",
) -> GWKMeansResult:
    """Cluster metric-measure spaces with GW k-means++ (see the module docstring).

    Parameters
    ----------
    clouds : PointClouds
        The B clouds to cluster (B ≥ k).
    k : int
        Number of clusters (Heatmap Clustering: 2).
    epsilon : float
        ε of the distances.
    bary_epsilon : float
        ε of the barycenter couplings (see the module docstring).
    n_support : int
        Points N of every center (the paper's clustering script: 10).
    max_iter : int
        Maximum center updates per run.
    generator : torch.Generator
        Randomness for the seeding and the barycenters' starts (CPU generator); restarts draw
        from it in turn, so the whole call is deterministic for a fixed generator state.
    n_init : int
        Independent runs; the one with the lowest objective (mean GW distance of the clouds to
        their own center) is returned, ties to the earlier run.
    init : {"k-means++", "farthest"}
        Seeding (module docstring, step 1).  Both draw the first center from ``generator``;
        ``"farthest"`` draws nothing more.
    gw_max_iter, gw_tol : int, float or None
        Outer iteration cap and plan tolerance of the distance solves (see
        :func:`~poisonlab.explain.gromov.entropic_gw`).
    value_rtol : float
        Distance solves stop once the GW loss changes by at most this fraction in one iteration
        (:func:`~poisonlab.explain.gromov.entropic_gw`'s ``value_rtol``; 0 = POT's plan
        criterion only).  1e-5 kept values within ~1e-3 of POT's float64 ones at worst (median
        ~5e-6), far below the gaps that decide assignments.
    seed_gw_max_iter : int
        Outer iteration cap of the distance solves to the k-means++ seeds.
    bary_max_iter, bary_tol : int, float
        Update cap and *relative* tolerance ``‖C - C_prev‖_F ≤ bary_tol·‖C‖_F`` of the
        barycenters (POT: 1000 updates, 1e-9 absolute; see the module docstring).
    bary_objective_rtol : float
        Barycenters also stop once their objective fell by at most this fraction in one update
        (:func:`~poisonlab.explain.gw_barycenter.gw_barycenter`'s ``objective_rtol``).
    bary_gw_max_iter : int
        Outer iterations per coupling and barycenter update (warm-started, so capped couplings
        resume in the next update).
    bary_inexact : float
        ``inexact`` of the coupling solves (see :func:`~poisonlab.explain.gromov.entropic_gw`).
    warm_start : bool
        Start each solve from the latest plans to the same center (module docstring); False
        starts every distance and coupling from the product coupling and every barycenter from
        a random structure (POT's behaviour).
    chunk_elements : int
        Memory budget per batched solve, in elements.
    dtype : torch.dtype or None
        Compute dtype (default float32, see the module docstring); None = that of ``clouds``.
    inner : {"auto", "newton", "sinkhorn"}
        Inner OT solver of every GW solve (:func:`~poisonlab.explain.gromov.entropic_gw`).

    Returns
    -------
    GWKMeansResult

    Raises
    ------
    ValueError
        If there are fewer clouds than clusters, ``init`` is unknown or parameters are out of
        range.
    DataError
        If a cloud's structure matrix or masses hold NaN or inf (or exceed ``dtype``), or its
        masses are negative or do not sum to 1; the message names the cloud.
    NumericalError
        If a GW solve gave NaN or inf (an overflow: the message names the dtype and the ratio
        of the costs to ε, and suggests float64 or a larger ε).
    """
    return gw_kmeans_many(
        [clouds],
        generators=[generator],
        k=k,
        epsilon=epsilon,
        bary_epsilon=bary_epsilon,
        n_support=n_support,
        max_iter=max_iter,
        n_init=n_init,
        gw_max_iter=gw_max_iter,
        gw_tol=gw_tol,
        value_rtol=value_rtol,
        seed_gw_max_iter=seed_gw_max_iter,
        bary_max_iter=bary_max_iter,
        bary_tol=bary_tol,
        bary_objective_rtol=bary_objective_rtol,
        bary_gw_max_iter=bary_gw_max_iter,
        bary_inexact=bary_inexact,
        warm_start=warm_start,
        chunk_elements=chunk_elements,
        dtype=dtype,
        init=init,
        inner=inner,
    )[0]


def gw_kmeans_many(
    clouds: Sequence[PointClouds],
    *,
    generators: Sequence[torch.Generator],
    k: int = 2,
    epsilon: float = 0.02,
    bary_epsilon: float = 0.02,
    n_support: int = 10,
    max_iter: int = 5,
    n_init: int = 1,
    gw_max_iter: int = 1000,
    gw_tol: float | None = None,
    value_rtol: float = 1e-5,
    seed_gw_max_iter: int = 100,
    bary_max_iter: int = 100,
    bary_tol: float = 1e-4,
    bary_objective_rtol: float = 1e-4,
    bary_gw_max_iter: int = 50,
    bary_inexact: float = 1e-2,
    warm_start: bool = True,
    chunk_elements: int = CHUNK_ELEMENTS,
    dtype: torch.dtype | None = torch.float32,
    init: str = "k-means++",
    inner: str = "auto",
) -> list[GWKMeansResult]:
    """:func:`gw_kmeans` of several independent batches of clouds, all solved in lockstep.

    Batch ``i`` is clustered with its own ``generators[i]`` exactly as ``gw_kmeans(clouds[i],
    generator=generators[i], ...)`` would (same draws, same steps), but every restart of every
    batch runs at once: each run yields its GW problems (distances to a center, barycenter
    updates) instead of solving them, and the problems of the same kind from all runs are
    solved in one batched solve (:func:`~poisonlab.explain.gw_batches.gw_to_spaces`,
    :func:`~poisonlab.explain.gw_barycenter.gw_barycenters`).  On small clouds every solver
    step costs its tensor calls' dispatch rather than arithmetic, so solving the ten classes
    of a data set and their restarts together costs little more than one of them.  Restart r
    of a batch starts its seeding when restart r - 1 has drawn its seeds (the generator is
    shared, so the draws come in the order of one run after the other).

    Values agree with separate :func:`gw_kmeans` calls to the solvers' tolerances, not
    bitwise: a batch mixes problems of several runs, and the Sinkhorn loop's shared
    safeguards (over-relaxation fallback, absorption of large scalings) then act on a
    different set of problems.

    Parameters
    ----------
    clouds : sequence of PointClouds
        The batches (B_i ≥ k clouds each), one device and dtype.
    generators : sequence of torch.Generator
        One per batch.
    k, epsilon, bary_epsilon, n_support, max_iter, n_init, gw_max_iter, gw_tol, value_rtol, \
seed_gw_max_iter, bary_max_iter, bary_tol, bary_objective_rtol, bary_gw_max_iter, bary_inexact, \
warm_start, chunk_elements, dtype, init, inner
        As for :func:`gw_kmeans`.

    Returns
    -------
    list of GWKMeansResult
        One per batch.

    Raises
    ------
    ValueError
        As :func:`gw_kmeans`, naming the batch; or if the numbers of batches and generators
        differ.
    DataError, NumericalError
        As :func:`gw_kmeans`, naming the batch.
    """
    if len(clouds) != len(generators):
        raise ValueError(f"need one generator per batch, got {len(generators)} for {len(clouds)}")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if max_iter < 0 or n_init < 1 or n_support < 1:
        raise ValueError(
            f"need max_iter >= 0, n_init >= 1 and n_support >= 1, got {max_iter}, {n_init}, "
            f"{n_support}"
        )
    runs = []
    for i, (batch, gen) in enumerate(zip(clouds, generators, strict=True)):
        if k < 1 or len(batch) < k:
            where = f" (batch {i})" if len(clouds) > 1 else ""
            raise ValueError(
                f"need 1 <= k <= number of clouds, got k={k} for {len(batch)} clouds{where}"
            )
        work = _in_dtype(batch, dtype)
        check_spaces(
            work.C,
            work.p,
            name=_cloud_name(len(batch), i if len(clouds) > 1 else None),
            source=None if work is batch else (batch.C, batch.p),
        )
        batch = work
        runs.append(
            LloydRun(
                batch,
                k=k,
                epsilon=epsilon,
                bary_epsilon=bary_epsilon,
                n_support=n_support,
                generator=gen,
                dist_solver=_distance_solver(gw_max_iter, gw_tol, value_rtol, inner),
                seed_gw_max_iter=seed_gw_max_iter,
                bary={
                    "max_iter": bary_max_iter,
                    "tol": 0.0,
                    "rtol": bary_tol,
                    "objective_rtol": bary_objective_rtol,
                    "gw_max_iter": bary_gw_max_iter,
                    "gw_value_rtol": value_rtol,
                    "inexact": bary_inexact,
                    "check_every": 1,
                    "inner": inner,
                },
                warm_start=warm_start,
                chunk_elements=chunk_elements,
                init=init,
            )
        )
    if not runs:
        return []
    steps = [run.once(max_iter, restart=r) for run in runs for r in range(n_init)]
    with _one_thread(runs[0].clouds.C.device):
        done = drive_lockstep(steps, runs[0])
    out = []
    for i, batch in enumerate(clouds):
        results = done[i * n_init : (i + 1) * n_init]
        objectives = tuple(r.objective for r in results)
        best = min(range(n_init), key=lambda j: (objectives[j], j))
        chosen = results[best]
        logger.debug("GW k-means restarts: objectives %s, kept %d", objectives, best)
        out_dtype = batch.C.dtype
        out.append(
            GWKMeansResult(
                labels=chosen.labels,
                distances=chosen.distances.to(out_dtype),
                centers=tuple((C.to(out_dtype), p.to(out_dtype)) for C, p in chosen.centers),
                seeds=chosen.seeds,
                n_iter=chosen.n_iter,
                converged=chosen.converged,
                minority=chosen.minority,
                objective=chosen.objective,
                objectives=objectives,
                restart=best,
            )
        )
    return out


def gw_distances_to_centers(
    clouds: PointClouds,
    centers: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    epsilon: float = 0.02,
    gw_max_iter: int = 1000,
    gw_tol: float | None = None,
    value_rtol: float = 1e-5,
    chunk_elements: int = CHUNK_ELEMENTS,
    dtype: torch.dtype | None = torch.float32,
    inner: str = "auto",
) -> torch.Tensor:
    """GW distances (B, k) of new clouds to fitted centers ``(C, p)`` of one size, solved as
    :func:`gw_kmeans` solves its distances (same dtype and stopping rules, from the product
    coupling), so that they compare with the distances of the clustered clouds (e.g. Heatmap
    Clustering's held-out reference).  Returned in the dtype of ``clouds``.  Clouds and centers
    are checked as :func:`gw_kmeans` checks its clouds (DataError, NumericalError)."""
    out_dtype = clouds.C.dtype
    given, clouds = clouds, _in_dtype(clouds, dtype)
    source = None if clouds is given else (given.C, given.p)
    check_spaces(clouds.C, clouds.p, name=_cloud_name(len(clouds)), source=source)
    work = clouds.C.dtype
    given_C, given_p = torch.stack([C for C, _ in centers]), torch.stack([p for _, p in centers])
    check_spaces(
        given_C.to(work),
        given_p.to(work),
        name=lambda j: f"center {j} of {len(centers)}",
        source=(given_C, given_p),
    )
    with _one_thread(clouds.C.device):
        results = gw_to_centers(
            clouds,
            [(C.to(work), p.to(work)) for C, p in centers],
            epsilon=epsilon,
            chunk_elements=chunk_elements,
            **_distance_solver(gw_max_iter, gw_tol, value_rtol, inner),  # type: ignore[arg-type]
        )
    return torch.stack([r.value for r in results], dim=1).to(out_dtype)


def _cloud_name(count: int, batch: int | None = None) -> Callable[[int], str]:
    """How the input checks name cloud ``b`` of ``count`` (of batch ``batch`` if given)."""
    where = "" if batch is None else f"batch {batch}, "
    return lambda b: f"{where}cloud {b} of {count}"


def _in_dtype(clouds: PointClouds, dtype: torch.dtype | None) -> PointClouds:
    """``clouds`` computed in ``dtype`` (None: their own); coordinates are not needed there."""
    if dtype is None or dtype == clouds.C.dtype:
        return clouds
    return PointClouds(clouds.C.to(dtype), clouds.p.to(dtype), clouds.sizes, None)


def _distance_solver(
    gw_max_iter: int, gw_tol: float | None, value_rtol: float, inner: str
) -> dict[str, float | int | str | None]:
    """The solver settings of every cloud-to-center distance of a k-means run."""
    return {
        "max_iter": gw_max_iter,
        "tol": gw_tol,
        "check_every": 1,
        "value_rtol": value_rtol,
        "inner": inner,
    }


@contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    """One intra-op CPU thread for the duration (restored after).

    Every tensor of the solves is small (a batch of n × N plans, N = 10): waking a second
    thread costs more than it saves.  Measured on the 1,000-image coat class of
    bench/results/hc_class_1000.md: full Heatmap Clustering 31.1 s with one torch thread,
    46.6 s with two (poisonlab's automatic choice for 28×28 images).  It also makes the
    clustering independent of the caller's thread count.
    """
    before = torch.get_num_threads()
    if device.type != "cpu" or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
