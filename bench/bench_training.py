"""Training: test accuracy of the default recipes and seconds per epoch of every architecture.

Targets (issue 2): cnn-small and lgm-net (LGM head) >= 97% on digits; cnn-small on Fashion-MNIST
>= 89% within 5 epochs. Seconds per epoch are measured on a fixed subset per model.

``--part scan-recipe``: what the large-data recipe buys a scan. cnn-small trained on the
60,000-image Fashion-MNIST scan case (bench/cases.py: 54,000 clean + 6,000 BadNets poisons) with
each candidate recipe; per recipe the training seconds, clean test accuracy, attack success on
the triggered test set, and activation clustering / spectral signatures / deep features
(6,000-image held-out set) scored against the ground truth on that model.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from bench.common import markdown_table, write_result
from poisonlab.data.prepare import prepare_splits
from poisonlab.models import ModelConfig, build_model
from poisonlab.train import TrainConfig, evaluate, train_model
from poisonlab.train.recipes import default_recipe


def _accuracy_run(data: str, arch: str, head: str, seed: int, **overrides: object) -> list[object]:
    split = prepare_splits(data, seed=seed)
    c, h, w = split.train.shape
    model = build_model(ModelConfig(arch, c, h, w, split.train.num_classes, head=head), seed=seed)
    recipe = default_recipe(arch, len(split.train), seed=seed, **overrides)
    started = time.perf_counter()
    result = train_model(model, split.train, recipe)
    seconds = time.perf_counter() - started
    accuracy = evaluate(model, split.test).accuracy
    return [
        data,
        arch,
        head,
        len(split.train),
        len(result.history),
        f"{100 * accuracy:.2f}",
        f"{result.seconds_per_epoch:.2f}",
        f"{seconds:.0f}",
    ]


def _epoch_seconds(arch: str, n: int) -> list[object]:
    split = prepare_splits("fashion-mnist", seed=0, limit=n)
    c, h, w = split.train.shape
    model = build_model(ModelConfig(arch, c, h, w, 10), seed=0)
    config = TrainConfig(epochs=1, batch_size=128, val_fraction=0.0, patience=None)
    load = os.getloadavg()[0]
    started, cpu_started = time.perf_counter(), time.process_time()
    train_model(model, split.train, config)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    scale = 54_000 / len(split.train)
    return [
        arch,
        len(split.train),
        f"{seconds:.1f}",
        f"{seconds * scale:.0f}",
        f"{cpu_seconds * scale:.0f}",
        f"{load:.1f}",
    ]


RECIPES = {
    "8 epochs, batch 128, patience 3": {"epochs": 8, "batch_size": 128, "patience": 3},
    "3 epochs, batch 128": {"epochs": 3, "batch_size": 128, "patience": None},
    "2 epochs, batch 128": {"epochs": 2, "batch_size": 128, "patience": None},
    "2 epochs, batch 256": {"epochs": 2, "batch_size": 256, "patience": None},
}


def scan_recipe_part(names: list[str], cache: Path) -> str:
    """Train cnn-small on the scan case with each recipe; detection quality on each model."""
    from bench.cases import fashion_case
    from poisonlab.attacks import build_attack
    from poisonlab.data import load_dataset
    from poisonlab.defenses import Evidence, build_detector
    from poisonlab.metrics.detection import evaluate_detection
    from poisonlab.train import TrainConfig

    data_path, holdout_path = fashion_case(cache)
    data, holdout = load_dataset(data_path), load_dataset(holdout_path)
    import numpy as np

    with np.load(data_path, allow_pickle=False) as archive:
        truth = torch.as_tensor(archive["is_poison"])
    test = load_dataset("fashion-mnist", part="test")
    triggered = build_attack("badnets", rate=0.1).test_set(test).data
    rows = []
    for name in names:
        c, h, w = data.shape
        model = build_model(ModelConfig("cnn-small", c, h, w, data.num_classes), seed=0)
        recipe = TrainConfig(lr=1e-3, seed=0, **RECIPES[name])
        started, cpu = time.perf_counter(), time.process_time()
        history = train_model(model, data, recipe)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        row = [name, len(history.history), f"{seconds:.0f}", f"{cpu:.0f}"]
        row += [f"{100 * evaluate(model, test).accuracy:.2f}"]
        row += [f"{100 * evaluate(model, triggered).accuracy:.2f}"]
        evidence = Evidence(data, model, holdout=holdout)
        for defense in ("activation-clustering", "spectral-signatures", "deep-features"):
            m = evaluate_detection(build_detector(defense).fit(evidence).result, truth)
            row.append(f"{100 * m.tpr:.1f} / {100 * m.tnr:.1f} / {100 * m.auroc:.1f}")
        rows.append(row)
        print(row, flush=True)
    header = (
        f"{len(data)} images ({int(truth.sum())} BadNets poisons, all-to-all), cnn-small, Adam "
        "1e-3, 10% validation split; test: the 10,000 official test images; attack success: "
        "their triggered copies predicted as y+1. Detection cells: TPR / TNR / AUROC %, each "
        "method's own rule.\n\n"
    )
    return header + markdown_table(
        ["recipe", "epochs run", "wall s", "CPU s", "test acc %", "attack success %",
         "activation-clustering", "spectral-signatures", "deep-features"],
        rows,
    )  # fmt: skip


def main(argv: list[str]) -> None:
    """Train the recipes and time one epoch per architecture; write bench/results/training.md."""
    parser = argparse.ArgumentParser(prog="python -m bench training")
    parser.add_argument("--quick", action="store_true", help="digits only, short timing runs")
    parser.add_argument("--part", choices=("accuracy", "scan-recipe"), default="accuracy")
    parser.add_argument(
        "--recipes", default=";".join(RECIPES), help="';'-separated, for --part scan-recipe"
    )
    parser.add_argument("--cache", type=Path, default=Path("/tmp/poisonlab-bench-cases"))
    parser.add_argument("--name", default="training_scan_recipe", help="result file stem")
    args = parser.parse_args(argv)
    if args.part == "scan-recipe":
        names = [n.strip() for n in args.recipes.split(";")]
        body = scan_recipe_part(names, args.cache)
        command = f"python -m bench training --part scan-recipe --recipes '{args.recipes}'"
        if args.name != "training_scan_recipe":
            command += f" --name {args.name}"
        path = write_result(args.name, "Training recipes for a large scan", command, body)
        print(path.read_text())
        return
    runs = [
        ("digits", "cnn-small", "softmax", {}),
        ("digits", "lgm-net", "lgm", {}),
        ("digits", "lgm-net", "softmax", {}),
    ]
    if not args.quick:
        runs.append(("fashion-mnist", "cnn-small", "softmax", {"epochs": 5}))
    accuracy_rows = []
    for data, arch, head, overrides in runs:
        accuracy_rows.append(_accuracy_run(data, arch, head, 0, **overrides))
        print(accuracy_rows[-1], flush=True)
    n = 1000 if args.quick else 5000
    timing_rows = []
    for arch in ("cnn-small", "lgm-net", "resnet20", "inception-mini"):
        timing_rows.append(_epoch_seconds(arch, n))
        print(timing_rows[-1], flush=True)
    body = "## Test accuracy with the default recipes (seed 0)\n\n" + markdown_table(
        ["data", "model", "head", "train images", "epochs run", "test acc %", "s/epoch", "total s"],
        accuracy_rows,
    )
    body += "\n## Seconds per training epoch on Fashion-MNIST (28×28, batch 128)\n\n"
    body += markdown_table(
        [
            "model",
            "images timed",
            "wall s",
            "wall s per 54k-image epoch (extrapolated)",
            "CPU s per 54k-image epoch (extrapolated)",
            "load (1 min) at start",
        ],
        timing_rows,
    )
    body += (
        "\nWall seconds depend on what else runs on the machine; CPU seconds (this process, all "
        "torch threads) do much less, so compare models by the CPU column on a shared machine.\n"
    )
    command = "python -m bench training" + (" --quick" if args.quick else "")
    path = write_result("training", "Training accuracy and speed", command, body)
    print(path.read_text())


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
