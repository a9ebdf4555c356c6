"""Run the benchmarks: ``python -m bench`` runs every ``bench_*.py``; ``python -m bench NAME`` one.

Each benchmark module exposes ``main(argv) -> None`` and writes a Markdown table to
``bench/results/NAME.md``, headed by its run record (wall and CPU seconds, thread settings, load
average at the start and the end: bench/common.py). Pass ``--quick`` for smaller sizes (a smoke
run, not for the record). Benchmarks run under poisonlab's thread policy (poisonlab.runtime),
applied before torch loads: POISONLAB_THREADS sets the thread count, else torch's default (every
core); benchmarks with a ``--threads`` flag set their own.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path

from poisonlab import runtime


def available() -> list[str]:
    """Names of the benchmark modules (without the ``bench_`` prefix)."""
    folder = Path(__file__).parent
    return sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules([str(folder)])
        if m.name.startswith("bench_")
    )


def main(argv: list[str]) -> int:
    """Run the named benchmarks (all when none is named), forwarding flags such as ``--quick``."""
    known = set(available())
    names: list[str] = []
    while argv and not argv[0].startswith("-"):  # leading words name benchmarks
        if argv[0] not in known:
            print(f"unknown benchmark {argv[0]!r}; choose from: {', '.join(sorted(known))}")
            return 2
        names.append(argv.pop(0))
    flags = list(argv)  # everything after the names goes to each benchmark, values included
    if runtime.requested_threads()[0] is not None:
        runtime.use_threads()
    for name in names or available():
        print(f"\n=== bench {name} ===", flush=True)
        started = time.perf_counter()
        module = importlib.import_module(f"bench.bench_{name}")
        importlib.import_module("bench.common").start_run()
        module.main(flags)
        print(f"=== {name}: {time.perf_counter() - started:.0f} s ===", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
