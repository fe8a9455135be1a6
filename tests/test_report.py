"""locallearn report: one self-contained HTML file (checked in headless Chromium) and markdown."""

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from locallearn.cli import main
from locallearn.report.collect import collect_runs
from locallearn.report.html import CSS, render_html
from locallearn.report.markdown import render_markdown

REPO = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture
def sources(result_runs):
    root, dirs = result_runs
    return [root / "compare-s0", root / "compare-s1", dirs["cut"], dirs["diverged"]]


def test_html_is_self_contained_and_complete(sources, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", *map(str, sources), "--out", str(out)]) == 0
    assert "report of 6 run(s) written to" in capsys.readouterr().err
    html = out.read_text()
    # Nothing is fetched: no scripts, stylesheets, images, frames or fonts from anywhere.
    for pattern in (r"<script", r"<link", r"<img", r"<iframe", r"src=", r"url\(", r"@import"):
        assert not re.search(pattern, html, re.I), pattern
    # The only URL is the SVG namespace name, which no browser fetches.
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) == {"http://www.w3.org/2000/svg"}
    runs = collect_runs(sources)
    assert len(runs) == 6
    for run in runs:
        assert f'data-run="{run.name}"' in html
        if run.command is not None:  # the hand-made diverged run has none
            assert run.command_line() in html.replace("&#x27;", "'")
    assert html.count("no command recorded") == 1
    # the comparison: greedy over seeds 0 and 1, with the spread and the BP ratio
    comparison = html[html.index('id="comparison"') : html.index("</table>")]
    assert "± " in comparison and "(n=2)" in comparison and "1.00x" in comparison
    assert "adam lr 0.01, batch 100, 2 epochs, train limit 200" in comparison
    assert comparison.count("<tr>") == 1 + 2  # header, bp and greedy: unfinished runs have none
    assert "2 run(s) without a result (interrupted, running or diverged)" in html
    assert html.count('class="status-diverged"') >= 1 and ">interrupted<" in html
    assert "Memory per block" in html and 'id="machines"' in html


def test_html_accessibility(sources):
    html = render_html(collect_runs(sources))
    assert '<html lang="en">' in html and 'name="viewport"' in html
    charts = re.findall(r"<svg class=\"chart\"[^>]*>", html)
    assert len(charts) >= 3
    for tag in charts:
        ident = re.search(r'aria-labelledby="([^" ]+)-t \1-d"', tag).group(1)
        assert 'role="img"' in tag
        assert f'<title id="{ident}-t">' in html and f'<desc id="{ident}-d">' in html
    # every table has a caption and column headers with a scope; rows have row headers
    tables = html.count("<table")
    assert tables == html.count("<caption>") == html.count("<thead>")
    assert '<th scope="col">' in html and '<th scope="row"' in html
    # every text colour in the stylesheet: WCAG contrast of at least 7:1 on white (AAA)
    colours = re.findall(r"(?<!-)color:\s*(#[0-9a-fA-F]{6})", CSS)
    assert len(colours) >= 5
    for c in colours:
        assert contrast(c, "#ffffff") >= 7, c


def luminance(colour: str) -> float:
    def channel(v: int) -> float:
        s = v / 255
        return s / 12.92 if s <= 0.03928 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a: str, b: str) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_markdown(sources, tmp_path):
    assert main(["report", *map(str, sources), "--out", str(tmp_path / "r.md"), "--quiet"]) == 0
    text = (tmp_path / "r.md").read_text()
    assert text == render_markdown(collect_runs(sources))
    assert "<" not in text.replace("<br>", "")  # plain markdown, no HTML
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| configuration"))
    assert lines[header + 1].startswith("| --- | --- | ---: |")
    greedy = next(line for line in lines if line.startswith("| greedy K=3 |"))
    assert "(n=2)" in greedy and "0,1" in greedy
    for run in collect_runs(sources):
        assert any(line.startswith(f"| {run.name} |") for line in lines), run.name


def test_report_with_validation_and_probes(result_runs, tmp_path):
    from locallearn.probes import probe_run

    root, dirs = result_runs
    probed = tmp_path / "probed"
    shutil.copytree(dirs["bp-s0"], probed)
    probe_run(probed, max_train=200)
    html = render_html(collect_runs([probed, dirs["validated"]]))
    assert 'id="probes"' in html and "block 1:" in html
    assert "validation accuracy per epoch" in html  # curves use val_acc where a run has it
    assert ">val acc<" in html and "0.4200" in html
    assert "<title>greedy vs bp</title>" in render_html(collect_runs([probed]), "greedy vs bp")
    assert main(["report", str(probed), "--format", "pdf"]) == 2


def test_report_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    assert "holds no run (no config.toml in it or below)" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


# -- in a real browser -------------------------------------------------------------------------


def browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(
        "no Chromium found: install it with `apt-get install -y chromium` (`make test` does "
        "this when it runs as root); the report's browser checks need it"
    )


def chromium(html: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        browser(),
        "--headless",
        "--no-sandbox",  # root in CI containers; the page is our own file and runs no script
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        *args,
        html.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=True)


def screenshot(html: Path, tmp_path: Path, width: int, height: int, name: str):
    from PIL import Image

    path = tmp_path / name
    chromium(html, tmp_path, f"--window-size={width},{height}", f"--screenshot={path}")
    image = Image.open(path).convert("RGB")
    assert image.size == (width, height)
    return image


def pixel_counts(image) -> dict[str, int]:
    """Dark pixels (text, rules), coloured pixels (chart lines: saturated hues), and any
    pixel that is not white."""
    dark = coloured = ink = 0
    for r, g, b in image.getdata():
        if (r, g, b) != (255, 255, 255):
            ink += 1
        if max(r, g, b) < 90:
            dark += 1
        if max(r, g, b) - min(r, g, b) > 90:
            coloured += 1
    return {"dark": dark, "coloured": coloured, "ink": ink}


def dom(html: Path, tmp_path: Path) -> str:
    return chromium(html, tmp_path, "--dump-dom").stdout


def test_report_in_chromium(sources, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", *map(str, sources), "--out", str(out), "--quiet"]) == 0
    rendered = dom(out, tmp_path)
    for run in collect_runs(sources):
        row = re.search(rf'<tr class="run" data-run="{re.escape(run.name)}">(.*?)</tr>', rendered)
        assert row, f"no table row for {run.name} in the rendered DOM"
        assert f">{run.status}<" in row.group(1)
    assert rendered.count("<polyline") >= 2 * 6 - 1  # two charts, a line per run with epochs
    for width, height in ((1280, 1000), (390, 1400)):
        counts = pixel_counts(screenshot(out, tmp_path, width, height, f"shot-{width}.png"))
        area = width * height
        assert counts["ink"] > 0.03 * area, f"blank screenshot at {width}px: {counts}"
        assert counts["dark"] > 0.005 * area, f"no text at {width}px: {counts}"
        assert counts["coloured"] > 0.001 * area, f"no chart lines at {width}px: {counts}"


def demo_commands(out: Path) -> list[list[str]]:
    """The `make demo` recipe, with its output folder set and the locallearn commands
    returned as argv lists (the rest, such as the venv path, dropped)."""
    text = (REPO / "Makefile").read_text()
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", text, re.M).group(1)
    commands = []
    for line in recipe.splitlines():
        line = line.strip().replace("$(DEMO_DIR)", str(out))
        argv = shlex.split(line)
        if argv and argv[0].endswith("/locallearn"):
            commands.append(argv[1:])
    return commands


def test_demo_report_shows_the_table_and_curves(tmp_path, monkeypatch):
    # The demo's own commands on a tiny budget (the full demo trains 60 epochs on 4,000).
    monkeypatch.chdir(tmp_path)
    commands = demo_commands(tmp_path / "demo")
    assert [c[0] for c in commands] == ["compare", "report"]
    compare, report = commands
    assert main([*compare, "--epochs", "2", "--train-limit", "200", "--quiet"]) == 0
    assert main([*report, "--quiet"]) == 0
    html = tmp_path / "report.html"
    assert html.exists() and (tmp_path / "compare.png").exists()
    rendered = dom(html, tmp_path)
    assert 'data-run="bp"' in rendered and 'data-run="greedy"' in rendered
    assert 'id="comparison"' in rendered and 'id="curve-acc-t"' in rendered
    # the top of the page, as a wide window first shows it: the table, then the curves
    image = screenshot(html, tmp_path, 1280, 900, "demo.png")
    top, below = image.crop((0, 0, 1280, 300)), image.crop((0, 300, 1280, 900))
    assert pixel_counts(top)["dark"] > 2000, "no comparison table at the top of the page"
    counts = pixel_counts(below)
    assert counts["coloured"] > 1500, f"no learning curves under the table: {counts}"
