"""Run `poisonlab scan` as a user would (a new process) and collect what the speed benchmarks report.

One :func:`timed_scan` = one command line, measured from outside: wall seconds, CPU seconds of
the process and its threads, peak resident memory, the load average before and after; then its
summary.json (training and per-defense seconds, thread settings) and scores.csv (flags scored
against the case's ground truth, and a digest to tell whether two runs gave the same scores).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import load_average


def poisonlab_command() -> list[str]:
    """The ``poisonlab`` script of this Python (what a user types), as an argv prefix."""
    script = Path(sys.executable).with_name("poisonlab")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from poisonlab.cli.main import main; main()"]


@dataclass
class ScanRun:
    """One measured `poisonlab scan`."""

    wall: float
    cpu: float
    max_rss_mb: float
    load_start: float
    load_end: float
    summary: dict[str, Any]
    scores_digest: str
    flags: dict[str, np.ndarray] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)

    def training_seconds(self, role: str) -> float:
        """Seconds spent training the model of ``role`` ("model", "lgm-model"), 0 if none."""
        for model in self.summary.get("models", []):
            if model.get("role") == role and model.get("training"):
                return float(model["training"]["seconds"])
        return 0.0

    def defense_seconds(self, name: str) -> float:
        """Seconds of one defense (NaN when it did not run)."""
        info = self.summary.get("defenses", {}).get(name, {})
        return float(info["seconds"]) if info.get("status") == "ran" else float("nan")

    @property
    def threads(self) -> str:
        """The thread settings the scan recorded."""
        t = self.summary.get("settings", {}).get("threads", {})
        return f"{t.get('threads')} ({t.get('source')}), {t.get('omp_wait_policy')}"


def timed_scan(args: list[str], out: Path, *, src: Path | None = None) -> ScanRun:
    """Run ``poisonlab scan ARGS --out OUT --force -q`` and measure it (``src``: another
    checkout's ``src`` folder, to measure an earlier version with the same command)."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
    command = [*poisonlab_command(), "scan", *args, "--out", str(out), "--force", "-q"]
    load_start = load_average()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary = json.loads((out / "summary.json").read_text())
    scores_csv = (out / "scores.csv").read_bytes()
    flags, scores = _read_scores(out / "scores.csv")
    return ScanRun(
        wall,
        cpu,
        after.ru_maxrss / 1024,  # KB on Linux; the largest child so far
        load_start,
        load_average(),
        summary,
        hashlib.sha256(scores_csv).hexdigest()[:12],
        flags,
        scores,
    )


def _read_scores(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = [c.removesuffix("_score") for c in rows[0] if c.endswith("_score")]
    # the combined score's decision is the "removed" column (scores.csv since the verdicts)
    column = {n: f"{n}_flagged" if f"{n}_flagged" in rows[0] else "removed" for n in names}
    flags = {n: np.array([r[column[n]] == "1" for r in rows]) for n in names}
    scores = {
        n: np.array([float(r[f"{n}_score"]) if r[f"{n}_score"] else np.nan for r in rows])
        for n in names
    }
    return flags, scores


def ground_truth(path: Path) -> np.ndarray:
    """``is_poison`` of a case written by bench/cases.py."""
    with np.load(path, allow_pickle=False) as archive:
        return np.asarray(archive["is_poison"], dtype=bool)
