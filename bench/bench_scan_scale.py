"""`poisonlab scan` at scale: 60,000 Fashion-MNIST images, training included, beside ART.

The case (bench/cases.py): the 60,000 official training images split into 54,000 and a
stratified 6,000-image clean held-out set; BadNets at 10% of the poisoned set (6,000 poisons
appended, all-to-all y → y+1, the 4-pixel pattern): 60,000 images to scan. The command a user
types, in a new process, trains cnn-small on them and runs activation clustering, spectral
signatures and deep features (densities on the held-out set). Targets (issue 9): ≤ 120 s and
≤ 4 GB peak memory on this machine.

Then, on the SAME trained model (the scan saves it as OUT/model) and data, ART 1.20's
``ActivationDefence`` (PCA to 10 dimensions, 2-means, "smaller" cluster analysis, its defaults
as in bench_detectors.py) and ``SpectralSignatureDefense`` (expected poison fraction 0.1,
ε multiplier 1.5): their seconds include their own pass over the data for activations, as ours
include ours (shared by our three defenses through the Evidence cache).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.cases import fashion_case
from bench.common import markdown_table, write_result
from bench.scan_runs import ground_truth, timed_scan

DEFENSES = ("activation-clustering", "spectral-signatures", "deep-features")


def _metrics(truth: np.ndarray, flags: np.ndarray, scores: np.ndarray | None) -> list[str]:
    from poisonlab.metrics.detection import auroc

    tpr, tnr = flags[truth].mean(), (~flags[~truth]).mean()
    if scores is None:
        value = "—"
    else:
        keep = np.isfinite(scores)
        value = f"{100 * auroc(truth[keep], scores[keep]):.2f}"
    return [f"{100 * tpr:.2f}", f"{100 * tnr:.2f}", value]


def art_rows(model_dir: Path, data_path: Path, truth: np.ndarray) -> list[list[object]]:
    """ART's two training-set detectors on the scan's own model and data."""
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense

    from bench.bench_detectors import art_classifier
    from poisonlab.data import load_dataset
    from poisonlab.models import load_checkpoint

    model = load_checkpoint(model_dir).model.cpu().eval()
    data = load_dataset(data_path)
    x, y = data.images.numpy(), data.labels.numpy()
    onehot = np.eye(data.num_classes, dtype=np.float32)[y]
    rows = []
    classifier = art_classifier(model, tuple(data.shape), data.num_classes)
    np.random.seed(0)  # ART's k-means draws from NumPy's global RNG
    started = time.perf_counter()
    _, is_clean = ActivationDefence(classifier, x, onehot).detect_poison(
        nb_clusters=2, nb_dims=10, reduce="PCA", cluster_analysis="smaller"
    )
    seconds = time.perf_counter() - started
    flags = np.asarray(is_clean) == 0
    rows.append(["ART ActivationDefence (PCA)", *_metrics(truth, flags, None), f"{seconds:.1f}"])
    print(rows[-1], flush=True)
    classifier = art_classifier(model, tuple(data.shape), data.num_classes)
    started = time.perf_counter()
    _, is_clean = SpectralSignatureDefense(
        classifier, x, onehot, batch_size=256, eps_multiplier=1.5, expected_pp_poison=0.1
    ).detect_poison()
    seconds = time.perf_counter() - started
    flags = np.asarray(is_clean) == 0
    rows.append(["ART SpectralSignatureDefense", *_metrics(truth, flags, None), f"{seconds:.1f}"])
    print(rows[-1], flush=True)
    return rows


def main(argv: list[str]) -> None:
    """Scan the 60,000 images, run ART on the same model; write bench/results/scan_scale.md."""
    parser = argparse.ArgumentParser(prog="python -m bench scan_scale")
    parser.add_argument("--cache", type=Path, default=None, help="keep the case files here")
    parser.add_argument("--no-art", action="store_true", help="skip the ART rows")
    parser.add_argument("--out", type=Path, default=None, help="keep the scan folder here")
    parser.add_argument("--src", type=Path, default=None, help="another checkout's src folder")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.cache or Path(tmp)
        data_path, holdout_path = fashion_case(folder)
        truth = ground_truth(data_path)
        out = args.out or Path(tmp) / "out"
        scan_args = [str(data_path), "--defense", ",".join(DEFENSES)]
        scan_args += ["--holdout", str(holdout_path)]
        run = timed_scan(scan_args, out, src=args.src)
        print(
            f"scan: {run.wall:.1f} s wall, {run.cpu:.1f} s CPU, {run.max_rss_mb:.0f} MB", flush=True
        )
        rows = [
            [f"ours: {name}", *_metrics(truth, run.flags[name], run.scores[name]),
             f"{run.defense_seconds(name):.1f}"]
            for name in DEFENSES
        ]  # fmt: skip
        if not args.no_art:
            rows += art_rows(out / "model", data_path, truth)
    training = run.summary["models"][0]["training"]
    body = (
        f"Case: {len(truth)} Fashion-MNIST training images of which {int(truth.sum())} BadNets "
        "poisons (10%, all-to-all, 4-pixel pattern), held-out set 6,000 clean images.\n\n"
        "`poisonlab scan fashion_case.npz --defense activation-clustering,spectral-signatures,"
        "deep-features --holdout fashion_holdout.npz --out OUT --force -q`\n\n"
    )
    body += markdown_table(
        ["wall s", "CPU s", "peak MB", "load before / after", "training s",
         "epochs run", "precision", "val accuracy %", "threads"],
        [[f"{run.wall:.1f}", f"{run.cpu:.1f}", f"{run.max_rss_mb:.0f}",
          f"{run.load_start:.2f} / {run.load_end:.2f}", f"{training['seconds']:.1f}",
          training["epochs_run"], training["recipe"].get("precision", "float32"),
          f"{100 * training['val_accuracy']:.2f}", run.threads]],
    )  # fmt: skip
    body += (
        "\nOn the scan's trained model (poison = positive, each method's own rule; our seconds "
        "include the per-class verdicts and activation clustering's confirming retraining):\n\n"
    )
    body += markdown_table(["method", "TPR %", "TNR %", "AUROC %", "seconds"], rows)
    command = "python -m bench scan_scale" + (" --no-art" if args.no_art else "")
    print(write_result("scan_scale", "poisonlab scan at scale", command, body).read_text())
