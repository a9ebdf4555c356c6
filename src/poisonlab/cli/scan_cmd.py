"""`poisonlab scan DATA`: score every sample of a suspect training set with one or more defenses.

A thin shell over :func:`poisonlab.workflows.scan.scan` and
:func:`poisonlab.workflows.scan_output.write_scan`: it parses options, loads the data, held-out
set and checkpoints (``--model``, ``--lgm-model``, or the ``lgm-model`` folder an earlier scan
saved beside its ``model``), refuses an output folder that exists or overlaps an input, prints
skipped defenses as yellow lines and the results as a table. Names, paths, folders and thread
counts are checked before torch is imported, so those errors are immediate.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from poisonlab.cli import catalog
from poisonlab.cli.common import (
    DEVICE,
    FORCE,
    IMAGE_SIZE,
    QUIET,
    SEED,
    THREADS,
    VERBOSE,
    absolute_spec,
    check_device,
    check_epochs,
    check_output_apart,
    check_threads,
    data_path,
    existing_file,
    input_paths,
    loader_options,
    parse_image_size,
    use_threads,
)
from poisonlab.cli.console import configure, err, out, user_errors
from poisonlab.cli.flags import as_flags
from poisonlab.cli.main import app
from poisonlab.cli.output import check_output_dir, output_folder
from poisonlab.cli.scan_table import DefenseRow, named_classes_line, print_whole, scan_table
from poisonlab.errors import ConfigError, DataError, PoisonlabError
from poisonlab.ranges import class_ranges, counted

if TYPE_CHECKING:
    from poisonlab.data.dataset import ImageDataset
    from poisonlab.models import Checkpoint, Network
    from poisonlab.workflows.scan import ScanResult

log = logging.getLogger(__name__)

SCAN_FILES = ("scores.csv", "summary.json", "clean.npz", "report.html", "model", "lgm-model")
"""What a scan writes into --out (poisonlab.workflows.scan_output, the report, trained models):
--force replaces a folder holding only these."""


def defense_names(defenses: list[str]) -> list[str]:
    """Registry names from ``all``, names and comma-separated lists, in registry order (torch-free).

    The same rules as :func:`poisonlab.workflows.scan.resolve_defenses`, checked against the
    catalog.
    """
    names = [n.strip() for item in defenses for n in item.split(",") if n.strip()]
    if not names:
        raise ConfigError("no defense selected; name one or use all")
    if "all" in names:
        return list(catalog.DEFENSES)
    catalog.check_names("defense", names, catalog.DEFENSES)
    return [n for n in catalog.DEFENSES if n in names]


def parse_classes(text: str | None) -> list[int] | None:
    """``"3,5"`` → [3, 5]; None stays None."""
    if text is None:
        return None
    try:
        chosen = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        chosen = []
    if not chosen:  # "" too: the defenses would have said "classes must be ..., got []"
        raise ConfigError(
            f"--classes {text!r}: expected comma-separated class numbers, the class column of "
            "`poisonlab data info DATA` (an image folder numbers its class folders 0, 1, ... "
            "in sorted order of their names)"
        )
    return chosen


def parse_params(items: list[str] | None, names: list[str]) -> dict[str, dict[str, Any]]:
    """``--param NAME.key=value`` (``key=value`` when one defense is selected); JSON values."""
    params: dict[str, dict[str, Any]] = {}
    for item in items or []:
        target, sep, raw = item.partition("=")
        name, dot, key = target.rpartition(".")
        if not dot and len(names) == 1:
            name, key = names[0], target
        if not sep or not name or not key.strip():
            raise ConfigError(f"--param {item!r}: expected DEFENSE.key=value")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        params.setdefault(name, {})[key.strip().replace("-", "_")] = value
    return params


def save_trained_models(
    result: ScanResult, target: Path, recorded: Path | None = None
) -> ScanResult:
    """Save each model the scan trained as a checkpoint folder ``target/<role>`` (reusable with
    ``--model``, and the model of record for the scores); returns the result with their paths,
    under ``recorded`` when given (the folder ``target`` becomes once the scan succeeds)."""
    from dataclasses import replace

    from poisonlab.models import save_checkpoint

    models = []
    for used in result.models:
        network = result.networks.get(used.role)
        if used.source == "trained" and network is not None:
            folder = save_checkpoint(network, target / used.role, training=used.training)
            used = replace(used, path=str(folder if recorded is None else recorded / used.role))
        models.append(used)
    return replace(result, models=tuple(models))


def folder_beside(model: Path, name: str) -> Path | None:
    """The folder ``name`` beside the checkpoint folder of ``model`` (as a scan saves its two
    models: ``OUT/model``, ``OUT/lgm-model``), None when there is no such folder (torch-free)."""
    folder = model.expanduser()
    folder = folder if folder.is_dir() else folder.parent  # --model may name a file inside it
    if folder.name in ("", ".."):  # "." or "..": their parent is not the folder above them
        folder = folder.resolve()
    beside = folder.parent / name
    return beside if beside.is_dir() and beside.resolve() != folder.resolve() else None


def softmax_model_beside(model: Path) -> Path | None:
    """The ``model`` folder beside ``model``'s folder when it holds a softmax model, as beside the
    ``OUT/lgm-model`` a scan saved; None otherwise. Reads its model.json only (torch-free)."""
    beside = folder_beside(model, "model")
    if beside is None:
        return None
    try:
        head = json.loads((beside / "model.json").read_text())["model"]["head"]
    except (OSError, ValueError, TypeError, KeyError):
        return None  # no readable checkpoint there: nothing to point at
    return beside if head == "softmax" else None


def _warn_lgm_as_model(model: Path) -> None:
    """Warn when ``--model`` names an LGM model with a softmax ``model`` folder beside it (an
    earlier scan's ``OUT/lgm-model`` given for its ``OUT/model``, most likely a slip)."""
    softmax = softmax_model_beside(model)
    if softmax is not None:
        log.warning(
            "--model %s is an LGM model: every defense reads it, so scores differ from a scan "
            "with the softmax model %s beside it. --model names the model the defenses read (an "
            "earlier scan's model/); lgm-likelihood's LGM model is --lgm-model, or the lgm-model/ "
            "found beside --model",
            model,
            softmax,
        )


def _lgm_beside(model: Path, beside: Path, dataset: ImageDataset) -> Network | Checkpoint | None:
    """The LGM model found in ``beside`` (next to ``--model``), checked against ``dataset``; its
    errors say where it was found and how to choose another."""
    from poisonlab.workflows.scan_inputs import as_lgm_model

    try:
        return as_lgm_model(beside, dataset, "the LGM model")
    except PoisonlabError as exc:
        hint = f" (found beside --model {model}; --lgm-model chooses another)"
        raise type(exc)(f"{exc}{hint}") from None


def _noted(result: ScanResult, role: str, note: str) -> ScanResult:
    """``result`` with ``note`` on the record of the model of ``role`` (summary.json's models)."""
    from dataclasses import replace

    models = tuple(replace(m, note=note) if m.role == role else m for m in result.models)
    return replace(result, models=models)


def _ground_truth(result: ScanResult, source: str) -> Any:
    """``is_poison`` of the scanned samples when the data file carries it, else None."""
    import numpy as np

    from poisonlab.reports.scan_report import ground_truth

    return ground_truth(source, np.asarray(result.data.ids).astype(str))


def _auroc(truth: Any, scores: Any) -> str:
    from poisonlab.metrics.detection import auroc

    known = ~scores.isnan().numpy()
    return f"{auroc(truth[known], scores.numpy()[known]):.3f}" if known.any() else "-"


def _truth_line(result: ScanResult, truth: Any) -> str:
    """The decision's removals and the combined score's AUROC against ``is_poison``."""
    removed = result.removed.numpy()
    tpr = float(removed[truth].mean())
    tnr = float((~removed[~truth]).mean())
    text = (
        f"against the data's is_poison: removed {tpr:.1%} of {counted(int(truth.sum()), 'poison')}"
    )
    text += f" and {1 - tnr:.1%} of {counted(int((~truth).sum()), 'clean sample')}"
    if result.decision is not None and not bool(result.decision.score.isnan().all()):
        text += f"; combined score AUROC {_auroc(truth, result.decision.score)}"
    return text


def summary_rows(result: ScanResult, truth: Any = None) -> list[DefenseRow]:
    """One :class:`~poisonlab.cli.scan_table.DefenseRow` per defense that ran, in run order;
    AUROC and TPR against ``truth`` (the data's ``is_poison``) when given."""
    from poisonlab.reports.scan_report import named_text, threshold_text

    data = result.data
    decision = result.decision
    rows = []
    for outcome in result.ran:
        r = outcome.result
        assert r is not None
        # under --decision union every flag is removed: no defense is "reported only"
        member = (
            decision is None or decision.rule == "union" or outcome.name not in decision.excluded
        )
        overruled = ""
        if member and decision is not None and decision.rule == "verdict" and r.verdicts:
            alone = set(r.poisoned_classes) - set(decision.poisoned_classes)
            overruled = class_ranges(alone) if alone else ""
        modes = [  # only where its flags follow its verdicts: a user's threshold flags anyway
            v.label for v in r.verdicts if r.threshold.get("rule") == "verdict" and v.genuine_mode
        ]
        rows.append(
            DefenseRow(
                name=outcome.name,
                member=member,
                threshold=threshold_text(r.threshold),
                named=named_text(r.threshold, [(v.label, v.poisoned) for v in r.verdicts]),
                flagged=int(r.flagged.sum()),
                analysed=int(r.analysed.sum()),
                per_class=r.flagged_per_class(data.labels, data.num_classes),
                seconds=r.seconds,
                auroc=None if truth is None else _auroc(truth, r.scores),
                tpr=None if truth is None else f"{r.flagged.numpy()[truth].mean():.3f}",
                overruled=overruled,
                modes=class_ranges(modes) if modes else "",
            )
        )
    return rows


def holdout_hint(result: ScanResult) -> str | None:
    """A one-line hint when the verdict named classes without a clean held-out set: a genuine
    mode of a class can look like a poison group to every check that reads the suspect data
    alone, and ``--holdout`` lets the held-out check tell them apart; None otherwise."""
    decision = result.decision
    if result.holdout is not None or decision is None or decision.rule != "verdict":
        return None
    if not decision.poisoned_classes:
        return None
    return (
        "no --holdout: a named class may also be a genuine mode of clean data; with clean "
        'held-out data the scan checks that (docs/methods.md, "Verdicts and the combined '
        'decision", "With a clean held-out set: the held-out check")'
    )


def _print_summary(result: ScanResult, target: Path, truth: Any) -> None:
    """The verdict first, then the per-defense table (:mod:`poisonlab.cli.scan_table`) and where
    the files are, with ``truth`` (:func:`_truth`) when the data carries it. Off a terminal,
    lines are not broken at 80 columns (logs keep one per line)."""
    from rich.markup import escape

    data = result.data
    decision = result.decision
    wrap = not out.is_terminal  # a pipe or file: let the reader's viewer wrap
    if result.verdict is not None:  # the line summary.json leads with, from one place
        out.print(f"[bold]{escape(result.verdict)}[/]", highlight=False, soft_wrap=wrap)
    named = (
        None
        if decision is None
        else named_classes_line(decision.poisoned_classes, data.class_names)
    )
    if named is not None:
        out.print(escape(named), highlight=False, soft_wrap=wrap)
    title = f"scan of {data.name}: {len(data)} samples, {data.num_classes} classes"
    table = scan_table(title, summary_rows(result, truth))
    print_whole(out, table)
    removed = int(result.removed.sum())
    if decision is None or decision.rule == "union":
        how = "removed when any defense flagged them"
    elif decision.rule == "verdict" and not decision.members:  # it read "decision:  per class"
        how = "no defense of the combined decision ran; --decision union drops every flag"
    elif decision.rule == "verdict":
        how = "the combined decision: " + ", ".join(decision.members) + " per class"
    else:
        how = f"the combined score cut at {decision.rule}"
    hint = holdout_hint(result)
    if hint is not None:
        out.print(f"[dim]{escape(hint)}[/]", highlight=False, soft_wrap=wrap)
    if truth is not None:
        out.print(_truth_line(result, truth), highlight=False, soft_wrap=wrap)
    out.print(
        escape(
            f"kept {len(data) - removed} of {len(data)} samples ({how}) in {target / 'clean.npz'}; "
            f"scores in {target / 'scores.csv'}, details in {target / 'summary.json'}, "
            f"figures in {target / 'report.html'}"
        ),
        soft_wrap=wrap,
    )


@app.command("scan")
@user_errors
def scan_command(
    data: str = typer.Argument(
        ...,
        metavar="DATA",
        help="Suspect training data: digits, fashion-mnist, or a path (.npz, IDX, CIFAR-10, "
        "GTSRB, image folder). Its training part is scanned.",
    ),
    out_dir: Path = typer.Option(
        ..., "--out", "-o", help="A new folder for the results (--force replaces an earlier scan)."
    ),
    defense: list[str] | None = typer.Option(
        None,
        "--defense",
        "-D",
        metavar="<name,...>",
        help="A defense, a comma-separated list, or all (repeatable); default: "
        "activation-clustering, raw-clustering and spectral-signatures, the members of the "
        "combined decision, which decides what clean.npz drops (the other defenses are only "
        'reported beside it: docs/methods.md, "Combined decision"). '
        f"Registered: {', '.join(catalog.DEFENSES)}.",
    ),
    holdout: str | None = typer.Option(
        None,
        "--holdout",
        help="Clean held-out data (same format rules as DATA), never a split of DATA itself "
        "(its poisons would look clean); needed by deep-features and by fpr: thresholds; lets "
        "the verdicts clear a named class whose suspects the clean data hold too (a genuine "
        "mode, not poisons). With --holdout-part test: the official test part of a CIFAR-10, "
        "MNIST or GTSRB folder (DATA itself, for one).",
    ),
    holdout_part: str = typer.Option(
        "train",
        "--holdout-part",
        metavar="<str>",
        help="The part of --holdout to read: train, or test for a source with an official "
        "test part.",
    ),
    model: Path | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Checkpoint folder trained on DATA (an earlier scan's model/, or from `poisonlab "
        "train`); default: train cnn-small (and lgm-net for lgm-likelihood) on DATA.",
    ),
    lgm_model: Path | None = typer.Option(
        None,
        "--lgm-model",
        help="Checkpoint folder of an LGM model trained on DATA, read by lgm-likelihood only (an "
        "earlier scan's lgm-model/, or from `poisonlab train --loss lgm`); default: the "
        "lgm-model/ folder beside --model when there is one, else train lgm-net on DATA.",
    ),
    threshold: str = typer.Option(
        "verdict",
        "--threshold",
        "-t",
        help="verdict (per-class verdicts: a class judged clean loses nothing; verdict:A sets "
        "the family-wise level, default 0.05), paper (each method's own rule), contamination:F, "
        "fpr:F (needs --holdout) or value:V. Applies to every defense and to the combined "
        "decision, except paper, which leaves the decision on the verdicts at 0.05; "
        "contamination:F, fpr:F and value:V cut the combined score, a rank percentile in "
        "[0, 1].",
    ),
    decision: str = typer.Option(
        "verdict",
        "--decision",
        help="What clean.npz drops: verdict (the combined decision of the defenses that give "
        "class verdicts) or union (every sample any defense flagged).",
    ),
    classes: str | None = typer.Option(
        None,
        "--classes",
        help="Comma-separated classes analysed by per-class defenses (default: every class).",
    ),
    param: list[str] | None = typer.Option(
        None,
        "--param",
        metavar="<key=value>",
        help="Defense setting DEFENSE.key=value, such as "
        "deep-features.covariance=ledoit-wolf (repeatable).",
    ),
    arch: str | None = typer.Option(
        None,
        "--arch",
        help="Architecture of a trained default model (default: cnn-small from 6×6 up to 32×32 "
        "pixels, resnet20 otherwise).",
    ),
    epochs: int | None = typer.Option(
        None,
        "--epochs",
        help="Epochs of a trained default model (default: its recipe's; 2 from 20,000 images, "
        "where the model only has to expose poisons: --epochs 8 for the full recipe).",
    ),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="Training precision of a trained default model: auto (bfloat16 mixed precision "
        "for the 2-epoch recipe of 20,000 images or more, on a device that computes it "
        "natively, e.g. AMX CPUs and recent GPUs: about 1.7x faster, spectral signatures rank "
        "a few AUROC points worse; float32 otherwise), float32 or bfloat16. The LGM model "
        "always trains in float32; summary.json records the recipe used.",
    ),
    image_size: str | None = IMAGE_SIZE,
    seed: int = SEED,
    device: str = DEVICE,
    threads: int | None = THREADS,
    force: bool = FORCE,
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
) -> None:
    """Score every sample of DATA with the chosen defenses; write scores, a summary and a clean set.

    Prints the verdict first ("class 8 looks poisoned: 31 suspicious samples; classes 0–7, 9 look clean"): the defenses that rank within classes (activation-clustering, raw-clustering, spectral-signatures) each test every class for a break in its highest scores, and a class is named when one of them names it with a p-value that, times their number (Bonferroni), passes Holm's step-down procedure over the classes at the family-wise 5% level; a class judged clean loses nothing. heatmap-clustering judges its classes the same way (in the test's valley form) and flags nothing in a class it judges clean; its verdict is reported, not combined. Then one row per defense (threshold, classes named, flagged/analysed, seconds; AUROC and TPR when DATA carries is_poison; * marks a defense reported only) and its flags per class.

    Writes --out/scores.csv (one row per sample: index, id, label, a score and a 0/1 flag column per defense, the combined score and the 0/1 removed decision), --out/summary.json (the verdict and the decision first, then per defense its verdicts, the cut-off used per class, parameters, flags per class, timings, the models used, the thread settings), --out/model/ (a model trained here, reusable with --model; --out/lgm-model/ too when one was trained), --out/clean.npz (DATA without the removed samples; load it like any .npz) and --out/report.html (figures). Input files are only read.

    Without --model, cnn-small (resnet20 above 32×32 pixels or below 6×6) is trained on DATA, plus lgm-net with the LGM loss when lgm-likelihood is selected. To scan again without training these models, pass an earlier scan's model/ as --model (a named class's confirming retraining and bnn's fine-tuning still train): lgm-likelihood then reads the lgm-model/ beside it (or --lgm-model). A defense whose needs are not met (a clean --holdout, an LGM model) is skipped with a yellow line. Without --defense, the three defenses that rank within classes run: they are the combined decision's members, and it reads no other. --defense all runs every registered defense that can run, the others reported beside the decision.

    Examples:

        poisonlab scan data.npz --out runs/scan

        poisonlab scan data.npz --defense spectral-signatures --out runs/ss

        poisonlab scan data.npz -D all --holdout clean.npz -m runs/model \\
            -o runs/all

        poisonlab scan data.npz -D all -m runs/all/model -o runs/again

        poisonlab scan data.npz -D deep-features --holdout clean.npz \\
            -t fpr:0.01 -o runs/df

        poisonlab scan cifar-10-batches-py -D all \\
            --holdout cifar-10-batches-py --holdout-part test -o runs/c10
    """
    configure(quiet=quiet, verbose=verbose)
    check_threads(threads)
    check_device(device)
    check_epochs("--epochs", epochs)
    if arch is not None:
        catalog.check_names("model", [arch], catalog.MODELS)
    if decision not in ("verdict", "union"):
        raise ConfigError(f"--decision must be verdict or union, got {decision!r}")
    if precision not in ("auto", "float32", "bfloat16"):
        raise ConfigError(f"--precision must be auto, float32 or bfloat16, got {precision!r}")
    chosen = parse_classes(classes)
    resize = parse_image_size(image_size)
    names = defense_names(defense) if defense else None  # None: the decision's members
    params = parse_params(param, names or [])
    if holdout_part not in ("train", "test"):
        raise ConfigError(f"--holdout-part must be train or test, got {holdout_part!r}")
    if holdout is None and holdout_part != "train":
        raise ConfigError(
            "--holdout-part test needs --holdout: the data whose test part to read (DATA itself "
            "for a CIFAR-10, MNIST or GTSRB folder)"
        )
    if holdout is not None:
        try:
            data_path(holdout)
        except DataError as exc:  # it named the file alone, as if DATA were the one missing
            raise DataError(f"--holdout {exc}") from None
    inputs = input_paths([data, holdout], model)
    if lgm_model is not None:
        inputs.append(existing_file(lgm_model, "--lgm-model").resolve())
    # an earlier scan's folder holds model/ and lgm-model/: rescanning with its model reads both
    beside = None
    if lgm_model is None and model is not None and "lgm-likelihood" in (names or ()):
        beside = folder_beside(model, "lgm-model")
        if beside is not None:
            inputs.append(beside.resolve())
    check_output_apart(out_dir, inputs)
    check_output_dir(out_dir, force=force, owned=SCAN_FILES)
    # every cheap check passed: now the libraries (torch loads here, with the thread policy set)
    from rich.markup import escape

    from poisonlab.data import has_test_part, load_dataset
    from poisonlab.defenses import DETECTORS, parse_threshold
    from poisonlab.models import Checkpoint, load_checkpoint
    from poisonlab.workflows.scan import build_detectors, resolve_defenses, scan, unmet_need
    from poisonlab.workflows.scan_inputs import as_lgm_model, model_fields
    from poisonlab.workflows.scan_output import write_scan

    # loads the detectors (and checks the catalog was right); None: the decision's members
    names = resolve_defenses(names)
    data_options = loader_options(data, resize)  # a format --image-size does not resize: refused
    held_options = {} if holdout is None else loader_options(holdout, resize, strict=False)
    cut = parse_threshold(threshold)
    if cut.needs_reference and holdout is None:
        raise ConfigError(
            f"--threshold {threshold} cuts on the scores of clean held-out samples; give "
            "--holdout, or use verdict, paper, contamination:F or value:V"
        )
    # every selected defense is built now, so a bad --param fails before any file is read
    build_detectors(names, params=params, threshold=cut, classes=chosen, seed=seed)
    if holdout is not None and holdout_part == "test" and not has_test_part(holdout):
        raise DataError(  # before DATA is read, which takes minutes for GTSRB
            f"--holdout-part test: {holdout} has no official test part (a CIFAR-10 folder "
            "with test_batch, an IDX folder with the t10k files, GTSRB with "
            "GT-final_test.csv have one); give clean held-out data of its own instead"
        )
    dataset = load_dataset(data, **data_options)
    held = None if holdout is None else load_dataset(holdout, part=holdout_part, **held_options)
    if held is not None and holdout_part == "test":  # summary.json tells the two parts apart
        held = held.renamed(f"{held.name} (test part)")
    use_threads(threads, image_shape=dataset.shape)
    whole: dict[str, Any] = {"highlight": False, "soft_wrap": not err.is_terminal}  # a log: 1 line
    checkpoint = None
    if model is not None:
        checkpoint = load_checkpoint(model, expect=model_fields(dataset))
    given = checkpoint.model if checkpoint is not None else None
    if model is not None and given is not None and given.is_lgm:
        beside = None  # --model is an LGM model itself: it serves lgm-likelihood
        _warn_lgm_as_model(model)
    lgm_checkpoint = None
    if lgm_model is not None:
        lgm_checkpoint = as_lgm_model(lgm_model, dataset)
    elif model is not None and beside is not None:
        lgm_checkpoint = _lgm_beside(model, beside, dataset)
        if not quiet:
            line = f"lgm-likelihood reads the LGM model found beside --model: {beside}"
            err.print(escape(line), **whole)
    lgm_given = lgm_checkpoint.model if isinstance(lgm_checkpoint, Checkpoint) else None
    early = {
        n: unmet_need(DETECTORS.get(n), holdout=held, model=given, lgm_model=lgm_given)
        for n in names
    }
    for name, reason in early.items():
        if reason:
            err.print(f"[yellow]skipping {name}: {escape(as_flags(reason))}[/]", **whole)
    if all(early.values()):
        raise ConfigError("no selected defense can run with these inputs (see above)")
    with output_folder(out_dir, force=force, owned=SCAN_FILES) as folder:
        result = scan(
            dataset,
            defenses=defense or None,  # as given, so summary.json says where the names came from
            holdout=held,
            model=checkpoint,
            lgm_model=lgm_checkpoint,
            threshold=cut,
            classes=chosen,
            params=params,
            arch=arch,
            epochs=epochs,
            seed=seed,
            device=device,
            decision=decision,
            precision=precision,
        )
        for outcome in result.outcomes:
            if outcome.skipped and not early.get(outcome.name):
                err.print(f"[yellow]skipping {outcome.name}: {escape(outcome.skipped)}[/]", **whole)
            for note in outcome.notes:
                err.print(f"[yellow]{outcome.name}: {escape(note)}[/]", **whole)
        result = save_trained_models(result, folder.work, recorded=out_dir)
        if beside is not None:
            result = _noted(result, "lgm-model", f"found beside --model {model}")
        known = _ground_truth(result, data)  # a data file that fails here leaves no output folder
        write_scan(result, folder.work, is_poison=known, source=absolute_spec(data))
    # detection numbers need both kinds of sample
    truth = None if known is None or not known.any() or known.all() else known
    from poisonlab.reports.scan_report import write_scan_report  # matplotlib: load only here

    # after the swap, so the page names the folder it lives in; `poisonlab report` rewrites it
    write_scan_report(out_dir, dataset=dataset, source=data)
    _print_summary(result, out_dir, truth)
