"""Progress and messages when output goes to a log (issue: with stderr redirected, `--defense all`
printed nothing for 20+ minutes while library INFO lines appeared by default)."""

from __future__ import annotations

import logging

import pytest
from typer.testing import CliRunner

import poisonlab.train
from poisonlab import progress
from poisonlab.cli.main import app

runner = CliRunner()  # its stderr is not a terminal: like a log file or CI


@pytest.fixture
def lines(monkeypatch):
    """Progress on, as the CLI sets it, with stderr not a terminal; off again afterwards."""
    progress.enable(True)
    yield
    progress.enable(False)


def test_a_stage_ends_with_one_line_with_its_count_and_time(lines, capsys):
    with progress.bar("training victim", total=3) as bar:
        for epoch in range(3):
            bar.advance(1, info=f"epoch {epoch + 1}")
    for _ in progress.track(range(4), "running defenses"):
        pass
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[0].startswith("training victim: 3/3, epoch 3, done in ") and err[0].endswith(" s")
    assert err[1].startswith("running defenses: 4/4, done in ")


def test_a_long_stage_writes_a_line_while_it_runs(lines, capsys, monkeypatch):
    monkeypatch.setattr(progress, "LINE_SECONDS", 0.0)
    with progress.bar("LRP heatmaps", total=2) as bar:
        bar.advance(1)
        bar.advance(1)
    err = capsys.readouterr().err.splitlines()
    counts = [line.split(", ")[0] for line in err]
    assert counts == ["LRP heatmaps: 1/2", "LRP heatmaps: 2/2", "LRP heatmaps: 2/2"]
    assert "so far" in err[0] and "done in" in err[-1]


def test_failed_stage_does_not_claim_done(lines, capsys):
    with pytest.raises(RuntimeError), progress.bar("stage", total=2) as bar:
        bar.advance(1)
        raise RuntimeError
    assert "done" not in capsys.readouterr().err


def test_training_stopped_early_still_writes_its_line(lines, capsys):
    """Early stopping closes the epoch loop inside its stage; the log kept no line of it."""
    from poisonlab.models import ModelConfig, build_model
    from poisonlab.train import TrainConfig, train_model
    from tests.conftest import blobs_dataset

    model = build_model(ModelConfig("cnn-small", 1, 8, 8, 3), seed=0)
    config = TrainConfig(epochs=40, batch_size=16, lr=0.05, patience=2)  # stops early (test_loop)
    result = train_model(model, blobs_dataset(), config, description="training cnn-small")
    assert result.stopped_early
    err = capsys.readouterr().err.splitlines()
    steps = 40 * 7  # 108 training images in batches of 16
    assert len(err) == 1 and err[0].startswith("training cnn-small: ")
    assert f"/{steps}, epoch {len(result.history)} loss " in err[0]
    assert "stopped after " in err[0] and "done" not in err[0]


def test_a_stage_left_by_a_break_says_it_stopped(lines, capsys):
    for k in progress.track(range(5), "scoring"):
        if k == 1:
            break
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("scoring: 1/5, stopped after ")

    def epochs():  # early stopping at the last epoch: closed after its last step
        with progress.bar("training", total=2) as bar:
            for _ in range(2):
                bar.advance(1)
                yield

    loop = epochs()
    next(loop), next(loop)
    loop.close()
    assert capsys.readouterr().err.startswith("training: 2/2, done in ")


def test_elapsed_reads_well():
    assert progress.elapsed(4.25) == "4.2 s"
    assert progress.elapsed(185) == "3 min 05 s"
    assert progress.elapsed(3725) == "1 h 02 min"


@pytest.fixture
def chatty_training(monkeypatch):
    """Training that logs an INFO line from a library module, like the GW solvers do."""
    train = poisonlab.train.train_model

    def chatty(*args, **kwargs):
        logging.getLogger("poisonlab.explain.gromov").info("sinkhorn: 200 iterations")
        return train(*args, **kwargs)

    monkeypatch.setattr(poisonlab.train, "train_model", chatty)


@pytest.mark.parametrize(
    ("flags", "progress_line", "chatter"),
    [([], True, False), (["--verbose"], True, True), (["--quiet"], False, False)],
)
def test_train_in_a_log(tmp_path, chatty_training, flags, progress_line, chatter):
    args = ["train", "--limit", "150", "--epochs", "2", "-o", str(tmp_path / "m"), *flags]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert ("training: " in result.output and "done in" in result.output) is progress_line
    assert ("sinkhorn: 200 iterations" in result.output) is chatter
    assert not progress.lines_enabled()  # the library is silent again after the command


def test_muted_stages_write_nothing_and_running_ones_go_on(lines, capsys):
    with progress.bar("outer", total=2) as bar, progress.muted():
        for _ in progress.track(range(3), "inner"):
            pass
        with progress.bar("inner bar", total=1) as inner:
            inner.advance(1)
        bar.advance(2)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("outer: 2/2, done in ")
    assert progress.lines_enabled()  # muting ends with its block


def test_heatmap_clustering_over_ten_classes_writes_one_lrp_line(lines, capsys):
    """Ten classes give one "LRP heatmaps" stage across them (not a line per class), one for the
    GW k-means and one for the held-out scores of a target-FPR threshold (their LRP heatmaps give
    no line of their own)."""
    from poisonlab.defenses import Evidence, build_detector
    from poisonlab.models import ModelConfig, build_model
    from tests.conftest import blobs_dataset

    data = blobs_dataset(n_per_class=8, num_classes=10, size=20, seed=0)
    holdout = blobs_dataset(n_per_class=3, num_classes=1, size=20, seed=1)  # class 0 only: fast
    model = build_model(ModelConfig("cnn-small", 1, 20, 20, 10, feature_dim=8), seed=0)
    settings = {"max_points": 16, "seed_gw_max_iter": 5, "max_iter": 0, "n_init": 1}
    detector = build_detector("heatmap-clustering", threshold="fpr:0.1", **settings)
    detector.fit(Evidence(data, model, holdout=holdout, device="cpu"))
    err = capsys.readouterr().err.splitlines()
    lrp = [line for line in err if line.startswith("LRP heatmaps")]
    assert len(lrp) == 1 and lrp[0].startswith("LRP heatmaps: 80/80, 10 classes, done in "), err
    assert sum(line.startswith("heatmap clustering: 10/10") for line in err) == 1, err
    assert sum(line.startswith("heatmap clustering (held-out): 1/1") for line in err) == 1, err
    assert len(err) == 3, err


def test_nested_bars_share_one_terminal_display(monkeypatch):
    """On a terminal a bar inside another is stacked under it on the same console; two consoles
    would each redraw the same line over the other."""
    monkeypatch.setattr(progress, "is_enabled", lambda: True)
    with progress.bar("outer", total=1) as outer, progress.bar("inner", total=1) as inner:
        assert outer._progress.live.console is inner._progress.live.console
        assert len(outer._progress.live.console._live_stack) == 2
        inner.advance(1)
        outer.advance(1)


def test_a_labelled_stage_names_the_item_it_is_on(lines, capsys, monkeypatch):
    """`running defenses` names the defense at work in the lines a long stage writes; its last
    line has no name (nothing is at work any more)."""
    monkeypatch.setattr(progress, "LINE_SECONDS", 0.0)
    for _ in progress.track(["raw-clustering", "bnn"], "running defenses", label=str.upper):
        pass
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("running defenses: 0/2, RAW-CLUSTERING, ")
    assert any(line.startswith("running defenses: 1/2, BNN, ") for line in err)
    assert err[-1].startswith("running defenses: 2/2, done in ")


def test_a_long_warning_stays_one_line_in_a_log(capsys):
    """Off a terminal a warning keeps the ``WARNING  `` prefix and is not wrapped at 80 columns
    (Rich's handler wrapped it, breaking the one-line-per-message rule of scan, demo and run)."""
    from poisonlab.cli import console

    console.configure()
    try:
        message = "this warning " + "keeps going on " * 10 + "to the end"
        logging.getLogger("poisonlab.data").warning(message)
    finally:
        logging.basicConfig(force=True, handlers=[logging.NullHandler()])
    err = capsys.readouterr().err
    assert err.splitlines() == [f"WARNING  {message}"]
