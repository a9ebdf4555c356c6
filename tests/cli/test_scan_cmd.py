"""`poisonlab scan` end to end with CliRunner on tiny .npz files in tmp_path."""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from poisonlab.cli.main import app
from poisonlab.data import load_dataset, save_npz
from poisonlab.errors import ConfigError
from poisonlab.models import ModelConfig, build_model, save_checkpoint
from tests.conftest import blobs_dataset

runner = CliRunner()


@pytest.fixture
def files(tmp_path):
    """data.npz (120 samples), held.npz (60 clean samples) and a cnn-small checkpoint."""
    data = save_npz(blobs_dataset(n_per_class=40, seed=0), tmp_path / "data.npz")
    held = save_npz(blobs_dataset(n_per_class=20, seed=1), tmp_path / "held.npz")
    model = build_model(ModelConfig("cnn-small", 1, 8, 8, 3, feature_dim=8), seed=0)
    checkpoint = save_checkpoint(model, tmp_path / "model")
    return {"data": data, "held": held, "model": checkpoint, "tmp": tmp_path}


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(*args: str):
    return runner.invoke(app, ["scan", *map(str, args)])


def test_scan_writes_scores_summary_and_clean_set(files):
    out = files["tmp"] / "out"
    before = digest(files["data"]), digest(files["held"])
    result = run(
        files["data"], "-D", "deep-features,spectral-signatures", "--holdout", files["held"],
        "--model", files["model"], "-t", "contamination:0.1", "-o", out, "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (digest(files["data"]), digest(files["held"])) == before  # inputs only read
    with (out / "scores.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 120
    removed = [r["removed"] == "1" for r in rows]
    # the user's threshold cuts the combined score of the defenses with verdicts (SS here)
    assert removed == [r["spectral-signatures_flagged"] == "1" for r in rows]
    clean = load_dataset(out / "clean.npz")
    assert len(clean) == 120 - sum(removed) and sum(removed) > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["decision"]["rule"] == "contamination:0.1"
    assert summary["defenses"]["deep-features"]["role"].startswith("reported only")
    assert summary["dataset"]["size"] == 120
    assert summary["models"][0]["source"] == "checkpoint"
    assert summary["defenses"]["deep-features"]["threshold"]["rule"] == "contamination"
    assert "spectral-signatures" in result.output  # the summary table


def test_verdict_leads_and_union_stays_available(files):
    out = files["tmp"] / "verdict"
    result = run(files["data"], "-D", "raw-clustering,dnn-uncertainty", "--model", files["model"],
                 "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    verdict = result.output.index(summary["verdict"].split(";")[0])
    assert verdict < result.output.index("scan of data")  # the verdict leads the results
    lines = result.output.splitlines()  # not a terminal: nothing is wrapped or cut to "…"
    assert "…" not in result.output
    assert any("report.html" in line and "combined decision" in line for line in lines)
    row = next(line.split() for line in lines if line.startswith("dnn-uncertainty "))
    assert row[:2] == ["dnn-uncertainty", "*"] and row[4].endswith("/120")  # reported only
    assert any(line.startswith("* reported only") for line in lines)
    union_out = files["tmp"] / "union"
    union = run(files["data"], "-D", "raw-clustering,dnn-uncertainty", "--model", files["model"],
                "--decision", "union", "-t", "paper", "-o", union_out, "-q")  # fmt: skip
    assert union.exit_code == 0, union.output
    with (union_out / "scores.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    flags = [
        r["raw-clustering_flagged"] == "1" or r["dnn-uncertainty_flagged"] == "1" for r in rows
    ]
    assert [r["removed"] == "1" for r in rows] == flags and any(flags)
    # ... so no defense is marked "reported only" there: the table said "* reported only: not in
    # the combined decision" and summary.json's role "reported only" of a defense whose flags
    # the union had removed
    assert "reported only" not in union.output
    row = next(line.split() for line in union.output.splitlines() if "dnn-uncertainty" in line)
    assert row[1] == "paper"
    union_summary = json.loads((union_out / "summary.json").read_text())
    role = union_summary["defenses"]["dnn-uncertainty"]["role"]
    assert role == "member of the decision (union: its flags are removed)"
    bad = run(files["data"], "-D", "raw-clustering", "--decision", "vote", "-o", files["tmp"] / "x")
    assert bad.exit_code == 2 and "--decision" in bad.output


def test_a_wrong_precision_is_refused_before_any_work(files):
    out = files["tmp"] / "p"
    bad = run(files["data"], "-D", "raw-clustering", "--precision", "half", "-o", out)
    assert bad.exit_code == 2 and "--precision" in bad.output and "half" in bad.output
    assert not out.exists()


def test_existing_output_is_refused_unless_forced(files):
    out = files["tmp"] / "out"
    args = (files["data"], "-D", "raw-clustering", "-o", out, "-q")
    assert run(*args).exit_code == 0
    again = run(*args)
    assert again.exit_code == 2
    assert "already exists" in again.output
    assert run(*args, "--force").exit_code == 0


def test_output_overlapping_an_input_is_refused(files):
    result = run(files["data"], "-D", "raw-clustering", "-o", files["tmp"], "--force", "-q")
    assert result.exit_code == 2
    assert "overlaps" in result.output
    assert files["data"].exists()


def test_missing_holdout_skips_with_a_yellow_line(files):
    out = files["tmp"] / "out"
    result = run(
        files["data"], "-D", "deep-features,raw-clustering", "--model", files["model"], "-o", out
    )
    assert result.exit_code == 0, result.output
    assert "skipping deep-features: needs a clean held-out set" in result.output
    header = (out / "scores.csv").read_text().splitlines()[0]
    assert "deep-features" not in header and "raw-clustering_score" in header
    lgm = run(
        files["data"], "-D", "lgm-likelihood,raw-clustering", "--model", files["model"],
        "-o", files["tmp"] / "lgm",
    )  # fmt: skip
    assert lgm.exit_code == 0, lgm.output
    # on one line off a terminal (it broke at 80 columns before "model has a softmax head")
    assert (
        "skipping lgm-likelihood: needs a model trained with the LGM loss; the given model has a "
        "softmax head and no LGM model was given (--lgm-model)" in lgm.output.splitlines()
    )
    alone = run(files["data"], "-D", "deep-features", "-o", files["tmp"] / "alone")
    assert alone.exit_code == 2
    assert "skipping deep-features" in alone.output and "no selected defense" in alone.output


def test_classes_and_seed_reach_the_defenses(files):
    out = files["tmp"] / "one"
    args = ["-D", "raw-clustering", "--model", files["model"], "--classes", "1", "--seed", "5"]
    result = run(files["data"], *args, "-o", out, "-q")
    assert result.exit_code == 0, result.output
    parameters = json.loads((out / "summary.json").read_text())["defenses"]["raw-clustering"]
    assert parameters["parameters"]["seed"] == 5
    with (out / "scores.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    scored = [r["raw-clustering_score"] not in ("", "nan") for r in rows]
    assert scored == [r["label"] == "1" for r in rows]  # class 1 alone was analysed


def test_trains_a_model_when_none_is_given(files):
    out = files["tmp"] / "out"
    args = ["-D", "spectral-signatures", "--epochs", "1", "--precision", "bfloat16"]
    result = run(files["data"], *args, "-o", out, "-q")
    assert result.exit_code == 0, result.output
    model = json.loads((out / "summary.json").read_text())["models"][0]
    assert model["source"] == "trained" and model["arch"] == "cnn-small"
    assert model["training"]["epochs_run"] == 1  # --epochs 1, not the recipe's up to 20
    assert model["training"]["recipe"]["precision"] == "bfloat16"  # small data: float32 unasked


def test_user_errors_are_one_red_line(files):
    other = build_model(ModelConfig("cnn-small", 1, 8, 8, 5), seed=0)
    wrong = save_checkpoint(other, files["tmp"] / "wrong")
    cases = [
        (["--model", wrong], "does not fit"),
        (["-t", "half"], "threshold 'half' not understood"),
        (["--classes", "x"], "--classes"),
        (["--classes", ""], "--classes '': expected comma-separated class numbers"),  # was: got []
        (["--classes", " , "], "--classes ' , ': expected"),
        (["-D", "nope"], "unknown defense 'nope'; choose one of"),  # nothing close: no guess
        (
            ["-D", "spectral-signature"],
            "unknown defense 'spectral-signature' (did you mean spectral-signatures?)",
        ),
        (["--param", "raw-clustering.colour=red"], "does not take 'colour'"),
        (["-t", "contamnation:0.1"], "not understood (did you mean contamination:0.1?)"),
    ]
    for extra, message in cases:
        defense = [] if "-D" in extra else ["-D", "raw-clustering"]
        result = run(files["data"], *defense, *extra, "-o", files["tmp"] / "bad", "--force")
        assert result.exit_code == 2, (extra, result.output)
        assert message in result.output and "Traceback" not in result.output


def test_without_a_defense_the_members_of_the_combined_decision_run(files):
    """--defense was required; without it the scan now runs the combined decision's members, and
    summary.json says the defenses came from the default."""
    out = files["tmp"] / "default"
    result = run(files["data"], "--model", files["model"], "-o", out, "-q")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    members = ["activation-clustering", "raw-clustering", "spectral-signatures"]
    assert list(summary["defenses"]) == members
    assert all(summary["defenses"][n]["role"] == "member of the decision" for n in members)
    assert summary["decision"]["rule"] == "verdict" and summary["decision"]["members"] == members
    assert summary["selection"]["from"] == "default"
    assert summary["selection"]["defenses"] == members
    assert "combined decision" in summary["selection"]["why"]
    with (out / "scores.csv").open() as handle:
        header = next(csv.reader(handle))
    assert header[-2:] == ["combined_score", "removed"]
    assert not any(c.startswith(("deep-features", "lgm-likelihood", "heatmap")) for c in header)


def test_a_given_defense_overrides_the_default(files):
    out = files["tmp"] / "named"
    result = run(files["data"], "-D", "spectral-signatures", "--model", files["model"], "-o", out)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["defenses"]) == ["spectral-signatures"]
    assert summary["selection"]["from"] == "named"


def test_the_help_names_the_default_defenses_the_decision_reads():
    """--help writes the default out (torch-free); it must stay the decision's members."""
    import typer

    from poisonlab.defenses.fusion import decision_members
    from poisonlab.workflows.scan_selection import selection_record

    command = typer.main.get_command(app).commands["scan"]  # type: ignore[attr-defined]
    text = next(p.help for p in command.params if "--defense" in p.opts)
    named = text.split("default: ")[1].split(", the members")[0]
    assert named.replace(" and ", ", ").split(", ") == decision_members()
    assert selection_record("all", ["x"])["from"] == "all"  # -D all says so too
    assert selection_record(["raw-clustering,all"], ["x"])["from"] == "all"


def test_help_teaches_with_examples():
    result = runner.invoke(app, ["scan", "--help"])
    assert result.exit_code == 0
    assert "poisonlab scan data.npz" in result.output and "--holdout" in result.output


@pytest.fixture
def progress_seen(monkeypatch):
    """Progress drawn as on a terminal (CliRunner's stderr is not one); records bar titles and
    the labels set beside them (as ``info: ...``)."""
    from poisonlab import progress

    seen: list[str] = []
    make = progress._make_progress

    def recording():  # type: ignore[no-untyped-def]
        bars = make()
        add_task = bars.add_task

        def add(description, *args, **kwargs):  # type: ignore[no-untyped-def]
            seen.append(description)
            return add_task(description, *args, **kwargs)

        update = bars.update

        def labelled(task, *args, **kwargs):  # type: ignore[no-untyped-def]
            if kwargs.get("info"):
                seen.append(f"info: {kwargs['info']}")
            return update(task, *args, **kwargs)

        bars.add_task = add
        bars.update = labelled
        return bars

    monkeypatch.setattr(progress, "is_enabled", lambda: True)
    monkeypatch.setattr(progress, "_make_progress", recording)
    return seen


@pytest.mark.parametrize(
    ("defense", "params", "bars"),
    [
        (
            "heatmap-clustering",
            ["max_iter=0", "max_points=16", "seed_gw_max_iter=20"],
            ["LRP heatmaps", "heatmap clustering"],
        ),
        ("bnn", ["epochs=1", "samples=4"], ["BNN: ELBO fine-tuning", "BNN: 4 MC passes (data)"]),
    ],
)
def test_model_based_defenses_run_with_progress(files, progress_seen, defense, params, bars):
    """heatmap-clustering and bnn end to end on the checkpoint, small settings via --param,
    with their progress bars drawn (one per class for heatmap clustering)."""
    out = files["tmp"] / "out"
    settings = [arg for p in params for arg in ("--param", p)]
    result = run(files["data"], "-D", defense, "--model", files["model"], *settings, "-o", out)
    assert result.exit_code == 0, result.output
    assert "running defenses" in progress_seen
    assert f"info: {defense}" in progress_seen  # the bar names the defense at work
    for title in bars:
        assert title in progress_seen, progress_seen
    with (out / "scores.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 120
    assert all(r[f"{defense}_score"] not in ("", "nan") for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    record = summary["defenses"][defense]
    assert record["flagged"] == sum(r[f"{defense}_flagged"] == "1" for r in rows)
    assert record["parameters"][params[0].split("=")[0]] == int(params[0].split("=")[1])
    assert defense in result.output  # the summary table


def test_ground_truth_in_the_data_is_scored_on_the_console(files):
    """An attack's .npz carries is_poison: the console gives AUROC/TPR and the decision's rates."""
    from poisonlab.attacks import build_attack
    from poisonlab.seeding import make_generator

    attack = build_attack("badnets", source=0, target=1, count=6, trigger="square", size=2)
    # 100 per class: raw clustering judges only classes of at least verdicts.MIN_CLASS_SIZE
    poisoned = attack.poison(blobs_dataset(n_per_class=100, seed=0), generator=make_generator(0))
    path = files["tmp"] / "poisoned.npz"
    poisoned.save(path)
    out = files["tmp"] / "truth"
    result = run(path, "-D", "raw-clustering", "--model", files["model"], "-o", out)
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "AUROC" in flat and "TPR" in flat
    assert "against the data's is_poison: removed 100.0% of 6 poisons and 0.0% of 300" in flat
    # clean.npz keeps the ground truth of what it kept, so a scan of it reports what stayed
    with np.load(out / "clean.npz", allow_pickle=False) as archive:
        kept, kept_truth = archive["kept_index"], archive["is_poison"]
    with np.load(path, allow_pickle=False) as archive:
        assert np.array_equal(kept_truth, archive["is_poison"][kept])
    assert len(kept) == 300 and not kept_truth.any()


def test_a_scan_without_a_member_of_the_decision_says_so_plainly(files):
    """-D dnn-uncertainty alone (reported only) on data with is_poison: the last line read "(the
    combined decision:  per class)", and matplotlib warned "No artists with labels found to put
    in legend" for the empty combined-score histogram of report.html."""
    import warnings

    from poisonlab.attacks import build_attack
    from poisonlab.seeding import make_generator

    attack = build_attack("badnets", source=0, target=1, count=6, trigger="square", size=2)
    poisoned = attack.poison(blobs_dataset(n_per_class=40, seed=0), generator=make_generator(0))
    path = files["tmp"] / "poisoned.npz"
    poisoned.save(path)
    out = files["tmp"] / "alone"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run(path, "-D", "dnn-uncertainty", "--model", files["model"], "-o", out, "-q")
    assert result.exit_code == 0, result.output
    assert not [w for w in caught if "legend" in str(w.message)], [str(w.message) for w in caught]
    flat = " ".join(result.output.split())
    assert "decision: per class" not in flat
    assert (
        "kept 126 of 126 samples (no defense of the combined decision ran; --decision union" in flat
    )
    assert (out / "report.html").exists()


def test_write_scan_refuses_a_ground_truth_of_another_length(tmp_path):
    from poisonlab.workflows.scan import ScanResult
    from poisonlab.workflows.scan_output import write_scan

    data = blobs_dataset(n_per_class=10, seed=0)
    result = ScanResult(data=data, outcomes=(), models=(), threshold="verdict")
    with pytest.raises(  # a ConfigError: the CLI prints one red line, not a traceback
        ConfigError, match=r"is_poison must be a bool array of one value per scanned sample \(30\)"
    ):
        write_scan(result, tmp_path / "out", is_poison=np.zeros(3, dtype=bool))
    assert not (tmp_path / "out").exists()  # refused before the folder is made


def test_the_official_test_part_is_a_held_out_set(tmp_path):
    """A CIFAR-10 (MNIST, GTSRB) user's clean held-out data is the official test part, which
    --holdout could not name: the same folder read its training part, the data scanned."""
    from tests.data.conftest import cifar_folder

    folder = cifar_folder(tmp_path, n=60, batches=1)
    out = tmp_path / "out"
    given = ["-D", "deep-features", "--holdout", folder, "--holdout-part", "test", "-o", out]
    result = run(folder, *given, "--epochs", "1", "-q")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["holdout"] == {"name": "cifar10 (test part)", "size": 60}  # not the train part
    assert summary["defenses"]["deep-features"]["status"] == "ran"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--holdout-part", "test"], "--holdout-part test needs --holdout"),
        (["--holdout-part", "dev"], "--holdout-part must be train or test, got 'dev'"),
        (["--holdout", "{data}", "--holdout-part", "test"], "has no official test part"),
    ],
)
def test_holdout_part_refusals(files, args, message):
    data = files["data"]
    given = [a.replace("{data}", str(data)) for a in args]
    result = run(
        data, "-D", "deep-features", *given, "-m", files["model"], "-o", files["tmp"] / "o"
    )
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output


def test_a_holdout_without_a_test_part_is_refused_before_the_data_is_read(files, monkeypatch):
    """Reading DATA can take minutes (GTSRB decodes every image): a --holdout with no test part
    for --holdout-part test was refused only once DATA had been read."""
    import poisonlab.data

    def read(*args, **kwargs):
        raise AssertionError(f"data read before the refusal: {args}")

    monkeypatch.setattr(poisonlab.data, "load_dataset", read)
    given = ["--holdout", files["held"], "--holdout-part", "test", "-o", files["tmp"] / "o"]
    result = run(files["data"], "-D", "deep-features", "-m", files["model"], *given)
    assert result.exit_code == 2, result.output
    assert "has no official test part" in " ".join(result.output.split())
