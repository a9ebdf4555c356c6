"""`poisonlab scan CASE --defense all` end to end on the digits case, quiet and beside busy processes.

The case (bench/cases.py): all 1,797 scikit-learn digits plus 31 class-3 copies with the 4-pixel
pattern relabelled 8, 1,828 images of 8×8. The command is the one a user types (a new process:
start-up, loading, training cnn-small and lgm-net, every defense that runs without a held-out
set, the files and report.html). Machine states: quiet, beside one CPU-bound process (a busy
Python loop on one core) and beside two (every core busy). Targets (issue 9): ≤ 60 s quiet and
≤ 2× that beside a second CPU-bound process.

Columns: wall and CPU seconds of the scan process, its peak memory, the load average before and
after; the seconds of its parts from its summary.json (training each model, every defense, and
the rest: start-up, loading, writing the files and the report); the thread settings it recorded;
and a digest of scores.csv (equal digests = identical scores). ``--src DIR`` measures another
checkout's ``src`` with the same command (the "before" rows).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from bench.cases import digits_case
from bench.common import busy_neighbour, markdown_table, write_result
from bench.scan_runs import ScanRun, ground_truth, timed_scan

LOADS = {"quiet": 0, "1 busy": 1, "2 busy": 2}


def _row(label: str, load: str, run: ScanRun) -> list[object]:
    defenses = run.summary.get("defenses", {})
    ran = [n for n, info in defenses.items() if info.get("status") == "ran"]
    defense_total = sum(run.defense_seconds(n) for n in ran)
    hc = run.defense_seconds("heatmap-clustering")
    scan_seconds = float(run.summary.get("seconds", np.nan))
    return [
        label,
        load,
        f"{run.wall:.1f}",
        f"{run.cpu:.1f}",
        f"{run.load_start:.2f} / {run.load_end:.2f}",
        f"{run.max_rss_mb:.0f}",
        f"{run.training_seconds('model'):.1f}",
        f"{run.training_seconds('lgm-model'):.1f}",
        f"{hc:.1f}",
        f"{defense_total - (0 if np.isnan(hc) else hc):.1f}",
        f"{run.wall - scan_seconds:.1f}",
        run.threads,
        run.scores_digest,
    ]


def _detection_rows(run: ScanRun, truth: np.ndarray) -> list[list[object]]:
    from poisonlab.metrics.detection import auroc

    rows = []
    for name, flags in run.flags.items():
        tpr = flags[truth].mean()
        tnr = (~flags[~truth]).mean()
        scores = run.scores[name]
        keep = np.isfinite(scores)
        value = auroc(truth[keep], scores[keep])
        rows.append(
            [name, f"{100 * tpr:.1f}", f"{100 * tnr:.1f}", f"{100 * value:.1f}", int(flags.sum())]
        )
    return rows


def main(argv: list[str]) -> None:
    """Measure the scan in every machine state; write bench/results/scan_speed.md."""
    parser = argparse.ArgumentParser(prog="python -m bench scan_speed")
    parser.add_argument("--loads", default=",".join(LOADS), help=f"subset of {', '.join(LOADS)}")
    parser.add_argument("--src", type=Path, default=None, help="another checkout's src folder")
    parser.add_argument("--label", default=None, help="row label (default: this checkout)")
    parser.add_argument("--quick", action="store_true", help="quiet only")
    args = parser.parse_args(argv)
    loads = ["quiet"] if args.quick else args.loads.split(",")
    label = args.label or (f"src={args.src}" if args.src else "this checkout")
    rows, detection = [], ""
    with tempfile.TemporaryDirectory() as tmp:
        case = digits_case(Path(tmp))
        truth = ground_truth(case)
        for load in loads:
            with busy_neighbour(LOADS[load]):
                run = timed_scan([str(case), "--defense", "all"], Path(tmp) / "out", src=args.src)
            rows.append(_row(label, load, run))
            print(rows[-1], flush=True)
            if not detection:
                detection = markdown_table(
                    ["defense", "TPR %", "TNR %", "AUROC %", "flagged"],
                    _detection_rows(run, truth),
                )
    body = (
        f"Case: 1,828 digits (8×8), {int(truth.sum())} poisons (class 3 with the 4-pixel pattern, "
        "labelled 8). `poisonlab scan CASE --defense all --out OUT --force -q` (deep-features "
        "is skipped: it needs a held-out set).\n\n"
    )
    body += markdown_table(
        ["code", "machine", "wall s", "CPU s", "load before / after", "peak MB",
         "train cnn-small s", "train lgm-net s", "heatmap-clustering s", "other defenses s",
         "start-up, files, report s", "threads", "scores.csv digest"],
        rows,
    )  # fmt: skip
    body += "\nDetection on this case (first row's run; poison = positive):\n\n" + detection
    command = "python -m bench scan_speed" + (" --quick" if args.quick else "")
    if args.src:
        command += f" --src {args.src}"
    if not args.quick and args.loads != ",".join(LOADS):
        command += f" --loads {args.loads}"
    name = "scan_speed" if args.src is None else "scan_speed_before"
    title = "poisonlab scan end to end on the digits case"
    print(write_result(name, title, command, body).read_text())
