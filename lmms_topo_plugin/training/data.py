"""Training batches from the synthetic benchmark's endless stream, in exactly the chat format the plugin uses.

Stage 1 batches: pixel values plus per-patch labels (shape or empty, colour, row, column of each grid cell).
Stage 2 batches: the chat-template prompt of [image, `prompt_for(doc)`] with the generation prompt, followed by
the answer and eos, left-padded by `prompting.encode`, so the last two positions of every row are the targets.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch

from lmms_topo_plugin.prompting import Prompt, encode
from lmms_topo_plugin.synthbench import COLORS, GRID, KINDS, SHAPES, iter_examples, prompt_for

SHAPE_CLASSES = ("empty", *SHAPES)
COLOR_CLASSES = tuple(COLORS)
IGNORE = -100


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


def qa_batch(processor, adapter, docs: Sequence[dict], *, with_answers: bool = True) -> dict[str, torch.Tensor]:
    """Stage-2 batch: prompt (+ " answer</s>" when `with_answers`), left-padded, with generate's positions."""
    eos = processor.tokenizer.eos_token
    suffixes = [f" {doc['answer']}{eos}" for doc in docs] if with_answers else None
    inputs = dict(encode(processor, adapter, prompts_of(docs), suffixes=suffixes))
    inputs["position_ids"] = position_ids(inputs["attention_mask"])
    return inputs
