"""Fake runs for report tests: a real results store with hand-made cells, and cell artifacts.

The store is the runner's own :class:`~poisonlab.experiments.store.Store`, written the way the
runner writes it (record_experiment, sync_grid, finish), so the tables read exactly what a real
run leaves; the metrics are chosen by hand so means and spreads are known answers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from poisonlab.experiments.store import NewCell, Store
from poisonlab.experiments.tasks_base import stable_hash


def add_experiment(
    runs: Path,
    name: str,
    cells: Sequence[tuple[Mapping[str, Any], Mapping[str, float]]],
    *,
    paper_table: str | None = None,
    kind: str = "backdoor",
    status: str = "done",
) -> list[str]:
    """Write an experiment and its (params, metrics) cells into RUNS/results.sqlite.

    Also writes RUNS/<name>/config.json and a cell.json per cell, as the runner does; returns the
    cell keys in order.
    """
    folder = runs / name
    folder.mkdir(parents=True, exist_ok=True)
    config = {"name": name, "kind": kind, "description": f"test {name}", "paper": {}}
    if paper_table:
        config["paper"] = {"table": paper_table}
    (folder / "config.json").write_text(
        json.dumps({"config": config, "config_hash": "h", "versions": {"poisonlab": "0.1.0"}})
    )
    keys, news = [], []
    for params, _ in cells:
        key = stable_hash({"kind": kind, "params": dict(params)})
        keys.append(key)
        axes = {k: params.get(k) for k in ("seed", "repeat")}
        news.append(NewCell(key, kind, f"seed={params.get('seed')}", dict(params), axes))
        (folder / key).mkdir(exist_ok=True)
        (folder / key / "cell.json").write_text(
            json.dumps({"experiment": name, "kind": kind, "key": key, "params": dict(params)})
        )
    with Store(runs / "results.sqlite") as store:
        store.record_experiment(
            name, kind=kind, config_hash="h", config=config, paper_table=paper_table
        )
        store.sync_grid(name, "h", news)
        for key, (_, metrics) in zip(keys, cells, strict=True):
            store.finish(
                name, key, status=status, metrics=dict(metrics), versions={"poisonlab": "0.1.0"}
            )
    return keys


def backdoor_params(**attack: Any) -> dict[str, Any]:
    """Cell params shaped like the backdoor task's (sections, defenses list, seed, repeat)."""
    seed = attack.pop("seed", 0)
    data = attack.pop("data", "digits")
    return {
        "data": {"source": data},
        "model": {"arch": "cnn-small"},
        "train": {},
        "attack": {"name": "badnets", **attack},
        "task": {},
        "defenses": [
            {"name": "activation-clustering"},
            {"name": "raw-clustering", "reduce": "pca"},
        ],
        "seed": seed,
        "repeat": 0,
    }


def write_artifacts(folder: Path, *, which: Sequence[str], n: int = 60, seed: int = 0) -> None:
    """Artifacts in the formats the tasks write (tasks_common.scores_arrays and friends)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    is_poison = np.zeros(n, dtype=bool)
    is_poison[::6] = True
    labels = rng.integers(0, 3, n)
    if "scores" in which:
        ac = rng.normal(size=n) + 3.0 * is_poison
        ac[labels == 2] = np.nan  # a per-class defense that did not analyse class 2
        arrays = {
            "is_poison": is_poison,
            "labels": labels,
            "analysed": np.ones(n, bool),
            "score__activation-clustering": ac,
            "flagged__activation-clustering": np.nan_to_num(ac) > 1.5,
            "analysed__activation-clustering": labels != 2,
            "score__spectral-signatures": rng.normal(size=n) + 1.0 * is_poison,
            "flagged__spectral-signatures": np.zeros(n, bool),
            "analysed__spectral-signatures": np.ones(n, bool),
        }
        np.savez_compressed(folder / "scores.npz", **arrays)
    if "features" in which:
        feats = rng.normal(size=(n, 2)) + labels[:, None] * 3.0
        np.savez_compressed(
            folder / "features.npz",
            features=feats,
            labels=labels,
            is_poison=is_poison,
            means=np.array([[0.0, 0.0], [3.0, 3.0], [6.0, 6.0]]),
            target_features=feats[:2],
        )
    if "heatmaps" in which:
        k = 6
        np.savez_compressed(
            folder / "heatmaps.npz",
            **{
                "index__activation-clustering": np.arange(k),
                "images__activation-clustering": rng.random((k, 3, 8, 8)).astype(np.float32),
                "heatmaps__activation-clustering": rng.normal(size=(k, 8, 8)),
                "scores__activation-clustering": np.linspace(3, 1, k),
                "is_poison__activation-clustering": np.arange(k) % 2 == 0,
                "labels__activation-clustering": np.arange(k) % 3,
            },
        )
    if "examples" in which:
        images = rng.random((4, 1, 8, 8)).astype(np.float32)
        np.savez_compressed(
            folder / "examples.npz",
            poison=images,
            poison_labels=np.arange(4),
            clean=images * 0.5,
            clean_labels=np.arange(4),
            triggered=images,
            triggered_labels=np.ones(4, dtype=np.int64),
        )


ALL_ARTIFACTS = ("scores", "features", "heatmaps", "examples")


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """A runs folder: experiment ``s002`` reproducing seed002-table2 (3 seeds × 2 rates on
    digits) with artifacts in its first cell, and experiment ``plain`` without a paper table."""
    root = tmp_path / "runs"
    cells = []
    for rate in (0.1, 0.2):
        for seed in (0, 1, 2):
            metrics = {
                "defense.dnn-uncertainty.aupr": 0.80 + 0.01 * seed,
                "defense.deep-features.aupr": 0.97 + 0.01 * seed,
                "defense.bnn.aupr": 0.90,
                "attack.asr": 1.0,
            }
            cells.append((backdoor_params(rate=rate, seed=seed), metrics))
    keys = add_experiment(root, "s002", cells, paper_table="seed002-table2")
    write_artifacts(root / "s002" / keys[0], which=ALL_ARTIFACTS)
    write_artifacts(root / "s002" / keys[1], which=("scores",), seed=1)
    plain = [
        (backdoor_params(target_rate=0.33, seed=s), {"attack.asr": 0.5 + 0.1 * s}) for s in (0, 1)
    ]
    add_experiment(root, "plain", plain)
    return root
