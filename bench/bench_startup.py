"""Start-up: how long `poisonlab --help`, `--version` and one-line errors take (target ≤ 1 s).

Each command runs as a new process, as a user types it (the installed ``poisonlab`` script of this
Python), ``--repeat`` times; the table gives the median wall seconds, the median CPU seconds of
the process, and whether it imported torch (from ``-X importtime``). ``import torch`` alone is
the reference row. Command errors (exit status 2) are expected for the error rows.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import markdown_table, write_result

CASES = {
    "poisonlab --help": ["--help"],
    "poisonlab --version": ["--version"],
    "poisonlab scan --help": ["scan", "--help"],
    "poisonlab train --help": ["train", "--help"],
    "missing file: scan missing.npz -D all -o out": ["scan", "missing.npz", "-D", "all", "-o", "o"],
    "unknown defense: scan digits -D nope -o out": ["scan", "digits", "-D", "nope", "-o", "o"],
    "bad --threads 0": ["scan", "digits", "-D", "all", "-o", "o", "--threads", "0"],
    "missing option: scan digits": ["scan", "digits"],
}


def _timed(command: list[str], cwd: str) -> tuple[float, float, bool]:
    """(wall s, CPU s, imported torch) of one run of ``command`` in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *command],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=os.environ | {"COLUMNS": "100"},
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    torch_loaded = any(line.rstrip().endswith("| torch") for line in done.stderr.splitlines())
    return wall, cpu, torch_loaded


def main(argv: list[str]) -> None:
    """Time every case; write bench/results/startup.md."""
    parser = argparse.ArgumentParser(prog="python -m bench startup")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 repeats")
    args = parser.parse_args(argv)
    repeat = 2 if args.quick else args.repeat
    script = Path(sys.executable).with_name("poisonlab")
    entry = (
        [str(script)] if script.exists() else ["-c", "from poisonlab.cli.main import main; main()"]
    )
    rows = []
    with tempfile.TemporaryDirectory() as cwd:
        reference = [_timed(["-c", "import torch"], cwd) for _ in range(repeat)]
        cases = {"python -c 'import torch' (reference)": None, **CASES}
        for name, args_ in cases.items():
            runs = (
                reference if args_ is None else [_timed(entry + args_, cwd) for _ in range(repeat)]
            )
            rows.append(
                [
                    name,
                    f"{statistics.median(r[0] for r in runs):.2f}",
                    f"{statistics.median(r[1] for r in runs):.2f}",
                    "yes" if any(r[2] for r in runs) else "no",
                ]
            )
            print(rows[-1], flush=True)
    body = markdown_table(["command", "wall s (median)", "CPU s (median)", "imports torch"], rows)
    body += f"\n{repeat} runs each, every one a new process started the way a user types it.\n"
    command = "python -m bench startup" + (" --quick" if args.quick else "")
    print(write_result("startup", "Start-up time of the command line", command, body).read_text())
