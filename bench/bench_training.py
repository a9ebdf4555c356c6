"""Training: test accuracy of the default recipes and seconds per epoch of every architecture.

Targets (issue 2): cnn-small and lgm-net (LGM head) >= 97% on digits; cnn-small on Fashion-MNIST
>= 89% within 5 epochs. Seconds per epoch are measured on a fixed subset per model.
"""

from __future__ import annotations

import argparse
import os
import time

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


def main(argv: list[str]) -> None:
    """Train the recipes and time one epoch per architecture; write bench/results/training.md."""
    parser = argparse.ArgumentParser(prog="python -m bench training")
    parser.add_argument("--quick", action="store_true", help="digits only, short timing runs")
    args = parser.parse_args(argv)
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
