"""``carl explain --html``: the page renders in a real headless browser with the highlights.

Needs Debian's ``chromium`` (``.ci/run`` installs it). Without it the test skips, except under
CI (``CI=true``), where a missing browser is a failure rather than a silent skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest

from carl.cli import main
from carl.inference.explain_html import COLOURS

LEGEND_BOTTOM_PX = 140  # title and legend sit above this line; the explained texts below it


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is missing under CI: .ci/run should have installed it")
    pytest.skip("chromium not installed (apt-get install chromium)")


def screenshot(html_path, png_path, tmp_path) -> np.ndarray:
    """Render ``html_path`` headless at 1000x800 and return the RGB pixels [H, W, 3]."""
    from PIL import Image

    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1000,800",
        f"--screenshot={png_path}",
        html_path.as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0 and png_path.is_file(), result.stderr[-2000:]
    return np.asarray(Image.open(png_path).convert("RGB"))


def near(pixels: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 12) -> int:
    return int((np.abs(pixels.astype(int) - np.array(rgb)).max(-1) <= tolerance).sum())


def test_html_page_highlights_words_in_a_browser(affect_model, tmp_path):
    src = tmp_path / "texts.txt"
    src.write_text(
        "the morning by the river was serene\nthey were furious after the meeting\n"
        "we felt thrilled and excited today\n",
        encoding="utf-8",
    )
    page = tmp_path / "page.html"
    assert main(["explain", str(affect_model), "-i", str(src), "--html", str(page), "--no-progress"]) == 0
    html = page.read_text(encoding="utf-8")
    assert html.count('class="item"') == 3 and "serene" in html and "<script" not in html

    pixels = screenshot(page, tmp_path / "page.png", tmp_path)
    assert pixels.shape[0] >= 600 and pixels.shape[1] >= 900
    non_white = (pixels < 245).any(-1).mean()
    assert non_white > 0.01 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, "blank screenshot"
    body = pixels[LEGEND_BOTTOM_PX:]
    # the most salient word of each row is painted at full opacity in its dimension's colour:
    # 'serene' green (raises valence) and blue (lowers arousal), 'furious' red and orange
    for dimension in COLOURS:
        for rgb in COLOURS[dimension]:
            assert near(body, rgb) > 150, f"no {dimension} highlight {rgb} below the legend"
