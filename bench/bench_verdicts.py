"""Scan decisions against issue 11's targets: per-class verdicts and the combined decision vs ART.

On data made here, per cell and seed: poison the set, train cnn-small on it with its default
recipe, and on that SAME model and data run

- ours: activation-clustering, raw-clustering and spectral-signatures with their default
  threshold (the per-class verdicts), and the combined decision (``combine``: what ``poisonlab
  scan`` removes into clean.npz);
- ART 1.20.1: ``ActivationDefence`` (PCA, 10 dims, smaller-cluster analysis, its defaults) and
  ``SpectralSignatureDefense`` (expected_pp_poison = 0.1, eps_multiplier = 1.5), each given the
  penultimate activations as in bench_detectors.py.

Cells: clean data (no poisons); one-to-one BadNets at 10% of the target class with poisonlab's
4-pixel pattern and with a single-pixel trigger; all-to-all BadNets at 10% of the set; the
label-consistent (clean-label) attack at 33% of the target class; and ART's own poisoning
function ``PoisoningAttackBackdoor`` with ``add_pattern_bd`` and with ``add_single_bd`` (one-to-one,
10% of the target class, appended). Source → target is (s, s + 5 mod 10) for seed s.

Reported per cell, as mean (min–max) over seeds: % of poisons removed, % of clean samples removed,
and for ours the classes named (right = exactly the target class, or every class all-to-all).
Targets (issue 11): clean ≤ 1% removed and no class named; one-to-one ≥ 95% / ≤ 1% and the right
class; all-to-all ≥ 90% / ≤ 3%.

``--calibration`` adds, over every clean class of every cell, how often each detector's verdict
and the combination named a clean class (false alarms per class tested).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from typing import Any

import numpy as np
import torch

from bench.bench_detectors import art_classifier
from bench.common import markdown_table, write_result
from poisonlab.attacks import build_attack
from poisonlab.data import load_dataset
from poisonlab.data.dataset import ImageDataset
from poisonlab.defenses import Evidence, build_detector
from poisonlab.defenses.fusion import combine
from poisonlab.models import ModelConfig, build_model
from poisonlab.seeding import make_generator
from poisonlab.train import train_model
from poisonlab.train.recipes import default_recipe

OURS = ("activation-clustering", "raw-clustering", "spectral-signatures")
CELLS = (
    "clean",
    "badnets-pattern-1to1",
    "badnets-pixel-1to1",
    "badnets-all-to-all",
    "label-consistent",
    "art-pattern-1to1",
    "art-pixel-1to1",
)


def poisoned(
    cell: str, data: ImageDataset, seed: int
) -> tuple[ImageDataset, np.ndarray, list[int]]:
    """(the data set of ``cell``, is_poison, the poisoned classes)."""
    source, target = seed % 10, (seed + 5) % 10
    generator = make_generator(seed)
    if cell == "clean":
        return data, np.zeros(len(data), dtype=bool), []
    if cell.startswith("art-"):
        return art_poison(cell, data, source, target, seed)
    if cell == "badnets-all-to-all":
        attack = build_attack("badnets", rate=0.1)
        classes = list(range(data.num_classes))
    elif cell == "label-consistent":
        attack = build_attack("label-consistent", target=target, target_rate=0.33)
        classes = [target]
    else:
        trigger = {"trigger": "square", "size": 1} if "pixel" in cell else {}
        attack = build_attack("badnets", source=source, target=target, target_rate=0.1, **trigger)
        classes = [target]
    result = attack.poison(data, generator=generator)
    return result.dataset, result.is_poison.numpy(), classes


def art_poison(
    cell: str, data: ImageDataset, source: int, target: int, seed: int
) -> tuple[ImageDataset, np.ndarray, list[int]]:
    """ART's PoisoningAttackBackdoor on copies of source images, labelled target, appended."""
    from art.attacks.poisoning import PoisoningAttackBackdoor
    from art.attacks.poisoning.perturbations import add_pattern_bd, add_single_bd

    rng = np.random.default_rng(seed)
    labels = data.labels.numpy()
    count = round(0.1 * int((labels == target).sum()) / 0.9)
    rows = rng.choice(np.flatnonzero(labels == source), size=count, replace=False)
    x = data.images[rows].numpy()[:, 0]  # (n, H, W): ART's perturbations take gray images so
    perturbation = add_pattern_bd if "pattern" in cell else add_single_bd
    attack = PoisoningAttackBackdoor(lambda z: perturbation(z, pixel_value=1.0))
    poison_x, _ = attack.poison(x, y=np.full(count, target))
    images = torch.cat([data.images, torch.from_numpy(poison_x[:, None]).float()])
    new_labels = torch.cat([data.labels, torch.full((count,), target, dtype=torch.long)])
    out = ImageDataset(images, new_labels, data.num_classes, name=f"{data.name}+art")
    truth = np.concatenate([np.zeros(len(data), dtype=bool), np.ones(count, dtype=bool)])
    return out, truth, [target]


def run_cell(cell: str, data: ImageDataset, seed: int) -> dict[str, Any]:
    """Every method's removal on one poisoned set and one trained model."""
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense

    dataset, truth, classes = poisoned(cell, data, seed)
    c, h, w = dataset.shape
    model = build_model(ModelConfig("cnn-small", c, h, w, dataset.num_classes), seed=seed)
    train_model(model, dataset, default_recipe("cnn-small", len(dataset), seed=seed))
    evidence = Evidence(dataset, model, device="cpu")
    labels = dataset.labels
    out: dict[str, Any] = {"truth": truth, "classes": classes, "labels": labels.numpy()}
    results = []
    for name in OURS:
        seeded = {} if name == "spectral-signatures" else {"seed": seed}
        result = build_detector(name, **seeded).fit(evidence).result
        results.append(result)
        out[name] = (result.flagged.numpy(), result.poisoned_classes, result.verdicts)
    decision = combine(results, labels)
    out["combined"] = (decision.removed.numpy(), decision.poisoned_classes, decision.per_class)
    classifier = art_classifier(model, dataset.shape, dataset.num_classes)
    x, y = dataset.images.numpy(), labels.numpy()
    np.random.seed(seed)
    _, clean = ActivationDefence(classifier, x, y).detect_poison(
        nb_clusters=2, nb_dims=10, reduce="PCA", cluster_analysis="smaller"
    )
    out["ART ActivationDefence"] = (np.asarray(clean) == 0, None, None)
    _, clean = SpectralSignatureDefense(
        classifier, x, y, batch_size=256, eps_multiplier=1.5, expected_pp_poison=0.1
    ).detect_poison()
    out["ART SpectralSignatureDefense"] = (np.asarray(clean) == 0, None, None)
    return out


def summarise(runs: dict[str, list[dict[str, Any]]]) -> tuple[str, str]:
    """The targets table and the calibration table."""
    methods = [*OURS, "combined", "ART ActivationDefence", "ART SpectralSignatureDefense"]

    def spread(values: list[float]) -> str:
        v = 100 * np.asarray(values)
        return f"{v.mean():.1f} ({v.min():.1f}–{v.max():.1f})"

    rows = []
    false_names: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for cell, cell_runs in runs.items():
        for method in methods:
            tpr, fpr, right = [], [], 0
            for run in cell_runs:
                flags, named, _ = run[method]
                truth = run["truth"]
                if truth.any():
                    tpr.append(float(flags[truth].mean()))
                fpr.append(float(flags[~truth].mean()))
                if named is not None:
                    right += sorted(named) == sorted(run["classes"])
                    clean_classes = set(np.unique(run["labels"]).tolist()) - set(run["classes"])
                    false_names[method][0] += len(set(named) & clean_classes)
                    false_names[method][1] += len(clean_classes)
            rows.append(
                [
                    cell,
                    method,
                    spread(tpr) if tpr else "—",
                    spread(fpr),
                    f"{right}/{len(cell_runs)}" if cell_runs[0][method][1] is not None else "—",
                ]
            )
    table = markdown_table(
        ["cell", "method", "poisons removed %", "clean removed %", "right classes named"], rows
    )
    calibration = markdown_table(
        ["method", "clean classes named", "clean classes tested", "rate %"],
        [[m, str(a), str(b), f"{100 * a / max(b, 1):.2f}"] for m, (a, b) in false_names.items()],
    )
    return table, calibration


def main(argv: list[str]) -> None:
    """Run every cell for every seed; print and write bench/results/verdicts.md."""
    parser = argparse.ArgumentParser(prog="python -m bench verdicts")
    parser.add_argument("--data", default="digits", help="a poisonlab data set name")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cells", default=",".join(CELLS), help="comma-separated cells")
    parser.add_argument("--calibration", action="store_true", help="add the false-alarm table")
    parser.add_argument("--quick", action="store_true", help="one seed, three cells (smoke run)")
    args = parser.parse_args(argv)
    cells = args.cells.split(",")
    if args.quick:
        args.seeds, cells = 1, ["clean", "badnets-pattern-1to1", "art-pixel-1to1"]
    torch.set_num_threads(1)
    data = load_dataset(args.data)
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    started = time.perf_counter()
    for cell in cells:
        for seed in range(args.seeds):
            runs[cell].append(run_cell(cell, data, seed))
            print(cell, seed, f"{time.perf_counter() - started:.0f}s", flush=True)
    table, calibration = summarise(runs)
    text = [
        f"{args.data} ({len(data)} images), cnn-small with its default recipe, seeds 0–"
        f"{args.seeds - 1}; one model per cell and seed, shared by every method. Mean (min–max) "
        "over seeds.",
        "",
        table,
    ]
    if args.calibration:
        text += ["", "False alarms: clean classes named, over every clean class of every run.", "",
                 calibration]  # fmt: skip
    print("\n".join(text))
    command = "python -m bench verdicts " + " ".join(argv)
    write_result(
        "verdicts", "Scan decisions: per-class verdicts vs ART", command.strip(), "\n".join(text)
    )
