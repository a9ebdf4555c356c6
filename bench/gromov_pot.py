"""POT's side of the GW bench (bench/bench_gromov.py): its per-pair barycenter and distance
loops, written out and timed on a subset of clouds and extrapolated, and its batch solver
(``ot.batch.solve_gromov_batch``), with the small timing helpers both modules use."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from poisonlab.explain.point_cloud import PointClouds


def timed_call(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(``fn()``, wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def cloud_arrays(clouds: PointClouds, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Cloud ``i``'s real points as numpy arrays (C, p), as POT takes them."""
    C, p = clouds.cloud(i)
    return C.numpy(), p.numpy()


def progress(message: str) -> None:
    """A time-stamped progress line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pot_barycenter(
    solver: str, Cs: list[Any], ps: list[Any], C0: Any, updates: int, args: argparse.Namespace
) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of each of the first ``updates`` updates of POT's barycenter loop.

    The loop of ``ot.gromov.entropic_gromov_barycenters`` / ``gromov_barycenters`` (default
    ``warmstartT=False``), written out: POT passes its ``max_iter`` to the coupling solves too,
    so calling it with ``max_iter=updates`` would cap every coupling at ``updates`` iterations.
    Here each coupling gets POT's defaults (1,000 iterations; tol 1e-4 entropic, tol_rel 1e-5
    exact).
    """
    import ot

    n_support = C0.shape[0]
    p_bar, lambdas, C, times = ot.unif(n_support), [1.0 / len(Cs)] * len(Cs), C0, []
    for _ in range(updates):
        t0, c0 = time.perf_counter(), time.process_time()
        if solver == "entropic":
            T = [
                ot.gromov.entropic_gromov_wasserstein(
                    C, Cs_s, p_bar, p_s, "square_loss", args.bary_epsilon, max_iter=1000, tol=1e-4
                )
                for Cs_s, p_s in zip(Cs, ps, strict=True)
            ]
        else:
            T = [
                ot.gromov.gromov_wasserstein(
                    C, Cs_s, p_bar, p_s, "square_loss", max_iter=1000, tol_rel=1e-5, tol_abs=0.0
                )
                for Cs_s, p_s in zip(Cs, ps, strict=True)
            ]
        C = ot.gromov.update_barycenter_structure(
            T, Cs, lambdas, p_bar, "square_loss", target=False
        )
        times.append((time.perf_counter() - t0, time.process_time() - c0))
    return times


def _size_chunks(clouds: PointClouds, chunk: int) -> list[tuple[torch.Tensor, int]]:
    """``(indices, n)``: clouds sorted by size in runs of ``chunk``, each padded to its largest n.

    ``ot.batch.solve_gromov_batch`` needs every problem of a batch at one size, and zero-mass
    padding (how our solver mixes sizes) makes its log-domain projections return NaN (measured:
    NaN for every padded cloud). So padded points get a mass of 1e-12 (renormalised), which
    moves the values by far less than the solver's own error (checked below against POT's exact
    solver on the unpadded clouds); sorting by size keeps the padding small, as ours does.
    """
    order = torch.argsort(clouds.sizes, stable=True)
    return [
        (idx, int(clouds.sizes[idx].max()))
        for idx in (order[i : i + chunk] for i in range(0, len(order), chunk))
    ]


def pot_batch_to_one(
    clouds: PointClouds, C: torch.Tensor, p: torch.Tensor, args: argparse.Namespace
) -> tuple[torch.Tensor, torch.Tensor]:
    """GW values and plans (B, n_max, m) of every cloud to ``(C, p)`` with POT's batch solver."""
    import ot.batch

    value = torch.empty(len(clouds), dtype=C.dtype)
    plans = torch.zeros(len(clouds), clouds.n_max, C.shape[0], dtype=C.dtype)
    for idx, n in _size_chunks(clouds, args.pot_batch_chunk):
        batch = len(idx)
        a = clouds.p[idx, :n]
        a = torch.where(a > 0, a, 1e-12)
        res = ot.batch.solve_gromov_batch(
            clouds.C[idx, :n, :n],
            C.expand(batch, -1, -1).contiguous(),
            reg=args.pot_batch_reg,
            a=a / a.sum(dim=1, keepdim=True),
            b=p.expand(batch, -1).contiguous(),
            symmetric=True,
        )
        value[idx] = res.value
        plans[idx, :n] = res.plan
    return value, plans


def pot_batch_barycenter(
    clouds: PointClouds, C0: torch.Tensor, updates: int, args: argparse.Namespace
) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of each of the first ``updates`` barycenter updates whose couplings
    come from ``ot.batch.solve_gromov_batch`` (POT has no batched barycenter): the couplings of
    all members in one batch per size, then the square-loss structure update
    ``C = Σ_s λ_s T_sᵀ C_s T_s / (p pᵀ)`` (POT's ``update_barycenter_structure``) in torch."""
    n_support = C0.shape[0]
    p_bar = torch.full((n_support,), 1.0 / n_support, dtype=C0.dtype)
    C, times = C0, []
    for _ in range(updates):
        t0, c0 = time.perf_counter(), time.process_time()
        _, plans = pot_batch_to_one(clouds, C, p_bar, args)  # (S, n_max, N), cloud first
        C = torch.einsum("sia,sij,sjb->ab", plans, clouds.C, plans) / len(clouds)
        C = C / torch.outer(p_bar, p_bar)
        times.append((time.perf_counter() - t0, time.process_time() - c0))
    return times


def extrapolated(seconds: tuple[float, ...], updates: int) -> float:
    """Seconds of ``updates`` barycenter updates from those of the first few measured: the first
    as measured, the others at the mean of updates 2..k (coupling solves get cheaper once the
    barycenter has left its random start)."""
    later = sum(seconds[1:]) / (len(seconds) - 1) if len(seconds) > 1 else seconds[0]
    return seconds[0] + (updates - 1) * later


def pot_iteration(
    solver: str,
    clouds: PointClouds,
    labels: torch.Tensor,
    subset: torch.Tensor,
    starts: list[torch.Tensor],
    barys: list[Any],
    args: argparse.Namespace,
) -> tuple[float, float, float, list[float]]:
    """POT's per-pair loop ("entropic" or "exact") for one k-means iteration, timed on ``subset``.

    Each barycenter's loop (:func:`pot_barycenter`) runs on the subset's members of its cluster
    from ``starts[j]``, is timed over its first ``--pot-updates`` updates and extrapolated to
    ``barys[j].n_iter`` updates and to all the cluster's members; then the GW distance of every
    subset cloud to each of ``barys`` (ours), extrapolated to all clouds.  Returns wall and CPU
    seconds of the iteration, the CPU seconds of its distances alone, and the subset's distances
    (to barycenter 0, then to barycenter 1).
    """
    import ot

    n, p_bar = len(clouds), ot.unif(barys[0].C.shape[0])
    wall = cpu = dist_cpu = 0.0
    values: list[float] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for j in (0, 1):
            sub = subset[labels[subset] == j].tolist()
            Cs, ps = zip(*(cloud_arrays(clouds, i) for i in sub), strict=True)
            scale, updates = int((labels == j).sum()) / len(sub), barys[j].n_iter
            k = min(updates, args.pot_updates)
            both = pot_barycenter(solver, list(Cs), list(ps), starts[j].numpy(), k, args)
            wall_j, cpu_j = (extrapolated(t, updates) for t in zip(*both, strict=True))
            wall, cpu = wall + scale * wall_j, cpu + scale * cpu_j
            progress(f"POT {solver} barycenter {j}: {both} s (wall, CPU) per update")
        for j in (0, 1):
            Cb = barys[j].C.numpy()

            def distances(Cb: np.ndarray = Cb) -> list[float]:
                found = []
                for i in subset.tolist():
                    C, p = cloud_arrays(clouds, i)
                    if solver == "entropic":
                        found.append(
                            ot.gromov.entropic_gromov_wasserstein2(
                                C, Cb, p, p_bar, "square_loss", args.epsilon
                            )
                        )
                    else:
                        found.append(ot.gromov.gromov_wasserstein2(C, Cb, p, p_bar, "square_loss"))
                return [float(v) for v in found]

            found, wall_j, cpu_j = timed_call(distances)
            values += found
            wall, cpu = wall + wall_j * n / len(subset), cpu + cpu_j * n / len(subset)
            dist_cpu += cpu_j * n / len(subset)
            progress(f"POT {solver} distances {j} done")
    return wall, cpu, dist_cpu, values
