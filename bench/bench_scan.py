"""DeepFeatures on Fashion-MNIST BadNets and the LGM likelihood filter on feature-collision poisons.

1. DeepFeatures (Subedar et al. 2019): cnn-small trained on Fashion-MNIST with BadNets at 10% of the
   training set, all-to-all (y → y+1 mod 10, the MNIST 4-pixel pattern). Densities on half of a
   clean held-out split (6,000 images from the training part). Reported for each fusion ×
   covariance: AUROC/AUPR over the poisoned training set (the scan's use), Subedar et al.'s protocol
   (the unfitted clean half vs the same images triggered and relabelled), DF maximum-likelihood
   accuracy on both (the paper's Table 1 "DF" rows), and seconds. Target: AUROC >= 0.99 (the paper:
   99.67 on MNIST).
2. LGM likelihood filter (Yaseen et al. 2020) on digits: lgm-net with the LGM loss pre-trained on
   the training split (D_C); feature-collision poisons crafted against it on the test split (D_f,
   targets and bases from D_f as in the paper's code), 10% of D_f; then filter D_t = D_f ∪ D_p,
   fine-tune on the kept set and re-measure the attack, beside fine-tuning on everything.
   Target: AUROC >= 0.95. Also the χ² rule's empirical false-positive rate on clean data.

``--cache DIR`` keeps trained models and poisoned sets between runs (delete it after code changes).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench.common import markdown_table, write_result
from poisonlab.attacks import PoisonedDataset, build_attack
from poisonlab.data.prepare import prepare_splits
from poisonlab.data.splits import split_indices
from poisonlab.defenses import Evidence, TargetFPR
from poisonlab.defenses.deep_features import DeepFeatures
from poisonlab.defenses.lgm_likelihood import LGMLikelihood, lgm_claimed_likelihood
from poisonlab.metrics.detection import detection_metrics, evaluate_detection
from poisonlab.models import ModelConfig, Network, build_model, load_checkpoint, save_checkpoint
from poisonlab.models.activations import capture_activations
from poisonlab.seeding import make_generator
from poisonlab.train import TrainConfig, evaluate, predict, train_model
from poisonlab.train.recipes import default_recipe
from poisonlab.workflows import filter_and_finetune


def _trained(
    name: str, cache: Path | None, arch: str, head: str, data, seed: int, **over
) -> Network:
    """Train (or load from ``cache``) ``arch`` with its default recipe on ``data``."""
    folder = cache / name if cache else None
    if folder is not None and (folder / "model.json").exists():
        return load_checkpoint(folder).model
    c, h, w = data.shape
    model = build_model(ModelConfig(arch, c, h, w, data.num_classes, head=head), seed=seed)
    started = time.perf_counter()
    train_model(model, data, default_recipe(arch, len(data), seed=seed, **over))
    print(f"trained {name} in {time.perf_counter() - started:.0f} s", flush=True)
    if folder is not None:
        save_checkpoint(model, folder)
    return model


def _crafted(
    name: str, attack, d_f, lgm: Network, seed: int, cache: Path | None
) -> tuple[PoisonedDataset, float]:
    """Craft the poisons (or load them from ``cache``: our own file, so unpickling is safe)."""
    path = cache / f"{name}.pt" if cache else None
    if path is not None and path.exists():
        return torch.load(path, weights_only=False)  # type: ignore[no-any-return]
    started = time.perf_counter()
    poisoned = attack.poison(d_f, generator=make_generator(seed), model=lgm)
    crafted = (poisoned, time.perf_counter() - started)
    if path is not None:
        torch.save(crafted, path)
    return crafted


def deep_features_part(quick: bool, cache: Path | None) -> str:
    split = prepare_splits("fashion-mnist", holdout=0.1, seed=0, limit=6000 if quick else None)
    attack = build_attack("badnets", rate=0.1)
    poisoned = attack.poison(split.train, generator=make_generator(0), test=split.test)
    model = _trained("fmnist-badnets-cnn-small", cache, "cnn-small", "softmax", poisoned.dataset, 0)
    clean_acc = evaluate(model, split.test).accuracy
    asr = evaluate(model, poisoned.test_set).accuracy
    evidence = Evidence(poisoned.dataset, model, holdout=split.holdout)
    protocol = Seed002Protocol(model, split.holdout, attack, list(model.probe_layers))
    rows = []
    for fusion in ("claimed", "max"):
        for covariance in ("full", "ledoit-wolf"):
            detector = DeepFeatures(fusion=fusion, covariance=covariance)
            started = time.perf_counter()
            result = detector.fit(evidence).result
            seconds = time.perf_counter() - started
            m = evaluate_detection(result, poisoned.is_poison)
            row = [fusion, covariance, *protocol.row(detector.model_)]
            row += [f"{100 * m.auroc:.2f}", f"{100 * m.aupr:.2f}", f"{100 * m.tpr:.1f}"]
            row += [f"{100 * m.tnr:.1f}", f"{seconds:.1f}"]
            rows.append(row)
            print(row, flush=True)
    header = (
        f"Fashion-MNIST: {len(poisoned.dataset)} training images of which {poisoned.n_poison} "
        f"BadNets poisons (10%, all-to-all, 4-pixel pattern); cnn-small, clean test accuracy "
        f"{100 * clean_acc:.2f}%, attack success {100 * asr:.2f}%; held-out {len(split.holdout)} "
        "clean images (half fits the densities). Layers: cnn-small's probe layers (relu1, relu2 "
        "globally average-pooled; relu3 = the 128-d penultimate features). Seed-002 protocol: "
        f"the {len(protocol.clean)} unfitted held-out images vs the same images triggered and "
        f"labelled (y+1) mod 10; the DNN predicts (y+1) on {100 * protocol.dnn_triggered:.2f}% "
        "of the triggered ones. Train-set columns: all training samples, poison positive, "
        "TPR/TNR at the default rule (1% FPR on the clean reference half). The first row's "
        "seconds include computing the activations, which the other rows reuse.\n\n"
    )
    return header + markdown_table(
        ["fusion", "covariance", "seed-002 AUROC %", "seed-002 AUPR %", "DF acc clean %",
         "DF acc triggered→(y+1) %", "train-set AUROC %", "train-set AUPR %", "TPR %",
         "TNR %", "seconds"],
        rows,
    )  # fmt: skip


class Seed002Protocol:
    """Subedar et al.'s evaluation on the unfitted clean half of the held-out set and its triggered
    copy."""

    def __init__(self, model: Network, holdout, attack, layers: list[str]) -> None:
        _, ref_idx = split_indices(holdout.labels, (0.5, 0.5), 0)  # DeepFeatures' seed-0 split
        self.clean = holdout.subset(ref_idx)
        self.triggered = attack.test_set(self.clean).data  # labels (y + 1) mod K
        self.layers = layers
        clean = capture_activations(model, self.clean.images, layers)
        triggered = capture_activations(model, self.triggered.images, layers)
        self.acts = ([clean[n] for n in layers], [triggered[n] for n in layers])
        predicted = predict(model, self.triggered.images)
        self.dnn_triggered = float((predicted == self.triggered.labels).double().mean())

    def row(self, fitted) -> list[str]:
        """AUROC, AUPR (poison positive) and DF accuracy on clean and triggered images."""
        assert list(fitted.layers) == self.layers
        clean, triggered = self.acts
        scores = torch.cat(
            [
                fitted.scores(clean, self.clean.labels),
                fitted.scores(triggered, self.triggered.labels),
            ]
        )
        n = len(self.clean)
        truth = torch.arange(2 * n) >= n
        metrics = detection_metrics(truth, scores, torch.zeros_like(truth))
        df_clean = (fitted.classify(clean) == self.clean.labels).double().mean()
        df_triggered = (fitted.classify(triggered) == self.triggered.labels).double().mean()
        return [
            f"{100 * metrics.auroc:.2f}",
            f"{100 * metrics.aupr:.2f}",
            f"{100 * float(df_clean):.2f}",
            f"{100 * float(df_triggered):.2f}",
        ]


def _collision(n_targets: int, per_target: int, quick: bool):
    """Feature collision with the attack bench's digits setting (bench_feature_collision.py).

    Yaseen et al.'s β formula freezes 8×8 poisons (β = β0·(2048/64)² ≈ 8.5); β = 0.25 on [0, 1]
    pixels makes them collide.
    """
    return build_attack(
        "feature-collision",
        num_targets=n_targets,
        bases_per_target=per_target,
        beta0=0.25,
        beta_scaling="none",
        pixel_scale=1.0,
        lr=1.0,
        max_iter=200 if quick else 1000,
    )


def _filter_row(lgm, poisoned, split, setting: str, rule: str, **kwargs) -> list[object]:
    """One filter → fine-tune → re-measure run as a table row."""
    finetune = kwargs.pop("finetune", "head")
    config = kwargs.pop("train_config", None)
    r = filter_and_finetune(
        lgm,
        poisoned,
        detector=LGMLikelihood(**kwargs),
        holdout=split.holdout,
        test=split.holdout,
        finetune=finetune,
        train_config=config,
    )
    n_clean = len(r.kept) - r.n_poison
    row = [
        setting,
        finetune,
        rule,
        f"{100 * r.metrics.auroc:.2f}",
        f"{r.n_poison_removed}/{r.n_poison}",
        f"{r.n_clean_removed}/{n_clean}",
        f"{100 * r.success_before:.1f}",
        f"{100 * r.success_without_filter:.1f}",
        f"{100 * r.success_with_filter:.1f}",
        f"{100 * r.clean_accuracy_without_filter:.1f}",
        f"{100 * r.clean_accuracy_with_filter:.1f}",
        f"{r.seconds:.0f}",
    ]
    print(row, flush=True)
    return row


def lgm_part(quick: bool, cache: Path | None) -> str:
    split = prepare_splits("digits", seed=0)  # train = D_C, test = D_f, holdout = clean extra
    epochs = {"epochs": 5} if quick else {}
    lgm = _trained("digits-lgm-net", cache, "lgm-net", "lgm", split.train, 0, **epochs)
    d_f = split.test
    rows, lines = [], []
    # A: 12 targets × 3 poisons = 36 (10% of D_f), Yaseen et al.'s loop with the default fine-tuning
    poisoned, craft_a = _crafted("digits-collision", _collision(12, 3, quick), d_f, lgm, 0, cache)
    rules = {
        "χ² robust (default)": {},
        "χ² model scale": {"scale": "model"},
        "fpr:0.05 on held-out": {"threshold": TargetFPR(0.05)},
    }
    for finetune in ("head", "all"):
        for rule, kwargs in rules.items():
            rows.append(
                _filter_row(lgm, poisoned, split, "12×3", rule, finetune=finetune, **kwargs)
            )
    # B: 6 targets × 6 poisons, end-to-end fine-tuning 20 epochs at 1e-3 (a stronger attack)
    strong, craft_b = _crafted("digits-collision-6x6", _collision(6, 6, quick), d_f, lgm, 1, cache)
    config = TrainConfig(epochs=20, lr=1e-3, val_fraction=0.0, patience=None)
    rows.append(
        _filter_row(lgm, strong, split, "6×6, 20 ep 1e-3", "χ² robust (default)", finetune="all",
                    train_config=config)
    )  # fmt: skip
    for name, data in (("D_C (training split)", split.train), ("held-out split", split.holdout)):
        for scale in ("robust", "model"):
            flagged = LGMLikelihood(scale=scale).fit(Evidence(data, lgm)).result.flagged
            lines.append(
                f"- χ² rule (α = 0.001, {scale} scale) on clean {name}: {int(flagged.sum())} of "
                f"{len(data)} flagged ({100 * float(flagged.double().mean()):.2f}%, nominal 0.10%)"
            )
    stats = lgm_claimed_likelihood(Evidence(split.train, lgm))
    quantiles = torch.quantile(stats.mahalanobis_sq, torch.tensor([0.5, 0.99], dtype=torch.float64))
    lines.append(
        f"- clean D_C squared distance to the claimed mean: median {quantiles[0]:.3f}, 99th "
        f"percentile {quantiles[1]:.3f} (χ²(2): 1.386 and 9.21)"
    )
    for name, p, seconds in (("12×3", poisoned, craft_a), ("6×6", strong, craft_b)):
        ratio = float(torch.as_tensor(p.extras["distance_ratio"]).median())
        lines.append(
            f"- {name} poisons: median feature-distance ratio after/before crafting {ratio:.3g}, "
            f"crafted in {seconds:.0f} s"
        )
    extras = LGMLikelihood().fit(Evidence(poisoned.dataset, lgm)).result.extras
    header = (
        f"digits: lgm-net (LGM loss, 2-d features) pre-trained on D_C = {len(split.train)} images "
        f"(accuracy {100 * evaluate(lgm, split.holdout).accuracy:.2f}% on the held-out split). "
        f"D_f = {len(d_f)} images; feature-collision poisons crafted against the LGM features "
        "with targets and bases from D_f (Yaseen et al.'s code), β = 0.25 on [0, 1] pixels, 1000 "
        "iterations. Fine-tuning from the pre-trained weights, by default Adam 1e-4 for 5 epochs; "
        "'head' = only the LGM means, 'all' = every weight. Success = targets predicted as their "
        "base class. AUROC: poison positive, clean = the clean part of D_t (= D_f). Clean "
        "accuracy on the held-out split. χ² critical value "
        f"{extras['chi2_critical']:.2f} (d = 2); seed-000 T = {extras['seed_threshold_T']:.2e} "
        "for the model-scale rule.\n\n"
    )
    table = markdown_table(
        ["poisons", "fine-tune", "threshold", "AUROC %", "poisons removed", "clean removed",
         "success before %", "success w/o filter %", "success with filter %",
         "clean acc w/o filter %", "clean acc with filter %", "seconds"],
        rows,
    )  # fmt: skip
    return header + table + "\n" + "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    """Run both parts and write bench/results/scan.md."""
    parser = argparse.ArgumentParser(prog="python -m bench scan")
    parser.add_argument(
        "--quick", action="store_true", help="6,000 Fashion-MNIST images, short runs"
    )
    parser.add_argument("--cache", type=Path, default=None, help="keep trained models here")
    parser.add_argument("--part", choices=("df", "lgm", "both"), default="both")
    args = parser.parse_args(argv)
    body = ""
    if args.part in ("df", "both"):
        body += "## DeepFeatures, Fashion-MNIST BadNets 10% all-to-all\n\n"
        body += deep_features_part(args.quick, args.cache) + "\n"
    if args.part in ("lgm", "both"):
        body += (
            "## LGM likelihood filter, feature collision on digits (Yaseen et al. 2020 loop)\n\n"
        )
        body += lgm_part(args.quick, args.cache) + "\n"
    command = "python -m bench scan" + (" --quick" if args.quick else "")
    command += f" --part {args.part}" if args.part != "both" else ""
    print(write_result("scan", "Scan defenses: DeepFeatures and the LGM filter", command, body))
