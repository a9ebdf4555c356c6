"""Helpers shared by the benchmarks: machine description and Markdown result files."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def machine() -> str:
    """One line describing where the numbers were taken."""
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}"
    )


def write_result(name: str, title: str, command: str, body: str) -> Path:
    """Write bench/results/NAME.md with a header (command, date, machine) and ``body``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    header = (
        f"# {title}\n\n"
        f"Command: `{command}`  \n"
        f"Measured: {time.strftime('%Y-%m-%d %H:%M')} on {machine()}\n\n"
    )
    path.write_text(header + body.rstrip() + "\n")
    return path


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
