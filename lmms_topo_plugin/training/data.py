"""Training batches from the synthetic benchmark's endless stream, in exactly the chat format the plugin uses.

Stage 1 batches: pixel values plus per-patch labels (shape or empty, colour, row, column of each grid cell).
Stage 2 batches: the chat-template prompt of [image, `prompt_for(doc)`] with the generation prompt, followed by
the answer and eos, left-padded by `prompting.encode`, so the last two positions of every row are the targets.
Scene-summary labels (an auxiliary target of stage 2): which shape+colour combinations are present, the counts of
every shape, every colour and all items, and the row and column of each combination present exactly once.
Caption batches (the alignment task of stage 2): the prompt `CAPTION_PROMPT`, then every grid cell in row-major order
as "colour shape" ("no no" when empty) and eos: a fixed `CAPTION_TARGETS` targets at the end of every row.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch

from lmms_topo_plugin.prompting import Prompt, encode
from lmms_topo_plugin.synthbench import COLORS, GRID, KINDS, SHAPES, iter_examples, prompt_for
from lmms_topo_plugin.synthbench.scene import MAX_ITEMS

SHAPE_CLASSES = ("empty", *SHAPES)
COLOR_CLASSES = tuple(COLORS)
IGNORE = -100
CAPTION_PROMPT = "What is in the image?"
EMPTY_CELL = "no no"
CAPTION_TARGETS = 2 * GRID * GRID + 1  # two words per cell, then eos


def kind_mixture(seed: int, weights: dict[str, float] | None = None) -> Iterator[dict]:
    """Training docs with kinds drawn by `weights` (default: uniform); one seeded stream per kind."""
    weights = weights or {kind: 1.0 for kind in KINDS}
    kinds = [kind for kind in KINDS if weights.get(kind, 0) > 0]
    streams = {kind: iter_examples(f"{seed}/{kind}", kinds=[kind]) for kind in kinds}
    rng = random.Random(f"mix/{seed}")
    while True:
        kind = rng.choices(kinds, weights=[weights[kind] for kind in kinds])[0]
        yield next(streams[kind])


def take(stream: Iterator[dict], n: int) -> list[dict]:
    return [next(stream) for _ in range(n)]


def patch_labels(docs: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Per-patch targets in row-major patch order: shape (0 = empty), colour (ignored when empty), row, col."""
    cells = GRID * GRID
    shape = torch.zeros(len(docs), cells, dtype=torch.long)
    color = torch.full((len(docs), cells), IGNORE, dtype=torch.long)
    for i, doc in enumerate(docs):
        for item in doc["scene"]:
            cell = item["row"] * GRID + item["col"]
            shape[i, cell] = SHAPE_CLASSES.index(item["shape"])
            color[i, cell] = COLOR_CLASSES.index(item["color"])
    row = torch.arange(cells).div(GRID, rounding_mode="floor").expand(len(docs), cells)
    col = torch.arange(cells).remainder(GRID).expand(len(docs), cells)
    return {"shape": shape, "color": color, "row": row, "col": col}


COMBOS = tuple((shape, color) for shape in SHAPES for color in COLORS)
SUMMARY_CLASSES = {"combo": (len(COMBOS), 2), "count": (len(SHAPES) + len(COLORS) + 1, MAX_ITEMS + 1),
                   "row": (len(COMBOS), GRID + 1), "col": (len(COMBOS), GRID + 1)}  # (targets, classes each)


def summary_labels(docs: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Per doc: combination present (0/1), counts (shapes, colours, total), and 1 + row / col of each combination
    present once (0 when absent, ignored when repeated); shapes as `SUMMARY_CLASSES` gives them."""
    labels = {name: torch.zeros(len(docs), n, dtype=torch.long) for name, (n, _) in SUMMARY_CLASSES.items()}
    for i, doc in enumerate(docs):
        items = doc["scene"]
        for c, (shape, color) in enumerate(COMBOS):
            matches = [item for item in items if item["shape"] == shape and item["color"] == color]
            labels["combo"][i, c] = int(bool(matches))
            for axis in ("row", "col"):
                labels[axis][i, c] = IGNORE if len(matches) > 1 else (1 + matches[0][axis] if matches else 0)
        counts = [sum(item["shape"] == shape for item in items) for shape in SHAPES]
        counts += [sum(item["color"] == color for item in items) for color in COLORS]
        labels["count"][i] = torch.tensor([*counts, len(items)])
    return labels


def vision_batch(processor, docs: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Stage-1 batch: pixel values and per-patch labels."""
    pixels = processor.image_processor([doc["image"] for doc in docs], return_tensors="pt")["pixel_values"]
    return {"pixel_values": pixels, **patch_labels(docs)}


def prompts_of(docs: Sequence[dict]) -> list[Prompt]:
    return [Prompt.from_text(prompt_for(doc), [doc["image"]]) for doc in docs]


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions as `generate` derives them from a left-padded mask."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)


def _batch(processor, adapter, prompts: list[Prompt], targets: list[str] | None) -> dict[str, torch.Tensor]:
    eos = processor.tokenizer.eos_token
    suffixes = [f" {target}{eos}" for target in targets] if targets is not None else None
    inputs = dict(encode(processor, adapter, prompts, suffixes=suffixes))
    inputs["position_ids"] = position_ids(inputs["attention_mask"])
    return inputs


def qa_batch(processor, adapter, docs: Sequence[dict], *, with_answers: bool = True) -> dict[str, torch.Tensor]:
    """Stage-2 batch: prompt (+ " answer</s>" when `with_answers`), left-padded, with generate's positions."""
    return _batch(processor, adapter, prompts_of(docs), [doc["answer"] for doc in docs] if with_answers else None)


def caption_for(doc: dict) -> str:
    """Every grid cell, row-major: "colour shape", or `EMPTY_CELL`."""
    cells = [EMPTY_CELL] * (GRID * GRID)
    for item in doc["scene"]:
        cells[item["row"] * GRID + item["col"]] = f"{item['color']} {item['shape']}"
    return " ".join(cells)


def caption_batch(processor, adapter, docs: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Caption batch: `CAPTION_PROMPT` + caption + eos; the last `CAPTION_TARGETS` positions are the targets."""
    prompts = [Prompt.from_text(CAPTION_PROMPT, [doc["image"]]) for doc in docs]
    return _batch(processor, adapter, prompts, [caption_for(doc) for doc in docs])
