"""The experiment tasks end to end on tiny digits cells, model reuse through the cache, artifacts,
and every shipped config (experiments/*.toml, experiments/ci/*.toml) parsed, expanded and planned."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import poisonlab.experiments.tasks  # noqa: F401  (fills TASKS)
from poisonlab.defenses import DetectionResult
from poisonlab.errors import ConfigError
from poisonlab.experiments.cache import DirectoryCache
from poisonlab.experiments.config import load_config
from poisonlab.experiments.grid import expand
from poisonlab.experiments.tasks_backdoor import plan_backdoor
from poisonlab.experiments.tasks_base import TASKS, CellSpec, TaskContext
from poisonlab.experiments.tasks_collision import plan_collision
from poisonlab.experiments.tasks_common import heatmap_arrays, load_split

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
SHIPPED = sorted(EXPERIMENTS.glob("*.toml")) + sorted((EXPERIMENTS / "ci").glob("*.toml"))
PLANS: dict[str, Callable[[CellSpec], Any]] = {
    "backdoor": plan_backdoor,
    "feature-collision": plan_collision,
}
RATE_SUFFIXES = ("acc", "tpr", "tnr", "precision", "auroc", "aupr", "aupr_in", "tpr_at_fpr")
DATA = {"source": "digits", "limit": 300}


class CountingCache(DirectoryCache):
    """The runner's directory cache, recording every entry it had to create."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.created: list[str] = []

    def get_or_create(self, kind: str, key: Any, create: Callable[[Path], None]) -> Path:
        def counted(folder: Path) -> None:
            self.created.append(kind)
            create(folder)

        return super().get_or_create(kind, key, counted)


def run_cell(kind: str, params: dict[str, Any], root: Path, cache: CountingCache, name: str):
    """Run one cell with a real TaskContext; returns (metrics, cell folder, log lines)."""
    lines: list[str] = []
    cell = CellSpec("test", kind, {"seed": 0, "repeat": 0, **params})
    context = TaskContext(root / name, cache, device="cpu", log=lines.append)
    return TASKS.get(kind)(cell, context), root / name, lines


def check_ranges(metrics: dict[str, float | int]) -> None:
    """Rates are fractions in [0, 1] or NaN; counts are non-negative integers."""
    for key, value in metrics.items():
        assert isinstance(value, int | float), key
        rate = key.endswith(RATE_SUFFIXES) or "accuracy" in key or "success" in key
        if rate or key.endswith(("asr", "masr", "fraction")):
            assert math.isnan(value) or 0.0 <= value <= 1.0, (key, value)
        if key.endswith(("seconds", "l2_mean", "l2_median", "linf_mean", "iterations_mean")):
            assert value >= 0, (key, value)
        if key.endswith(("n_poison", "n_train", "n_flagged", "n_analysed")):
            assert isinstance(value, int) and value >= 0, (key, value)


def backdoor_params(**changes: Any) -> dict[str, Any]:
    """Subedar et al. 2019 on a tiny digits subset: BadNets all-to-all at 20%, 1 epoch."""
    params: dict[str, Any] = {
        "data": dict(DATA),
        "model": {"arch": "cnn-small"},
        "train": {"epochs": 1},
        "attack": {"name": "badnets", "rate": 0.2},
        "defenses": [
            {"name": "dnn-uncertainty"},
            {"name": "deep-features"},
            {"name": "bnn", "samples": 3, "epochs": 1},
            {"name": "activation-clustering"},
        ],
        "task": {"table1": True, "examples": 4},
    }
    params.update(changes)
    return params


@pytest.fixture(scope="module")
def backdoor_run(tmp_path_factory):
    """One seed-002 cell, then a second one with the same models and other defenses."""
    root = tmp_path_factory.mktemp("backdoor")
    cache = CountingCache(root / "cache")
    first = run_cell("backdoor", backdoor_params(), root, cache, "first")
    trained_first = list(cache.created)
    second_params = backdoor_params(defenses=[{"name": "spectral-signatures"}], task={})
    second = run_cell("backdoor", second_params, root, cache, "second")
    return first, second, trained_first, cache.created[len(trained_first) :]


def test_backdoor_cell_returns_the_documented_metrics(backdoor_run):
    (metrics, _, log), *_ = backdoor_run
    check_ranges(metrics)
    for key in ("attack.clean_accuracy", "attack.asr", "model.clean_accuracy", "model.asr"):
        assert key in metrics
    assert "attack.masr" not in metrics  # all-to-all has no single target
    split = load_split_for(DATA)
    assert metrics["attack.n_train"] == len(split.train) + metrics["attack.n_poison"]
    # Subedar et al. 2019: poisons are 20% of the poisoned training set (rounded per class)
    assert metrics["attack.n_poison"] / metrics["attack.n_train"] == pytest.approx(0.2, abs=0.01)
    for name in ("dnn-uncertainty", "deep-features", "bnn", "activation-clustering"):
        for suffix in (*RATE_SUFFIXES, "n_flagged", "n_analysed", "n_poison", "seconds"):
            assert f"defense.{name}.{suffix}" in metrics
        assert metrics[f"defense.{name}.n_poison"] == metrics["attack.n_poison"]
    for model in ("dnn", "df", "bnn"):
        for part in ("clean", "triggered"):
            assert f"accuracy.{model}.{part}" in metrics
        for stat in ("auroc", "aupr", "aupr_in"):
            assert 0.0 <= metrics[f"val.{model}.{stat}"] <= 1.0
    # one count ratio in float64 and float32, from logits batched differently (the smallest top-2
    # logit gap, 2e-5, is far above float32 rounding, so the argmaxes agree)
    assert metrics["accuracy.dnn.clean"] == pytest.approx(
        metrics["attack.clean_accuracy"], rel=1e-6
    )
    assert metrics["accuracy.dnn.triggered"] == pytest.approx(metrics["attack.asr"], rel=1e-6)
    assert metrics["val.n_clean"] == metrics["val.n_triggered"] == len(split.test)
    assert any("training the victim" in line for line in log)


def load_split_for(data: dict[str, Any]):
    from poisonlab.experiments.tasks_common import DataSpec

    return load_split(DataSpec.from_section(data))


def test_backdoor_artifacts_hold_the_documented_arrays(backdoor_run):
    (metrics, folder, _), *_ = backdoor_run
    scores = np.load(folder / "scores.npz")
    n = metrics["attack.n_train"]
    assert (
        scores["is_poison"].shape == (n,)
        and scores["is_poison"].sum() == metrics["attack.n_poison"]
    )
    assert scores["labels"].shape == scores["analysed"].shape == (n,)
    for name in ("dnn-uncertainty", "deep-features", "bnn", "activation-clustering"):
        assert scores[f"score__{name}"].dtype == np.float64
        assert scores[f"flagged__{name}"].sum() == metrics[f"defense.{name}.n_flagged"]
    assert set(np.unique(scores["val_is_triggered"])) == {False, True}
    examples = np.load(folder / "examples.npz")
    assert examples["poison"].shape == examples["clean"].shape == (4, 1, 8, 8)
    # BadNets all-to-all: each poison is its source image with the trigger, relabelled y + 1
    assert np.array_equal(examples["poison_labels"], (examples["clean_labels"] + 1) % 10)
    assert not np.array_equal(examples["poison"], examples["clean"])
    assert examples["triggered"].shape == (4, 1, 8, 8)
    assert not (folder / "heatmaps.npz").exists()


def test_a_second_cell_with_the_same_models_reuses_them(backdoor_run):
    _, (metrics, _, log), trained_first, trained_second = backdoor_run
    assert trained_first == ["model", "model"]  # the clean model and the victim
    assert trained_second == []
    assert sum("reusing the cached" in line for line in log) == 2
    assert "defense.spectral-signatures.auroc" in metrics
    assert not any(key.startswith(("accuracy.", "val.")) for key in metrics)


def test_zero_budget_is_a_clean_cell_on_the_clean_model(tmp_path):
    cache = CountingCache(tmp_path / "cache")
    params = backdoor_params(
        attack={"name": "badnets", "rate": 0.0}, defenses=[{"name": "dnn-uncertainty"}], task={}
    )
    metrics, folder, _ = run_cell("backdoor", params, tmp_path, cache, "zero")
    assert cache.created == ["model"]
    assert metrics["attack.n_poison"] == 0
    assert metrics["attack.clean_accuracy"] == metrics["model.clean_accuracy"]
    assert metrics["attack.asr"] == metrics["model.asr"]
    assert math.isnan(metrics["defense.dnn-uncertainty.auroc"])  # no poisons to find
    assert np.load(folder / "examples.npz")["poison"].shape[0] == 0


def test_label_consistent_cell_uses_the_clean_model_and_scores_the_target_class(tmp_path):
    cache = CountingCache(tmp_path / "cache")
    attack = {"name": "label-consistent", "target": 5, "target_rate": 0.33}
    attack |= {"trigger": "checkerboard", "amplitude": 64}
    defenses = [{"name": "activation-clustering", "classes": [5]}]
    params = backdoor_params(attack=attack, defenses=defenses, task={})
    metrics, folder, _ = run_cell("backdoor", params, tmp_path, cache, "lc")
    check_ranges(metrics)
    assert cache.created == ["model", "model"]
    split = load_split_for(DATA)
    n_target = int((split.train.labels == 5).sum())
    assert metrics["attack.n_poison"] == round(0.33 * n_target)
    assert metrics["attack.n_train"] == len(split.train)  # clean-label: poisons replace rows
    assert 0.0 <= metrics["attack.masr"] <= 1.0
    assert metrics["defense.activation-clustering.n_analysed"] == n_target
    scores = np.load(folder / "scores.npz")
    analysed = scores["analysed__activation-clustering"]
    assert np.all(scores["labels"][analysed] == 5)
    assert np.all(np.isnan(scores["score__activation-clustering"][~analysed]))


def test_model_free_defense_trains_nothing(tmp_path):
    cache = CountingCache(tmp_path / "cache")
    attack = {"name": "badnets", "source": 2, "target": 5, "target_rate": 0.33}
    attack |= {"trigger": "sticker", "position": "bottom-right"}
    params = backdoor_params(
        attack=attack,
        defenses=[{"name": "raw-clustering", "classes": [5], "reduce": "pca"}],
        task={"victim": False, "clean_model": False},
    )
    metrics, _, _ = run_cell("backdoor", params, tmp_path, cache, "raw")
    assert cache.created == []
    assert "attack.asr" not in metrics and "model.clean_accuracy" not in metrics
    assert metrics["defense.raw-clustering.n_poison"] == metrics["attack.n_poison"] > 0


def test_feature_collision_cell_end_to_end_and_cached(tmp_path):
    cache = CountingCache(tmp_path / "cache")
    params = {
        "data": dict(DATA),
        "model": {},
        "train": {"epochs": 1},
        "attack": {"num_targets": 4, "max_iter": 20},
        "defenses": [{"name": "lgm-likelihood"}],
        "task": {"finetune_epochs": 1, "examples": 3},
    }
    metrics, folder, _ = run_cell("feature-collision", params, tmp_path, cache, "fc")
    check_ranges(metrics)
    assert cache.created == ["model", "model"]  # the CE and the LGM model
    assert metrics["attack.n_poison"] == 4
    for model in ("ce", "lgm"):
        for key in ("success_before", "success_rate", "l2_mean", "l2_mean_255", "ratio_median"):
            assert f"collision.{model}.{key}" in metrics
        assert metrics[f"collision.{model}.l2_mean"] > 0
    assert metrics["attack.success_rate"] == metrics["collision.ce.success_rate"]
    assert metrics["defense.lgm-likelihood.n_poison"] == 4
    assert 0.0 <= metrics["defense.lgm-likelihood.auroc_train_clean"] <= 1.0
    assert 0.0 <= metrics["defense.lgm-likelihood.success_with_filter"] <= 1.0

    n = metrics["attack.n_train"]
    features = np.load(folder / "features.npz")
    assert features["features"].shape == (n, 2) and features["is_poison"].sum() == 4
    assert features["means"].shape == (10, 2) and features["target_features"].shape == (4, 2)
    scores = np.load(folder / "scores.npz")
    assert scores["score__lgm-likelihood"].shape == (n,)
    assert scores["score_train_clean__lgm-likelihood"].shape == (len(load_split_for(DATA).train),)
    examples = np.load(folder / "examples.npz")
    for key in ("base", "target", "poison_ce", "poison_lgm"):
        assert examples[key].shape == (3, 1, 8, 8)
    assert not np.array_equal(examples["poison_ce"], examples["base"])

    again, _, _ = run_cell("feature-collision", params, tmp_path, cache, "fc-again")
    assert cache.created == ["model", "model"]  # both models came from the cache
    assert again["collision.ce.l2_mean"] == metrics["collision.ce.l2_mean"]


def test_feature_collision_one_shot_protocol_filters_the_ce_victim_too(tmp_path):
    cache = CountingCache(tmp_path / "cache")
    params = {
        "data": dict(DATA),
        "model": {"arch": "cnn-small"},
        "train": {"epochs": 1},
        "attack": {"num_targets": 3, "max_iter": 5, "beta_scaling": "none", "beta0": 0.25},
        "task": {
            "preset": "none",
            "protocol": "one-shot",
            "finetune_epochs": 2,
            "drop_targets": True,
            "filter_ce": True,
        },
    }
    metrics, _, lines = run_cell("feature-collision", params, tmp_path, cache, "one-shot")
    check_ranges(metrics)
    assert any("CE model's D_t" in line for line in lines)
    for prefix in ("defense.lgm-likelihood.", "defense.lgm-likelihood.ce."):
        assert metrics[prefix + "n_poison"] == 3
        for key in ("success_with_filter", "n_poison_removed", "n_clean_removed", "auroc"):
            assert prefix + key in metrics, prefix + key
    assert metrics["attack.success_rate"] == metrics["collision.ce.success_rate"]
    assert metrics["collision.ce.l2_relative_mean"] > 0
    n_clean = metrics["defense.lgm-likelihood.n_analysed"] - 3
    assert n_clean == len(load_split_for(DATA).test) - 3  # the targets left D_t


def test_heatmap_artifact_holds_the_maps_a_defense_exposes(blobs):
    n = len(blobs)
    scores = torch.full((n,), float("nan"), dtype=torch.float64)
    analysed = blobs.labels == 1
    scores[analysed] = torch.arange(int(analysed.sum()), dtype=torch.float64)
    rows = analysed.nonzero().flatten()[-3:].flip(0)  # the three highest scores, highest first
    maps = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    top = {"index": rows.tolist(), "score": scores[rows].tolist(), "heatmaps": maps.tolist()}
    hc = DetectionResult("hc", {}, scores, analysed, analysed, {}, 0.0, {"top_heatmaps": top})
    ac = DetectionResult("ac", {}, scores, analysed, analysed, {}, 0.0)
    is_poison = torch.zeros(n, dtype=torch.bool)
    is_poison[rows[0]] = True
    arrays = heatmap_arrays(blobs, is_poison, {"hc": hc, "ac": ac})
    assert arrays["index__hc"].tolist() == rows.tolist()
    assert torch.allclose(arrays["heatmaps__hc"], maps)
    assert torch.equal(arrays["images__hc"], blobs.images[rows])
    assert arrays["is_poison__hc"].tolist() == [True, False, False]
    assert not any(key.endswith("__ac") for key in arrays)


@pytest.mark.parametrize(
    ("trigger", "message"),
    [
        (  # the sticker's default window, on 8×8 digits
            {"trigger": "sticker"},
            r"^\[attack\] badnets: window = \[\[10, 15\]\] \(rows, cols; the sticker trigger's "
            r"default\) does not fit 8×8 images",
        ),
        (
            {"position": "top-left", "offset": 9},
            r"^\[attack\] badnets: offset = 9 puts the 3×3 trigger outside 8×8 images at "
            r'position = "top-left": expected an offset in \[0, 5\]',
        ),
    ],
)
def test_a_trigger_that_does_not_fit_fails_before_training_as_the_config_writes_it(
    tmp_path: Path, trigger: dict[str, Any], message: str
) -> None:
    """It said `window=(10, 15)`, as Python writes it, once a clean model had trained."""
    cache = CountingCache(tmp_path / "cache")
    params = backdoor_params(attack={"name": "badnets", "rate": 0.2, **trigger})
    with pytest.raises(ConfigError, match=message):
        run_cell("backdoor", params, tmp_path, cache, "misfit")
    assert cache.created == []


def test_a_trigger_keyword_the_plan_refuses_is_named_as_the_config_writes_it() -> None:
    attack = {"name": "badnets", "rate": 0.2, "position": "top-left", "window": [4, 5]}
    cell = CellSpec("test", "backdoor", {"seed": 0, "repeat": 0, **backdoor_params(attack=attack)})
    with pytest.raises(ConfigError) as caught:
        plan_backdoor(cell)
    assert str(caught.value) == (
        '[attack] badnets: window = [[4, 5]] applies to position = "random" only, not position '
        '= "top-left": expected no window, or position = "random"'
    )


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("backdoor", backdoor_params(task={"tabel1": True}), "unknown key 'tabel1'"),
        ("backdoor", backdoor_params(data={"source": "digits", "limt": 3}), "'limt'"),
        ("backdoor", backdoor_params(attack={"name": "badnets", "rates": 0.1}), "rates"),
        ("feature-collision", {"task": {"protocol": "frozen"}}, "protocol"),
        ("feature-collision", {"attack": {"name": "badnets"}}, "feature-collision"),
    ],
)
def test_bad_parameters_name_the_key(kind, params, message):
    cell = CellSpec("test", kind, {"seed": 0, "repeat": 0, **params})
    with pytest.raises(ConfigError, match=message):
        PLANS[kind](cell)


def test_the_configs_are_shipped():
    names = {path.stem for path in EXPERIMENTS.glob("*.toml")}
    assert {"yaseen2020", "subedar2019-table1-2-3"} <= names
    assert {f"schulth2022-table{i}" for i in range(1, 6)} <= names
    assert {path.stem for path in (EXPERIMENTS / "ci").glob("*.toml")} >= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_config_parses_expands_and_plans(path):
    config = load_config(path)
    cells = expand(config)
    assert cells and all(cell.kind == config.kind for cell in cells)
    assert config.paper.get("table") in {
        "seed000",
        *(f"seed002-table{i}" for i in (1, 2, 3)),
        *(f"seed004-table{i}" for i in range(1, 6)),
    }
    text = path.read_text()
    assert text.startswith("#") and "run time" in text.lower()
    for cell in cells:
        PLANS[config.kind](cell)
    if path.parent.name == "ci":
        data = cells[0].section("data")
        assert data["source"] == "digits" and data.get("limit", 10**9) <= 600
        for cell in cells:
            task = cell.section("task")
            trains = task.get("victim", True) or task.get("clean_model", True)
            assert not trains or cell.section("train").get("epochs", 99) <= 2


def test_defense_entries_get_the_cells_seed_the_papers_rule_and_a_class_list():
    """[[defenses]] entries: the cell's seed unless the entry sets one, the papers' rule unless
    it sets a threshold, and a single class number as a list."""
    from poisonlab.defenses import Contamination, PaperRule
    from poisonlab.experiments.tasks_common import build_detectors

    ac, ss, raw = build_detectors(
        [
            {"name": "activation-clustering", "classes": 5},
            {"name": "spectral-signatures"},
            {"name": "raw-clustering", "seed": 2, "threshold": "contamination:0.1"},
        ],
        seed=7,
    )
    assert (ac.seed, raw.seed) == (7, 2) and ac.classes == (5,)
    assert isinstance(ac.threshold, PaperRule) and isinstance(ss.threshold, PaperRule)
    assert raw.threshold == Contamination(0.1)
