"""How well Heatmap Clustering's representation separates the poisons when the split is known.

Heatmap Clustering (Schulth, Berghoff, Neu 2022, arXiv:2204.12848; docs/methods.md) flags the
smaller cluster of a GW 2-means split of the target class's LRP point clouds.  A 2-means split
that reproduces the poisons can only be as good as the nearest-barycenter rule applied to the
**true** groups: a k-means fixed point near the true split assigns every cloud to the nearer of
the two group barycenters.  This bench measures that bound on the victims of
``bench_heatmap_table1`` (same victims, same ``--cache``), so a failure of the detector can be
told apart from a failure of its search:

- the clouds of the coat class exactly as the detector builds them (its defaults plus
  ``--hc-param``);
- the GW barycenter of the true poisons and of the true clean coats, with the barycenter
  settings of :func:`poisonlab.explain.gw_kmeans.gw_kmeans` (N = ``n_support`` points, ε_b =
  ε, relative tolerance 1e-4, warm-started couplings), each from ``--starts`` random
  structures, keeping the start of lowest objective (mean GW of the members to it);
- the GW distance of every coat to both (ε of the detector), then: the ACC / TPR / TNR of the
  nearest-barycenter rule, the AUROC of the detector's silhouette score against these
  barycenters, and how the split moves after one k-means update from it (barycenters of the
  nearest-barycenter groups, reassigned);
- ``trigger share``: with the sticker at ``bottom-right``, the share of each coat's positive
  relevance in the 6 × 6 bottom-right corner (the sticker's 3 × 3 and its surroundings), and
  its AUROC.  This uses the trigger's position, which no detector knows: it only shows
  whether the heatmaps carry the trigger.

Output: bench/results/hc_oracle.md.  Run ``bench_heatmap_table1`` with the same ``--cache`` first
(or let this bench train the victims).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as `python bench/bench_hc_oracle.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_gromov import FAST_BARY, FAST_DIST
from bench.bench_heatmap_table1 import TARGET, _param, victim
from bench.common import markdown_table, mean_sd, write_result
from poisonlab.data.prepare import prepare_splits
from poisonlab.defenses import Evidence, build_detector
from poisonlab.defenses.heatmap_clustering import silhouette
from poisonlab.explain.gw_barycenter import gw_barycenter
from poisonlab.explain.gw_batches import gw_to_one
from poisonlab.explain.point_cloud import PointClouds
from poisonlab.metrics.detection import detection_metrics
from poisonlab.seeding import derive_seed, make_generator

#: Barycenter and distance settings of gw_kmeans (its defaults, as bench gromov's clustering path).
BARY = {"max_iter": 100, **FAST_BARY}
DIST = {"max_iter": 1000, **FAST_DIST}
CORNER = 6


def _barycenter(
    clouds: PointClouds, detector: Any, starts: int, seed: int
) -> tuple[Any, list[float]]:
    """Lowest-objective GW barycenter of ``clouds`` over ``starts`` random structures, and the
    objective (mean GW of the members to it) of every start."""
    eps = detector.epsilon if detector.bary_epsilon is None else detector.bary_epsilon
    best, best_obj, objs = None, float("inf"), []
    for s in range(starts):
        bary = gw_barycenter(
            clouds,
            n_support=detector.n_support,
            epsilon=eps,
            generator=make_generator(derive_seed(seed, "hc-oracle", s)),
            **BARY,  # type: ignore[arg-type]
        )
        obj = float(_distances(clouds, bary, detector).mean())
        objs.append(obj)
        if obj < best_obj:
            best, best_obj = bary, obj
    return best, objs


def _distances(clouds: PointClouds, bary: Any, detector: Any) -> torch.Tensor:
    res = gw_to_one(clouds, bary.C, bary.p, epsilon=detector.epsilon, keep_plans=False, **DIST)
    return res.value.double()  # type: ignore[no-any-return]


def _split(clouds: PointClouds, groups: torch.Tensor, detector: Any, starts: int, seed: int):
    """Distances (B, 2) of every cloud to the barycenters of ``~groups`` and ``groups``, and
    the objectives of every barycenter start of each."""
    cols, objs = [], []
    for side in (~groups, groups):
        bary, obj = _barycenter(clouds.subset(side.nonzero().flatten()), detector, starts, seed)
        cols.append(_distances(clouds, bary, detector))
        objs.append(obj)
    return torch.stack(cols, dim=1), objs


def oracle(cell: dict[str, Any], params: dict[str, Any], starts: int, seed: int) -> dict[str, Any]:
    """The nearest-true-barycenter bound of one victim (see the module docstring)."""
    detector = build_detector("heatmap-clustering", classes=[TARGET], **params)
    evidence = Evidence(cell["data"], cell["model"], device="cpu")
    members = cell["data"].labels == TARGET
    truth = cell["is_poison"][members].bool()
    started, cpu = time.perf_counter(), time.process_time()
    clouds = detector.clouds(evidence, "data", TARGET)
    clouds = PointClouds(clouds.C.float(), clouds.p.float(), clouds.sizes, None)
    dist, objs = _split(clouds, truth, detector, starts, seed)
    score = silhouette(dist[:, 0], dist[:, 1])
    near = dist[:, 1] < dist[:, 0]
    m = detection_metrics(truth, score, near)
    moved, _ = _split(clouds, near, detector, 1, seed)
    after = moved[:, 1] < moved[:, 0]
    out = {
        "n": int(truth.numel()),
        "n_poison": int(truth.sum()),
        "points": float(clouds.sizes.double().mean()),
        "acc": 100 * m.accuracy,
        "tpr": 100 * m.tpr,
        "tnr": 100 * m.tnr,
        "auroc": 100 * m.auroc,
        "clean_near_poison": int((near & ~truth).sum()),
        "poison_near_clean": int((~near & truth).sum()),
        "within": [min(o) for o in objs],
        "spread": [f"{min(o):.5f}–{max(o):.5f}" for o in objs],
        "after": f"{int(after.sum())} ({int((after & truth).sum())}p)",
        "acc_after": 100 * float((after == truth).double().mean()),
        "seconds": time.perf_counter() - started,
        "cpu": time.process_time() - cpu,
    }
    maps = detector.heatmaps(evidence, "data", TARGET).clamp(min=0)
    share = maps[:, -CORNER:, -CORNER:].sum((1, 2)) / maps.sum((1, 2)).clamp_min(1e-30)
    out["share_poison"] = float(share[truth].median())
    out["share_clean"] = float(share[~truth].median())
    out["share_auroc"] = 100 * detection_metrics(truth, share, share > 0.5).auroc
    return out


def main(argv: list[str]) -> None:
    """Run the bound over ``--seeds`` × ``--rates`` (victims as in ``bench_heatmap_table1``)."""
    parser = argparse.ArgumentParser(prog="python -m bench hc_oracle")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.33, 0.10, 0.05])
    parser.add_argument("--limit", type=int, default=6000, help="training images")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--val-fraction", type=float, default=None)
    parser.add_argument("--position", default="bottom-right")
    parser.add_argument("--cache", type=Path, default=None, help="folder for trained victims")
    parser.add_argument("--hc-param", type=_param, nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--starts", type=int, default=1, help="barycenter starts (lowest kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--name", default="hc_oracle", help="results file name")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    params = dict(args.hc_param)
    split = prepare_splits("fashion-mnist", seed=0, limit=args.limit)
    rows, per_rate = [], {}
    for rate in args.rates:
        for seed in args.seeds:
            cell = victim(args, split, seed, rate)
            out = oracle(cell, params, args.starts, seed)
            out["asr"] = cell["asr"]
            per_rate.setdefault(rate, []).append(out)
            rows.append([
                f"{100 * rate:g}%", seed, f"{out['n_poison']} / {out['n']}", f"{cell['asr']:.1f}",
                f"{out['points']:.1f}", f"{out['acc']:.2f}", f"{out['tpr']:.2f}",
                f"{out['tnr']:.2f}", f"{out['auroc']:.2f}",
                f"{out['clean_near_poison']} / {out['poison_near_clean']}",
                " / ".join(out["spread"] if args.starts > 1 else [f"{o:.5f}" for o in out["within"]]),
                f"{out['after']} · {out['acc_after']:.2f}",
                f"{out['share_poison']:.2f} / {out['share_clean']:.2f} · {out['share_auroc']:.1f}",
                f"{out['seconds']:.1f}",
            ])  # fmt: skip
            print(" | ".join(str(c) for c in rows[-1]), flush=True)
    summary = [
        [
            f"{100 * rate:g}%",
            *(mean_sd([o[k] for o in outs]) for k in ("acc", "tpr", "tnr", "auroc", "acc_after")),
            mean_sd([o["share_auroc"] for o in outs]),
        ]
        for rate, outs in per_rate.items()
    ]
    body = (
        "Barycenters of the TRUE poison and clean groups of the coat class, with Heatmap "
        "Clustering's clouds and solver settings"
        + (f" plus {params}" if params else "")
        + f"; {args.starts} barycenter start(s), the lowest objective kept (the GW to own "
        "barycenter column gives the range over the starts); one start for the update. The "
        "nearest-barycenter rule is what a k-means "
        "fixed point at the true split would flag; 'after one update' recomputes the barycenters "
        "of that rule's groups and reassigns. Trigger share: median share of the positive "
        f"relevance in the {CORNER}×{CORNER} bottom-right corner (poisons / clean) and its AUROC "
        "(uses the sticker's position: evidence that the heatmaps carry the trigger, not a "
        "detector). Victims as in heatmap_table1 "
        f"(limit {args.limit}, {args.epochs} epochs, sticker at `{args.position}`).\n\n"
        + markdown_table(
            [
                "poisons",
                "ACC %",
                "TPR %",
                "TNR %",
                "AUROC %",
                "ACC after 1 update %",
                "trigger share AUROC %",
            ],
            summary,
        )
        + "\nmean ± sd over seeds "
        + ", ".join(str(s) for s in args.seeds)
        + ".\n\n"
        + markdown_table(
            [
                "poisons",
                "seed",
                "poisons / class",
                "ASR %",
                "points",
                "ACC %",
                "TPR %",
                "TNR %",
                "AUROC %",
                "clean nearer poisons / poisons nearer clean",
                "GW to own barycenter (clean / poisons)",
                "poison side after 1 update · ACC %",
                "trigger share poisons / clean · AUROC %",
                "seconds",
            ],
            rows,
        )
    )
    command = "python -m bench hc_oracle " + " ".join(argv)
    path = write_result(
        args.name, "Heatmap Clustering: the split of the true groups (oracle bound)", command, body
    )
    print(path.read_text())


if __name__ == "__main__":
    main(sys.argv[1:])
