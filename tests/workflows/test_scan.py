"""The library-level scan: needs checking and skipping, models, the combined decision, the union
rule and the files written.

Everything runs on the 8×8 ``blobs`` images with an untrained (seeded) cnn-small unless a test is
about training, so each test takes about a second.
"""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch

from poisonlab.data import load_dataset
from poisonlab.defenses import DETECTORS, Detector, Evidence, ScoreSet
from poisonlab.errors import ConfigError, DataError
from poisonlab.models import ModelConfig, build_model
from poisonlab.workflows.scan import default_architecture, resolve_defenses, scan
from poisonlab.workflows.scan_output import write_scan
from tests.conftest import blobs_dataset


def tiny_model(head: str = "softmax"):
    return build_model(ModelConfig("cnn-small", 1, 8, 8, 3, head=head, feature_dim=8), seed=0)


@pytest.fixture
def data():
    return blobs_dataset(n_per_class=40, seed=0)


@pytest.fixture
def holdout():
    """Clean held-out blobs with ids of their own (the default ids 0..N-1 would be the suspect
    data's, and every scan would warn that the two share samples)."""
    held = blobs_dataset(n_per_class=20, seed=1).renamed("held")
    return dataclasses.replace(held, ids=np.array([f"held-{i}" for i in range(len(held))]))


def test_union_rule_and_outputs(tmp_path, data, holdout):
    result = scan(
        data,
        defenses="deep-features,spectral-signatures",
        holdout=holdout,
        model=tiny_model(),
        threshold="contamination:0.1",
        decision="union",
    )
    assert [o.name for o in result.ran] == ["deep-features", "spectral-signatures"]
    union = result.ran[0].result.flagged | result.ran[1].result.flagged
    assert torch.equal(result.flagged_any, union)
    assert int(union.sum()) > 0
    paths = write_scan(result, tmp_path)
    with paths["scores"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(data)
    assert rows[5]["id"] == data.ids[5] and int(rows[5]["label"]) == int(data.labels[5])
    flags = np.array([int(r["deep-features_flagged"]) for r in rows], dtype=bool)
    assert np.array_equal(flags, result.ran[0].result.flagged.numpy())
    clean = load_dataset(paths["clean"])
    assert len(clean) == len(data) - int(union.sum())
    assert list(clean.ids) == list(data.ids[~union.numpy()])
    summary = json.loads(paths["summary"].read_text())
    df = summary["defenses"]["deep-features"]
    assert df["flagged"] == int(result.ran[0].result.flagged.sum())
    assert sum(df["flagged_per_class"]) == df["flagged"]
    assert df["parameters"]["covariance"] == "full"
    assert summary["dataset"]["size"] == len(data)
    assert summary["models"][0]["source"] == "given"
    assert summary["clean"]["removed"] == int(union.sum())
    # lines end in \n, as the project's other CSVs: with csv's \r\n, `grep ',1$' scores.csv`
    # (the removed files of an image folder) found nothing, nor awk's last field == 1
    text = paths["scores"].read_bytes().decode()
    assert "\r" not in text
    removed = [line.split(",")[1] for line in text.splitlines() if line.endswith(",1")]
    assert removed == list(data.ids[union.numpy()])


def planted(data, count: int = 6):
    """``data`` with ``count`` class-0 images carrying a corner trigger, labelled 1, appended."""
    from poisonlab.attacks import build_attack
    from poisonlab.seeding import make_generator

    attack = build_attack("badnets", source=0, target=1, count=count, trigger="square", size=2)
    return attack.poison(data, generator=make_generator(0))


def test_decision_names_the_planted_class_and_removes_only_its_poisons(tmp_path):
    # 100 per class: raw clustering judges only classes of at least verdicts.MIN_CLASS_SIZE
    poisoned = planted(blobs_dataset(n_per_class=100, seed=0))
    result = scan(
        poisoned.dataset, defenses="raw-clustering,spectral-signatures,dnn-uncertainty",
        model=tiny_model(),
    )  # fmt: skip
    decision = result.decision
    assert decision.poisoned_classes == [1] and decision.rule == "verdict"
    assert decision.members == ["raw-clustering", "spectral-signatures"]
    assert "dnn-uncertainty" in decision.excluded
    assert torch.equal(decision.removed, poisoned.is_poison)
    paths = write_scan(result, tmp_path / "scan" / "out")  # created, parents included
    with paths["scores"].open() as handle:
        rows = list(csv.DictReader(handle))
    removed = np.array([r["removed"] == "1" for r in rows])
    assert np.array_equal(removed, poisoned.is_poison.numpy())
    assert all(0.0 <= float(r["combined_score"]) <= 1.0 for r in rows)
    summary = json.loads(paths["summary"].read_text())
    assert (
        summary["verdict"]
        == "class 1 looks poisoned: 6 suspicious samples; classes 0, 2 look clean"
    )
    assert result.verdict == summary["verdict"]  # the same line from Python, without the files
    # issue 11: the verdict and the decision lead, then per defense; provenance comes last
    assert list(summary)[:4] == ["verdict", "decision", "clean", "defenses"]
    assert repr(result) == (
        f"ScanResult({poisoned.dataset!r}; ran: dnn-uncertainty, raw-clustering, "
        f"spectral-signatures; removed 6; verdict: {summary['verdict']!r})"
    )
    assert summary["decision"]["poisoned_classes"] == [1]
    assert "raw-clustering" in summary["decision"]["per_class"]["1"]["named_by"]
    assert summary["defenses"]["dnn-uncertainty"]["role"].startswith("reported only")
    raw = summary["defenses"]["raw-clustering"]
    assert [v["poisoned"] for v in raw["verdicts"]] == [False, True, False]
    assert raw["verdicts"][1]["stage"] == 1  # which stage judged each class reaches summary.json
    assert {v["stage"] for v in raw["verdicts"]} <= {1, 2}
    assert raw["threshold"]["per_class"]["1"]["flagged"] == 6
    assert raw["threshold"]["per_class"]["0"]["cutoff"] is None
    assert summary["clean"]["removed"] == 6 and summary["clean"]["union_would_remove"] >= 6
    assert len(load_dataset(paths["clean"])) == len(poisoned.dataset) - 6
    from poisonlab.reports.html import render
    from poisonlab.reports.scan_report import scan_page

    page = render(scan_page(paths["summary"].parent))
    assert "Per-class verdicts" in page and summary["verdict"] in page
    assert "Combined score of the classes named poisoned" in page
    # every package that can change the numbers is recorded, as in experiment cells: the
    # report's "results produced with" column once read "-" for numpy, scikit-learn, POT...
    from poisonlab.versions import package_versions

    assert summary["versions"] == json.loads(json.dumps(package_versions()))
    assert f"<td>{package_versions()['numpy']}</td><td>{package_versions()['numpy']}</td>" in page


def test_clean_data_names_no_class_and_keeps_everything(data):
    result = scan(data, defenses="raw-clustering,spectral-signatures", model=tiny_model())
    assert result.decision.poisoned_classes == [] and not result.removed.any()
    assert len(result.clean()) == len(data)


def test_user_thresholds_cut_the_combined_score(data, holdout):
    """fpr:0.1 removes the samples whose combined score exceeds the 90th percentile of the
    held-out samples' combined scores, each member scoring them as new samples."""
    from poisonlab.defenses import build_detector
    from poisonlab.defenses.fusion import holdout_combined_score

    poisoned = planted(data)
    model = tiny_model()
    result = scan(
        poisoned.dataset, defenses="raw-clustering,spectral-signatures", holdout=holdout,
        model=model, threshold="fpr:0.1",
    )  # fmt: skip
    decision = result.decision
    assert decision.rule == "fpr:0.1" and decision.poisoned_classes == []
    evidence = Evidence(poisoned.dataset, model, device="cpu")
    members = [build_detector("raw-clustering", seed=0), build_detector("spectral-signatures")]
    fitted = [m.fit(evidence) for m in members]
    held = holdout_combined_score(
        [m.result for m in fitted], poisoned.dataset.labels,
        [m.score_samples(holdout) for m in fitted], holdout.labels,
    )  # fmt: skip
    cut = float(torch.quantile(held, 0.9))
    assert torch.equal(decision.removed, decision.score > cut)
    assert 0 < int(decision.removed.sum()) < len(poisoned.dataset)
    with pytest.raises(ConfigError, match="decision"):
        scan(data, defenses="raw-clustering", model=tiny_model(), decision="majority")


def test_seed_and_classes_reach_the_detectors(data):
    """scan's seed goes to every detector that takes one unless its params set one, and its
    classes to every per-class detector."""
    result = scan(
        data, defenses="activation-clustering,raw-clustering,spectral-signatures",
        model=tiny_model(), seed=7, classes=[1], params={"raw-clustering": {"seed": 2}},
    )  # fmt: skip
    ran = {o.name: o.result for o in result.ran}
    assert ran["activation-clustering"].params["seed"] == 7
    assert ran["raw-clustering"].params["seed"] == 2
    for name, outcome in ran.items():
        assert torch.equal(outcome.analysed, data.labels == 1), name


def test_skips_unmet_needs_with_reasons(data):
    result = scan(data, defenses="deep-features,lgm-likelihood,raw-clustering", model=tiny_model())
    reasons = {o.name: o.skipped for o in result.outcomes}
    assert "held-out" in reasons["deep-features"]
    assert "LGM" in reasons["lgm-likelihood"]
    assert reasons["raw-clustering"] is None
    with pytest.raises(ConfigError, match="no defense could run"):
        scan(data, defenses="deep-features", model=tiny_model())


def test_runtime_failure_becomes_a_skip(data, holdout):
    two_classes = holdout.subset(holdout.labels < 2)  # deep-features cannot model class 2
    result = scan(
        data, defenses="deep-features,raw-clustering", holdout=two_classes, model=tiny_model()
    )
    reasons = {o.name: o.skipped for o in result.outcomes}
    assert "class 2" in reasons["deep-features"]
    assert reasons["raw-clustering"] is None
    with pytest.raises(ConfigError, match="clean held-out set"):  # refused before training
        scan(data, defenses="raw-clustering", threshold="fpr:0.05")


def test_given_model_is_left_unchanged(data, holdout):
    model = tiny_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scan(data, defenses="deep-features", holdout=holdout, model=model)
    assert model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_trains_default_and_lgm_models_when_none_given(data):
    small = data.subset(torch.arange(0, len(data), 2))
    result = scan(small, defenses="lgm-likelihood,spectral-signatures", epochs=1, seed=3)
    used = {m.role: m for m in result.models}
    assert used["model"].arch == "cnn-small" and used["model"].head == "softmax"
    assert used["lgm-model"].arch == "lgm-net" and used["lgm-model"].head == "lgm"
    assert used["lgm-model"].training["epochs_run"] == 1
    roles = {o.name: o.model_role for o in result.ran}
    assert roles == {"lgm-likelihood": "lgm-model", "spectral-signatures": "model"}


def test_a_given_lgm_model_serves_the_lgm_detectors_beside_the_model(data):
    lgm = tiny_model("lgm")
    result = scan(data, defenses="lgm-likelihood,spectral-signatures", model=tiny_model(),
                  lgm_model=lgm)  # fmt: skip
    assert [(m.role, m.source, m.head) for m in result.models] == [
        ("model", "given", "softmax"),
        ("lgm-model", "given", "lgm"),
    ]  # nothing trained
    roles = {o.name: o.model_role for o in result.ran}
    assert roles == {"lgm-likelihood": "lgm-model", "spectral-signatures": "model"}
    alone = scan(data, defenses="lgm-likelihood", model=lgm)  # the same network as the model
    assert torch.equal(result.ran[0].result.scores, alone.ran[0].result.scores)
    with pytest.raises(ConfigError, match="`lgm_model` is a cnn-small with a softmax head"):
        scan(data, defenses="lgm-likelihood", lgm_model=tiny_model())
    four = build_model(ModelConfig("cnn-small", 1, 8, 8, 4, head="lgm", feature_dim=8), seed=0)
    with pytest.raises(ConfigError, match=r"`lgm_model` does not fit .* num_classes 4 \(data: 3"):
        scan(data, defenses="lgm-likelihood", lgm_model=four)


def test_no_model_is_trained_when_no_defense_needs_one(data):
    result = scan(data, defenses="raw-clustering")
    assert result.models == ()


def test_a_new_detector_joins_without_changes(monkeypatch, data):
    """A detector with its own cached representation (as BNN and heatmaps will be) just runs."""

    class Extra(Detector):
        name = "test-extra"

        def _score(self, evidence: Evidence) -> ScoreSet:
            norms = evidence.cached(
                ("test-norms", "data"), lambda: evidence.pixels().norm(dim=1).double()
            )
            return ScoreSet(norms, norms > norms.median())

    monkeypatch.setitem(DETECTORS._items, "test-extra", Extra)
    fast = {
        "heatmap-clustering": {"max_iter": 0, "max_points": 16, "epsilon": 0.1},
        "bnn": {"epochs": 1, "samples": 4},
    }
    result = scan(data, defenses="all", model=tiny_model(), params=fast)
    outcome = {o.name: o for o in result.outcomes}["test-extra"]
    assert outcome.result is not None
    expected = data.images.flatten(1).norm(dim=1).double()
    assert torch.allclose(outcome.result.scores, expected)


def test_bad_inputs_are_refused(data, holdout):
    with pytest.raises(ConfigError, match="unknown defense"):
        scan(data, defenses="no-such-defense", model=tiny_model())
    with pytest.raises(ConfigError, match="not selected"):
        scan(data, defenses="raw-clustering", params={"deep-features": {"fusion": "max"}})
    with pytest.raises(ConfigError, match="does not take"):
        scan(data, defenses="deep-features", holdout=holdout, params={"deep-features": {"k": 1}})
    with pytest.raises(ConfigError, match="class 7"):
        scan(data, defenses="raw-clustering", classes=[7])
    wrong = blobs_dataset(n_per_class=5, num_classes=2)
    with pytest.raises(DataError, match="does not match"):
        scan(data, defenses="deep-features", holdout=wrong, model=tiny_model())


def test_helpers():
    assert resolve_defenses("all") == sorted(DETECTORS.names())
    assert resolve_defenses(["spectral-signatures", "deep-features"]) == [
        "deep-features",
        "spectral-signatures",
    ]
    assert default_architecture((1, 28, 28)) == "cnn-small"
    assert default_architecture((3, 64, 64)) == "resnet20"
    assert default_architecture((1, 28, 28), lgm=True) == "lgm-net"
    assert default_architecture((1, 6, 6), lgm=True) == "cnn-small"


def test_a_trained_models_evidence_carries_its_recipe(monkeypatch, data):
    """Activation clustering's confirming retraining repeats the recipe the scan trained with:
    the trained model's Evidence holds it; a given model's holds none (default recipe)."""
    import poisonlab.workflows.scan as scan_module

    seen = []
    real = scan_module.Evidence

    def spy(*args, **kwargs):
        seen.append(kwargs.get("recipe"))
        return real(*args, **kwargs)

    monkeypatch.setattr(scan_module, "Evidence", spy)
    small = data.subset(torch.arange(0, len(data), 2))
    result = scan(small, defenses="spectral-signatures", epochs=1, seed=3)
    assert seen[-1] is not None and seen[-1].epochs == 1 and seen[-1].seed == 3
    assert seen[-1].to_dict() == result.models[0].training["recipe"]
    scan(data, defenses="spectral-signatures", model=tiny_model())
    assert seen[-1] is None


def test_large_softmax_scans_train_in_bfloat16_where_it_is_native(monkeypatch):
    import poisonlab.workflows.scan as scan_module
    from poisonlab.train.recipes import LARGE

    big = blobs_dataset(n_per_class=LARGE // 3 + 1, seed=0)
    cpu = torch.device("cpu")
    for native in (True, False):
        monkeypatch.setattr(scan_module, "fast_bfloat16", lambda device, native=native: native)
        _, recipe = scan_module.default_setup(big, device=cpu)
        assert recipe.precision == ("bfloat16" if native else "float32")
        _, lgm = scan_module.default_setup(big, head="lgm", device=cpu)
        assert lgm.precision == "float32"  # LGM heads stay float32
    _, small = scan_module.default_setup(blobs_dataset(), device=cpu)
    assert small.precision == "float32"


def test_an_explicit_precision_overrides_the_automatic_choice(monkeypatch):
    import poisonlab.workflows.scan as scan_module
    from poisonlab.train.recipes import LARGE

    monkeypatch.setattr(scan_module, "fast_bfloat16", lambda device: True)
    big = blobs_dataset(n_per_class=LARGE // 3 + 1, seed=0)
    cpu = torch.device("cpu")
    _, kept = scan_module.default_setup(big, device=cpu, precision="float32")
    assert kept.precision == "float32" and kept.epochs == 2  # still the short recipe
    _, forced = scan_module.default_setup(blobs_dataset(), device=cpu, precision="bfloat16")
    assert forced.precision == "bfloat16"
    _, lgm = scan_module.default_setup(big, head="lgm", device=cpu, precision="bfloat16")
    assert lgm.precision == "float32"  # LGM heads stay float32 whatever is asked
    with pytest.raises(ConfigError, match="precision"):
        scan_module.default_setup(big, device=cpu, precision="half")
    with pytest.raises(ConfigError, match="precision"):
        scan(blobs_dataset(), defenses="spectral-signatures", precision="fp16")
