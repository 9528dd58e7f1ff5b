"""The documentation site: mkdocs.yml's navigation matches docs/, the strict build passes, the browser check's own
logic finds what it should, and (end-to-end tier) every built page renders in headless Chromium."""

import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import yaml

from script_modules import load_script

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


check_site = load_script(Path("scripts/check_site.py"))
dev = load_script(Path("scripts/dev.py"))


def _nav_pages(entries) -> list[str]:
    pages = []
    for entry in entries:
        if isinstance(entry, str):
            pages.append(entry)
        elif isinstance(entry, dict):
            for value in entry.values():
                pages.extend(_nav_pages(value) if isinstance(value, list) else [value])
    return pages


def _config() -> dict:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)  # mkdocs' !ENV and friends
    return yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)


def test_the_navigation_lists_every_page_and_only_pages_that_exist():
    nav = _nav_pages(_config()["nav"])
    assert len(nav) == len(set(nav)), "a page is in the navigation twice"
    pages = sorted(path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md"))
    assert sorted(nav) == pages


def test_no_code_cites_the_removed_methods_page():
    """The single methods page was split into docs/methods/*.md; citations name the page that now holds the
    section."""
    removed = "docs/" + "methods.md"
    stale = [f"{path.relative_to(ROOT)}:{number}" for folder in ("lmms_topo_plugin", "exporters", "tests", "bench",
                                                                "scripts")
             for path in (ROOT / folder).rglob("*.py")
             for number, line in enumerate(path.read_text().splitlines(), 1) if removed in line]
    assert stale == []
    for cited in {match for path in (ROOT / "lmms_topo_plugin").rglob("*.py")
                  for match in re.findall(r"docs/methods/[\w-]+\.md", path.read_text())}:
        assert (ROOT / cited).is_file(), cited


def test_the_site_builds_with_no_warning(tmp_path):
    """``mkdocs build --strict``: any warning (a broken link or #anchor between pages, a page outside the
    navigation) fails the build."""
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                             str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                            capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "methods" / "surgery" / "index.html").is_file()


def _png(width: int, height: int, rows: list[bytes], channels: int = 3) -> bytes:
    """A PNG whose scanlines are given already filtered (each row starts with its filter type byte)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))

    colour = {3: 2, 4: 6}[channels]
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, colour, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows)))
            + chunk(b"IEND", b""))


def test_the_fallback_png_decoder_matches_pillow_on_every_filter_type(tmp_path):
    from PIL import Image

    width, channels = 5, 3
    rows = [bytes([kind]) + bytes((17 * kind + 31 * i) % 256 for i in range(width * channels)) for kind in range(5)]
    path = tmp_path / "filters.png"
    path.write_bytes(_png(width, len(rows), rows, channels))
    decoded_width, decoded_height, pixels = check_site.png_pixels(path)
    with Image.open(path) as image:
        expected = list(image.convert("RGB").getdata())
    assert (decoded_width, decoded_height) == (width, len(rows)) and pixels == expected
    # and an RGBA screenshot-like image written by Pillow itself
    image = Image.new("RGBA", (40, 30), (255, 255, 255, 255))
    for x in range(10, 30):
        image.putpixel((x, 12), (63, 81, 181, 255))
    image.save(tmp_path / "shot.png")
    assert check_site.png_pixels(tmp_path / "shot.png")[2] == list(image.convert("RGB").getdata())


def test_a_blank_screenshot_has_no_ink(tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64), (255, 255, 255)).save(tmp_path / "blank.png")
    assert check_site.ink(tmp_path / "blank.png") == (0, 1)


def test_the_reference_check_finds_missing_images_files_and_anchors(tmp_path):
    site = tmp_path / "site"
    (site / "guide").mkdir(parents=True)
    (site / "index.html").write_text('<html><body><article><h1 id="top">Home</h1></article></body></html>')
    (site / "guide" / "index.html").write_text('<article><h2 id="install">Install</h2></article>')
    page = check_site.Page("", site / "index.html")
    page.dom = check_site.scan(
        '<article><a href="guide/">ok</a><a href="guide/#install">ok</a><a href="guide/#nowhere">bad anchor</a>'
        '<a href="missing/">bad file</a><a href="https://example.org/">external</a><a href="#top">ok</a>'
        '<img src="assets/a.png"><img src="assets/b.png"></article>')
    log = check_site.RequestLog()
    log.add("/assets/a.png", 200)
    log.add("/assets/b.png", 404)
    check_site.check_references(page, "http://127.0.0.1:1", site, log, {})
    assert page.images == [("assets/a.png", True), ("assets/b.png", False)]
    assert page.links == [("guide/", True), ("guide/#install", True), ("guide/#nowhere", False),
                          ("missing/", False), ("#top", True)]
    assert len(page.problems) == 3 and "no id 'nowhere'" in page.problems[1]


def test_relock_holds_the_current_pins_and_reports_what_moved():
    constraints = dev.lock_constraints({"numpy": "2.3.0", "pip": "25.0", "torch": "2.13.0+cpu"})
    assert constraints.splitlines() == [dev.TORCH, "numpy==2.3.0", "torch==2.13.0+cpu"]  # pip is not locked
    assert dev.lock_changes({"a": "1", "b": "1", "c": "1"}, {"a": "1", "b": "2", "d": "1"}) == [
        "+ d==1", "- c==1", "~ b 1 -> 2"]


@pytest.mark.e2e
def test_every_page_of_the_built_site_renders_in_chromium(tmp_path):
    """Build the site, open every page in headless Chromium: it loads, its images are served, its internal links
    and anchors exist, and its screenshot is not blank. Without Chromium this skips, unless TOPO_REQUIRE_CHROMIUM=1
    (then it fails: a CI machine that should check the site must have it)."""
    if check_site.find_chromium(None) is None:
        message = ("no Chromium on PATH (chromium, chromium-browser, google-chrome); Debian: apt-get install "
                   "chromium")
        if os.environ.get("TOPO_REQUIRE_CHROMIUM") == "1":
            pytest.fail(f"TOPO_REQUIRE_CHROMIUM=1 but {message}")
        pytest.skip(message)
    site = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                            str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
                           capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert build.returncode == 0, build.stderr[-3000:]
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_site.py"), str(site), "--quiet",
                             "--screenshots", str(tmp_path / "shots")], capture_output=True, text=True)
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    pages = len(list(site.rglob("*.html")))
    assert summary.startswith(f"site check: {pages} pages loaded (of {pages}),") and ", 0 broken;" in summary
    assert summary.endswith(f"screenshots: {pages} non-blank")
