"""`python -m lmms_topo_plugin.synthbench build [--out DIR]`: rebuild the stored splits byte for byte."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from lmms_topo_plugin.synthbench.build import write_files
from lmms_topo_plugin.synthbench.storage import data_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lmms_topo_plugin.synthbench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="write the calib, test and dev JSONL files")
    build.add_argument("--out", type=Path, default=None, help="output folder (default: the shipped data folder)")
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else Path(str(data_dir()))
    for path, size in write_files(out).items():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        print(f"{path}  {size:>8} bytes  sha256:{digest}")


if __name__ == "__main__":
    main()
