"""One seeded run of GW k-means as a generator of solve requests, and the lockstep driver.

The algorithm (seeding, assignment, barycenter updates, warm starts) is described in
:mod:`poisonlab.explain.gw_kmeans`, whose :func:`~poisonlab.explain.gw_kmeans.gw_kmeans_many`
builds the runs.  Here each run (:class:`LloydRun`, :meth:`LloydRun.once`) yields what it needs
solved (GW distances of its clouds to centers, barycenters of cluster members) instead of
solving it, and :func:`drive_lockstep` answers the pending requests of every run of every batch
together, one batched solve per kind: on small clouds a solver step costs its tensor calls'
dispatch, not arithmetic, so batching across runs is where the time goes down.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from poisonlab.explain.gw_barycenter import GWBarycenter, gw_barycenters, random_structure
from poisonlab.explain.gw_batches import gw_to_spaces
from poisonlab.explain.point_cloud import PointClouds

__all__ = ["GWKMeansResult", "LloydRun", "assign_nearest", "drive_lockstep", "farthest_points"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class GWKMeansResult:
    """Outcome of :func:`gw_kmeans` (the restart with the lowest objective).

    Attributes
    ----------
    labels : Tensor of shape (B,), int64
        Cluster of each cloud, in ``range(k)``.
    distances : Tensor of shape (B, k)
        GW distance of each cloud to each final center.
    centers : tuple of (Tensor, Tensor)
        Final ``(C, p)`` of each center, all of ``n_support`` points: a barycenter after at
        least one update, otherwise the seed cloud's own N-point barycenter.
    seeds : Tensor of shape (k,), int64
        Indices of the seed clouds.
    n_iter : int
        Center updates performed (0 when the seeding assignment was returned).
    converged : bool
        True if the last update changed no assignment.
    minority : int
        The smaller cluster (ties to the higher index), flagged as poisoned by Heatmap Clustering.
    objective : float
        Mean GW distance of the clouds to their own center (what k-means lowers).
    objectives : tuple of float
        The objective of every restart, in order; ``restart`` indexes the kept one.
    restart : int
        The kept restart.
    """

    labels: Tensor
    distances: Tensor
    centers: tuple[tuple[Tensor, Tensor], ...]
    seeds: Tensor
    n_iter: int
    converged: bool
    minority: int
    objective: float = float("nan")
    objectives: tuple[float, ...] = ()
    restart: int = 0

    @property
    def in_minority(self) -> Tensor:
        """Bool mask (B,) of the clouds in the smaller cluster."""
        return self.labels == self.minority


@dataclass
class _Center:
    """A center and the latest plans of every cloud to it (warm starts for the next solve)."""

    C: Tensor
    p: Tensor
    plans: Tensor
    potentials: tuple[Tensor, Tensor]
    members: Tensor | None = None


@dataclass
class _Distances:
    """Request: GW distances (and plans) of every cloud of ``run`` to each of ``centers``."""

    run: LloydRun
    centers: list[tuple[Tensor, Tensor]]
    warm: list[_Center] | None
    max_iter: int


@dataclass
class _Barycenter:
    """Request: the GW barycenter of ``members`` from ``init_C`` (and warm couplings)."""

    members: PointClouds
    init_C: Tensor
    init_plans: Tensor | None = None
    init_potentials: tuple[Tensor, Tensor] | None = None
    source: PointClouds | None = None  # members = source.subset(rows)
    rows: Tensor | None = None


_Request = _Distances | _Barycenter
#: Yielded by a restart that waits for the previous restart of its batch to draw its seeds.
_WAIT = object()
_Step = Generator[object, list[Any] | None, GWKMeansResult]


def drive_lockstep(steps: list[_Step], settings: LloydRun) -> list[GWKMeansResult]:
    """Run all restarts in lockstep: each round solves the pending requests of every restart,
    same kinds together in one batched solve, and sends each restart its answers."""
    pending: dict[int, object] = {}
    results: dict[int, GWKMeansResult] = {}

    def advance(i: int, answer: list[Any] | None) -> None:
        try:
            pending[i] = steps[i].send(answer)
        except StopIteration as stop:
            results[i] = stop.value
            pending.pop(i, None)

    for i in range(len(steps)):
        advance(i, None)
    while pending:
        for i in [i for i, req in pending.items() if req is _WAIT]:
            advance(i, None)  # re-checks: still waiting, or its first request
        groups: dict[tuple[Any, ...], list[tuple[int, int, _Request]]] = {}
        for i, reqs in pending.items():
            if not isinstance(reqs, list):  # _WAIT
                continue
            for j, req in enumerate(reqs):
                groups.setdefault(_kind(req), []).append((i, j, req))
        if not groups:
            raise RuntimeError("GW k-means restarts wait on each other")  # not reachable
        answers: dict[int, dict[int, Any]] = {}
        for key, members in groups.items():
            solved = _solve(key, [req for _, _, req in members], settings)
            for (i, j, _), answer in zip(members, solved, strict=True):
                answers.setdefault(i, {})[j] = answer
        for i, got in answers.items():
            advance(i, [got[j] for j in range(len(got))])
    return [results[i] for i in range(len(steps))]


def _kind(req: _Request) -> tuple[Any, ...]:
    """Requests with the same kind share one batched solve."""
    if isinstance(req, _Distances):
        return ("distances", req.max_iter, req.warm is not None)
    return ("barycenter", req.init_plans is not None, req.init_potentials is not None)


def _solve(key: tuple[Any, ...], reqs: list[_Request], run: LloydRun) -> list[Any]:
    """Answer requests of one kind in one batched solve (settings common to all runs)."""
    if key[0] == "distances":
        dists: list[_Distances] = reqs  # type: ignore[assignment]
        pairs = [(r.run.clouds, C, p) for r in dists for C, p in r.centers]
        warm = [c for r in dists for c in r.warm or ()] if key[2] else None
        solver = dict(run.dist_solver)
        solver["max_iter"] = key[1]
        flat = gw_to_spaces(
            pairs,
            epsilon=run.epsilon,
            T0=None if warm is None else [c.plans for c in warm],
            potentials=None if warm is None else [c.potentials for c in warm],
            chunk_elements=run.chunk_elements,
            **solver,  # type: ignore[arg-type]
        )
        out, start = [], 0
        for r in dists:
            out.append(flat[start : start + len(r.centers)])
            start += len(r.centers)
        return out
    barys: list[_Barycenter] = reqs  # type: ignore[assignment]
    source, rows = barys[0].source, [r.rows for r in barys if r.rows is not None]
    of_one = source is not None and len(rows) == len(barys)
    of_one = of_one and all(r.source is source for r in barys)
    return gw_barycenters(
        [r.members for r in barys],
        torch.stack([r.init_C for r in barys]),
        n_support=run.n_support,
        epsilon=run.bary_epsilon,
        init_plans=[r.init_plans for r in barys] if key[1] else None,  # type: ignore[misc]
        init_potentials=[r.init_potentials for r in barys] if key[2] else None,  # type: ignore[misc]
        warm_start=True,
        chunk_elements=run.chunk_elements,
        members_of=(source, rows) if source is not None and of_one else None,
        **run.bary,  # type: ignore[arg-type]
    )


class LloydRun:
    """One configuration of GW k-means; :meth:`once` performs one seeded run."""

    def __init__(
        self,
        clouds: PointClouds,
        *,
        k: int,
        epsilon: float,
        bary_epsilon: float,
        n_support: int,
        generator: torch.Generator,
        dist_solver: dict[str, float | int | str | None],
        seed_gw_max_iter: int,
        bary: dict[str, float | int | str],
        warm_start: bool,
        chunk_elements: int,
        init: str = "k-means++",
    ) -> None:
        self.clouds, self.k, self.epsilon = clouds, k, epsilon
        self.bary_epsilon, self.n_support, self.generator = bary_epsilon, n_support, generator
        self.dist_solver, self.seed_gw_max_iter = dist_solver, seed_gw_max_iter
        self.bary, self.warm_start, self.chunk_elements = bary, warm_start, chunk_elements
        self.ready = 0  # restarts that drew all their random numbers
        self.init = init

    def distances(
        self, centers: list[_Center | tuple[Tensor, Tensor]], max_iter: int | None = None
    ) -> _Distances:
        """Request the GW distances (and plans) of every cloud to each center; ``_Center``s
        warm-start from their previous plans (with ``warm_start``)."""
        warm = all(isinstance(c, _Center) for c in centers) and self.warm_start
        return _Distances(
            self,
            [(c.C, c.p) if isinstance(c, _Center) else c for c in centers],
            [c for c in centers if isinstance(c, _Center)] if warm else None,
            int(self.dist_solver["max_iter"] if max_iter is None else max_iter),  # type: ignore[arg-type]
        )

    def quantize(self, i: int) -> Generator[object, list[Any] | None, tuple[Tensor, Tensor]]:
        """Cloud ``i`` summarised as an ``n_support``-point GW barycenter of itself.

        k-means++ draws its seeds among the clouds, but every later center is an N-point
        barycenter: summarising each seed the same way makes the seeding distances as cheap as
        an update's (n × N plans instead of n × n, measured 20-50× cheaper) and of the same kind
        as the distances to barycenters that follow.  The start is ``n_support`` of the cloud's
        own points spread by farthest-point sampling (:func:`farthest_points`).
        """
        one = self.clouds.subset(torch.tensor([i], device=self.clouds.C.device))
        C, _ = one.cloud(0)
        pick = farthest_points(C, self.n_support)
        init = C[pick][:, pick]
        top = init.max()
        init = init / top if top > 0 else init
        (bary,) = yield [_Barycenter(one, init)]  # type: ignore[misc]
        return bary.C, bary.p

    def once(self, max_iter: int, restart: int = 0) -> _Step:
        """One k-means++ run, as a generator of solve requests (answered by :func:`drive_lockstep`)."""
        while self.ready < restart:  # the previous restart draws its seeds first
            yield _WAIT
        clouds, k, gen = self.clouds, self.k, self.generator
        n_clouds = len(clouds)
        dist = clouds.C.new_empty(n_clouds, k)
        centers: list[_Center] = []

        def add_center(C: Tensor, p: Tensor) -> Generator[object, list[Any] | None, None]:
            ((res,),) = yield [self.distances([(C, p)], max_iter=self.seed_gw_max_iter)]  # type: ignore[misc]
            dist[:, len(centers)] = res.value
            centers.append(_Center(C, p, res.plan, res.potentials))

        # 1. Seeding (k-means++ or farthest-first) on N-point summaries of the seed clouds.
        seeds = [int(torch.randint(n_clouds, (1,), generator=gen))]
        yield from add_center(*(yield from self.quantize(seeds[0])))
        for j in range(1, k):
            nearest = dist[:, :j].amin(dim=1).clamp(min=0).cpu().double()
            if self.init == "farthest":  # deterministic given the first center; no draw
                nearest[seeds] = -1.0
                seeds.append(int(torch.argmax(nearest)))
            else:
                top = float(nearest.max())
                weights = (nearest / top) ** 2 if top > 0 else torch.ones_like(nearest)
                weights[seeds] = 0.0
                if float(weights.sum()) <= 0:  # every other cloud coincides with a center
                    weights = torch.ones_like(nearest)
                    weights[seeds] = 0.0
                seeds.append(int(torch.multinomial(weights, 1, generator=gen)))
            yield from add_center(*(yield from self.quantize(seeds[-1])))
            logger.debug("seed %d (%s): cloud %d", j, self.init, seeds[-1])
        labels = assign_nearest(dist, k)
        if self.warm_start:  # the updates draw nothing: the next restart may seed now
            self.ready += 1

        # 2-3. Lloyd iterations with barycenters, all moved clusters in one request.
        n_iter, converged = 0, False
        for _ in range(max_iter):
            n_iter += 1
            moved = []
            for j, center in enumerate(centers):
                idx = torch.nonzero(labels == j).flatten()
                if center.members is not None and torch.equal(center.members, idx):
                    continue  # same members: same barycenter and distances
                moved.append((j, idx))
                logger.debug("update %d, cluster %d: %d members", n_iter, j, idx.numel())
            if moved:
                requests = [self._update(centers[j], idx) for j, idx in moved]
                barys = yield requests
                for (j, idx), bary in zip(moved, barys, strict=True):  # type: ignore[arg-type]
                    self._moved(centers[j], idx, bary)
                (results,) = yield [self.distances([centers[j] for j, _ in moved])]  # type: ignore[misc]
                for (j, _), res in zip(moved, results, strict=True):
                    centers[j].plans, centers[j].potentials = res.plan, res.potentials
                    dist[:, j] = res.value
            new = assign_nearest(dist, k)
            if torch.equal(new, labels):
                converged = True
                break
            labels = new
        if not self.warm_start:
            self.ready += 1
        counts = torch.bincount(labels, minlength=k)
        minority = int(k - 1 - torch.argmin(counts.flip(0)))
        own = dist.gather(1, labels.unsqueeze(1)).squeeze(1)
        return GWKMeansResult(
            labels=labels,
            distances=dist,
            centers=tuple((c.C, c.p) for c in centers),
            seeds=torch.tensor(seeds, dtype=torch.int64),
            n_iter=n_iter,
            converged=converged,
            minority=minority,
            objective=float(own.double().mean()),
        )

    def _update(self, center: _Center, idx: Tensor) -> _Barycenter:
        """Request moving ``center`` to the GW barycenter of the clouds ``idx``, from where it
        was (without ``warm_start``: from a random structure drawn now)."""
        members = self.clouds.subset(idx)
        width = members.n_max
        if not self.warm_start:
            init = random_structure(
                self.n_support,
                generator=self.generator,
                dtype=center.C.dtype,
                device=center.C.device,
            )
            return _Barycenter(members, init, source=self.clouds, rows=idx)
        return _Barycenter(
            members,
            center.C,
            center.plans[idx, :width],
            (center.potentials[0][idx, :width], center.potentials[1][idx]),
            source=self.clouds,
            rows=idx,
        )

    def _moved(self, center: _Center, idx: Tensor, bary: GWBarycenter) -> None:
        """Install the barycenter of the clouds ``idx`` as ``center``."""
        center.C, center.p, center.members = bary.C, bary.p, idx
        if self.warm_start:  # members restart from their couplings to the barycenter's last iterate
            width = bary.plans.shape[1]
            center.plans[idx] = 0.0
            center.plans[idx, :width] = bary.plans
            center.potentials[0][idx] = 0.0
            center.potentials[0][idx, :width] = bary.potentials[0]
            center.potentials[1][idx] = bary.potentials[1]


def farthest_points(C: Tensor, count: int) -> Tensor:
    """``count`` indices of a space spread by farthest-point sampling on its distances ``C``.

    Starts from the point with the largest eccentricity (row sum of ``C``) and repeatedly adds
    the point farthest from those chosen; when ``count`` exceeds the number of points the
    sequence repeats.
    """
    n = C.shape[0]
    chosen = [int(torch.argmax(C.sum(dim=1)))]
    nearest = C[chosen[0]].clone()
    while len(chosen) < min(count, n):
        i = int(torch.argmax(nearest))
        chosen.append(i)
        nearest = torch.minimum(nearest, C[i])
    reps = -(-count // len(chosen))
    return torch.tensor((chosen * reps)[:count], dtype=torch.int64, device=C.device)


def assign_nearest(dist: Tensor, k: int) -> Tensor:
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
