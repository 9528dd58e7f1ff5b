"""``topo-prune build-demo-model``: build a small random-weight VLM for smoke runs."""

from __future__ import annotations

import argparse

NAME = "build-demo-model"
HELP = "build a small random-weight VLM for smoke runs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="output directory")
    parser.add_argument("--family", default="llava", help="architecture family (llava, llava_next, qwen2_vl, qwen2_5_vl, idefics3)")
    parser.add_argument("--layers", type=int, default=8, help="decoder layers")
    parser.add_argument("--hidden-size", type=int, default=64, help="decoder width")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")


def run(args: argparse.Namespace) -> int:
    from lmms_topo_plugin import synthbench
    from lmms_topo_plugin.families.tiny import build_tiny_vlm

    path = build_tiny_vlm(args.family, args.out, num_layers=args.layers, hidden_size=args.hidden_size,
                          seed=args.seed, vocab_words=synthbench.vocabulary())
    print(path)
    return 0
