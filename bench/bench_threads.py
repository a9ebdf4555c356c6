"""Thread settings under contention: the measurements behind poisonlab's thread policy.

Each workload runs in a fresh process (libgomp reads OMP_WAIT_POLICY and GOMP_SPINCOUNT once,
when torch loads) under every combination of

- torch intra-op threads: 1 or all cores;
- OpenMP wait policy, with all cores (one thread has no idle workers to wait): libgomp's
  default (idle workers spin ~300,000 iterations before sleeping), ``OMP_WAIT_POLICY=PASSIVE``
  (they sleep at once), ``GOMP_SPINCOUNT=10000`` (a short spin);
- the machine: quiet, beside one CPU-bound process (a busy Python loop, one core), or beside two
  (every core busy: the load of 4–6 the issue measured on a shared machine is worse still).

Workloads (bench/thread_probe.py): cnn-small 3 epochs on digits (8×8, the issue's probe),
lgm-net 3 epochs on digits, cnn-small 1 epoch on 6,000 Fashion-MNIST images (28×28), a forward
pass over those 6,000 images recording the probe layers, and 20 scikit-learn 2-means fits with 10
restarts (activation clustering's step; scikit-learn's own OpenMP runtime). Seconds are the
workload's alone (imports and data loading excluded); CPU is the process's over all its threads.
"checksum" compares the trained weights: equal means the thread count did not change the result.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from bench.common import busy_neighbour, markdown_table, write_result
from bench.thread_probe import WORKS

POLICIES = {
    "default": {},
    "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin 10k": {"GOMP_SPINCOUNT": "10000"},
}
LOADS = {"quiet": 0, "busy": 1, "2 busy": 2}  # how many busy neighbours run beside the probe
_THREAD_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "POISONLAB_THREADS")


def probe(work: str, threads: int, policy: str) -> dict[str, object]:
    """Run one workload in a child process with exactly these settings."""
    env = {k: v for k, v in os.environ.items() if k not in _THREAD_VARS}
    env |= POLICIES[policy] | {"OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(
        [sys.executable, "-m", "bench.thread_probe", work],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    """Measure every combination and write bench/results/threads.md."""
    parser = argparse.ArgumentParser(prog="python -m bench threads")
    parser.add_argument("--quick", action="store_true", help="digits training only")
    parser.add_argument("--works", default=None, help=f"comma-separated subset of {WORKS}")
    args = parser.parse_args(argv)
    works = args.works.split(",") if args.works else (["digits-train"] if args.quick else WORKS)
    cores = os.cpu_count() or 1
    rows = []
    for load, neighbours in LOADS.items():
        with busy_neighbour(neighbours):
            for work in works:
                for threads, policy in [(1, "default")] + [(cores, p) for p in POLICIES]:
                    if threads == 1 or cores > 1:
                        r = probe(work, threads, policy)
                        row = [work, load, policy, threads, f"{r['wall']:.2f}", f"{r['cpu']:.2f}"]
                        row.append(f"{r['checksum']:.6f}")
                        rows.append(row)
                        print(row, flush=True)
    body = markdown_table(
        ["workload", "machine", "wait policy", "torch threads", "wall s", "CPU s", "checksum"],
        rows,
    )
    body += (
        "\n'busy' = beside one busy Python loop (a second CPU-bound process on one core), '2 busy' "
        "beside two. CPU s counts every thread of the probe process, spinning included.\n"
    )
    command = "python -m bench threads" + (" --quick" if args.quick else "")
    print(write_result("threads", "Thread settings under contention", command, body).read_text())
