#!/usr/bin/env python3
"""Open every page of the built documentation site in headless Chromium and check that it really renders.

    python3 scripts/dev.py docs --check-site          # build with --strict, then this
    python3 scripts/check_site.py [SITE_DIR] [--chromium PATH] [--screenshots DIR] [--jobs N] [--report FILE]

``SITE_DIR`` (default ``site/``) is served on 127.0.0.1 by a threaded ``http.server`` that logs every request's
path and status. Every HTML page of the site is loaded twice by ``chromium --headless``: once with ``--dump-dom``
(the DOM after its scripts ran) and once with ``--screenshot`` at 1280x2000. Then, per page:

- **loaded**: the server answered the page with 200 and the rendered DOM holds Material's ``<article>``;
- **images**: every ``<img src>`` in the DOM is on this server and the server log shows it was served with 200;
- **internal links**: every ``<a href>`` to this server (or relative) resolves to a file in ``SITE_DIR``, and its
  ``#anchor``, if any, is an ``id`` in the target page's rendered DOM;
- **rendered**: the screenshot is not blank (enough pixels differ from its dominant colour, in more than two
  colours), decoded with Pillow when it imports, else by a small PNG decoder (zlib) below;
- anything the browser requested that the server did not answer with 200 (a missing stylesheet, script, font).

It prints one line per page, one line per problem, and a summary line
(``site check: N pages loaded, M images loaded, K internal links ok, 0 broken; screenshots: N non-blank``); the
exit status is 1 when there is any problem, 2 when Chromium or the site is missing. Standard library only
(Pillow optional). Debian: ``apt-get install chromium``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import http.server
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import zlib
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
WINDOW = (1280, 2000)
MIN_INK_PIXELS = 2000  # a rendered page has text, a header and navigation: far more than this
MIN_COLOURS = 3


# --------------------------------------------------------------------------------------------------- the server

class RequestLog:
    """Every request the test server answered: ``(path, status)`` in order, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries: list[tuple[str, int]] = []

    def add(self, path: str, status: int) -> None:
        with self._lock:
            self.entries.append((path, status))

    def statuses(self, path: str) -> set[int]:
        with self._lock:
            return {status for logged, status in self.entries if logged == path}

    def failures(self) -> list[tuple[str, int]]:
        with self._lock:
            return sorted({(path, status) for path, status in self.entries if status != 200})


def serve(site: Path, log: RequestLog) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Start a threaded static server of ``site`` on 127.0.0.1 (a free port); return it and its base URL."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_request(self, code="-", size="-") -> None:  # called once per answered request, with its status
            log.add(urlsplit(self.path).path, int(code) if str(code).isdigit() else 0)

        def log_message(self, format, *args) -> None:  # keep the console for the report
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(site)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


# --------------------------------------------------------------------------------------------------- the browser

def find_chromium(given: str | None) -> str | None:
    if given:
        return given if Path(given).exists() or shutil.which(given) else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium(binary: str, url: str, *mode: str, timeout: float) -> subprocess.CompletedProcess:
    """One headless Chromium run on ``url`` with its own profile (so runs can go in parallel)."""
    with tempfile.TemporaryDirectory(prefix="check-site-profile-") as profile:
        command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                   "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                   "--virtual-time-budget=5000", *mode, url]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------------------------------- the DOM

class DomScan(HTMLParser):
    """The ids, ``<a href>``, ``<img src>`` and the presence of an ``<article>`` in a rendered DOM."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.images: list[str] = []
        self.article = False

    def handle_starttag(self, tag, attrs) -> None:
        attributes = dict(attrs)
        if attributes.get("id"):
            self.ids.add(attributes["id"])
        if attributes.get("name") and tag == "a":
            self.ids.add(attributes["name"])
        if tag == "a" and attributes.get("href") is not None:
            self.links.append(attributes["href"])
        elif tag == "img" and attributes.get("src"):
            self.images.append(attributes["src"])
        elif tag == "article":
            self.article = True


def scan(html: str) -> DomScan:
    parser = DomScan()
    parser.feed(html)
    parser.close()
    return parser


# --------------------------------------------------------------------------------------------------- screenshots

def png_pixels(path: Path) -> tuple[int, int, list[tuple[int, ...]]]:
    """``(width, height, pixels)`` of an 8-bit RGB/RGBA/grey PNG (non-interlaced): the minimal decoder used when
    Pillow is not importable."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    position, idat, header = 8, [], None
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        chunk = data[position + 8:position + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat.append(chunk)
        elif kind == b"IEND":
            break
        position += 12 + length
    if header is None:
        raise ValueError("PNG without IHDR")
    width, height, depth, colour, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour)
    if depth != 8 or channels is None or interlace:
        raise ValueError(f"unsupported PNG (bit depth {depth}, colour type {colour}, interlace {interlace})")
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    rows, previous, offset = [], bytearray(stride), 0
    for _ in range(height):
        kind, line = raw[offset], bytearray(raw[offset + 1:offset + 1 + stride])
        offset += 1 + stride
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                estimate = left + up - corner
                pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        rows.append(bytes(line))
        previous = line
    pixels = [tuple(row[i:i + channels][:3]) for row in rows for i in range(0, stride, channels)]
    return width, height, pixels


def colour_counts(path: Path) -> dict[tuple[int, ...], int]:
    """How many pixels of each colour the screenshot has (Pillow when it imports, else :func:`png_pixels`)."""
    try:
        from PIL import Image
    except ImportError:
        counts: dict[tuple[int, ...], int] = {}
        for pixel in png_pixels(path)[2]:
            counts[pixel] = counts.get(pixel, 0) + 1
        return counts
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        return {colour: count for count, colour in rgb.getcolors(maxcolors=rgb.width * rgb.height)}


def ink(path: Path) -> tuple[int, int]:
    """``(pixels that differ from the dominant colour, distinct colours)`` of a screenshot."""
    counts = colour_counts(path)
    background = max(counts, key=counts.get)
    return sum(counts.values()) - counts[background], len(counts)


# --------------------------------------------------------------------------------------------------- the check

@dataclass
class Page:
    path: str  # site path of the page, e.g. "guides/export/" or "404.html"
    file: Path
    loaded: bool = False
    dom: DomScan | None = None
    ink_pixels: int = 0
    colours: int = 0
    problems: list[str] = field(default_factory=list)
    images: list[tuple[str, bool]] = field(default_factory=list)
    links: list[tuple[str, bool]] = field(default_factory=list)


def site_pages(site: Path) -> list[Page]:
    pages = []
    for file in sorted(site.rglob("*.html")):
        relative = file.relative_to(site).as_posix()
        path = relative[: -len("index.html")] if file.name == "index.html" else relative
        pages.append(Page(path, file))
    return pages


def target_file(site: Path, path: str) -> Path | None:
    """The file in ``site`` that the URL path ``path`` serves, as http.server would; ``None`` when there is none."""
    candidate = site / unquote(path).lstrip("/")
    if path.endswith("/") or candidate.is_dir():
        candidate = candidate / "index.html"
    return candidate if candidate.is_file() else None


def render(page: Page, base: str, binary: str, shots: Path, log: RequestLog, timeout: float) -> None:
    url = f"{base}/{page.path}"
    try:
        dom = chromium(binary, url, "--dump-dom", timeout=timeout)
    except subprocess.TimeoutExpired:
        page.problems.append(f"{page.path}: chromium --dump-dom did not finish in {timeout:.0f} s")
        return
    page.dom = scan(dom.stdout)
    served = log.statuses(urlsplit(url).path)
    page.loaded = dom.returncode == 0 and 200 in served and page.dom.article
    if not page.loaded:
        failed = dom.returncode != 0 and dom.stderr.strip()
        last = f": {dom.stderr.strip().splitlines()[-1]}" if failed else ""
        page.problems.append(f"{page.path}: not loaded (chromium exit {dom.returncode}, served "
                             f"{sorted(served) or 'never'}, article {'found' if page.dom.article else 'missing'}){last}")
    shot = shots / ((page.path.strip("/").replace("/", "__") or "index") + ".png")
    try:
        result = chromium(binary, url, f"--screenshot={shot}", timeout=timeout)
    except subprocess.TimeoutExpired:
        page.problems.append(f"{page.path}: chromium --screenshot did not finish in {timeout:.0f} s")
        return
    if result.returncode != 0 or not shot.is_file():
        page.problems.append(f"{page.path}: no screenshot (chromium exit {result.returncode})")
        return
    page.ink_pixels, page.colours = ink(shot)
    if page.ink_pixels < MIN_INK_PIXELS or page.colours < MIN_COLOURS:
        page.problems.append(f"{page.path}: the screenshot is blank ({page.ink_pixels} pixels differ from the "
                             f"background, {page.colours} colours; --screenshots DIR keeps it)")


def check_references(page: Page, base: str, site: Path, log: RequestLog, ids_of: dict[Path, set[str]]) -> None:
    """Images and internal links of a rendered page (after every page has rendered, so the log is complete)."""
    if page.dom is None:
        return
    url = f"{base}/{page.path}"
    own = urlsplit(base).netloc
    for src in dict.fromkeys(page.dom.images):
        absolute = urlsplit(urljoin(url, src))
        if absolute.scheme == "data":
            page.images.append((src, True))
            continue
        ok = absolute.netloc == own and 200 in log.statuses(absolute.path)
        page.images.append((src, ok))
        if not ok:
            page.problems.append(f"{page.path}: image {src} was not served with 200 "
                                 f"(served {sorted(log.statuses(absolute.path)) or 'never'})")
    for href in dict.fromkeys(page.dom.links):
        absolute = urlsplit(urljoin(url, href))
        if absolute.scheme not in ("http", "https") or absolute.netloc != own:
            continue  # external, mailto:, javascript:
        target = target_file(site, absolute.path)
        ok = target is not None
        why = "no such file in the site"
        if ok and absolute.fragment:
            ids = ids_of.get(target)
            if ids is None:
                ids = ids_of[target] = scan(target.read_text(errors="replace")).ids
            ok = unquote(absolute.fragment) in ids
            why = f"no id {absolute.fragment!r} in {target.relative_to(site).as_posix()}"
        page.links.append((href, ok))
        if not ok:
            page.problems.append(f"{page.path}: broken internal link {href}: {why}")


def check_site(site: Path, binary: str, shots: Path, jobs: int, timeout: float) -> tuple[list[Page], RequestLog]:
    log = RequestLog()
    server, base = serve(site, log)
    pages = site_pages(site)
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(lambda page: render(page, base, binary, shots, log, timeout), pages))
    finally:
        server.shutdown()
        server.server_close()
    ids_of = {page.file: page.dom.ids for page in pages if page.dom is not None}  # the rendered DOM's ids
    for page in pages:
        check_references(page, base, site, log, ids_of)
    return pages, log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Open every page of the built site in headless Chromium: pages, "
                                     "images, internal links and a non-blank screenshot.")
    parser.add_argument("site", nargs="?", default=str(ROOT / "site"), help="the built site (default: site/)")
    parser.add_argument("--chromium", help="the browser binary (default: the first of "
                        f"{', '.join(CHROMIUM_NAMES)} on PATH)")
    parser.add_argument("--screenshots", help="where to keep the screenshots (default: a temporary folder, removed)")
    parser.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1),
                        help="browsers run at once (default: min(4, CPUs))")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds per browser run (default 90)")
    parser.add_argument("--report", help="also write the per-page results and the server log here (JSON)")
    parser.add_argument("--quiet", action="store_true", help="only the problems and the summary line")
    args = parser.parse_args(argv)

    site = Path(args.site).resolve()
    if not (site / "index.html").is_file():
        print(f"check_site: {site} holds no built site (no index.html); run python3 scripts/dev.py docs first",
              file=sys.stderr)
        return 2
    binary = find_chromium(args.chromium)
    if binary is None:
        print("check_site: no Chromium found (looked for " + ", ".join(CHROMIUM_NAMES) + " on PATH); install it "
              "(Debian: apt-get install chromium) or pass --chromium", file=sys.stderr)
        return 2
    keep = Path(args.screenshots).resolve() if args.screenshots else None
    with tempfile.TemporaryDirectory(prefix="check-site-shots-") as temporary:
        shots = keep or Path(temporary)
        shots.mkdir(parents=True, exist_ok=True)
        pages, log = check_site(site, binary, shots, max(1, args.jobs), args.timeout)

    problems = [problem for page in pages for problem in page.problems]
    problems += [f"the browser requested {path} and the server answered {status}" for path, status in log.failures()]
    if not args.quiet:
        for page in pages:
            images_ok = sum(ok for _, ok in page.images)
            links_ok = sum(ok for _, ok in page.links)
            print(f"{'ok ' if not page.problems else 'BAD'} /{page.path:<34} images {images_ok}/{len(page.images)}, "
                  f"internal links {links_ok}/{len(page.links)}, screenshot {page.ink_pixels} ink pixels in "
                  f"{page.colours} colours")
        print(f"server: {len(log.entries)} requests answered, {len(log.failures())} not with 200")
    for problem in problems:
        print(f"problem: {problem}")
    loaded = sum(page.loaded for page in pages)
    images = sum(ok for page in pages for _, ok in page.images)
    links_ok = sum(ok for page in pages for _, ok in page.links)
    broken = sum(not ok for page in pages for _, ok in page.links)
    non_blank = sum(page.ink_pixels >= MIN_INK_PIXELS and page.colours >= MIN_COLOURS for page in pages)
    summary = (f"site check: {loaded} pages loaded (of {len(pages)}), {images} images loaded, {links_ok} internal "
               f"links ok, {broken} broken; screenshots: {non_blank} non-blank")
    print(summary)
    if args.report:
        Path(args.report).write_text(json.dumps({
            "summary": summary, "problems": problems,
            "pages": [{"path": page.path, "loaded": page.loaded, "ink_pixels": page.ink_pixels,
                       "colours": page.colours, "images": page.images, "links": page.links} for page in pages],
            "requests": log.entries}, indent=1) + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
