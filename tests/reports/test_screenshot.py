"""The report page really shows its plots in a browser: a headless-Chromium screenshot of the page
is compared with one of the same page with its images removed.

Needs the Debian package ``chromium`` (``apt-get install -y --no-install-recommends chromium``);
skipped with that reason where it is absent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from poisonlab.reports.html import write_report
from tests.reports.conftest import ALL_ARTIFACTS, write_artifacts

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium not installed (apt-get install -y --no-install-recommends chromium)",
)
WIDTH, HEIGHT = 1200, 2000
MATPLOTLIB_BLUE, MATPLOTLIB_ORANGE = (31, 119, 180), (255, 127, 14)  # the C0 and C1 lines


def screenshot(page: Path, png: Path, profile: Path) -> np.ndarray:
    """Render ``page`` in headless Chromium at WIDTH × HEIGHT; the screenshot as RGB ints."""
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
        f"--screenshot={png}", f"--window-size={WIDTH},{HEIGHT}", page.as_uri(),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert png.is_file(), (
        f"chromium wrote no screenshot (exit {result.returncode}): {result.stderr[-800:]}"
    )
    return np.asarray(Image.open(png).convert("RGB")).astype(np.int64)


def colourful(image: np.ndarray) -> np.ndarray:
    """Pixels with clearly different channels (plot lines, bars, markers; not grey text)."""
    return (image.max(axis=2) - image.min(axis=2)) > 60


def near(image: np.ndarray, colour: tuple[int, int, int], tolerance: int = 30) -> int:
    """How many pixels lie within ``tolerance`` of ``colour`` in every channel."""
    return int((np.abs(image - np.array(colour)) <= tolerance).all(axis=2).sum())


def test_screenshot_shows_the_plots(tmp_path):
    cell = tmp_path / "runs" / "e" / "cell"
    write_artifacts(cell, which=ALL_ARTIFACTS)
    report = write_report(cell)
    stripped = cell / "stripped.html"
    stripped.write_text(re.sub(r"<img [^>]*>", "", report.read_text()))

    shown = screenshot(report, tmp_path / "shown.png", tmp_path / "profile")
    blank = screenshot(stripped, tmp_path / "blank.png", tmp_path / "profile")
    assert shown.shape == blank.shape == (HEIGHT, WIDTH, 3)

    body = slice(250, HEIGHT)  # below the title and the table of contents
    with_plots, without = colourful(shown[body]).mean(), colourful(blank[body]).mean()
    assert with_plots > 0.01, f"only {with_plots:.4f} of the page is coloured: plots not drawn"
    assert with_plots > 5 * without, (with_plots, without)
    assert near(shown, MATPLOTLIB_BLUE) > 200 and near(shown, MATPLOTLIB_ORANGE) > 200  # ROC lines
    assert near(blank, MATPLOTLIB_ORANGE) < 20
    non_white = (shown.min(axis=2) < 245).mean() - (blank.min(axis=2) < 245).mean()
    assert non_white > 0.02
