"""BadNets: budgets, label maps, ground truth, triggered test sets, determinism, npz round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from poisonlab.attacks import ATTACKS, attack_names, build_attack
from poisonlab.attacks.badnets import BadNets
from poisonlab.attacks.triggers import Trigger
from poisonlab.data import load_dataset
from poisonlab.data.dataset import ImageDataset
from poisonlab.errors import BudgetError, ConfigError
from poisonlab.seeding import make_generator


def _data(
    n_per_class: int = 30, num_classes: int = 4, size: int = 10, seed: int = 0
) -> ImageDataset:
    """Random images quantised to k/255 (so npz stores them as uint8), balanced classes."""
    g = make_generator(seed)
    n = n_per_class * num_classes
    images = torch.randint(20, 236, (n, 1, size, size), generator=g).float() / 255.0
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    return ImageDataset(images, labels, num_classes, name="toy")


def _poison(attack: BadNets, data: ImageDataset, seed: int = 0, test: ImageDataset | None = None):
    return attack.poison(data, generator=make_generator(seed), test=test)


def test_registered_under_its_name() -> None:
    assert "badnets" in attack_names() and ATTACKS.get("badnets") is BadNets
    assert isinstance(build_attack("badnets", rate=0.2), BadNets)


def test_poisoned_set_repr_is_one_short_line() -> None:
    """A notebook shows the attack, the number of poisons and the data, not every tensor."""
    data = _data()
    poisoned = _poison(BadNets(rate=0.1), data, test=data)
    assert repr(poisoned) == (
        f"PoisonedDataset('badnets', {poisoned.n_poison} poisons of {len(poisoned.dataset)}, "
        f"{poisoned.dataset!r}, test_set={poisoned.test_set!r})"
    )
    assert "\n" not in repr(poisoned) and "tensor" not in repr(poisoned)
    one = _poison(BadNets(count=1), data)
    assert repr(one).startswith(f"PoisonedDataset('badnets', 1 poison of {len(one.dataset)}, ")


def test_poisons_outnumbering_a_class_are_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    """All-to-one at rate 0.25 of 120 images sends 39 poisons into a class of 30: the defenses
    that look for a minority in a class would single out its clean images. Said once, by name."""
    data = _data()
    with caplog.at_level("WARNING", logger="poisonlab.attacks"):
        _poison(BadNets(rate=0.2), data)  # all-to-all: 10 poisons beside 30 in every class
        assert caplog.messages == []
        _poison(BadNets(rate=0.25, label_map="all-to-one", target=0), data)
    assert len(caplog.messages) == 1
    assert caplog.messages[0].startswith(
        "badnets: poisons outnumber the clean images of class 0: 39 poisons, 30 clean; "
    )
    assert "target_rate=" in caplog.messages[0]


def test_default_budget_is_a_fifth_of_the_poisoned_set() -> None:
    """No budget given: poisons are 20% of the poisoned training set, as documented."""
    attack = BadNets()
    assert (attack.rate, attack.target_rate, attack.count) == (0.2, None, None)
    data = _data()
    result = _poison(attack, data)
    assert result.n_poison == 4 * round(0.2 * 30 / 0.8)  # appended: p·n_s / (1 − p) per class
    assert result.n_poison / len(result.dataset) == pytest.approx(
        0.2, abs=0.02
    )  # rounded per class


def test_all_to_all_append_ground_truth() -> None:
    data = _data()
    result = _poison(BadNets(rate=0.1), data)
    n, per_class = len(data), round(0.1 * 30 / 0.9)
    poisons = result.is_poison.nonzero().flatten()
    # clean rows come first and are bit-identical (images, labels, ids)
    assert torch.equal(result.dataset.images[:n], data.images)
    assert torch.equal(result.dataset.labels[:n], data.labels)
    assert list(result.dataset.ids[:n]) == list(data.ids)
    assert not result.is_poison[:n].any() and result.is_poison[n:].all()
    assert result.n_poison == 4 * per_class == len(result.dataset) - n
    src = result.source_index[poisons]
    assert torch.equal(result.original_labels[poisons], data.labels[src])
    assert torch.equal(result.dataset.labels[poisons], (data.labels[src] + 1) % 4)
    assert torch.bincount(data.labels[src], minlength=4).tolist() == [per_class] * 4
    assert list(result.source_ids[poisons]) == list(data.ids[src.numpy()])
    assert list(result.dataset.ids[poisons]) == [f"{i}+badnets" for i in data.ids[src.numpy()]]
    assert torch.equal(result.source_index[:n], torch.arange(n))
    # each poison is its source image with the trigger, and nothing else changed
    expected = Trigger("pattern").apply(data.images[src])
    assert torch.equal(result.dataset.images[poisons], expected)
    diff = (result.dataset.images[poisons] != data.images[src]).any(1).any(0)
    assert {tuple(p) for p in diff.nonzero().tolist()} <= {(8, 8), (7, 7), (8, 6), (6, 8)}


def test_one_to_one_with_target_rate() -> None:
    data = _data()
    result = _poison(BadNets(source=1, target=2, target_rate=0.25, trigger="square", size=2), data)
    poisons = result.is_poison.nonzero().flatten()
    assert result.n_poison == round(0.25 * 30 / 0.75)
    assert torch.all(result.original_labels[poisons] == 1)
    assert torch.all(result.dataset.labels[poisons] == 2)
    assert result.params["label_map"] == "one-to-one"


def test_all_to_one_never_poisons_the_target_class() -> None:
    result = _poison(BadNets(target=3, count=12), _data())
    poisons = result.is_poison.nonzero().flatten()
    assert result.n_poison == 12
    assert torch.bincount(result.original_labels[poisons], minlength=4).tolist() == [4, 4, 4, 0]
    assert torch.all(result.dataset.labels[poisons] == 3)


def test_replace_mode_modifies_rows_in_place() -> None:
    data = _data()
    result = _poison(BadNets(rate=0.2, mode="replace"), data)
    keep = ~result.is_poison
    assert len(result.dataset) == len(data)
    assert result.n_poison == 4 * round(0.2 * 30)
    assert torch.equal(result.dataset.images[keep], data.images[keep])
    assert torch.equal(result.dataset.labels[keep], data.labels[keep])
    assert list(result.dataset.ids[keep.numpy()]) == list(data.ids[keep.numpy()])
    assert torch.equal(result.original_labels, data.labels)
    assert torch.equal(result.source_index, torch.arange(len(data)))
    assert torch.equal(result.dataset.labels[~keep], (data.labels[~keep] + 1) % 4)
    assert not torch.equal(result.dataset.images[~keep], data.images[~keep])


def test_triggered_test_sets_per_label_map() -> None:
    test = _data(n_per_class=5, seed=1)
    all_to_all = BadNets(rate=0.1)
    triggered = _poison(all_to_all, _data(), test=test).test_set
    assert triggered is not None and len(triggered) == len(test)
    assert torch.equal(triggered.labels, (test.labels + 1) % 4)
    one = BadNets(source=0, target=2, rate=0.05)
    asr_set = one.test_set(test)
    assert len(asr_set.data) == 5 and torch.all(asr_set.data.labels == 2)
    assert torch.all(asr_set.source_labels == 0)
    masr = one.masr_set(test)
    assert masr.target == 2 and len(masr.data) == 15
    assert sorted(set(masr.source_labels.tolist())) == [0, 1, 3]
    assert torch.all(masr.data.labels == 2)
    # the test trigger lands on every image of the set
    assert torch.all(masr.data.images[:, 0, 8, 8] == 1.0)


def test_same_seed_same_poisons_other_seed_other_poisons() -> None:
    data = _data()
    attack = BadNets(rate=0.1, trigger="sticker", window=(6, 6))
    a, b, c = _poison(attack, data, 7), _poison(attack, data, 7), _poison(attack, data, 8)
    assert torch.equal(a.dataset.images, b.dataset.images)
    assert torch.equal(a.source_index, b.source_index)
    assert not torch.equal(a.source_index, c.source_index)


def test_params_are_resolved_and_rebuild_the_attack() -> None:
    attack = BadNets(target_rate=0.3, source=0, target=1, trigger="sticker", position="top-left")
    params = attack.params()
    assert params["label_map"] == "one-to-one" and params["offset"] == 1
    assert params["color"] == (245, 255, 0) and params["target_rate"] == 0.3
    assert params["rate"] is None and params["mode"] == "append"
    assert BadNets(**params).params() == params


def test_impossible_budget_fails_with_the_numbers() -> None:
    with pytest.raises(
        BudgetError, match="needs 60 images of class 1 but the training set has only 30"
    ):
        _poison(BadNets(source=1, target=0, target_rate=2 / 3), _data())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 0.1, "count": 3}, "give only one of"),
        ({"source": 1}, "source needs a target"),
        ({"label_map": "all-to-all", "target": 1}, "takes no source or target"),
        ({"label_map": "one-to-one", "target": 1}, "needs both source and target"),
        ({"source": 1, "target": 1}, "must differ"),
        ({"label_map": "many"}, "label_map must be one of 'all-to-all', .*, got 'many'"),
        ({"mode": "insert"}, "mode must be one of 'append', 'replace', got 'insert'"),
        ({"target": -1}, "target must be a class index"),
    ],
)
def test_bad_parameters_are_refused_in_init(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BadNets(**kwargs)


def test_classes_outside_the_data_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"target must lie in \[0, 3\]"):
        _poison(BadNets(target=7), _data())


def test_poisoned_npz_round_trip(tmp_path) -> None:
    data = _data()
    result = _poison(BadNets(rate=0.1), data)
    path = result.save(tmp_path / "poisoned.npz")
    loaded = load_dataset(path)
    assert torch.equal(loaded.images, result.dataset.images)
    assert torch.equal(loaded.labels, result.dataset.labels)
    assert list(loaded.ids) == list(result.dataset.ids)
    with np.load(path) as archive:
        assert archive["x"].dtype == np.uint8  # triggered pixels stay multiples of 1/255
        assert np.array_equal(archive["is_poison"], result.is_poison.numpy())
        assert np.array_equal(archive["original_label"], result.original_labels.numpy())
        assert np.array_equal(archive["source_id"], result.source_ids)
