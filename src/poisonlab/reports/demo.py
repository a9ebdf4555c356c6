"""The demo tour: BadNets and feature collision on digits, every defense, each paper's claim tested.

``poisonlab demo`` (what ``make demo`` runs) calls :func:`run_demo`, which is nothing but two
experiment configs run by the experiment runner, then a summary read from their metrics and a
report page built from their artifacts, so the demo exercises exactly the code of
``poisonlab run``, ``poisonlab table`` and ``poisonlab report``:

1. ``demo-backdoor`` (task ``backdoor``): a cross-entropy ``cnn-small`` trained on clean digits,
   BadNets all-to-all (label y → y+1 mod 10, the 4-pixel pattern in the bottom-left corner)
   appending poisons worth ``rate`` of the training set, the victim trained on the poisoned set,
   then every defense that applies to a trigger backdoor at its own defaults: activation
   clustering, spectral signatures, raw-pixel clustering, deep features, DNN uncertainty, a
   Bayesian copy (few ELBO epochs and MC passes) and heatmap clustering on one class;
2. ``demo-collision`` (task ``feature-collision``): ``cnn-small`` trained once with cross-entropy
   (the same cached model as step 1's clean one) and once with the LGM loss, one
   feature-collision poison per target crafted on the same (target, base) pairs against each,
   success after Poison Frogs' one-shot-kill retraining of the last layer (``one-shot``), and the
   LGM likelihood filter in front of each victim's retraining (the CE victim's set scored by the
   LGM model, ``filter_ce``).

Why these settings (measured on this machine, see the bench and the issue that chose them): the 2-d
features of Yaseen et al. 2020's ``lgm-net`` leave one poison no room to move a retrained last layer
(0–2% success), whereas ``cnn-small``'s 128-d features do; retraining per target keeps the targets
from interfering (85–100% success over six pair draws, against 60–90% when twenty poisons share one
retraining); targets are dropped from the fine-tuning set (they would sit there with their true
label, next to their own poison); a 20% BadNets rate and 60 epochs give an ASR of about 95% (10%
gave 79–87%). The trigger is BadNets' 4-pixel pattern in the bottom-left corner itself
(``offset=0``; its corner pixel almost never has ink on these digits): there Heatmap Clustering
on class 0 reaches AUROC 97.5 ± 4.4% over five victims × three k-means seeds (97.8 ± 3.7% on
three further victims), whereas at the pattern's usual place (one pixel from the bottom-right
corner, on the strokes) on class 3 it reached 71 ± 26% (``python -m bench hc_demo``,
docs/methods.md#heatmap-clustering-demo).

Everything lands in ``OUT/runs`` (``results.sqlite``, the model cache, one folder per
experiment), so a second run of the same demo skips what is done, and ``OUT/report.html`` holds
the summary (tables, claim verdicts, a figure) and both experiments' figures.
:mod:`poisonlab.workflows.demo_summary` states what each paper claims and the criterion each
verdict uses. :class:`DemoSettings` sizes the tour; tests use a much smaller setting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poisonlab.experiments.config import ExperimentConfig, config_from_dict
from poisonlab.experiments.runner import RunSummary, run_experiment
from poisonlab.reports.html import Page, esc, figure, note, table, write_page
from poisonlab.workflows.demo_summary import (
    DEFENSE_ORDER,
    Block,
    Claim,
    claims_of,
    summary_blocks,
)

BACKDOOR = "demo-backdoor"
COLLISION = "demo-collision"
BACKDOOR_DEFENSES = DEFENSE_ORDER
COLLISION_DEFENSES = ("lgm-likelihood",)
TITLES = {BACKDOOR: "BadNets backdoor", COLLISION: "Feature collision"}
STEPS = {
    BACKDOOR: f"train cnn-small, poison, train the victim, run {len(BACKDOOR_DEFENSES)} defenses",
    COLLISION: "train cnn-small with CE and LGM, craft poisons, retrain per target, filter",
}


@dataclass(frozen=True)
class DemoSettings:
    """How big the tour is. Rates are fractions; epochs are maxima (training stops early).

    Parameters
    ----------
    limit : int or None
        Training images of digits (a stratified subset); None for all 1,258.
    epochs : int
        Epochs of every ``cnn-small`` (clean, BadNets victim, LGM); the recipe's early stopping
        on a 10% validation split usually ends them sooner.
    rate : float
        BadNets poisons appended, as a fraction of the poisoned training set.
    trigger : mapping
        The BadNets trigger: its kind (``trigger``) and the options of
        :class:`~poisonlab.attacks.triggers.Trigger` (``offset``, ``size``, ``position``...);
        the tour's is the 4-pixel pattern in the bottom-left corner (see above).
    targets : int
        Feature-collision targets, one poison each, drawn from the test split (D_f).
    craft_iterations : int
        Forward-backward steps per feature-collision poison.
    craft_beta : float
        Weight β of the poisons' pixel penalty on [0, 1] pixels (no dimension scaling): the
        bench's setting (96% transfer success on 50 pairs). Yaseen et al. 2020's β0 = 0.0083 with
        its
        (2048 / pixels)² factor becomes 34 on 8×8 digits and pins every poison to its base.
    craft_lr : float
        Initial step size λ of the crafting on [0, 1] pixels.
    finetune_epochs, finetune_lr, finetune_batch_size : int, float, int
        The victim's last-layer retraining, once per target (Adam; Poison Frogs' official code:
        100 epochs at 0.01, batch 32), warm-started from the pre-trained head.
    bnn_samples, bnn_epochs : int
        Monte-Carlo passes and ELBO epochs of the Bayesian defense.
    heatmap_class : int
        The one class heatmap clustering analyses (it receives the class-9 poisons).
        Chosen by measurement with the trigger: class 0 is the setting that held on held-out
        victims (demo seeds 5–7); other classes swing more with the k-means draw
        (docs/methods.md#heatmap-clustering-demo).
    heatmap : mapping
        Keywords of :class:`~poisonlab.defenses.heatmap_clustering.HeatmapClustering` beyond
        ``classes``; the tour uses none (the detector's defaults).
    """

    limit: int | None = None
    epochs: int = 60
    rate: float = 0.2
    trigger: Mapping[str, Any] = field(
        default_factory=lambda: {"trigger": "pattern", "position": "bottom-left", "offset": 0}
    )
    targets: int = 20
    craft_iterations: int = 300
    craft_beta: float = 0.25
    craft_lr: float = 1.0
    finetune_epochs: int = 100
    finetune_lr: float = 0.01
    finetune_batch_size: int = 32
    bnn_samples: int = 10
    bnn_epochs: int = 1
    heatmap_class: int = 0
    heatmap: Mapping[str, Any] = field(default_factory=dict)


QUICK = DemoSettings(
    limit=300,
    epochs=2,
    targets=3,
    craft_iterations=20,
    finetune_epochs=2,
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
    # One [model] and [train] for both experiments, so the collision's CE model is the backdoor
    # experiment's clean model, taken from the shared cache instead of trained twice.
    model = {"arch": "cnn-small"}
    train = {"epochs": settings.epochs}
    backdoor = {
        "name": BACKDOOR,
        "kind": "backdoor",
        "description": "demo: BadNets all-to-all on digits against every backdoor defense",
        "seeds": [seed],
        "data": data,
        "model": model,
        "train": train,
        "attack": {
            "name": "badnets",
            "label_map": "all-to-all",
            **settings.trigger,
            "rate": settings.rate,
        },
        "defenses": defenses,
    }
    collision = {
        "name": COLLISION,
        "kind": "feature-collision",
        "description": "demo: feature collision on CE and LGM cnn-small, LGM likelihood filter",
        "seeds": [seed],
        "data": data,
        "model": model,
        "train": train,
        "attack": {
            "name": "feature-collision",
            "num_targets": settings.targets,
            "bases_per_target": 1,
            "max_iter": settings.craft_iterations,
            "beta0": settings.craft_beta,
            "beta_scaling": "none",
            "pixel_scale": 1.0,
            "lr": settings.craft_lr,
        },
        "defenses": [{"name": name} for name in COLLISION_DEFENSES],
        "task": {
            "preset": "none",
            "protocol": "one-shot",
            "finetune_epochs": settings.finetune_epochs,
            "finetune_lr": settings.finetune_lr,
            "finetune_batch_size": settings.finetune_batch_size,
            "drop_targets": True,
            "filter_ce": True,
        },
    }
    return tuple(
        config_from_dict(raw, where=f"demo config {raw['name']}") for raw in (backdoor, collision)
    )


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` did: the runs, the summary blocks, and where the files are."""

    out: Path
    runs: Path
    report: Path
    summaries: tuple[RunSummary, ...]
    blocks: tuple[Block, ...]
    settings: DemoSettings
    metrics: Mapping[str, Mapping[str, float | int]] = field(default_factory=dict)

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

    @property
    def claims(self) -> list[Claim]:
        """Every paper claim the run tested, block by block."""
        return claims_of(self.blocks)


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
        Failed cells do not raise: their blocks are missing and ``failures`` names them.
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
    blocks = summary_blocks(
        metrics.get(BACKDOOR, {}),
        metrics.get(COLLISION, {}),
        heatmap_class=settings.heatmap_class,
        rate=settings.rate,
    )
    report = write_demo_report(
        out,
        blocks,
        [runs / s.experiment for s in summaries],
        summary_title(summaries),
        metrics=metrics,
        heatmap_class=settings.heatmap_class,
    )
    return DemoResult(out, runs, report, tuple(summaries), tuple(blocks), settings, metrics)


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
        parts.append(f"{int(collision['attack.n_poison'])} collision targets, one poison each")
    return "poisonlab demo on digits" + (": " + ", ".join(parts) if parts else "")


def block_html(block: Block) -> str:
    """A block as HTML: its table, the claim verdicts as a list, its note."""
    claims = "".join(
        f"<li><b>reproduced: {esc(c.verdict)}</b> — {esc(c.paper)}: {esc(c.claim)}. "
        f"Measured: {esc(c.measured)} (criterion: {esc(c.criterion)}).</li>"
        for c in block.claims
    )
    return table(block.header, block.rows) + f"<ul>{claims}</ul>" + note(block.note)


def write_demo_report(
    out: Path,
    blocks: Sequence[Block],
    experiments: list[Path],
    title: str = "",
    *,
    metrics: Mapping[str, Mapping[str, float | int]] | None = None,
    heatmap_class: int | None = None,
) -> Path:
    """``out/report.html``: the summary (each block's table and verdicts, one figure of the
    headline numbers), then each experiment's page (its sections one level deeper), as
    :func:`poisonlab.reports.html.write_report` builds them."""
    from poisonlab.reports.demo_plots import demo_summary_png
    from poisonlab.reports.run_report import experiment_page

    page = Page("poisonlab demo: poisoning digits, and catching the poisons", out)
    body = [f"<p>{esc(title)}</p>"] if title else []
    for block in blocks:
        body.append(f"<h3>{esc(block.title)}</h3>" + block_html(block))
    page.add("Summary", "".join(body))
    metrics = metrics or {}
    backdoor, collision = metrics.get(BACKDOOR, {}), metrics.get(COLLISION, {})
    if backdoor or collision:
        png = demo_summary_png(backdoor, collision, heatmap_class)
        page.add(
            "The headline numbers",
            figure(
                png,
                "left: feature-collision success against each victim without and with the LGM "
                "likelihood filter (dashed: the 70% criterion), mean ‖p−b‖₂ under each victim; "
                "middle: what the filter removed; right: BadNets ASR and each defense's AUROC "
                "(dashed: the 90% and 95% criteria)",
            ),
        )
    else:
        page.lack("summary figure: neither experiment finished")
    for folder in experiments:
        if not folder.is_dir():
            page.lack(f"experiment {folder.name}: no folder {folder}")
            continue
        sub = experiment_page(folder)
        name = TITLES.get(folder.name, folder.name)
        page.add(f"{name} (experiment {folder.name})", note(f"folder {folder}"))
        for section in sub.sections:
            page.add(section.title, section.body, level=section.level + 1)
        page.missing.extend(f"{folder.name}: {m}" for m in sub.missing)
    return write_page(page, out)
