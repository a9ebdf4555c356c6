"""The demo tour: BadNets and feature collision on digits, every defense, one summary, one report.

``poisonlab demo`` (what ``make demo`` runs) calls :func:`run_demo`, which is nothing but two
experiment configs run by the experiment runner, then a summary read from their metrics and a
report page built from their artifacts, so the demo exercises exactly the code of
``poisonlab run``, ``poisonlab table`` and ``poisonlab report``:

1. ``demo-backdoor`` (task ``backdoor``): a cross-entropy ``cnn-small`` trained on clean digits,
   BadNets all-to-all (label y → y+1 mod 10, the 4-pixel corner pattern) appending poisons worth
   ``rate`` of the training set, the victim trained on the poisoned set, then every defense that
   applies to a trigger backdoor: activation clustering, spectral signatures, raw-pixel
   clustering, deep features, DNN uncertainty, a Bayesian copy (few ELBO epochs and MC passes)
   and heatmap clustering on one class (its Gromov–Wasserstein k-means is the slow part);
2. ``demo-collision`` (task ``feature-collision``): an ``lgm-net`` trained once with cross-entropy
   and once with the LGM loss, a handful of feature-collision poisons crafted on the same
   (target, base) pairs against each, success after head-only fine-tuning (``transfer``), and
   the LGM likelihood filter in front of the LGM model's fine-tuning.

Everything lands in ``OUT/runs`` (``results.sqlite``, the model cache, one folder per
experiment), so a second run of the same demo skips what is done, and ``OUT/report.html`` holds
the summary and both experiments' figures. :class:`DemoSettings` sizes the tour; the defaults fit
in a few minutes on two CPU cores, and tests use a much smaller setting.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poisonlab.experiments.config import ExperimentConfig, config_from_dict
from poisonlab.experiments.runner import RunSummary, run_experiment
from poisonlab.reports.html import Page, esc, note, table, write_page

BACKDOOR = "demo-backdoor"
COLLISION = "demo-collision"
BACKDOOR_DEFENSES = (
    "activation-clustering",
    "spectral-signatures",
    "raw-clustering",
    "deep-features",
    "dnn-uncertainty",
    "bnn",
    "heatmap-clustering",
)
COLLISION_DEFENSES = ("lgm-likelihood",)
TITLES = {BACKDOOR: "BadNets backdoor", COLLISION: "Feature collision"}
STEPS = {
    BACKDOOR: f"train cnn-small, poison, train the victim, run {len(BACKDOOR_DEFENSES)} defenses",
    COLLISION: "train lgm-net with CE and LGM, craft poisons, fine-tune, filter",
}


@dataclass(frozen=True)
class DemoSettings:
    """How big the tour is. Rates are fractions; epochs are maxima (training stops early).

    Parameters
    ----------
    limit : int or None
        Training images of digits (a stratified subset); None for all 1,258.
    epochs : int
        Epochs of the backdoor's ``cnn-small`` models (clean and victim).
    lgm_epochs : int
        Epochs of the collision's two ``lgm-net`` models (CE and LGM).
    rate : float
        BadNets poisons appended, as a fraction of the training set.
    poisons : int
        Feature-collision targets, one poison each.
    craft_iterations : int
        Optimisation steps per feature-collision poison.
    craft_beta0 : float
        Weight β0 of the poisons' pixel penalty (seed 000's units). Seed 000's 0.0083 is tuned
        for 28×28 images (effective penalty β·2² ≈ 0.23); its (2048 / pixels)² scaling makes it
        34 on 8×8 digits, which pins the poisons to their bases. 1e-4 gives ≈ 0.41.
    finetune_epochs : int
        Epochs of the victim's head-only fine-tuning on the poisoned set.
    bnn_samples, bnn_epochs : int
        Monte-Carlo passes and ELBO epochs of the Bayesian defense.
    heatmap_class : int
        The one class heatmap clustering analyses.
    heatmap : mapping
        Further keywords of :class:`~poisonlab.defenses.heatmap_clustering.HeatmapClustering`.
    """

    limit: int | None = None
    epochs: int = 40
    lgm_epochs: int = 20
    rate: float = 0.1
    poisons: int = 10
    craft_iterations: int = 200
    craft_beta0: float = 1e-4
    finetune_epochs: int = 5
    bnn_samples: int = 10
    bnn_epochs: int = 1
    heatmap_class: int = 3
    heatmap: Mapping[str, Any] = field(
        default_factory=lambda: {"max_points": 32, "max_iter": 2, "seed_gw_max_iter": 50}
    )


QUICK = DemoSettings(
    limit=300,
    epochs=2,
    lgm_epochs=1,
    poisons=3,
    craft_iterations=20,
    finetune_epochs=1,
    bnn_samples=2,
    heatmap={"max_points": 16, "max_iter": 1, "seed_gw_max_iter": 10, "n_support": 4},
)
"""A tour of well under a minute for tests: every step and every defense, on 300 images."""


def demo_configs(settings: DemoSettings, seed: int = 0) -> tuple[ExperimentConfig, ...]:
    """The two experiment configs of the tour, validated as ``poisonlab run`` validates a file."""
    data: dict[str, Any] = {"source": "digits", "seed": seed}
    if settings.limit is not None:
        data["limit"] = settings.limit
    defenses: list[dict[str, Any]] = [{"name": name} for name in BACKDOOR_DEFENSES]
    for entry in defenses:
        if entry["name"] == "bnn":
            entry |= {"samples": settings.bnn_samples, "epochs": settings.bnn_epochs}
        if entry["name"] == "heatmap-clustering":
            entry |= {"classes": [settings.heatmap_class], **settings.heatmap}
    backdoor = {
        "name": BACKDOOR,
        "kind": "backdoor",
        "description": "demo: BadNets all-to-all on digits against every backdoor defense",
        "seeds": [seed],
        "data": data,
        "model": {"arch": "cnn-small"},
        "train": {"epochs": settings.epochs},
        "attack": {
            "name": "badnets",
            "label_map": "all-to-all",
            "trigger": "pattern",
            "rate": settings.rate,
        },
        "defenses": defenses,
    }
    collision = {
        "name": COLLISION,
        "kind": "feature-collision",
        "description": "demo: feature collision on CE and LGM lgm-net, LGM likelihood filter",
        "seeds": [seed],
        "data": data,
        "model": {"arch": "lgm-net"},
        "train": {"epochs": settings.lgm_epochs},
        "attack": {
            "name": "feature-collision",
            "num_targets": settings.poisons,
            "max_iter": settings.craft_iterations,
            "beta0": settings.craft_beta0,
        },
        "defenses": [{"name": name} for name in COLLISION_DEFENSES],
        "task": {"protocol": "transfer", "finetune_epochs": settings.finetune_epochs},
    }
    return tuple(
        config_from_dict(raw, where=f"demo config {raw['name']}") for raw in (backdoor, collision)
    )


@dataclass(frozen=True)
class SummaryRow:
    """One line of the demo's summary: a model, an attack or a defense, and its numbers.

    Rates are fractions in [0, 1]; None means "does not apply", NaN "undefined".
    """

    group: str
    item: str
    clean_accuracy: float | None = None
    attack: float | None = None
    auroc: float | None = None
    tpr: float | None = None
    tnr: float | None = None
    seconds: float | None = None


SUMMARY_HEADER = ("", "clean acc", "attack", "AUROC", "TPR", "TNR", "sec")
SUMMARY_NOTES = (
    "Percent. clean acc: cnn-small on the test split, lgm-net on the held-out split (the "
    "collision draws its targets and bases from the test split). attack: BadNets' attack "
    "success rate (triggered test images classified as the backdoor label); the collision's "
    "success (targets classified as their base class after the victim fine-tuned the head on "
    "the poisoned set); on the filter's row, both measured after filtering. AUROC, TPR, TNR: "
    "each defense on the poisoned training set, positive = poison; heatmap clustering analyses "
    "one class (in brackets), the LGM filter the LGM model's fine-tuning set. sec: the "
    "defense's run time.",
)


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` did: the runs, the summary rows, and where the files are."""

    out: Path
    runs: Path
    report: Path
    summaries: tuple[RunSummary, ...]
    rows: tuple[SummaryRow, ...]
    settings: DemoSettings

    @property
    def ok(self) -> bool:
        """True when both experiments finished."""
        return all(summary.ok for summary in self.summaries)

    @property
    def failures(self) -> list[str]:
        """``experiment: first error line`` of each failed cell."""
        return [
            f"{summary.experiment}: {cell.error_line}"
            for summary in self.summaries
            for cell in summary.cells
            if cell.status == "failed"
        ]


def run_demo(
    out: str | Path,
    *,
    settings: DemoSettings | None = None,
    seed: int = 0,
    device: str = "auto",
    log: Callable[[str], None] = lambda message: None,
) -> DemoResult:
    """Run (or resume) the tour into ``out`` and write ``out/report.html``.

    Parameters
    ----------
    out : str or Path
        The demo folder; its ``runs`` subfolder is an ordinary runs folder.
    settings : DemoSettings or None
        Sizes of the tour (default :class:`DemoSettings()`).
    seed : int
        Seeds the split, the models, the attacks and the defenses.
    device : str
        ``auto``, ``cpu``, ``cuda``...
    log : callable
        Called with a line of text before and after each step.

    Returns
    -------
    DemoResult
        Failed cells do not raise: their rows are missing and ``failures`` names them.
    """
    settings = settings or DemoSettings()
    out = Path(out)
    runs = out / "runs"
    configs = demo_configs(settings, seed)
    summaries = []
    for step, config in enumerate(configs, 1):
        log(f"{step}/{len(configs) + 1} {TITLES[config.name]}: {STEPS[config.name]}")
        summary = run_experiment(config, runs, device=device)
        summaries.append(summary)
        cell = summary.cells[0]
        state = "done" if cell.ran else "done earlier, skipped"
        if cell.status != "done":
            state = f"{cell.status}: {cell.error_line}"
        log(f"    {state} ({summary.seconds:.0f} s)")
    log(f"{len(configs) + 1}/{len(configs) + 1} summary and report")
    metrics = {s.experiment: (s.cells[0].metrics if s.ok else {}) for s in summaries}
    rows = summary_rows(metrics.get(BACKDOOR, {}), metrics.get(COLLISION, {}), settings)
    report = write_demo_report(
        out, rows, [runs / s.experiment for s in summaries], summary_title(summaries)
    )
    return DemoResult(out, runs, report, tuple(summaries), tuple(rows), settings)


def _get(metrics: Mapping[str, float | int], name: str) -> float | None:
    value = metrics.get(name)
    return None if value is None else float(value)


def summary_rows(
    backdoor: Mapping[str, float | int],
    collision: Mapping[str, float | int],
    settings: DemoSettings,
) -> list[SummaryRow]:
    """The summary from the two cells' flat metrics (an empty mapping gives no rows)."""
    rows: list[SummaryRow] = []
    if backdoor:
        rows.append(SummaryRow("models", "cnn-small CE", _get(backdoor, "model.clean_accuracy")))
    if collision:
        for short, loss in (("ce", "CE"), ("lgm", "LGM")):
            accuracy = _get(collision, f"model.{short}.clean_accuracy")
            rows.append(SummaryRow("models", f"lgm-net {loss}", accuracy))
    if backdoor:
        asr = _get(backdoor, "attack.asr")
        accuracy = _get(backdoor, "attack.clean_accuracy")
        rows.append(SummaryRow("attacks", "BadNets → cnn-small CE", accuracy, asr))
    if collision:
        for short, loss in (("ce", "CE"), ("lgm", "LGM")):
            success = _get(collision, f"collision.{short}.success_rate")
            rows.append(SummaryRow("attacks", f"collision → lgm-net {loss}", None, success))
    for metrics, names, group in (
        (backdoor, BACKDOOR_DEFENSES, "defenses vs BadNets"),
        (collision, COLLISION_DEFENSES, "defense vs collision"),
    ):
        for name in names:
            prefix = f"defense.{name}."
            if prefix + "auroc" not in metrics:
                continue
            label = name
            if name == "heatmap-clustering":
                label = f"{name} ({settings.heatmap_class})"
            rows.append(
                SummaryRow(
                    group,
                    label,
                    _get(metrics, prefix + "clean_accuracy_with_filter"),
                    _get(metrics, prefix + "success_with_filter"),
                    _get(metrics, prefix + "auroc"),
                    _get(metrics, prefix + "tpr"),
                    _get(metrics, prefix + "tnr"),
                    _get(metrics, prefix + "seconds"),
                )
            )
    return rows


def summary_title(summaries: Sequence[RunSummary]) -> str:
    """``poisonlab demo on digits: N training images, B BadNets poisons, C collision poisons``."""
    metrics = {s.experiment: s.cells[0].metrics for s in summaries if s.ok}
    parts = []
    backdoor, collision = metrics.get(BACKDOOR, {}), metrics.get(COLLISION, {})
    if backdoor:
        n_train = int(backdoor["attack.n_train"]) - int(backdoor["attack.n_poison"])
        parts.append(f"{n_train} training images")
        parts.append(f"{int(backdoor['attack.n_poison'])} BadNets poisons")
    if collision:
        parts.append(f"{int(collision['attack.n_poison'])} collision poisons")
    return "poisonlab demo on digits" + (": " + ", ".join(parts) if parts else "")


def percent(value: float | None) -> str:
    """A rate in percent for a table cell (empty for None, ``nan`` for NaN)."""
    if value is None:
        return ""
    return "nan" if math.isnan(value) else f"{100 * value:.1f}"


def row_cells(row: SummaryRow) -> list[str]:
    """The text cells of a summary row, in :data:`SUMMARY_HEADER` order."""
    rates = (row.clean_accuracy, row.attack, row.auroc, row.tpr, row.tnr)
    seconds = "" if row.seconds is None else f"{row.seconds:.1f}"
    return [row.item, *(percent(v) for v in rates), seconds]


def write_demo_report(
    out: Path, rows: list[SummaryRow], experiments: list[Path], title: str = ""
) -> Path:
    """``out/report.html``: the summary, then each experiment's page (its sections one level
    deeper), as :func:`poisonlab.reports.html.write_report` builds them."""
    from poisonlab.reports.run_report import experiment_page

    page = Page("poisonlab demo: poisoning digits, and catching the poisons", out)
    body = [f"<p>{esc(title)}</p>"] if title else []
    for group in dict.fromkeys(row.group for row in rows):
        mine = [row_cells(r) for r in rows if r.group == group]
        body.append(f"<h3>{esc(group[:1].upper() + group[1:])}</h3>" + table(SUMMARY_HEADER, mine))
    body.extend(note(n) for n in SUMMARY_NOTES)
    page.add("Summary", "".join(body))
    for folder in experiments:
        if not folder.is_dir():
            page.lack(f"experiment {folder.name}: no folder {folder}")
            continue
        sub = experiment_page(folder)
        title = TITLES.get(folder.name, folder.name)
        page.add(f"{title} (experiment {folder.name})", note(f"folder {folder}"))
        for section in sub.sections:
            page.add(section.title, section.body, level=section.level + 1)
        page.missing.extend(f"{folder.name}: {m}" for m in sub.missing)
    return write_page(page, out)
