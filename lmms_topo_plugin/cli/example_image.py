"""``topo-prune example-image``: write one image of the bundled benchmark and print its prompt."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lmms_topo_plugin.errors import UsageError

NAME = "example-image"
HELP = ("write one image of the bundled benchmark to OUT, print "
        "its question on stdout (the prompt the bundled model is evaluated with) and the "
        "expected answer on stderr")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="image file to write (PNG), e.g. example.png")
    parser.add_argument("--index", type=int, default=0, help="which document of the split: the kinds presence, "
                         "attribute, count, spatial, math in turn, 100 each in test and dev, 64 in calib (default 0)")
    parser.add_argument("--split", default="test", choices=("test", "dev", "calib"), help="benchmark split")


def run(args: argparse.Namespace) -> int:
    """Write image ``--index`` of a bundled benchmark split to OUT; print its prompt (exactly what the topo_synth
    tasks give the model, so the bundled model answers in the benchmark's format) and, on stderr, its answer."""
    import base64

    from lmms_topo_plugin.cache import atomic_write_bytes
    from lmms_topo_plugin.synthbench import KINDS, prompt_for
    from lmms_topo_plugin.synthbench.storage import read_records

    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"{out} is a directory; give the image file to write, e.g. {out / 'example.png'}")
    records = [record for kind in KINDS for record in read_records(args.split, kind)]
    if not 0 <= args.index < len(records):
        raise UsageError(f"--index {args.index} is out of range: the {args.split} split has {len(records)} images "
                         f"(--index 0 to {len(records) - 1})")
    record = records[args.index]
    atomic_write_bytes(out, base64.b64decode(record["image"]))  # the stored PNG, byte for byte
    print(prompt_for(record))
    print(f"{out}: expected answer: {record['answer']}", file=sys.stderr)
    return 0
