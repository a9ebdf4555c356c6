"""Scan decisions against issue 11's targets: per-class verdicts and the combined decision vs ART.

On data made here, per cell and seed: poison the set, train cnn-small on it with its default
recipe (``--epochs`` caps it), and on that SAME model and data run

- ours: activation-clustering, raw-clustering and spectral-signatures with their default
  threshold (the per-class verdicts, whose confirming retraining repeats the victim's recipe,
  as a scan's repeats its own), and the combined decision (``combine``: what ``poisonlab scan``
  removes into clean.npz);
- ART 1.20.1: ``ActivationDefence`` (PCA, 10 dims, smaller-cluster analysis, its defaults) and
  ``SpectralSignatureDefense`` (expected_pp_poison = 0.1, eps_multiplier = 1.5), each given the
  penultimate activations as in bench_detectors.py.

Cells: clean data (no poisons); one-to-one BadNets at 10% of the target class with poisonlab's
4-pixel pattern and with a single-pixel trigger; all-to-all BadNets at 10% of the set; the
label-consistent (clean-label) attack at 33% of the target class (its sticker in the bottom-right
corner on images smaller than its 10×15 window); ART's own poisoning function
``PoisoningAttackBackdoor`` with ``add_pattern_bd`` and with ``add_single_bd`` (one-to-one, 10% of
the target class, appended) and with ``add_pattern_bd`` all-to-all (10% of every class, y → y + 1,
appended); and ART's clean-label ``PoisoningAttackCleanLabelBackdoor`` (its defaults: 33% of the
target class, PGD ε = 0.3 on a proxy cnn-small trained on the clean set, ``add_pattern_bd``).
Source → target is (s, s + 5 mod 10) for seed s.

``--subset N`` scans a stratified N-image subset (Fashion-MNIST at 6,000 images keeps a cell under
a few minutes), ``--epochs`` caps the victim's training, ``--first-seed`` and ``--seeds`` choose
the seeds, so one locked command can run one cell. Each victim's attack success rate is measured
on the data set's test part when it has one, else on triggered copies of the clean training
images (digits has no test part), so a missed backdoor can be told from one the model never
learned.

Reported per cell, as mean (min–max) over seeds: % of poisons removed, % of clean samples removed,
and for ours the classes named (right = exactly the target class, or every class all-to-all).
Targets (issue 11): clean ≤ 1% removed and no class named; one-to-one ≥ 95% / ≤ 1% and the right
class; all-to-all ≥ 90% / ≤ 3%.

``--save DIR`` keeps, per cell and seed, the members' scores and verdicts, the combined decision
and the penultimate features (DIR/CELL-sSEED.npz and .json), so a decision rule can be studied
offline on the same models (saving, replay and the tables: bench/verdict_runs.py).

``--holdout F`` gives the members a clean held-out set, as ``poisonlab scan --holdout`` does (the
held-out check, poisonlab.defenses.holdout_check): with ``--subset``, F × N images from outside
the subset (the victims stay those of runs without it); otherwise a stratified share F of the
data, split off before poisoning. A row ``combined, no held-out check`` gives the decision on the
same verdicts with the check undone.

``--calibration`` adds, over every clean class of every cell, how often each detector's verdict
and the combination named a clean class (false alarms per class tested).

``--replay DIR [DIR ...]`` trains nothing: it reads every run ``--save`` kept there, runs the
combined decision of the current code (``combine``) on the members' saved scores, verdicts and
confirmations, and prints the same tables (calibration included) and how many saved decisions it
reproduces exactly; ``--combinations`` adds other p-value combinations judged on the same runs
(bench/verdict_combinations.py). A change to the combination can so be judged on every saved
model in seconds; a change to a member (its scores, test or confirmation) needs the runs again,
except a change to where a named class is cut: ``--recut`` cuts every member's named classes
again with the current break test, keeping their p-values and confirmations.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from bench.bench_detectors import art_classifier
from bench.common import write_result
from bench.verdict_runs import OURS, UNCHECKED, replay, save_run, summarise
from poisonlab.attacks import build_attack
from poisonlab.data import load_dataset
from poisonlab.data.dataset import ImageDataset
from poisonlab.defenses import Evidence, build_detector
from poisonlab.defenses.fusion import combine
from poisonlab.models import ModelConfig, build_model
from poisonlab.seeding import make_generator
from poisonlab.train import train_model
from poisonlab.train.recipes import default_recipe

CELLS = (
    "clean",
    "badnets-pattern-1to1",
    "badnets-pixel-1to1",
    "badnets-all-to-all",
    "label-consistent",
    "art-pattern-1to1",
    "art-pixel-1to1",
    "art-pattern-all-to-all",
    "art-clean-label",
)


def attack_of(cell: str, source: int, target: int, image_hw: tuple[int, int] = (28, 28)) -> Any:
    """poisonlab's attack of ``cell`` for images of ``image_hw``.

    The label-consistent sticker lands at random positions in a centred 10×15 window (Schulth et
    al. 2022); on images smaller than that window (8×8 digits) it goes to the bottom-right corner,
    as Turner et al. 2019 place theirs."""
    placement = {} if image_hw[0] >= 10 and image_hw[1] >= 15 else {"position": "bottom-right"}
    if cell == "badnets-all-to-all":
        return build_attack("badnets", rate=0.1)
    if cell == "label-consistent":
        return build_attack("label-consistent", target=target, target_rate=0.33, **placement)
    trigger = {"trigger": "square", "size": 1} if "pixel" in cell else {}
    return build_attack("badnets", source=source, target=target, target_rate=0.1, **trigger)


def poisoned(
    cell: str, data: ImageDataset, seed: int
) -> tuple[ImageDataset, np.ndarray, list[int]]:
    """(the data set of ``cell``, is_poison, the poisoned classes)."""
    source, target = seed % 10, (seed + 5) % 10
    if cell == "clean":
        return data, np.zeros(len(data), dtype=bool), []
    if cell == "art-clean-label":
        return art_clean_label(data, target, seed)
    if cell.startswith("art-"):
        return art_poison(cell, data, source, target, seed)
    attack = attack_of(cell, source, target, data.shape[1:])
    classes = list(range(data.num_classes)) if cell == "badnets-all-to-all" else [target]
    result = attack.poison(data, generator=make_generator(seed))
    return result.dataset, result.is_poison.numpy(), classes


def art_poison(
    cell: str, data: ImageDataset, source: int, target: int, seed: int
) -> tuple[ImageDataset, np.ndarray, list[int]]:
    """ART's PoisoningAttackBackdoor on copies of clean images, appended: source images labelled
    target (one-to-one), or 10% of every class c labelled c + 1 (all-to-all)."""
    rng = np.random.default_rng(seed)
    labels = data.labels.numpy()
    if "all-to-all" in cell:
        count = round(0.1 * len(labels) / 0.9)
        rows = np.sort(rng.choice(len(labels), size=count, replace=False))
        new = (labels[rows] + 1) % data.num_classes
        classes = list(range(data.num_classes))
    else:
        count = round(0.1 * int((labels == target).sum()) / 0.9)
        rows = rng.choice(np.flatnonzero(labels == source), size=count, replace=False)
        new = np.full(count, target)
        classes = [target]
    poison_x = art_trigger(cell, data.images[rows].numpy())
    images = torch.cat([data.images, torch.from_numpy(poison_x).float()])
    new_labels = torch.cat([data.labels, torch.from_numpy(new).long()])
    out = ImageDataset(images, new_labels, data.num_classes, name=f"{data.name}+art")
    truth = np.concatenate([np.zeros(len(data), dtype=bool), np.ones(count, dtype=bool)])
    return out, truth, classes


def art_clean_label(
    data: ImageDataset, target: int, seed: int
) -> tuple[ImageDataset, np.ndarray, list[int]]:
    """ART's PoisoningAttackCleanLabelBackdoor (Turner et al. 2019) with its defaults (33% of the
    target class, L∞ PGD ε = 0.3, step 0.1, 100 iterations) and ``add_pattern_bd``: target-class
    images made hard by PGD on a proxy model (a cnn-small trained on the clean set with its
    default recipe), then triggered, labels unchanged, in place. ART draws the poisons with
    replacement, so the poisons are the rows it changed."""
    from art.attacks.poisoning import PoisoningAttackBackdoor, PoisoningAttackCleanLabelBackdoor
    from art.attacks.poisoning.perturbations import add_pattern_bd

    c, h, w = data.shape
    proxy = build_model(ModelConfig("cnn-small", c, h, w, data.num_classes), seed=seed + 1000)
    train_model(proxy, data, default_recipe("cnn-small", len(data), seed=seed + 1000))
    backdoor = PoisoningAttackBackdoor(
        lambda z: add_pattern_bd(z, pixel_value=1.0, channels_first=True)
    )
    onehot = np.eye(data.num_classes, dtype=np.float32)
    attack = PoisoningAttackCleanLabelBackdoor(
        backdoor,
        art_classifier(proxy, data.shape, data.num_classes),
        target=onehot[target],
        pp_poison=0.33,
    )
    x = data.images.numpy()
    np.random.seed(seed)
    poison_x, _ = attack.poison(x, y=onehot[data.labels.numpy()])
    truth = np.any((poison_x != x).reshape(len(x), -1), axis=1)
    images = torch.from_numpy(np.asarray(poison_x, dtype=np.float32))
    out = ImageDataset(images, data.labels.clone(), data.num_classes, name=f"{data.name}+art-cl")
    return out, truth, [target]


def art_trigger(cell: str, images: np.ndarray) -> np.ndarray:
    """ART's ``add_pattern_bd`` / ``add_single_bd`` (pixel value 1) through its
    PoisoningAttackBackdoor, on gray (n, 1, H, W) images."""
    from art.attacks.poisoning import PoisoningAttackBackdoor
    from art.attacks.poisoning.perturbations import add_pattern_bd, add_single_bd

    perturbation = add_pattern_bd if "pattern" in cell else add_single_bd
    attack = PoisoningAttackBackdoor(lambda z: perturbation(z, pixel_value=1.0))
    poison_x, _ = attack.poison(images[:, 0], y=np.zeros(len(images)))  # ART takes (n, H, W)
    return np.asarray(poison_x)[:, None]


def attack_success(
    cell: str, model: Any, data: ImageDataset, test: ImageDataset | None, seed: int
) -> float:
    """Share of triggered images (the source class, one-to-one; every class but the target for the
    label-consistent attack; every class all-to-all) the victim predicts as the attacker's label,
    on ``test`` or else on the clean training images; NaN for clean data."""
    from poisonlab.train import predict

    if cell == "clean":
        return float("nan")
    base = test if test is not None else data
    source, target = seed % 10, (seed + 5) % 10
    labels = base.labels
    if cell == "art-clean-label":
        keep = labels != target
        images = torch.from_numpy(art_trigger("art-pattern", base.images[keep].numpy())).float()
        wanted = torch.full((int(keep.sum()),), target)
    elif cell.startswith("art-"):
        if "all-to-all" in cell:
            keep = torch.ones(len(labels), dtype=torch.bool)
            wanted = (labels + 1) % base.num_classes
        else:
            keep = labels == source
            wanted = torch.full((len(labels),), target)
        images = torch.from_numpy(art_trigger(cell, base.images[keep].numpy())).float()
        wanted = wanted[keep]
    else:
        triggered = attack_of(cell, source, target, base.shape[1:]).test_set(
            base, generator=make_generator(seed + 1)
        )
        images, wanted = triggered.data.images, triggered.data.labels
    return float((predict(model, images) == wanted).float().mean())


def run_cell(
    cell: str,
    data: ImageDataset,
    seed: int,
    *,
    test: ImageDataset | None = None,
    epochs: int | None = None,
    save: str | None = None,
    holdout: ImageDataset | None = None,
) -> dict[str, Any]:
    """Every method's removal on one poisoned set and one trained model; ``save`` (a folder)
    keeps every member's scores, verdicts and the penultimate features of the run, so the
    decision can be studied again without retraining. With a clean ``holdout`` the members run
    the held-out check (``poisonlab scan --holdout``), and ``combined, no held-out check`` is the
    decision on the same verdicts with the check undone."""
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense

    dataset, truth, classes = poisoned(cell, data, seed)
    c, h, w = dataset.shape
    model = build_model(ModelConfig("cnn-small", c, h, w, dataset.num_classes), seed=seed)
    recipe = default_recipe("cnn-small", len(dataset), epochs=epochs, seed=seed)
    train_model(model, dataset, recipe)
    # the confirming retraining repeats the victim's recipe (``--epochs`` included), as a scan does
    evidence = Evidence(dataset, model, holdout=holdout, device="cpu", recipe=recipe)
    labels = dataset.labels
    out: dict[str, Any] = {"truth": truth, "classes": classes, "labels": labels.numpy()}
    out["asr"] = attack_success(cell, model, data, test, seed)
    results = []
    for name in OURS:
        result = build_detector(name, seed=seed).fit(evidence).result
        results.append(result)
        out[name] = (result.flagged.numpy(), result.poisoned_classes, result.verdicts)
    decision = combine(results, labels)
    out["combined"] = (decision.removed.numpy(), decision.poisoned_classes, decision.per_class)
    if holdout is not None:
        unchecked = combine([without_held_out_check(r) for r in results], labels)
        out[UNCHECKED] = (unchecked.removed.numpy(), unchecked.poisoned_classes, None)
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
    if save is not None:
        save_run(save, f"{cell}-s{seed}", evidence, results, decision, out)
    return out


def without_held_out_check(result: Any) -> Any:
    """``result`` with the classes its held-out check cleared named again: the check runs last
    in ``fit`` and only on named classes, and the combined decision reads the verdicts (not the
    flags), so this is the decision the same model would give without a held-out set."""
    verdicts = tuple(
        replace(v, poisoned=True, holdout=None) if v.holdout and v.holdout["mode"] else v
        for v in result.verdicts
    )
    return replace(result, verdicts=verdicts)


def main(argv: list[str]) -> None:
    """Run the cells for the seeds; print and write bench/results/NAME.md."""
    parser = argparse.ArgumentParser(prog="python -m bench verdicts")
    parser.add_argument("--data", default="digits", help="a poisonlab data set name")
    parser.add_argument("--subset", type=int, default=None, help="a stratified subset of N images")
    parser.add_argument("--epochs", type=int, default=None, help="cap the victim's epochs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--cells", default=",".join(CELLS), help="comma-separated cells")
    parser.add_argument("--name", default="verdicts", help="result file bench/results/NAME.md")
    parser.add_argument("--calibration", action="store_true", help="add the false-alarm table")
    parser.add_argument("--save", default=None, help="folder for each run's scores and verdicts")
    parser.add_argument("--quick", action="store_true", help="one seed, three cells (smoke run)")
    parser.add_argument(
        "--holdout",
        type=float,
        default=None,
        help="hold out this share of clean images for the held-out check (with --subset, "
        "drawn from the images outside the subset)",
    )
    parser.add_argument(
        "--replay", nargs="+", default=None, help="re-decide the runs saved in these folders"
    )
    parser.add_argument(
        "--combinations", action="store_true", help="with --replay: compare other combinations"
    )
    parser.add_argument(
        "--recut",
        action="store_true",
        help="with --replay: cut the members' named classes again with the current break test",
    )
    args = parser.parse_args(argv)
    if args.holdout is not None and not 0 < args.holdout < 1:
        parser.error(f"--holdout must be a share between 0 and 1, got {args.holdout}")
    if args.recut and args.replay is None:
        parser.error("--recut re-cuts saved runs: give them with --replay DIR [DIR ...]")
    if args.replay is not None:
        print(replay(args.replay, args.combinations, args.recut))
        return
    cells = args.cells.split(",")
    unknown = sorted(set(cells) - set(CELLS))
    if unknown:
        parser.error(f"unknown cells {unknown}; choose from {', '.join(CELLS)}")
    if args.quick:
        args.seeds, cells = 1, ["clean", "badnets-pattern-1to1", "art-pixel-1to1"]
    torch.set_num_threads(1)
    data, test, holdout = load_data(args.data, args.subset, args.holdout)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    started = time.perf_counter()
    for cell in cells:
        for seed in seeds:
            runs[cell].append(
                run_cell(
                    cell,
                    data,
                    seed,
                    test=test,
                    epochs=args.epochs,
                    save=args.save,
                    holdout=holdout,
                )
            )
            print(cell, seed, f"{time.perf_counter() - started:.0f}s", flush=True)
    table, calibration, victims = summarise(runs)
    where = "the test part" if test is not None else "triggered copies of the training images"
    text = [
        f"{data.name} ({len(data)} images{' , stratified subset' if args.subset else ''}), "
        f"{held_out_text(holdout, args.subset)}"
        f"cnn-small with its default recipe{f' capped at {args.epochs} epochs' if args.epochs else ''}"
        f", seeds {seeds[0]}–{seeds[-1]}; one model per cell and seed, shared by every method. "
        "Mean (min–max) over seeds. Classes named: ours, the verdicts (the combined decision's "
        "for `combined`); ART's detectors give no verdict, so a class counts as named when they "
        "flag any of its samples.",
        "",
        table,
        "",
        f"Victims: attack success on {where}.",
        "",
        victims,
    ]
    if args.calibration:
        text += ["", "False alarms: clean classes named, over every clean class of every run.", "",
                 calibration]  # fmt: skip
    print("\n".join(text))
    command = "python -m bench verdicts " + " ".join(argv)
    write_result(
        args.name, "Scan decisions: per-class verdicts vs ART", command.strip(), "\n".join(text)
    )


def load_data(
    name: str, subset: int | None, holdout: float | None = None
) -> tuple[ImageDataset, ImageDataset | None, ImageDataset | None]:
    """(the training part, or a stratified ``subset`` of it; the test part when there is one; a
    clean held-out set when ``holdout`` is a share: with a subset, a stratified ``holdout`` ×
    ``subset`` images from outside it, so the subset, and the victims, stay those of runs
    without one; else that share of the training part, split off before poisoning)."""
    from poisonlab.data.splits import split_indices
    from poisonlab.errors import DataError

    data = load_dataset(name)
    held = None
    if subset is not None and subset < len(data):
        part, rest = split_indices(data.labels, (subset / len(data), 1 - subset / len(data)), 0)
        if holdout is not None:
            share = min(1.0, holdout * subset / len(rest))
            picked, _ = split_indices(data.labels[rest], (share, 1 - share), 1)
            held = data.subset(rest[picked])
        data = data.subset(part)
    elif holdout is not None:
        kept, out = split_indices(data.labels, (1 - holdout, holdout), 0)
        data, held = data.subset(kept), data.subset(out)
    try:
        test = load_dataset(name, part="test")
    except DataError:
        test = None
    return data, test, held


def held_out_text(holdout: ImageDataset | None, subset: int | None) -> str:
    """How the run's clean held-out set was drawn, for the result file ("" without one)."""
    if holdout is None:
        return ""
    where = "outside the subset" if subset else "split off the training part before poisoning"
    return (
        f"with a clean held-out set of {len(holdout)} images ({where}; the members run the "
        "held-out check, and `combined, no held-out check` undoes it on the same verdicts), "
    )
