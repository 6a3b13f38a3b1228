"""claims.html in a real headless browser: it loads, paints, and its first table is the scorecard.

A report rendered from a small synthetic record set (with figures) is opened in headless Chromium:
`--screenshot` must give a non-blank PNG of the window's size, and `--dump-dom` (the DOM after
load) must hold the scorecard as its first table, thumbnails that decoded, and `<details>` folds
(one open, for the record whose seed diverged). Skipped, with the reason, without a chromium binary
(Debian: `apt-get install chromium`).
"""
from __future__ import annotations

import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from core import plots, report

_BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)),
                None)
pytestmark = pytest.mark.skipif(_BROWSER is None, reason="no chromium binary on PATH "
                                "(apt-get install chromium)")
WINDOW = (1400, 1000)  # px


def _browser(page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile{len(list(tmp_path.glob('profile*')))}"
    cmd = [_BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
           *args, page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def _records(fig_a: str, fig_b: str) -> list[dict]:
    seeds = lambda bad: {"seeds": [{"seed": i, "status": "diverged" if bad and i == 2 else "ok"}  # noqa: E731
                                   for i in range(3)]}
    base = {"tier": "cpu", "n_used": 3, "n_planned": 3, "unit": "training seed", "p": 0.001,
            "per_seed": {"rate": [0.7, 0.8, 0.9]}, "outcome": "pass", "role": "primary"}
    return [
        {**base, "id": "AV-1", "paper": "he2019", "case": "mlp", "verdict": "replicated",
         "statement": "Every SGD solution is an asymmetric valley.", "paper_value": "c > 2",
         "estimate": 0.8, "ci": [0.6, 1.0], "figures": [fig_a], "tables": seeds(False),
         "reason": "success rate 0.8 [0.6, 1] > required 0.5 -> replicated"},
        {**base, "id": "AV-1", "paper": "he2019", "case": "control: quadratic", "kind": "control",
         "verdict": "refuted", "estimate": 0.0, "ci": [0.0, 0.4],
         "reason": "success rate 0 [0, 0.4] < required 0.5 -> refuted"},
        {**base, "id": "LS-5", "paper": "fort2019", "case": "cnn", "verdict": "refuted",
         "statement": "The tunnel is low-loss.", "estimate": 0.5, "figures": [fig_b],
         "tables": seeds(True), "reason": "1/2 parts replicated (wall: refuted) -> refuted",
         "parts": [{"name": "tunnel", "estimate": 0.1, "ci": [0.05, 0.2], "verdict": "replicated",
                    "reason": "mean 0.1 [0.05, 0.2] > required 0 -> replicated"},
                   {"name": "wall", "estimate": -0.3, "ci": [-0.4, -0.2], "verdict": "refuted",
                    "reason": "mean -0.3 [-0.4, -0.2] < required 0 -> refuted"}]},
    ]


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser_report")
    x = np.linspace(-1, 1, 21)
    a = plots.loss_along_direction(out / "figures" / "a.png", x, x ** 2, title="a")
    b = plots.segment_profile(out / "figures" / "b.png", x, x ** 2, x ** 2 + 1)
    rep = report.build_report(_records(str(a.relative_to(out)), str(b.relative_to(out))), None,
                              {"ended": "complete", "tiers_run": ["cpu"]})
    return report.write_reports(rep, out)["html"]


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_screenshot_is_a_painted_png_of_the_window_size(page, tmp_path):
    shot = tmp_path / "shot.png"
    run = _browser(page, tmp_path, f"--screenshot={shot}")
    assert shot.is_file(), f"no screenshot; browser said: {run.stderr[-800:]}"
    data = shot.read_bytes()
    assert _png_size(data) == WINDOW
    from PIL import Image  # matplotlib's own dependency
    img = np.asarray(Image.open(shot).convert("RGB"), dtype=float)
    assert img.std() > 10, "the page painted (nearly) one colour"
    colours = {tuple(px) for px in img[::7, ::7].reshape(-1, 3).astype(int)}
    assert len(colours) > 50, "too few colours for text, badges and thumbnails"
    greenish = (img[..., 1] > 100) & (img[..., 0] < 80) & (img[..., 2] < 80)  # the replicated badge
    assert greenish.sum() > 50


class _Dom(HTMLParser):
    """Tables (with their class), images (with whether they are data URIs) and details, in order."""

    def __init__(self):
        super().__init__()
        self.tables, self.details, self.thumbs, self.cells = [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append(a.get("class") or "")
        elif tag == "details":
            self.details.append("open" in a)
        elif tag == "img" and "thumb" in (a.get("class") or ""):
            self.thumbs.append((a.get("src") or "")[:22])


def test_dom_has_the_scorecard_first_thumbnails_and_folds(page, tmp_path):
    run = _browser(page, tmp_path, "--dump-dom")
    assert "</html>" in run.stdout, f"no DOM dumped; browser said: {run.stderr[-800:]}"
    dom = _Dom()
    dom.feed(run.stdout)
    assert dom.tables[0] == "scorecard" and dom.tables.count("scorecard") == 2  # He, Fort
    assert "scorecard" not in dom.tables[2:]
    assert dom.thumbs == ["data:image/png;base64,"] * 2
    # per seed + seeds table for each of AV-1 (closed), the AV-1 control (per seed only), LS-5
    # (open: seed 2 diverged); the index of every record (closed)
    assert dom.details.count(True) == 2 and dom.details.count(False) >= 3
    scorecard = run.stdout[run.stdout.index("class=\"scorecard\""):run.stdout.index("<h2>Session")]
    assert "control: refuted ✓" in scorecard and "quadratic</" not in scorecard
    assert "tunnel: mean 0.1 [0.05, 0.2]" in scorecard and "wall: mean -0.3" in scorecard
