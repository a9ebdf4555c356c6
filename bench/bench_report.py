"""report.html of a scan: how long writing it takes, this checkout vs another (``--src``).

A scan ends by drawing its report (bench/results/scan_speed.md counts it in "start-up, files,
report"): per defense a per-class histogram figure and an image grid of its most suspicious
samples, plus the ROC/PR curves and score histograms when the data carries ground truth. This
bench times :func:`poisonlab.reports.scan_report.write_scan_report` alone on an existing scan
folder of the digits case (``poisonlab scan CASE --defense all --out DIR``; bench/cases.py),
``--repeat`` times in a fresh process per checkout, imports and loading excluded (the first
draw still pays matplotlib's font set-up), and records wall and CPU seconds of each draw and the
size of the page.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import markdown_table, write_result

ROOT = Path(__file__).resolve().parents[1]

#: Runs in the child: draws the report ``repeat`` times and prints one JSON line per draw.
CHILD = """
import json, sys, time
from pathlib import Path
from poisonlab.data import load_dataset
from poisonlab.reports import scan_report
import matplotlib.figure
folder, case, repeat = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
data = load_dataset(case)
for _ in range(repeat):
    wall, cpu = time.perf_counter(), time.process_time()
    page = scan_report.write_scan_report(folder, dataset=data, source=case)
    print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
                      "bytes": page.stat().st_size, "module": scan_report.__file__}))
"""


def shown(module: Path, given: Path | None) -> str:
    """The src a child imported, as the record shows it: relative to this repository when inside
    it (``src``), so no machine's own folders end up in bench/results; else ``--src`` as the
    user wrote it when that is what was imported, else the full path."""
    module = module.resolve()
    if module.is_relative_to(ROOT):
        return str(module.relative_to(ROOT))
    if given is not None and module == given.resolve():
        return str(given)
    return str(module)


def draws(src: Path | None, folder: Path, case: str, repeat: int) -> list[dict[str, float]]:
    """Time ``repeat`` report draws in a child process that imports ``src`` (default: ours)."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), case, str(repeat)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def main(argv: list[str]) -> None:
    """Time the report of ``--scan`` with this checkout and with ``--src``; write report.md."""
    parser = argparse.ArgumentParser(prog="python -m bench report")
    parser.add_argument("--scan", type=Path, required=True, help="a scan folder of the case")
    parser.add_argument("--case", required=True, help="the scanned data (.npz with is_poison)")
    parser.add_argument("--src", type=Path, default=None, help="another checkout's src (before)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, src in (("before (--src)", args.src), ("this checkout", None)):
            if label.startswith("before") and src is None:
                continue
            folder = Path(tmp) / label.split()[0]
            shutil.copytree(args.scan, folder)
            times = draws(src, folder, args.case, args.repeat)
            walls = ", ".join(f"{t['wall']:.2f}" for t in times)
            cpus = ", ".join(f"{t['cpu']:.2f}" for t in times)
            module = Path(times[0]["module"]).parents[2]
            rows.append([label, shown(module, src), walls, cpus, f"{times[-1]['bytes'] / 1e6:.2f}"])
            print(rows[-1], flush=True)
    body = (
        f"Scan folder: `poisonlab scan CASE --defense all` of the digits case (1,828 images, "
        f"7 defenses ran + the combined score), drawn {args.repeat} times per checkout.\n\n"
        + markdown_table(["code", "src", "wall s per draw", "CPU s per draw", "page MB"], rows)
    )
    command = "python -m bench report " + " ".join(argv)
    print(write_result("report", "report.html of a scan: drawing time", command, body).read_text())
