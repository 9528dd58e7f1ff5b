"""`python -m lmms_topo_plugin.tools.training.evaluate DIR [--split test]`: per-kind exact match of a saved model.

Generation goes through `lmms_topo_plugin.runtime.generation.generate` (chat template, left padding, greedy,
max_new_tokens 5), so the numbers are those the lmms-eval tasks measure.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText

from lmms_topo_plugin.families import get_adapter
from lmms_topo_plugin.runtime.generation import generate
from lmms_topo_plugin.models.loading import LoadedModel
from lmms_topo_plugin.models.processors import load_processor
from lmms_topo_plugin.synthbench import KINDS, exact_match, load_split

from lmms_topo_plugin.tools.training.data import prompts_of

SETTINGS = {"max_new_tokens": 5, "do_sample": False}


def load(path: str | Path) -> LoadedModel:
    model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=torch.float32).eval()
    return LoadedModel(model, load_processor(str(path)), get_adapter(model), str(path))


def evaluate(loaded: LoadedModel, split: str = "test", batch: int = 50, limit: int | None = None) -> dict[str, float]:
    """Per-kind and overall exact match on `split` (its first `limit` docs of each kind, or all)."""
    docs = [doc for kind in KINDS for doc in load_split(split, [kind])[:limit]]
    scores: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for start in range(0, len(docs), batch):
        chunk = docs[start : start + batch]
        outputs = generate(loaded, prompts_of(chunk), dict(SETTINGS), until=[])
        for doc, text in zip(chunk, outputs):
            scores[doc["kind"]].append(exact_match(text, doc["answer"]))
    table = {kind: sum(v) / len(v) for kind, v in scores.items() if v}
    table["overall"] = sum(sum(v) for v in scores.values()) / sum(len(v) for v in scores.values())
    return table


def format_table(table: dict[str, float], split: str) -> str:
    rows = [f"| kind | exact match ({split}) |", "|---|---|"]
    rows += [f"| {kind} | {value:.3f} |" for kind, value in table.items()]
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmms_topo_plugin.tools.training.evaluate", description=__doc__)
    parser.add_argument("model_dir")
    parser.add_argument("--split", default="test", choices=("test", "calib"))
    parser.add_argument("--limit", type=int, default=None, help="first N docs of each kind (default: all)")
    parser.add_argument("--json", help="also write the table to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    table = evaluate(load(args.model_dir), args.split, limit=args.limit)
    print(format_table(table, args.split))
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
