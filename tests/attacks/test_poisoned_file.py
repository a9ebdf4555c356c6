"""PoisonedDataset.load reads back what PoisonedDataset.save (and ``poisonlab attack``) wrote, and
refuses a file that is not a poisoned set with one line naming the file and the array."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from poisonlab.attacks import PoisonedDataset, build_attack
from poisonlab.data import save_npz
from poisonlab.errors import DataError
from tests.conftest import blobs_dataset


def poisoned_set(**params: object) -> PoisonedDataset:
    return build_attack("badnets", count=6, **params).poison(
        blobs_dataset(n_per_class=20, seed=0), generator=torch.Generator().manual_seed(0)
    )


@pytest.mark.parametrize(
    "params",
    [
        {},  # appended poisons
        {"mode": "replace", "trigger": "sticker", "window": (4, 6), "color": (200, 100, 0)},
    ],
)
def test_save_then_load_gives_the_same_set(tmp_path: Path, params: dict) -> None:
    poisoned = poisoned_set(**params)
    loaded = PoisonedDataset.load(poisoned.save(tmp_path / "poisoned.npz"))
    data, back = poisoned.dataset, loaded.dataset
    assert torch.equal(back.images, data.images) and torch.equal(back.labels, data.labels)
    assert list(back.ids) == list(data.ids) and back.class_names == data.class_names
    assert back.num_classes == data.num_classes
    for name in ("is_poison", "original_labels", "source_index"):
        assert torch.equal(getattr(loaded, name), getattr(poisoned, name)), name
        assert getattr(loaded, name).dtype == getattr(poisoned, name).dtype, name
    assert list(loaded.source_ids) == list(poisoned.source_ids)
    assert loaded.attack == "badnets" and loaded.n_poison == poisoned.n_poison == 6
    # params as JSON gives them (tuples as lists), and they rebuild the same attack
    assert loaded.params == json.loads(json.dumps(poisoned.params))
    assert build_attack(loaded.attack, **loaded.params).params() == poisoned.params
    assert loaded.test_set is None and loaded.targets is None and loaded.extras == {}


def test_a_file_without_attack_and_params_loads_as_unknown(tmp_path: Path) -> None:
    poisoned = poisoned_set()
    path = tmp_path / "older.npz"
    with np.load(poisoned.save(tmp_path / "poisoned.npz")) as archive:
        np.savez(path, **{k: archive[k] for k in archive.files if k not in ("attack", "params")})
    loaded = PoisonedDataset.load(path)
    assert (loaded.attack, loaded.params) == ("unknown", {})
    assert torch.equal(loaded.is_poison, poisoned.is_poison)


def rewritten(tmp_path: Path, **changes: object) -> Path:
    """A saved poisoned.npz with arrays replaced (a value) or removed (None)."""
    with np.load(poisoned_set().save(tmp_path / "poisoned.npz")) as archive:
        arrays = {k: archive[k] for k in archive.files}
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"original_label": None}, r"no 'original_label' array"),
        ({"is_poison": None, "source_id": None}, r"no 'is_poison', 'source_id' array"),
        ({"source_index": np.arange(5)}, r"'source_index' must be 66 integer row indices"),
        (
            {"original_label": np.full(66, 7)},
            r"'original_label' must be 66 integer labels in \[0, 2\], one per image; got 7 at "
            r"row 0 \(66 such rows\)",
        ),
        (
            {"source_index": np.arange(66) - 3},
            r"'source_index' must be 66 integer row indices >= 0, one per image; got -3 at row 0 "
            r"\(3 such rows\)",
        ),
        ({"source_id": np.arange(66)}, r"'source_id' must be 66 strings"),
        ({"is_poison": np.ones(3, bool)}, r"'is_poison'.* must be 66 booleans"),
        (
            {"source_id": np.array(list("ab") * 33, dtype=object)},
            "'source_id' cannot be read without pickle",
        ),
        ({"params": np.array("[1, 2]")}, "'params' must be a JSON object"),
        ({"attack": np.array(["a", "b"])}, "'attack' must be one string"),
    ],
)
def test_a_file_that_is_not_a_poisoned_set_is_refused_naming_the_array(
    tmp_path: Path, changes: dict, message: str
) -> None:
    path = rewritten(tmp_path, **changes)
    with pytest.raises(DataError, match=message) as caught:
        PoisonedDataset.load(path)
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)


def test_plain_data_is_not_a_poisoned_set(tmp_path: Path) -> None:
    path = save_npz(blobs_dataset(n_per_class=5), tmp_path / "clean.npz")
    with pytest.raises(DataError, match=r"not a poisoned set .*no 'is_poison', 'original_label'"):
        PoisonedDataset.load(path)
