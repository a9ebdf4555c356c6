"""``[data] image_size`` in an experiment config: what ``--image-size`` is to the commands.

Issue: a config could not resize a mixed-size image folder or GTSRB to any size but its default,
while scan, train, attack and data info could with ``--image-size``.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from poisonlab.cli.main import app
from poisonlab.data import save_npz
from poisonlab.experiments.checks import ConfigProblems
from poisonlab.experiments.config import load_config
from poisonlab.experiments.grid import expand_cells
from poisonlab.experiments.tasks_base import stable_hash
from poisonlab.experiments.tasks_common import DataSpec, load_split
from tests.cli.test_image_size import mixed_folder
from tests.conftest import blobs_dataset

cli = CliRunner()

CONFIG = """
kind = "backdoor"
[data]
source = "{source}"
{size}
[train]
epochs = 1
[attack]
name = "badnets"
rate = 0.2
[[defenses]]
name = "spectral-signatures"
[task]
clean_model = false
"""


def config(source, size: str | None = None) -> str:
    return CONFIG.format(source=source, size="" if size is None else f"image_size = {size}")


def test_a_config_image_size_resizes_the_folder_the_run_trains_on(write_config, tmp_path, caplog):
    folder = mixed_folder(tmp_path / "pets", per_class=20)  # 10×6 and 12×12 images (w×h)
    loaded = load_config(write_config(config(folder, "[[8, 9]]")), check_data=True)
    (cell,) = expand_cells(loaded)
    spec = DataSpec.from_section(cell.spec.section("data"))
    assert spec.image_size == (8, 9) and spec.loader_options() == {"size": (8, 9)}
    caplog.clear()
    split = load_split(spec)
    assert split.train.shape == split.holdout.shape == split.test.shape == (1, 8, 9)
    assert not any("are not" in r.getMessage() for r in caplog.records)  # no mixed-size warning
    runs = tmp_path / "runs"
    path = write_config(config(folder, '"8x9"'), name="text.toml")  # the CLI's form, same size
    result = cli.invoke(app, ["run", str(path), "--runs", str(runs), "-q"])
    assert result.exit_code == 0, result.output
    (model_key,) = [json.loads(p.read_text()) for p in runs.glob("cache/model/*/.key.json")]
    assert model_key["data"]["image_size"] == [8, 9]
    assert (model_key["model"]["height"], model_key["model"]["width"]) == (8, 9)


def test_one_number_is_a_square_and_text_reads_as_on_the_command_line():
    for value, size in ((12, (12, 12)), ("12", (12, 12)), ("16x8", (16, 8)), ([16, 8], (16, 8))):
        assert DataSpec.from_section({"source": "x", "image_size": value}).image_size == size


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("0", "0"),
        ('"3232"', "'3232'"),
        ("[[0, 5]]", "[0, 5]"),
        ("[[8, 1025]]", "[8, 1025]"),
        ("[[8, 8, 8]]", "[8, 8, 8]"),
        ("true", "True"),
        ("8.5", "8.5"),
    ],
)
def test_a_bad_image_size_is_one_line_naming_the_key_and_value(write_config, value, shown):
    with pytest.raises(ConfigProblems) as info:
        load_config(write_config(config("digits", value)))
    (problem,) = info.value.problems
    assert problem == (
        "[data] image_size must be [HEIGHT, WIDTH], HEIGHTxWIDTH text or one integer (a square), "
        f"each side in whole pixels from 1 to 1024, got {shown}"
    )


def test_a_flat_pair_is_refused_as_an_axis_of_squares(write_config):
    """By the grid rule [32, 24] is two cells, 32x32 and 24x24; read as one [H, W] it would have
    run other sizes than meant without a word."""
    with pytest.raises(ConfigProblems) as info:
        load_config(write_config(config("digits", "[32, 24]")))
    assert info.value.problems[0] == (
        "[data] image_size = [32, 24] is a grid axis of squares, as every list is; one size is "
        'written as a list of lists, image_size = [[32, 24]] (or "HEIGHTxWIDTH"), an axis of '
        "squares as image_size = [[32, 32], [24, 24]]"
    )
    axis = load_config(write_config(config("digits", "[[16, 16], [8, 8]]")))  # two sizes: fine
    assert [c.axes["data.image_size"] for c in expand_cells(axis)] == [[16, 16], [8, 8]]
    three = load_config(write_config(config("digits", "[8, 16, 32]")))  # no pair: squares
    assert [c.axes["data.image_size"] for c in expand_cells(three)] == [8, 16, 32]


def test_an_image_size_for_data_that_is_not_resized_is_refused_by_the_dry_run(
    write_config, tmp_path
):
    data = save_npz(blobs_dataset(n_per_class=4, seed=0), tmp_path / "data.npz")
    for source, kind in (("digits", "digits"), (str(data), "npz")):
        path = write_config(config(source, "8"))
        load_config(path)  # the format is read only with the data
        result = cli.invoke(app, ["run", str(path), "--runs", str(tmp_path / "runs"), "--dry-run"])
        assert result.exit_code == 2, result.output
        flat = " ".join(result.output.split())
        assert (
            f"[data] image_size 8x8: only image folders and GTSRB are resized, not {kind} data "
            f"(source {source}, whose images keep their size)"
        ) in flat
        assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_the_dry_run_places_the_trigger_on_images_of_the_image_size(write_config, tmp_path):
    folder = mixed_folder(tmp_path / "pets", per_class=2)  # 6×10 at its own size: a 5×5 fits
    text = config(folder).replace("rate = 0.2", 'rate = 0.2\ntrigger = "square"\nsize = 5')
    load_config(write_config(text), check_data=True)
    small = text.replace("[train]", "image_size = 4\n[train]")
    with pytest.raises(ConfigProblems) as info:
        load_config(write_config(small, name="small.toml"), check_data=True)
    assert info.value.problems == (
        "[attack] badnets: size = 5 makes a 5×5 trigger, larger than 4×4 images: expected a size "
        "in [1, 4]",
    )


def test_cache_keys_without_an_image_size_are_unchanged_and_differ_with_one():
    """Caches written before the key existed stay valid; a resized source gets its own models."""
    plain = DataSpec.from_section({"source": "digits", "limit": 300})
    assert plain.key() == {"source": "digits", "limit": 300, "holdout": 0.1, "test": 0.2, "seed": 0}
    assert stable_hash(plain.key()) == "fcb5d13a5af0e5f2"  # the key before image_size existed

    def key(**section: object) -> str:
        return stable_hash(DataSpec.from_section({"source": "pets", **section}).key())

    assert key(image_size=8) == key(image_size=[8, 8]) == key(image_size="8x8")
    assert len({key(), key(image_size=8), key(image_size="8x9"), key(image_size=[9, 8])}) == 4


def test_a_cells_automatic_thread_count_reads_its_image_size(monkeypatch):
    """As `attack --image-size`: an 8×8 folder is small in gray and colour (one thread); 12×12 is
    small only in gray, so unknown until loaded (every core); a 32×32 one is large either way."""
    from poisonlab import runtime
    from poisonlab.experiments.executors import CellJob, apply_threads
    from poisonlab.experiments.tasks_base import CellSpec

    monkeypatch.delenv(runtime.THREADS_ENV, raising=False)
    monkeypatch.setattr(runtime, "_user_counts", {})
    cores = runtime.cpu_count()
    try:
        chosen = []
        for size in ([8, 8], "12x12", 32, None):
            data = {"source": "pets"} | ({} if size is None else {"image_size": size})
            job = CellJob(CellSpec("x", "backdoor", {"data": data}), "m", "cell", "cache")
            settings = apply_threads(job)
            chosen.append((settings.threads, settings.source))
    finally:
        monkeypatch.undo()
        runtime.use_threads()  # back to the test session's settings
    assert chosen == [
        (1, "auto (8×8)"),
        (cores, "auto (unknown work)"),
        (cores, "auto (32×32)"),
        (cores, "auto (unknown work)"),
    ]
