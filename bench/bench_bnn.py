"""Subedar et al.'s BNN detector (BALD) on BadNets at 10% all-to-all, beside the DNN baseline.

For each data set (8×8 digits, and a stratified subset of Fashion-MNIST): BadNets with the MNIST
4-pixel pattern, all-to-all (y → y+1 mod K), poisons appended to form 10% of the poisoned training
set (docs/methods.md#poison-budgets); cnn-small trained on it; then the ``bnn`` detector (MOPED δ =
0.1, prior σ = 1 centred on w_MLE, ELBO fine-tuning with KL weight sum-KL/N_train, T = 40 passes)
and the ``dnn-uncertainty`` baseline on the SAME model.

Two evaluations, as Subedar et al. 2019 scored BALD on "D_val^BD and D_train^BD":

- training set (what the detector does): D_train^clean vs D_train^BD, the suspect data itself;
- test set: clean test images vs triggered copies of the same images (D_val^clean vs D_val^BD),
  scored by the same fine-tuned BNN (labels play no part in BALD).

Reported: AUROC and AUPR (average precision, poison positive) with AUPR-in (clean positive, negated
score) beside, |clean| and |poisoned|, the default rule's TPR/FPR, Subedar et al. 2019 Table 1's
accuracies (DNN / BNN on clean and on triggered data), and what stacking the T passes into one
forward call (``replicas = T``) changes against T separate calls, with a second seed of separate
calls as the Monte-Carlo noise floor.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from bench.common import markdown_table, write_result
from poisonlab.attacks import build_attack
from poisonlab.data.prepare import prepare_splits
from poisonlab.defenses import Evidence, build_detector
from poisonlab.metrics.detection import auroc, average_precision
from poisonlab.metrics.uncertainty import backdoor_accuracy, entropy, mutual_information
from poisonlab.models import ModelConfig, Network, build_model, load_checkpoint, save_checkpoint
from poisonlab.models.bayesian import mc_probabilities
from poisonlab.seeding import make_generator
from poisonlab.train import TrainConfig, predict, predict_logits, train_model

SEED_002 = "MNIST, 10%: BNN AUROC 83.22 / AUPR 97.47; DNN AUROC 83.60 / AUPR 83.18"


def pct(value: float) -> str:
    return "—" if value is None or np.isnan(value) else f"{100 * value:.2f}"


def separation(truth: np.ndarray, scores: np.ndarray) -> list[str]:
    """AUROC, AUPR (poison positive), AUPR-in (clean positive, score negated), in %."""
    return [
        pct(auroc(truth, scores)),
        pct(average_precision(truth, scores)),
        pct(average_precision(~truth, -scores)),
    ]


def trained_model(
    data: Any, config: TrainConfig, width: int, cache: Path | None, tag: str
) -> Network:
    """cnn-small trained on ``data`` (or loaded from ``cache``)."""
    folder = cache / f"bnn-{tag}-{len(data)}-e{config.epochs}-s{config.seed}" if cache else None
    if folder is not None and (folder / "model.json").exists():
        return load_checkpoint(folder).model
    c, h, w = data.shape
    model = build_model(
        ModelConfig("cnn-small", c, h, w, data.num_classes, feature_dim=width), seed=config.seed
    )
    started = time.perf_counter()
    train_model(model, data, config, device="cpu")
    print(f"  trained {tag}: {time.perf_counter() - started:.0f} s", flush=True)
    if folder is not None:
        save_checkpoint(model, folder)
    return model


def run(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Everything measured on one data set."""
    limit = args.train_size if name == "fashion-mnist" else None
    split = prepare_splits(name, holdout=0.1, seed=args.seed, limit=limit)
    test = split.test
    if len(test) > args.test_size:
        test = test.subset(torch.randperm(len(test), generator=make_generator(1))[: args.test_size])
    poisoned = build_attack("badnets", rate=0.1).poison(
        split.train, generator=make_generator(args.seed), test=test
    )
    data, triggered = poisoned.dataset, poisoned.test_set
    assert triggered is not None
    epochs = args.digits_epochs if name == "digits" else args.epochs
    lr, batch = (2e-3, 32) if name == "digits" else (1e-3, 64)
    config = TrainConfig(epochs=epochs, batch_size=batch, lr=lr, val_fraction=0.0, patience=None, seed=args.seed)  # fmt: skip
    model = trained_model(data, config, 128, args.cache, name).eval()
    truth = poisoned.is_poison.numpy()
    evidence = Evidence(data, model, holdout=split.holdout, device="cpu")

    rows = []
    bnn_params = {"samples": args.samples, "epochs": args.bnn_epochs, "seed": args.seed}
    for title, detector, params in [
        ("BNN: BALD", "bnn", bnn_params),
        ("BNN: predictive entropy", "bnn", {**bnn_params, "score": "entropy"}),
        ("DNN: softmax entropy", "dnn-uncertainty", {}),
        ("DNN: 1 − max softmax", "dnn-uncertainty", {"score": "max-softmax"}),
    ]:
        det = build_detector(detector, **params)
        result = det.fit(evidence).result
        flags = result.flagged.numpy()
        scores = result.scores.numpy()
        rows.append([title, *separation(truth, scores), pct(flags[truth].mean()),
                     pct(flags[~truth].mean()), f"{result.seconds:.0f}"])  # fmt: skip
        print(f"  {name} train: {rows[-1]}", flush=True)
        if title == "BNN: BALD":
            extras, bald_det = result.extras, det
    bnn, history = bald_det.bayesian_model(evidence)

    # test set: clean test images vs triggered copies, same BNN
    started = time.perf_counter()
    mc_clean = mc_probabilities(bnn, test.images, samples=args.samples, seed=11)
    mc_trig = mc_probabilities(bnn, triggered.images, samples=args.samples, seed=12)
    mc_seconds = time.perf_counter() - started
    acc = backdoor_accuracy(
        predict(model, test.images),
        predict(model, triggered.images),
        test,
        triggered,
        mc_clean,
        mc_trig,
    )
    truth_test = np.r_[np.zeros(len(test), bool), np.ones(len(triggered), bool)]
    bald_test = torch.cat([mutual_information(mc_clean), mutual_information(mc_trig)]).numpy()
    dnn_probs = torch.softmax(predict_logits(model, torch.cat([test.images, triggered.images])), -1)
    test_rows = [
        ["BNN: BALD", *separation(truth_test, bald_test)],
        ["DNN: softmax entropy", *separation(truth_test, entropy(dnn_probs).numpy())],
    ]

    # replicas: T passes stacked in one forward call vs T separate calls (+ a second seed)
    n = min(args.replica_check, len(test))
    images = torch.cat([test.images[:n], triggered.images[:n]])
    truth_rep = np.r_[np.zeros(n, bool), np.ones(n, bool)]
    replica_rows, reference = [], None
    for title, replicas, seed in [("T separate calls, seed 21", 1, 21),
                                  ("T separate calls, seed 22", 1, 22),
                                  (f"{args.samples} copies in one call, seed 21", args.samples, 21)]:  # fmt: skip
        started = time.perf_counter()
        probs = mc_probabilities(bnn, images, samples=args.samples, replicas=replicas, seed=seed, batch_size=64)  # fmt: skip
        seconds = time.perf_counter() - started
        bald = mutual_information(probs).numpy()
        reference = bald if reference is None else reference
        rho = spearmanr(reference, bald).statistic
        replica_rows.append([title, pct(auroc(truth_rep, bald)), f"{rho:.4f}",
                             f"{bald.mean():.2e}", f"{seconds:.1f}"])  # fmt: skip
        print(f"  {name} replicas: {replica_rows[-1]}", flush=True)
    return {
        "name": name,
        "n_train": len(data),
        "n_poison": int(truth.sum()),
        "n_holdout": len(split.holdout),
        "n_test": len(test),
        "epochs": epochs,
        "rows": rows,
        "test_rows": test_rows,
        "replica_rows": replica_rows,
        "accuracy": acc,
        "extras": extras,
        "history": history,
        "mc_seconds": mc_seconds,
    }


def section(r: dict[str, Any], args: argparse.Namespace) -> str:
    """Markdown for one data set."""
    subset = f" (stratified subset of {args.train_size} training images)" if r["name"] == "fashion-mnist" else ""  # fmt: skip
    head = ["score", "AUROC %", "AUPR % (poison +)", "AUPR-in % (clean +)"]
    acc = r["accuracy"]
    h = r["history"]
    lines = [
        f"## {r['name']}{subset}\n",
        f"Training set: {r['n_train']} samples = {r['n_train'] - r['n_poison']} clean + "
        f"{r['n_poison']} BadNets poisons; cnn-small (128-d features) trained {r['epochs']} "
        f"epochs; clean held-out set {r['n_holdout']} (the rule's reference). Test set: "
        f"{r['n_test']} clean test images and their {r['n_test']} triggered copies.\n",
        "### Scoring the suspect training data (D_train^clean vs D_train^BD)\n",
        markdown_table([*head, "rule TPR %", "rule FPR %", "seconds"], r["rows"]),
        "### Scoring held-out test data (clean vs triggered copies, D_val^clean vs D_val^BD)\n",
        markdown_table(head, r["test_rows"]),
        "### Subedar et al. 2019 Table 1: accuracy (%), triggered = predicted as the backdoor "
        "label\n",
        markdown_table(
            ["model", "clean", "triggered"],
            [
                ["DNN", pct(acc.dnn_clean), pct(acc.dnn_triggered)],
                [f"BNN (MC mean of {args.samples})", pct(acc.bnn_clean), pct(acc.bnn_triggered)],
            ],
        ),
        f"BNN: MC accuracy on the (poisoned) training labels {pct(r['extras']['mc_accuracy'])}%; "
        f"ELBO fine-tuning {len(h.nll)} epochs, NLL {h.nll[0]:.4f} → {h.nll[-1]:.4f}, "
        f"KL/N_train {h.kl_per_sample[0]:.1f} → {h.kl_per_sample[-1]:.1f} nats, median σ/|μ| "
        f"after fine-tuning {r['extras']['posterior_sigma_over_abs_mu']:.3f} (δ = 0.1 at the start). "
        f"{2 * r['n_test']} test images × {args.samples} passes: {r['mc_seconds']:.0f} s.\n",
        "### Stacking the passes into one forward call (replicas)\n",
        markdown_table(
            [
                "passes",
                "AUROC % (clean vs triggered)",
                "Spearman ρ vs first row",
                "mean BALD",
                "seconds",
            ],
            r["replica_rows"],
        ),
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    """Measure on digits and Fashion-MNIST; print and write bench/results/bnn.md."""
    parser = argparse.ArgumentParser(prog="python -m bench bnn")
    parser.add_argument("--data", choices=["digits", "fashion-mnist", "both"], default="both")
    parser.add_argument("--train-size", type=int, default=4000, help="Fashion-MNIST subset")
    parser.add_argument("--test-size", type=int, default=1000, help="clean test images scored")
    parser.add_argument("--epochs", type=int, default=15, help="Fashion-MNIST DNN epochs")
    parser.add_argument("--digits-epochs", type=int, default=60, help="digits DNN epochs")
    parser.add_argument("--samples", type=int, default=40, help="T, MC passes")
    parser.add_argument("--bnn-epochs", type=int, default=3, help="ELBO fine-tuning epochs")
    parser.add_argument("--replica-check", type=int, default=300, help="images per kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--cache", type=Path, default=None, help="keep trained models here")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.train_size, args.test_size, args.epochs, args.digits_epochs = 1000, 200, 2, 5
        args.samples, args.bnn_epochs, args.replica_check = 8, 1, 50
    torch.set_num_threads(args.threads)
    names = ["digits", "fashion-mnist"] if args.data == "both" else [args.data]
    results = [run(name, args) for name in names]
    body = (
        "BadNets at 10% of the poisoned training set, all-to-all (y → y+1 mod K), MNIST 4-pixel "
        f"pattern, poisons appended. Subedar et al. 2019 reference ({SEED_002}); it does not say "
        "which "
        'class is positive in its AUPR nor exactly which sets it scored ("D_val^BD and '
        'D_train^BD"): AUPR 97.47 beside AUROC 83.22 is only possible with the majority class '
        "positive, so compare its AUPR with our AUPR-in. Detector settings: MOPED δ = 0.1, prior "
        f"N(w_MLE, 1²), ELBO weight sum-KL/N_train, Adam lr 1e-3, {args.bnn_epochs} epochs, "
        f"T = {args.samples} independent passes; rule: above the clean held-out 99th "
        f"percentile. Seed {args.seed}.\n\n"
    )
    body += "\n".join(section(r, args) for r in results)
    body += (
        "\nAUPR = average precision (sklearn's definition). Timings come from a shared 2-core "
        f"machine running other jobs ({args.threads} torch thread): compare rows of this run only.\n"
    )
    command = ("python -m bench bnn " + " ".join(argv)).strip()
    print(body)
    print(write_result("bnn", "BNN (BALD) detector on BadNets, Subedar et al. 2019", command, body))
