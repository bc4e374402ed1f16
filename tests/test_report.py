"""report.html: written into the model folder by the fit job, self-contained, and rendered by a real browser
(headless Chromium: the screenshot is not blank, the plots are in the DOM, the console stays silent)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def report_html(demo_model) -> Path:
    return demo_model.path / "report.html"


@pytest.fixture(scope="module")
def saved_metrics(demo_model) -> dict:
    return json.loads((demo_model.path / "metrics.json").read_text())


def chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    """Headless Chromium on a file (as root in CI: no sandbox), console messages logged to stderr."""
    if CHROMIUM is None:
        if IN_CI:
            pytest.fail("chromium is not installed; .ci/run installs it (Debian package `chromium`)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={tmp / 'profile'}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def console_lines(stderr: str) -> list[str]:
    """Chromium's log lines of the page's console (an error thrown, console.error, ...): `...:CONSOLE(...)`."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


# ------------------------------------------------------------------------------------------------ the file
def test_the_fit_writes_the_report_into_the_model_and_its_manifest(demo_model, report_html):
    assert report_html.is_file()
    manifest = json.loads((demo_model.path / "manifest.json").read_text())
    assert "report.html" in manifest["files"]  # checksummed and published atomically with the model


def test_the_report_is_self_contained(report_html):
    page = report_html.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    for outside in ("http:", "https:", "//cdn", "<script", "<link", " src=", "@import", "url("):
        assert outside not in page, outside


def test_the_report_shows_the_saved_metrics_beside_the_baseline(report_html, saved_metrics):
    page = report_html.read_text(encoding="utf-8")
    table = page[page.index('<table class="metrics">') :]
    table = table[: table.index("</table>")]
    cells = re.findall(r"<tr><td>([^<]+)</td><td[^>]*>([^<]+)</td><td[^>]*>([^<]+)</td></tr>", table)
    shown = {name: (mine, base) for name, mine, base in cells}
    assert set(shown) == set(saved_metrics["metrics"]) and "rmse" in shown
    for name, value in saved_metrics["metrics"].items():
        assert shown[name] == (f"{value:.4f}", f"{saved_metrics['baseline'][name]:.4f}")


def test_the_report_draws_one_point_per_item_and_one_curve_point_per_epoch(demo_model, report_html):
    page = report_html.read_text(encoding="utf-8")
    item_map = page[page.index('<svg class="map"') :]
    item_map = item_map[: item_map.index("</svg>")]
    assert item_map.count("<circle") == len(demo_model.rec.items_)
    epochs = len(demo_model.rec.train_result_.history)
    charts = re.findall(r'<svg class="chart".*?</svg>', page, flags=re.S)
    assert len(charts) == 2  # train loss and val rmse
    assert all(chart.count("<circle") == epochs for chart in charts)
    assert "val rmse per epoch" in page


def test_data_text_is_escaped_in_the_report(demo_model):
    from hybridrec.report import render_report

    rec = demo_model.load()
    rec.display_[0] = ['<script>alert("x")</script>', None, "<b>cat</b>"]
    page = render_report(rec, {"rmse": 1.0}, {"rmse": 1.1}, {"dataset": "<i>d</i>"}, np.ones(len(rec.items_)))
    assert "<script>" not in page and "<b>cat" not in page and "<i>d" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


def test_a_resave_keeps_the_report(demo_model, tmp_path):
    demo_model.load().save(tmp_path / "copy")  # as `score-new --add` and `remove` re-save a loaded model
    copy = tmp_path / "copy"
    assert "report.html" in json.loads((copy / "manifest.json").read_text())["files"]
    assert (copy / "report.html").read_bytes() == (demo_model.path / "report.html").read_bytes()


def test_only_known_extra_files_may_be_added(demo_model, tmp_path):
    from hybridrec.errors import ModelFileError

    with pytest.raises(ModelFileError, match="only report.html"):
        demo_model.load().save(tmp_path / "x", extra_files={"../evil.html": "x"})


# ------------------------------------------------------------------------------------------------ the browser
def test_the_console_check_catches_a_page_error(tmp_path):
    """The detector used below is not vacuous: a page that throws is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><p>x</p><script>throw new Error('boom')</script></body></html>")
    done = chromium("--dump-dom", bad.as_uri(), tmp=tmp_path)
    assert any("boom" in line for line in console_lines(done.stderr)), done.stderr[-2000:]


def test_chromium_renders_the_report_with_plots_and_no_console_errors(report_html, tmp_path):
    done = chromium("--dump-dom", report_html.as_uri(), tmp=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert dom.count('<svg class="chart"') == 2 and dom.count('<svg class="map"') == 1
    assert '<table class="metrics">' in dom and dom.count('class="example"') >= 1
    assert console_lines(done.stderr) == [], console_lines(done.stderr)


def test_the_screenshot_of_the_report_is_not_blank(report_html, tmp_path):
    if not IN_CI:
        pytest.importorskip("PIL")
    from PIL import Image

    shot = tmp_path / "report.png"
    done = chromium(f"--screenshot={shot}", "--window-size=1200,2000", report_html.as_uri(), tmp=tmp_path)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    assert console_lines(done.stderr) == [], console_lines(done.stderr)
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert pixels.shape == (2000, 1200, 3)
    grey = pixels.mean(axis=2)
    assert grey.std() > 10  # a blank (one-colour) page has 0
    # every band of the first screen holds drawing: title and curves (top), metrics, the item map
    for top, bottom in ((0, 450), (450, 800), (800, 1400)):
        band = pixels[top:bottom]
        assert (band.std(axis=(0, 1)) > 5).any(), (top, bottom)
    # the category colours of the map are there (the palette's first colour, #4e79a7, within a few levels)
    blue = np.abs(pixels - np.array([0x4E, 0x79, 0xA7])).max(axis=2) < 24
    assert blue.sum() > 200
    if os.environ.get("HYBRIDREC_REPORT_SCREENSHOT"):  # keep a copy to look at
        shutil.copy(shot, os.environ["HYBRIDREC_REPORT_SCREENSHOT"])
