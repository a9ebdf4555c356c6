"""The report page: self-contained, one section per artifact present, the absent ones listed with
their reason; experiment, cell and scan folders; `poisonlab report` and the page `poisonlab scan`
writes, end to end."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from poisonlab.cli.main import app
from poisonlab.data import save_npz
from poisonlab.errors import ConfigError
from poisonlab.reports.html import folder_kind, write_report
from poisonlab.reports.run_report import detection_rows, read_npz
from tests.conftest import blobs_dataset
from tests.reports.conftest import write_artifacts

runner = CliRunner()
IMG = re.compile(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')


def assert_self_contained(page: str) -> None:
    """No external URL anywhere; every src/href is a data: image or an in-page anchor."""
    assert "http://" not in page and "https://" not in page
    for match in re.finditer(r'(?:src|href)="([^"]*)"', page):
        assert match.group(1).startswith(("data:image/png;base64,", "#")), match.group(1)
    assert "<link" not in page and "<script" not in page
    for data in IMG.findall(page):
        assert base64.b64decode(data).startswith(b"\x89PNG")


def sections(page: str) -> list[str]:
    return re.findall(r"<h[234]>([^<]*)</h[234]>", page)


def missing(page: str) -> str:
    return page.split("Not in this report", 1)[1] if "Not in this report" in page else ""


def cell_dirs(runs):
    return sorted(d for d in (runs / "s002").iterdir() if (d / "scores.npz").exists())


def test_cell_with_every_artifact(runs):
    full = next(d for d in cell_dirs(runs) if (d / "features.npz").exists())
    assert folder_kind(full) == "cell"
    page = write_report(full).read_text()
    assert_self_contained(page)
    titles = sections(page)
    for title in (
        "Metrics",
        "ROC and precision–recall per defense",
        "Score histograms, clean vs poison",
        "Detection from the scores",
        "2-d feature space",
        "Most suspicious samples: activation-clustering",
        "Attack examples",
        "Parameters",
        "Package versions",
    ):
        assert title in titles, title
    assert len(IMG.findall(page)) == 5
    assert "Not in this report" not in page
    assert "defense.deep-features.aupr" in page  # the stored metrics


def test_cell_with_scores_only_lists_what_is_missing(runs):
    only = next(d for d in cell_dirs(runs) if not (d / "features.npz").exists())
    page = write_report(only).read_text()
    assert_self_contained(page)
    titles = sections(page)
    assert "ROC and precision–recall per defense" in titles
    for absent in ("2-d feature space", "Attack examples"):
        assert absent not in titles
    assert not any(t.startswith("Most suspicious") for t in titles)
    gone = missing(page)
    assert "no features.npz" in gone and "no heatmaps.npz" in gone and "no examples.npz" in gone


def test_detection_table_is_computed_over_analysed_samples(runs):
    full = next(d for d in cell_dirs(runs) if (d / "features.npz").exists())
    arrays = read_npz(full / "scores.npz")
    assert arrays is not None
    scores = {k[7:]: v for k, v in arrays.items() if k.startswith("score__")}
    rows = {r[0]: r for r in detection_rows(arrays["is_poison"], scores, arrays)}
    analysed = arrays["labels"] != 2
    assert rows["activation-clustering"][1] == str(int(analysed.sum()))
    assert rows["activation-clustering"][2] == str(int(arrays["is_poison"][analysed].sum()))
    assert rows["spectral-signatures"][1] == str(len(analysed))
    assert rows["spectral-signatures"][3] == "0"  # nothing flagged


def test_experiment_page(runs):
    folder = runs / "s002"
    assert folder_kind(folder) == "experiment"
    page = write_report(folder, max_cells=1).read_text()
    assert_self_contained(page)
    titles = sections(page)
    assert titles[0] == "Overview"
    assert any(t.startswith("Subedar et al. 2019, Table 2") for t in titles)
    assert "Metrics by grid setting" in titles and "Configuration" in titles
    assert sum(t.startswith("Cell ") for t in titles) == 1
    assert "99.43" in page and "98.00 ± 1.00" in page  # paper beside ours
    assert "5 more cells" in missing(page)


def test_experiment_without_store(tmp_path):
    folder = tmp_path / "runs" / "lonely"
    write_artifacts(folder / "abc", which=("scores",))
    (folder / "abc" / "cell.json").write_text(
        '{"experiment": "lonely", "key": "abc", "params": {}}'
    )
    page = write_report(folder).read_text()
    assert "no results store" in missing(page)
    assert "no config.json" in missing(page)
    assert "ROC and precision–recall per defense" in " ".join(sections(page))


def test_an_attack_folder_says_to_scan_its_poisoned_set(tmp_path):
    """`poisonlab report runs/bn` after `poisonlab attack ... --out runs/bn` said only that the
    folder was not a scan, an experiment or a cell."""
    folder = tmp_path / "bn"
    folder.mkdir()
    (folder / "attack.json").write_text("{}")
    (folder / "poisoned.npz").write_bytes(b"")
    with pytest.raises(ConfigError) as info:
        folder_kind(folder)
    expected = f"{folder} is an attack's output, which has no report of its own: scan its "
    assert str(info.value).startswith(expected)
    assert f"poisonlab scan {folder / 'poisoned.npz'} -D all -o SCAN" in str(info.value)
    spaced = tmp_path / "my runs"  # the command it gives can be pasted into a shell
    folder.rename(spaced)
    with pytest.raises(ConfigError, match=rf"\(poisonlab scan '{spaced}/poisoned.npz' -D all"):
        folder_kind(spaced)


def test_unknown_folder_and_misplaced_data(tmp_path, runs):
    with pytest.raises(ConfigError, match="not a scan output"):
        folder_kind(tmp_path)
    with pytest.raises(ConfigError, match=r"is a runs folder.*s002"):
        folder_kind(runs)
    with pytest.raises(ConfigError, match="scan output folders only"):
        write_report(runs / "s002", data="digits")


@pytest.fixture
def scan_files(tmp_path):
    """plain.npz (no ground truth), poisoned.npz (the same samples with a bright corner on every
    tenth and is_poison), other.npz (30 other samples)."""
    data = blobs_dataset(n_per_class=20, seed=0)
    poison = torch.zeros(len(data), dtype=torch.bool)
    poison[::10] = True
    images = data.images.clone()
    images[poison, :, 6:, 6:] = 1.0
    marked = data.with_images(images)
    return {
        "plain": save_npz(data, tmp_path / "plain.npz"),
        "poisoned": save_npz(marked, tmp_path / "poisoned.npz", is_poison=poison.numpy()),
        "other": save_npz(blobs_dataset(n_per_class=10, seed=2), tmp_path / "other.npz"),
        "tmp": tmp_path,
    }


def scan(spec, out):
    args = ["scan", str(spec), "-D", "raw-clustering", "-t", "contamination:0.1", "-o", str(out)]
    result = runner.invoke(app, [*args, "-q"])
    assert result.exit_code == 0, result.output
    return (out / "report.html").read_text()


def test_scan_writes_a_report_with_ground_truth(scan_files):
    page = scan(scan_files["poisoned"], scan_files["tmp"] / "a")
    assert_self_contained(page)
    titles = sections(page)
    for title in (
        "Overview",
        "Defenses",
        "ROC and precision–recall per defense",
        "Detection against the ground truth",
        "Most suspicious images: raw-clustering",
        "Configuration",
    ):
        assert title in titles, title
    out = scan_files["tmp"] / "a"
    result = runner.invoke(app, ["report", str(out)])  # the data is read again from summary.json
    assert result.exit_code == 0, result.output
    again = sections((out / "report.html").read_text())
    assert "ROC and precision–recall per defense" in again
    assert "Most suspicious images: raw-clustering" in again
    moved = scan_files["poisoned"].rename(scan_files["tmp"] / "moved.npz")
    result = runner.invoke(app, ["report", str(out)])  # gone: a warning, the page without images
    assert result.exit_code == 0, result.output
    assert "cannot read the scanned data" in result.output and "--data" in result.output
    assert "ROC and precision–recall per defense" not in sections((out / "report.html").read_text())
    result = runner.invoke(app, ["report", str(out), "--data", str(moved)])
    assert result.exit_code == 0, result.output
    assert "ROC and precision–recall per defense" in sections((out / "report.html").read_text())


def test_report_of_a_scan_folder_finds_its_data_from_anywhere(scan_files, monkeypatch):
    """`poisonlab report SCAN` rewrote the scan's page without its ground-truth curves and
    images unless --data named the data again; summary.json now records where it was read
    (absolute), so a scan of a relative path reports in full from another folder."""
    monkeypatch.chdir(scan_files["tmp"])
    scan("poisoned.npz", Path("a"))
    summary = json.loads(Path("a/summary.json").read_text())
    assert summary["dataset"]["source"] == str(scan_files["poisoned"].resolve())
    elsewhere = scan_files["tmp"] / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = runner.invoke(app, ["report", str(scan_files["tmp"] / "a")])
    assert result.exit_code == 0, result.output
    page = (scan_files["tmp"] / "a" / "report.html").read_text()
    assert "Detection against the ground truth" in sections(page)
    assert "Most suspicious images: raw-clustering" in sections(page)


def test_scan_report_tables_show_no_raw_markup_and_no_nan(scan_files):
    """A skip reason's backticked parameter is set as code, and a metric undefined for a defense
    (precision when it flagged nothing) reads "n/a" with the reason, not "nan"."""
    out = scan_files["tmp"] / "c"
    args = ["scan", str(scan_files["poisoned"]), "-D", "raw-clustering,deep-features"]
    result = runner.invoke(app, [*args, "-t", "value:1e9", "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text()
    assert "needs a clean held-out set (<code>holdout</code>)" in page
    assert "`" not in page
    detection = page.split("Detection against the ground truth")[-1].split("</table>")[0]
    assert "nan" not in detection
    precision = '<td title="nothing flagged: precision is undefined">n/a</td>'
    assert precision in detection
    assert "n/a: undefined for the samples at hand (raw-clustering: nothing flagged" in page


def test_scan_of_unlabelled_data_and_report_command(scan_files):
    out = scan_files["tmp"] / "b"
    page = scan(scan_files["plain"], out)
    titles = sections(page)
    assert "ROC and precision–recall per defense" not in titles
    assert "Scores per class: raw-clustering" in titles
    assert "Most suspicious images: raw-clustering" in titles
    assert "no ground truth" in missing(page)
    (out / "report.html").unlink()
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert "Most suspicious images: raw-clustering" in sections((out / "report.html").read_text())
    save_npz(blobs_dataset(n_per_class=21, seed=5), scan_files["plain"])  # other samples now
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0 and "is no longer the scanned data" in result.output
    again = (out / "report.html").read_text()
    assert "Most suspicious images: raw-clustering" not in sections(again)
    assert "--data" in missing(again)
    result = runner.invoke(app, ["report", str(out), "--data", str(scan_files["other"])])
    assert result.exit_code == 2 and "not the scanned data" in result.output


def test_report_command_user_errors(tmp_path, runs):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "not a scan output" in result.output
    result = runner.invoke(app, ["report", str(runs / "s002"), "--data", "digits"])
    assert result.exit_code == 2 and "scan output folders only" in result.output
    result = runner.invoke(app, ["report", str(runs / "s002"), "--max-cells", "0"])
    assert result.exit_code == 0 and (runs / "s002" / "report.html").is_file()
    page = (runs / "s002" / "report.html").read_text()
    assert not any(t.startswith("Cell ") for t in sections(page))  # no cell section at all...
    assert "6 more cells" in missing(page)  # ...and the six listed as left out
    result = runner.invoke(app, ["report", str(runs / "s002"), "--max-cells", "5"])
    assert result.exit_code == 0, result.output
    assert "figures of 1 more cell (" in missing((runs / "s002" / "report.html").read_text())
