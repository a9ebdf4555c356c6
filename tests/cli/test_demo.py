"""`poisonlab demo` end to end: the quick tour through the CLI, its summary, claims, report, resume.

The quick tour (:data:`poisonlab.reports.demo.QUICK`: 300 digits images, 2 epochs, every
defense) runs once per module; the full tour (about half a minute) is marked slow and checks the
verdicts the demo exists to show.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from typer.testing import CliRunner

from poisonlab.attacks.triggers import Trigger
from poisonlab.cli import demo_cmd
from poisonlab.cli.main import app
from poisonlab.data import load_dataset
from poisonlab.errors import ConfigError
from poisonlab.experiments.runner import plan
from poisonlab.reports.demo import (
    BACKDOOR,
    BACKDOOR_DEFENSES,
    COLLISION,
    COLLISION_DEFENSES,
    QUICK,
    DemoSettings,
    demo_configs,
    run_demo,
)
from poisonlab.reports.records import load_records
from poisonlab.workflows.demo_summary import SCHULTH, SHAFAHI, YASEEN, summary_blocks

runner = CliRunner()
DEFENSES = (*BACKDOOR_DEFENSES, *COLLISION_DEFENSES)
NUMBER = r"(\d+\.\d|nan)"


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    """The quick tour run once through ``poisonlab demo`` into a fresh folder."""
    out = tmp_path_factory.mktemp("demo") / "out"
    patch = pytest.MonkeyPatch()
    patch.setattr(demo_cmd, "SETTINGS", QUICK)
    try:
        result = runner.invoke(app, ["demo", "--out", str(out), "--quiet"], terminal_width=120)
    finally:
        patch.undo()
    return out, result


def test_every_defense_is_configured_and_none_is_left_out():
    from poisonlab.defenses import detector_names

    backdoor, collision = demo_configs(QUICK)
    configured = {d["name"] for d in backdoor.defenses} | {d["name"] for d in collision.defenses}
    assert configured == set(DEFENSES) == set(detector_names())  # a new detector joins the demo
    assert backdoor.attack["label_map"] == "all-to-all"
    assert collision.task["protocol"] == "one-shot" and collision.task["filter_ce"] is True
    assert collision.task["drop_targets"] is True


def test_the_full_tour_runs_heatmap_clustering_at_its_defaults_and_shares_the_clean_model():
    backdoor, collision = demo_configs(DemoSettings())
    (heatmap,) = [d for d in backdoor.defenses if d["name"] == "heatmap-clustering"]
    assert heatmap == {"name": "heatmap-clustering", "classes": [DemoSettings().heatmap_class]}
    assert backdoor.model == collision.model == {"arch": "cnn-small"}  # one cached CE model
    assert backdoor.train == collision.train


def test_quick_demo_prints_each_block_and_a_verdict_per_claim(quick_demo):
    out, result = quick_demo
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for name in BACKDOOR_DEFENSES:
        row = re.search(rf"{re.escape(name)}( \(class \d+\))? ((?:{NUMBER} ?){{3,}})", text)
        assert row, f"no summary row for {name}:\n{result.output}"
    for name in COLLISION_DEFENSES:
        assert f"LGM likelihood filter ({name})" in text
        for victim in ("CE model", "LGM model"):
            row = re.search(rf"{victim} (\d+/\d+) (\d+/\d+) ((?:{NUMBER} ?){{4}})", text)
            assert row, f"no filter row for the {victim}:\n{result.output}"
    for label in ("cnn-small, clean data", "cnn-small, BadNets 20%", "cnn-small CE", "LGM model"):
        assert label in text, label
    verdicts = re.findall(r"reproduced: (yes|no|not measured) — (.+?\(arXiv:[\d.]+\)):", text)
    papers = {paper for _, paper in verdicts}
    for paper in (SHAFAHI, YASEEN, SCHULTH):
        assert paper in papers, paper
    assert len(verdicts) == 9  # five in the BadNets block, three for collision, one for the filter
    assert "seed 0" not in text and "METHODS" not in text
    assert str(out / "report.html") in result.output.replace("\n", "")


def test_quick_demo_writes_a_self_contained_report(quick_demo):
    out, result = quick_demo
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') >= 6
    for part in ("Summary", "The headline numbers", "BadNets backdoor", "Feature collision"):
        assert part in page
    assert page.count("reproduced: ") == 9
    assert "Most suspicious samples: heatmap-clustering" in page
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # no external links
    assert (out / "runs" / "results.sqlite").is_file()


def test_the_store_holds_real_numbers_and_a_second_run_would_skip_everything(quick_demo):
    out, first = quick_demo
    assert first.exit_code == 0, first.output
    runs = out / "runs"
    configs = demo_configs(QUICK)
    for config in configs:
        assert [(p.status, p.run) for p in plan(config, runs)] == [("done", False)]
    metrics = {c.name: load_records(runs, c.name)[0].metrics for c in configs}
    backdoor, collision = metrics[BACKDOOR], metrics[COLLISION]
    for name in DEFENSES:
        for key in ("auroc", "tpr", "tnr"):
            value = (backdoor | collision)[f"defense.{name}.{key}"]
            assert math.isfinite(value) and 0 <= value <= 1, (name, key)
    for key in ("success_with_filter", "n_poison_removed", "n_clean_removed", "auroc"):
        assert f"defense.lgm-likelihood.ce.{key}" in collision, key  # the CE victim, filtered
    # the collision's CE model is the backdoor experiment's clean model: three models in all
    cached = [p for p in (runs / "cache").rglob("*.safetensors")]
    assert len(cached) == 3, cached
    assert collision["model.ce.clean_accuracy"] > 0 and backdoor["model.clean_accuracy"] > 0


def _metrics() -> tuple[dict[str, float], dict[str, float]]:
    """Flat metrics of the two demo cells where every claim holds."""
    backdoor = {
        "model.clean_accuracy": 0.99,
        "model.asr": 0.01,
        "attack.clean_accuracy": 0.985,
        "attack.asr": 0.95,
    }
    for name in BACKDOOR_DEFENSES:
        backdoor |= {f"defense.{name}.{k}": 0.99 for k in ("auroc", "tpr", "tnr")}
    collision = {
        "attack.n_poison": 20,
        "collision.ce.success_rate": 0.9,
        "collision.lgm.success_rate": 0.0,
        "collision.ce.l2_mean": 2.8,
        "collision.lgm.l2_mean": 3.1,
        "collision.ce.l2_relative_mean": 0.7,
        "defense.lgm-likelihood.ce.success_with_filter": 0.0,
    }
    for prefix in ("defense.lgm-likelihood.", "defense.lgm-likelihood.ce."):
        collision |= {
            prefix + "n_poison": 20,
            prefix + "n_analysed": 359,
            prefix + "n_poison_removed": 20,
            prefix + "n_clean_removed": 7,
        }
    return backdoor, collision


def _verdicts(backdoor, collision) -> dict[tuple[str, str], str]:
    """(paper, claim) → verdict of the demo's claims for these metrics."""
    blocks = summary_blocks(backdoor, collision, heatmap_class=3, rate=0.2)
    return {(c.paper, c.claim): c.verdict for b in blocks for c in b.claims}


def _verdict(verdicts: dict[tuple[str, str], str], paper: str, starts: str) -> str:
    """The verdict on ``paper``'s claim that starts with ``starts``."""
    (found,) = [v for (p, claim), v in verdicts.items() if p == paper and claim.startswith(starts)]
    return found


def test_each_verdict_follows_its_stated_criterion():
    everything = _verdicts(*_metrics())
    assert set(everything.values()) == {"yes"}
    backdoor, collision = _metrics()
    backdoor["attack.asr"] = 0.89  # just under the 90% ASR criterion
    backdoor["defense.heatmap-clustering.auroc"] = 0.94
    collision["collision.ce.success_rate"] = 0.65
    collision["collision.lgm.l2_mean"] = 2.0  # smaller than the CE poisons
    collision["defense.lgm-likelihood.n_poison_removed"] = 17  # 85% of the LGM set's poisons
    changed = {k: v for k, v in _verdicts(backdoor, collision).items() if v != "yes"}
    assert sorted(paper for paper, _ in changed) == sorted(
        ['Gu et al. 2017, "BadNets" (arXiv:1708.06733)', SCHULTH, SHAFAHI, YASEEN, YASEEN]
    )
    assert set(changed.values()) == {"no"}


def test_the_heatmap_claim_says_its_auroc_is_one_k_means_draw():
    blocks = summary_blocks(*_metrics(), heatmap_class=0, rate=0.2)
    (hc,) = [c for b in blocks for c in b.claims if c.paper == SCHULTH]
    assert "on class 0, one k-means draw" in hc.measured and "bench hc_demo" in hc.measured
    assert "trigger and class chosen for this check" in hc.measured


def test_the_tour_stamps_the_pattern_in_the_inkless_corner():
    """The demo's trigger reaches the digits' bottom-left corner pixel, which almost never has ink."""
    (backdoor, _) = demo_configs(DemoSettings())
    options = {k: v for k, v in backdoor.attack.items() if k not in ("name", "label_map", "rate")}
    assert options == dict(DemoSettings().trigger)
    trigger = Trigger(kind=options.pop("trigger"), **options)
    images = load_dataset("digits").images  # (N, 1, 8, 8)
    stamped = trigger.apply(torch.zeros(1, 1, 8, 8))[0, 0] > 0
    assert int(stamped.sum()) == 4 and bool(stamped[7, 0])  # the corner pixel itself (offset 0)
    assert float((images[:, 0, 7, 0] > 0).float().mean()) < 0.01  # ink in 1 of 1,797 digits


def test_demo_settings_choose_the_badnets_trigger():
    settings = DemoSettings(trigger={"trigger": "square", "size": 2, "offset": 0})
    (backdoor, _) = demo_configs(settings)
    assert backdoor.attack["trigger"] == "square" and backdoor.attack["size"] == 2


def test_a_claim_about_stopping_a_failed_attack_is_not_judged():
    backdoor, collision = _metrics()
    collision["collision.ce.success_rate"] = 0.0
    verdicts = _verdicts(backdoor, collision)
    stopped = [v for (paper, _), v in verdicts.items() if paper == YASEEN]
    assert stopped.count("not measured") == 2  # "reduces the attack" and "filter prevents it"
    assert _verdict(verdicts, SHAFAHI, "one clean-label poison") == "no"
    blocks = summary_blocks({}, collision, heatmap_class=3, rate=0.2)
    titles = [b.title for b in blocks]  # no backdoor metrics: no backdoor block
    assert titles[0].startswith("Feature collision") and titles[1].startswith("LGM likelihood")
    assert len(titles) == 2


def test_a_folder_without_a_demo_is_refused_unless_forced(tmp_path):
    folder = tmp_path / "busy"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["demo", "--out", str(folder), "--quiet"])
    assert result.exit_code == 2
    assert "holds no demo" in result.output and (folder / "notes.txt").exists()


def test_help_names_the_steps_and_the_outputs():
    result = runner.invoke(app, ["demo", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for phrase in ("feature-collision poisons", "heatmap clustering", "OUT/report.html", "--force"):
        assert phrase in text, phrase


@pytest.mark.slow
def test_full_demo_shows_each_papers_effect(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--quiet"])
    assert result.exit_code == 0, result.output
    summary = run_demo(tmp_path / "demo")  # resumes: reads the stored metrics
    backdoor, collision = summary.metrics[BACKDOOR], summary.metrics[COLLISION]
    assert backdoor["attack.asr"] >= 0.9  # the backdoor took
    assert collision["collision.ce.success_rate"] >= 0.7  # the collision works unfiltered
    assert collision["collision.lgm.l2_mean"] > 0 and collision["collision.ce.l2_mean"] > 0
    filtered = "defense.lgm-likelihood.ce."
    assert collision[filtered + "n_poison_removed"] >= 0.9 * collision[filtered + "n_poison"]
    assert collision[filtered + "success_with_filter"] < collision["collision.ce.success_rate"]
    verdicts = {(c.paper, c.claim): c.verdict for c in summary.claims}
    assert _verdict(verdicts, SHAFAHI, "one clean-label poison") == "yes"
    assert _verdict(verdicts, YASEEN, "thresholding") == "yes"


def test_force_starts_over_and_a_demo_folder_is_resumed(tmp_path):
    folder = tmp_path / "demo"
    (folder / "runs").mkdir(parents=True)
    (folder / "runs" / "results.sqlite").write_bytes(b"")
    assert demo_cmd.demo_folder(folder, force=False) is True  # resumed, left alone
    assert (folder / "runs" / "results.sqlite").exists()
    assert demo_cmd.demo_folder(folder, force=True) is False  # a new tour
    assert (folder / "runs" / "results.sqlite").exists()  # replaced only once it has finished
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"does not write \(notes.txt\)"):
        demo_cmd.demo_folder(folder, force=True)


def test_an_interrupted_forced_demo_keeps_the_earlier_one(quick_demo, monkeypatch):
    """--force used to delete the demo folder first; Ctrl-C then left nothing."""
    import poisonlab.reports.demo

    out, first = quick_demo
    assert first.exit_code == 0, first.output
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))

    def interrupted_tour(folder, **kwargs):
        (folder / "runs").mkdir()
        (folder / "runs" / "half.txt").write_text("half done")
        raise KeyboardInterrupt

    monkeypatch.setattr(poisonlab.reports.demo, "run_demo", interrupted_tour)
    result = runner.invoke(app, ["demo", "--out", str(out), "--force", "--quiet"])
    assert result.exit_code == 130
    text = " ".join(result.output.split())
    assert f"interrupted: the earlier results in {out} are unchanged" in text
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]


def test_stage_lines_stay_whole_in_a_log(tmp_path, monkeypatch):
    """Off a terminal (a log, CI) each stage is one line; "2/3 Feature collision: ... retrain"
    was broken at 80 columns before "per target, filter"."""
    import poisonlab.reports.demo
    from poisonlab.experiments.runner import RunInterrupted, RunSummary

    stage = "2/3 Feature collision: train cnn-small with CE and LGM, craft poisons, " * 2

    def interrupted_tour(folder, **kwargs):
        kwargs["log"](stage.strip())
        raise RunInterrupted(RunSummary("demo", str(folder), "local", (), 0.0, interrupted=True))

    monkeypatch.setattr(poisonlab.reports.demo, "run_demo", interrupted_tour)
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "d")], terminal_width=80)
    assert result.exit_code == 130, result.output
    assert stage.strip() in result.output.splitlines()
