#!/usr/bin/env python3
"""Every generated page of the documentation site, from one place.

    .venv/bin/python scripts/docs_pages.py            # list the generated pages
    .venv/bin/python scripts/docs_pages.py --write    # (re)write them all under docs/
    .venv/bin/python scripts/docs_pages.py --check    # exit 1 naming each page that differs from a fresh render

The results pages (``docs/results/``) come from ``bench/results/`` through ``bench/pages/`` (one small module per
page, standard library only); the reference pages (``docs/reference/``) come from the code through
``scripts/reference_pages.py`` (the typed ``model_args`` configs and the ``topo-prune`` argument parser). Pages are
written atomically (temporary file + ``os.replace``) and only when their text changes.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RESULTS = ROOT / "bench" / "results"
for folder in (ROOT / "bench", ROOT / "scripts", ROOT):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import pages  # noqa: E402  (bench/pages)
import reference_pages  # noqa: E402  (scripts/reference_pages.py)


def render_all(results_dir: Path = RESULTS) -> dict[str, str]:
    """``{path under docs/: page text}`` of every generated page."""
    return {**pages.render_all(results_dir), **reference_pages.render_all()}


def stale_pages(docs: Path = DOCS, results_dir: Path = RESULTS) -> list[str]:
    """The generated pages whose file under ``docs`` is missing or differs from a fresh render."""
    stale = []
    for name, text in render_all(results_dir).items():
        path = docs / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and ``os.replace``; an existing file keeps its mode, a new
    one gets the usual ``0o666 & ~umask``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_pages(docs: Path = DOCS, results_dir: Path = RESULTS) -> list[str]:
    """Write every generated page whose text changed; return their names."""
    written = []
    for name, text in render_all(results_dir).items():
        path = docs / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            write_text_atomic(path, text)
            written.append(name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write every generated page under docs/")
    mode.add_argument("--check", action="store_true", help="exit 1 when a page differs from what would be generated")
    parser.add_argument("--docs", type=Path, default=DOCS, help="the docs folder (default: docs/)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the benches' JSON (default: bench/results/)")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_pages(args.docs, args.results)
        for name in stale:
            print(f"{args.docs / name}: differs from what the code and bench/results/ generate now; run "
                  ".venv/bin/python scripts/docs_pages.py --write", file=sys.stderr)
        return 1 if stale else 0
    if args.write:
        written = write_pages(args.docs, args.results)
        print(f"{args.docs}: " + (f"wrote {', '.join(written)}" if written else "every generated page is up to date"))
        return 0
    for name in render_all(args.results):
        print(args.docs / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
