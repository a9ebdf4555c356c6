"""Heatmap Clustering on the demo's class: over demo seeds and k-means seeds, beside its bound.

``poisonlab demo`` (:mod:`poisonlab.reports.demo`) runs Heatmap Clustering (Schulth, Berghoff,
Neu 2022, arXiv:2204.12848; docs/methods.md) on one class of its BadNets digits (8 × 8 images,
all-to-all, poisons worth 20% of the training set, the 4-pixel pattern in the bottom-left corner)
and prints one AUROC: one victim (``demo --seed``) and one k-means seed. One number says little
about a k-means whose runs swing with the seed, so this bench repeats that step:

- for each demo seed, the demo's own backdoor experiment (its config from
  :func:`~poisonlab.reports.demo.demo_configs`, run by the experiment runner, victims cached in
  ``--runs``), with a recording copy of the detector that keeps the Evidence it was given;
- on that Evidence, the detector at the demo's settings (plus ``--hc-param``) for each k-means
  seed (``--hc-seeds``): AUROC and ACC of its flags (the paper's rule) on the demo's class. The
  experiment runner gives a detector the cell's seed, so ``demo --seed S`` runs k-means seed S:
  the rows with equal seeds are the demo's own runs;
- the nearest-true-barycenter bound of ``bench hc_oracle`` on the same clouds: barycenters of
  the TRUE poison and clean groups of the class (``--starts`` random starts each, the lowest
  objective kept: one start can land far off), each cloud's silhouette to them (AUROC) and
  the nearest-barycenter rule (ACC), and the k-means objective of that split (the mean GW of
  each cloud to its own group's barycenter) beside the runs' own.

``--trigger KEY=VALUE`` (BadNets trigger options merged into the demo's) and ``--heatmap-class``
measure other demo settings (docs/methods.md#heatmap-clustering-demo).

Output: bench/results/hc_demo.md (``--name``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):  # run as `python bench/bench_hc_demo.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_hc_oracle import _split
from bench.bench_heatmap_table1 import _param
from bench.common import markdown_table, mean_sd, write_result
from poisonlab.defenses import Evidence, build_detector
from poisonlab.defenses.base import DETECTORS, register_detector
from poisonlab.defenses.heatmap_clustering import HeatmapClustering, silhouette
from poisonlab.experiments.runner import run_experiment
from poisonlab.explain.point_cloud import PointClouds
from poisonlab.metrics.detection import detection_metrics
from poisonlab.reports.demo import DemoSettings, demo_configs

RECORDER = "heatmap-clustering-recorder"
_SEEN: list[Evidence] = []


class _Recorder(HeatmapClustering):
    """Heatmap Clustering that keeps the Evidence it scores (the demo's data and victim)."""

    name = RECORDER

    def _score(self, evidence: Evidence) -> Any:
        _SEEN.append(evidence)
        return super()._score(evidence)


def victim(seed: int, runs: Path, settings: DemoSettings) -> tuple[Evidence, torch.Tensor, float]:
    """The demo's poisoned training set and victim for ``demo --seed SEED``, its truth, its ASR.

    Each call runs a new experiment (a fresh name: the runner skips finished ones) in ``runs``,
    whose model cache keeps the trained models between calls.
    """
    if RECORDER not in DETECTORS.names():
        register_detector(RECORDER)(_Recorder)
    entry = {"name": RECORDER, "classes": [settings.heatmap_class], "max_iter": 0, "n_init": 1}
    config = dataclasses.replace(
        demo_configs(settings, seed)[0],
        name=f"hc-demo-s{seed}-{uuid.uuid4().hex[:8]}",
        defenses=(entry,),
    )
    _SEEN.clear()
    summary = run_experiment(config, runs)
    cell = summary.cells[0]
    if cell.status != "done" or not _SEEN:
        raise RuntimeError(f"demo seed {seed}: {cell.status} {cell.error_line}")
    arrays = np.load(runs / config.name / cell.key / "scores.npz")
    truth = torch.from_numpy(arrays["is_poison"]).bool()
    return _SEEN[-1], truth, float(cell.metrics.get("attack.asr", float("nan")))


def bound(evidence: Evidence, truth: torch.Tensor, detector: Any, starts: int) -> dict[str, float]:
    """Nearest-true-barycenter bound of the class (``bench hc_oracle``'s rule and starts)."""
    c = detector.classes[0]
    clouds = detector.clouds(evidence, "data", c)
    clouds = PointClouds(clouds.C.float(), clouds.p.float(), clouds.sizes, None)
    dist, _ = _split(clouds, truth, detector, starts, 0)
    score = silhouette(dist[:, 0], dist[:, 1])
    m = detection_metrics(truth, score, dist[:, 1] < dist[:, 0])
    objective = float(torch.where(truth, dist[:, 1], dist[:, 0]).mean())
    return {"auroc": 100 * m.auroc, "acc": 100 * m.accuracy, "objective": objective,
            "points": float(clouds.sizes.double().mean())}  # fmt: skip


def main(argv: list[str]) -> None:
    """HC on the demo's class over ``--seeds`` (victims) × ``--hc-seeds`` (k-means draws)."""
    parser = argparse.ArgumentParser(prog="python -m bench hc_demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--hc-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", type=Path, required=True, help="runs folder (victims cached)")
    parser.add_argument("--hc-param", type=_param, nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--trigger", type=_param, nargs="*", default=[], metavar="KEY=VALUE",
        help="BadNets trigger options replacing the demo's (e.g. trigger=square size=2 offset=0)",
    )  # fmt: skip
    parser.add_argument(
        "--heatmap-class", type=int, help="the class HC analyses (default: the demo's)"
    )
    parser.add_argument("--starts", type=int, default=3, help="barycenter starts of the bound")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--name", default="hc_demo", help="results file name")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = DemoSettings()
    if args.trigger:
        settings = dataclasses.replace(settings, trigger={**settings.trigger, **dict(args.trigger)})
    if args.heatmap_class is not None:
        settings = dataclasses.replace(settings, heatmap_class=args.heatmap_class)
    params = {**settings.heatmap, **dict(args.hc_param)}
    cls = settings.heatmap_class
    rows, runs_auroc, bounds = [], [], []
    for seed in args.seeds:
        evidence, truth, asr = victim(seed, args.runs, settings)
        members = evidence.labels() == cls
        truth_c = truth[members]
        aurocs, objectives = [], []
        for h in args.hc_seeds:
            started = time.perf_counter()
            detector = build_detector(
                "heatmap-clustering", classes=[cls], seed=h, threshold="paper", **params
            )
            result = detector.fit(evidence).result
            m = detection_metrics(truth_c, result.scores[members], result.flagged[members])
            report = result.extras["classes"][str(cls)]
            aurocs.append(100 * m.auroc)
            objectives.append(min(report["objectives"]))
            rows.append([
                seed, f"{h} (the demo's)" if h == seed else h, f"{100 * asr:.1f}", f"{100 * m.auroc:.1f}", f"{100 * m.accuracy:.1f}",
                " / ".join(f"{o:.5f}" for o in report["objectives"]),
                f"{time.perf_counter() - started:.1f}",
            ])  # fmt: skip
            print(" | ".join(str(x) for x in rows[-1]), flush=True)
        detector = build_detector("heatmap-clustering", classes=[cls], **params)
        b = bound(evidence, truth_c, detector, args.starts)
        bounds.append(b)
        runs_auroc.extend(aurocs)
        rows.append([seed, "bound", "", f"{b['auroc']:.1f}", f"{b['acc']:.1f}",
                     f"{b['objective']:.5f} (true split)", ""])  # fmt: skip
        print(" | ".join(str(x) for x in rows[-1]), flush=True)
    n_poison = int(truth_c.sum())
    summary = markdown_table(
        ["", "AUROC %", "ACC %", "runs with AUROC ≥ 95"],
        [
            ["k-means runs", mean_sd(runs_auroc, 1), "",
             f"{sum(a >= 95 for a in runs_auroc)} / {len(runs_auroc)}"],
            ["bound (true groups' barycenters)", mean_sd([b["auroc"] for b in bounds], 1),
             mean_sd([b["acc"] for b in bounds], 1), f"{sum(b['auroc'] >= 95 for b in bounds)} / {len(bounds)}"],
        ],
    )  # fmt: skip
    body = (
        f"Heatmap Clustering on the demo's class {cls} ({int(members.sum())} images of which "
        f"{n_poison} poisons, ~{bounds[-1]['points']:.0f} points per cloud; BadNets trigger "
        f"{dict(settings.trigger)}) at the demo's settings"
        + (f" plus {dict(args.hc_param)}" if args.hc_param else "")
        + f"; demo seeds {args.seeds} (each its own poisoned set and victim), k-means seeds "
        f"{args.hc_seeds}. 'bound': barycenters of the TRUE groups (bench hc_oracle's rule, "
        f"{args.starts} random starts each, the lowest objective kept): the silhouette AUROC and nearest-barycenter ACC a k-means at the true split "
        "would give; its objective is comparable with the runs' objectives (lowest = what "
        "k-means keeps).\n\n"
        + summary
        + "\nmean ± sd over all runs / victims.\n\n"
        + markdown_table(
            ["demo seed", "k-means seed", "ASR %", "AUROC %", "ACC %", "objectives", "seconds"],
            rows,
        )
    )
    command = "python -m bench hc_demo " + " ".join(argv)
    write_result(args.name, "Heatmap Clustering on the demo's class", command, body)
