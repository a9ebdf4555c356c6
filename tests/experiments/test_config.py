"""Config validation (every error names the file, the key and the choices), grid expansion, --set."""

from __future__ import annotations

import pytest

from poisonlab.attacks import attack_names
from poisonlab.defenses import detector_names
from poisonlab.errors import ConfigError
from poisonlab.experiments.config import (
    ExperimentConfig,
    config_from_dict,
    expand,
    expand_cells,
    grid_axes,
    load_config,
    task_names,
)
from poisonlab.models import model_names
from poisonlab.seeding import derive_seed

BASE = 'kind = "test-sleep"\n'


def error(write_config, text: str, overrides=()) -> str:
    """The ConfigError message of loading ``text`` (which must fail)."""
    with pytest.raises(ConfigError) as info:
        load_config(write_config(text), overrides)
    message = str(info.value)
    assert "\n" not in message  # one line for the CLI
    return message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (BASE + "colour = 1\n", ["exp.toml", "'colour'", "seeds", "defenses"]),
        ('kind = "nope"\n', ["exp.toml", "'nope'", "test-sleep", "test-fail"]),
        ("seeds = [0]\n", ["exp.toml", "kind"]),
        (BASE + "seeds = 0\n", ["exp.toml", "seeds", "list"]),
        (BASE + "seeds = [0, 0]\n", ["exp.toml", "seeds", "repeat"]),
        (BASE + "repeats = 0\n", ["exp.toml", "repeats", ">= 1"]),
        (BASE + 'name = "a b"\n', ["exp.toml", "'a b'"]),
        (BASE + "data = 3\n", ["exp.toml", "[data]", "table"]),
        (BASE + '[attack]\nname = "badnet"\n', ["exp.toml", "'badnet'", *attack_names()]),
        (BASE + "[attack]\nrate = 0.1\n", ["exp.toml", "[attack]", "name", "badnets"]),
        (BASE + '[attack]\nname = "badnets"\nratio = 0.1\n', ["exp.toml", "'ratio'", "rate"]),
        (
            BASE + '[attack]\nname = "badnets"\nrate = "high"\n',
            ["exp.toml", "[attack] badnets rate must be a number in (0, 1)", "got 'high'"],
        ),
        (BASE + '[model]\narch = "vgg"\n', ["exp.toml", "arch", "'vgg'", *model_names()]),
        (BASE + '[model]\nhead = "svm"\n', ["exp.toml", "head", "softmax", "lgm"]),
        (BASE + "[model]\nheight = 8\n", ["exp.toml", "[model]", "'height'", "feature_dim"]),
        (BASE + '[train]\nepochs = "three"\n', ["exp.toml", "[train]", "epochs", "int"]),
        (BASE + '[train]\noptimizer = "lbfgs"\n', ["exp.toml", "optimizer", "adam", "sgd"]),
        (BASE + "[train]\nepochs = []\n", ["exp.toml", "epochs", "empty"]),
        (BASE + "[task]\nx = [1, 1]\n", ["exp.toml", "task.x", "repeats a value"]),
        (BASE + '[[defenses]]\nname = "magic"\n', ["exp.toml", "'magic'", *detector_names()]),
        (BASE + "[[defenses]]\nn_components = 3\n", ["exp.toml", "[[defenses]] #1", "name"]),
        (
            BASE + '[[defenses]]\nname = "spectral-signatures"\nk = 3\n',
            ["exp.toml", "spectral-signatures", "'k'", "eps_multiplier"],
        ),
        (
            BASE + '[[defenses]]\nname = "raw-clustering"\nn_components = [5, 10]\n',
            ["exp.toml", "n_components", "not grid axes"],
        ),
        (
            BASE + '[[defenses]]\nname = "bnn"\n[[defenses]]\nname = "bnn"\n',
            ["exp.toml", "'bnn'", "twice"],
        ),
        (BASE + "[grid]\nshuffle = true\n", ["exp.toml", "'shuffle'", "zip", "exclude"]),
        (
            BASE + '[task]\nx = [1, 2]\n[grid]\nzip = [["task.y"]]\n',
            ["exp.toml", "'task.y'", "task.x"],
        ),
        (
            BASE + '[task]\nx = [1, 2]\ny = [1]\n[grid]\nzip = [["task.x", "task.y"]]\n',
            ["exp.toml", "equal lengths", "task.x has 2"],
        ),
        (
            BASE + '[task]\nx = [1, 2]\n[grid]\nexclude = [{"task.z" = 1}]\n',
            ["exp.toml", "'task.z'", "task.x"],
        ),
        (
            BASE + '[task]\nx = [1]\n[grid]\nexclude = [{"task.x" = 1}]\n',
            ["exp.toml", "every cell"],
        ),
        (BASE + "[[x\n", ["exp.toml", "not valid TOML"]),
        (BASE + "[paper]\ntable = 2\n", ["exp.toml", "[paper] table", "seed002-table1"]),
    ],
)
def test_bad_configs_name_file_key_and_choices(write_config, text, expected):
    message = error(write_config, text)
    for fragment in expected:
        assert fragment in message, (fragment, message)


def test_a_list_parameter_written_flat_is_caught_with_the_grid_rule(write_config):
    text = BASE + '[attack]\nname = "badnets"\ntrigger = "square"\ncolor = [255, 0, 1]\n'
    with pytest.raises(ConfigError) as info:
        load_config(write_config(text))
    message = str(info.value)
    assert "3 problems" in message  # one per cell: 255, 0 and 1 are each a colour
    assert (
        "[attack] trigger color must be (R, G, B): 3 integers in [0, 255] or None, got 255"
        in message
    )
    assert "[attack] color = [255, 0, 1] is a grid axis" in message
    assert "as a list of lists: color = [[255, 0, 1]]" in message


def test_wrong_defense_names_are_listed_with_every_other_problem(write_config):
    """An unknown [[defenses]] name stopped the check at load time: the attack and training
    problems behind it, and a second wrong name, showed only on the next try."""
    text = (
        BASE
        + '[attack]\nname = "badnetz"\n[train]\nepochs = 0\n'
        + '[[defenses]]\nname = "ac"\n[[defenses]]\nname = "bnn"\n[[defenses]]\nname = "heatmap"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(write_config(text))
    message = str(info.value)
    assert message.startswith("exp.toml: 4 problems:")
    assert "[[defenses]] #1: unknown defense 'ac'; choose one of: activation-clustering" in message
    assert "[[defenses]] #3: unknown defense 'heatmap'; choose one of: " in message
    assert "'badnetz'" in message and "[train] epochs must be" in message


def test_a_flat_list_with_a_repeated_value_gets_the_grid_rule_too(write_config):
    message = error(write_config, BASE + '[attack]\nname = "badnets"\ncolor = [255, 0, 0]\n')
    assert "repeats a value" in message and "[[255, 0, 0]]" in message


def test_a_scalar_parameter_written_as_list_of_lists_is_caught(write_config):
    message = error(write_config, BASE + '[attack]\nname = "badnets"\nrate = [[0.1, 0.2]]\n')
    assert "badnets rate must be a number in (0, 1) or None, got [0.1, 0.2]" in message


def test_missing_file_and_kind_list(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")
    assert {"test-sleep", "test-fail", "test-cache"} <= set(task_names())


def test_a_folder_or_a_file_without_kind_is_refused_by_name(tmp_path):
    """Issue: `poisonlab run experiments` (a folder) said "config file experiments not found", and
    an empty (or non-experiment) TOML said "kind must be a non-empty string, got None"."""
    with pytest.raises(ConfigError, match="is a folder; expected a TOML file"):
        load_config(tmp_path)
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    with pytest.raises(ConfigError, match=r"^empty\.toml: no kind .* choose one of: .*backdoor"):
        load_config(empty)


def test_defaults_and_name_from_file_stem(write_config):
    config = load_config(write_config(BASE, name="my-grid.toml"))
    assert (config.name, config.kind, config.seeds, config.repeats) == (
        "my-grid",
        "test-sleep",
        (0,),
        1,
    )
    cells = expand(config)
    assert len(cells) == 1 and cells[0].seed == 0 and cells[0].experiment == "my-grid"
    assert set(cells[0].params) == {
        "data",
        "model",
        "train",
        "attack",
        "task",
        "defenses",
        "seed",
        "repeat",
    }


GRID = """
name = "grid"
kind = "test-sleep"
seeds = [0, 7]
repeats = 3
[model]
arch = ["cnn-small", "lgm-net"]
[attack]
name = "badnets"
rate = [0.1, 0.2, 0.3]
trigger = "sticker"
color = [[255, 0, 0]]
window = [[3, 3], [4, 5]]
[task]
mode = { a = [1, 2] }
[[defenses]]
name = "activation-clustering"
classes = [5]
"""


def test_grid_is_the_product_of_axes_seeds_and_repeats(write_config):
    config = load_config(write_config(GRID))
    axes = grid_axes(config)
    assert list(axes) == [
        "model.arch",
        "attack.rate",
        "attack.color",
        "attack.window",
        "seed",
        "repeat",
    ]
    cells = expand_cells(config)
    assert len(cells) == 2 * 3 * 1 * 2 * 2 * 3
    assert len({cell.spec.key for cell in cells}) == len(cells)
    first = cells[0].spec.params
    # list-valued parameters written as lists of lists are values, not axes
    assert first["attack"]["color"] == [255, 0, 0] and first["attack"]["window"] == [3, 3]
    assert first["task"]["mode"] == {"a": [1, 2]}  # inline tables are values
    assert first["defenses"] == [{"name": "activation-clustering", "classes": [5]}]
    # the first axis varies slowest, repeats fastest
    assert [c.spec.params["model"]["arch"] for c in cells[:36]] == ["cnn-small"] * 36
    assert [c.axes["repeat"] for c in cells[:3]] == [0, 1, 2]
    assert cells[0].description == "arch=cnn-small rate=0.1 window=[3,3] seed=0 r0"


def test_repeats_get_derived_seeds_and_repeat_zero_keeps_the_seed(write_config):
    cells = expand(load_config(write_config(BASE + "seeds = [3, 4]\nrepeats = 3\n")))
    seeds = [(c.params["repeat"], c.seed) for c in cells]
    assert seeds[:3] == [(0, 3), (1, derive_seed(3, "repeat", 1)), (2, derive_seed(3, "repeat", 2))]
    assert len({seed for _, seed in seeds}) == 6


def test_expansion_is_deterministic_across_loads(write_config):
    path = write_config(GRID)
    first = [c.key for c in expand(load_config(path))]
    second = [c.key for c in expand(load_config(path))]
    assert first == second
    assert load_config(path).hash == load_config(path).hash


def test_zip_and_exclude(write_config):
    text = BASE + (
        '[attack]\nname = "badnets"\nrate = [0.1, 0.2, 0.3]\n'
        "[task]\ncount = [10, 20, 30]\nx = [1, 2]\n"
        '[grid]\nzip = [["attack.rate", "task.count"]]\n'
        "exclude = [{ attack.rate = 0.2, task.x = 2 }]\n"
    )
    cells = expand_cells(load_config(write_config(text)))
    pairs = [(c.axes["attack.rate"], c.axes["task.count"], c.axes["task.x"]) for c in cells]
    assert pairs == [(0.1, 10, 1), (0.1, 10, 2), (0.2, 20, 1), (0.3, 30, 1), (0.3, 30, 2)]


def test_cli_overrides_take_precedence_over_the_file(write_config):
    path = write_config(
        BASE + 'seeds = [0]\n[attack]\nname = "badnets"\nrate = 0.1\n'
        '[[defenses]]\nname = "spectral-signatures"\neps = 0.1\n'
    )
    config = load_config(
        path,
        [
            "attack.rate=[0.2, 0.4]",
            "seeds=[1,2]",
            "data.source=digits",
            "defenses.spectral-signatures.eps=0.5",
            "task.note='quoted'",
        ],
    )
    assert config.attack["rate"] == [0.2, 0.4] and config.seeds == (1, 2)
    assert config.data == {"source": "digits"} and config.task == {"note": "quoted"}
    assert config.defenses[0]["eps"] == 0.5
    assert len(expand(config)) == 4
    assert config.overrides[0] == "attack.rate=[0.2, 0.4]"
    assert load_config(path).attack["rate"] == 0.1  # the file itself is unchanged


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("attack.rate", "section.key=value"),
        ("attack..rate=1", "section.key=value"),
        ("defenses.bnn.samples=3", "no defense 'bnn'"),
        ("attack.ratio=0.1", "'ratio'"),
        ("kind=other", "'other'"),
    ],
)
def test_bad_overrides(write_config, override, fragment):
    path = write_config(BASE + '[attack]\nname = "badnets"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, [override])
    assert fragment in str(info.value)


def test_config_from_dict_and_hash_tracks_content():
    a = config_from_dict({"name": "a", "kind": "test-sleep", "task": {"x": [1, 2]}})
    b = config_from_dict({"name": "a", "kind": "test-sleep", "task": {"x": [1, 3]}})
    c = config_from_dict(
        {"name": "a", "kind": "test-sleep", "task": {"x": [1, 2]}, "description": "words"}
    )
    assert isinstance(a, ExperimentConfig)
    assert a.hash != b.hash and a.hash == c.hash
    # equal cells share keys across configs: only x=2 vs x=3 differ
    assert expand(a)[0].key == expand(b)[0].key and expand(a)[1].key != expand(b)[1].key
    assert a.to_dict()["task"] == {"x": [1, 2]}
