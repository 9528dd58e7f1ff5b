"""Training batches from the synthetic benchmark's endless stream, in exactly the chat format the plugin uses.

Stage 1 batches: pixel values plus per-patch labels (shape or empty, colour, row, column of each grid cell).
Stage 2 batches: the chat-template prompt of [image, `prompt_for(doc)`] with the generation prompt, followed by
the answer and eos, left-padded by `prompting.encode`, so the last two positions of every row are the targets.
Summary labels (an auxiliary target of stage 2) of the scene: which shape+colour combinations are present, the
counts of every shape, every colour and all items, and the row and column of each combination present exactly once;
and of the question: its template, the colours and shapes it names (in order), its relation, and the row and column
of each object it names by colour and shape.
Caption batches (the alignment task of stage 2): the prompt `CAPTION_PROMPT`, then every grid cell in row-major order
as "colour shape" ("no no" when empty) and eos: a fixed `CAPTION_TARGETS` targets at the end of every row.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Iterator, Sequence

import torch

from lmms_topo_plugin.models.prompting import Prompt, encode
from lmms_topo_plugin.synthbench import COLORS, GRID, KINDS, SHAPES, iter_examples, prompt_for
from lmms_topo_plugin.synthbench.questions import PLURALS, RELATIONS, TEMPLATES
from lmms_topo_plugin.synthbench.scene import MAX_ITEMS
from lmms_topo_plugin.synthbench.text import tokenize

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
SHAPE_WORDS = {**{shape: shape for shape in SHAPES}, **{plural: shape for shape, plural in PLURALS.items()}}
TEMPLATE_PATTERNS = tuple(
    re.compile("".join(re.escape(literal) + ("(.+?)" if field else "")
                       for literal, field, *_ in string.Formatter().parse(template)) + "$")
    for template in TEMPLATES
)
SUMMARY_CLASSES = {  # name: (targets, classes each)
    "combo": (len(COMBOS), 2), "count": (len(SHAPES) + len(COLORS) + 1, MAX_ITEMS + 1),
    "row": (len(COMBOS), GRID + 1), "col": (len(COMBOS), GRID + 1),
    "template": (1, len(TEMPLATES)), "colors": (2, len(COLORS) + 1), "shapes": (2, len(SHAPES) + 1),
    "relation": (1, len(RELATIONS) + 1), "named": (4, GRID + 1),
}


def _named(words: list[str], names: Sequence[str]) -> list[int]:
    """1 + index in `names` of the first two of `words` (0 where fewer are named)."""
    found = [1 + names.index(word) for word in words][:2]
    return found + [0] * (2 - len(found))


def question_labels(question: str) -> dict[str, list[int]]:
    """Template index, the named colours and shapes (1 + index, in order; 0 for none) and relation of `question`."""
    matches = [i for i, pattern in enumerate(TEMPLATE_PATTERNS) if pattern.match(question)]
    template = max(matches, key=lambda i: len(TEMPLATE_PATTERNS[i].pattern))  # COUNT also matches DIFFERENCE
    words = tokenize(question)
    relations = [1 + list(RELATIONS).index(word) for word in words if word in RELATIONS]
    return {"template": [template], "colors": _named([w for w in words if w in COLORS], list(COLORS)),
            "shapes": _named([SHAPE_WORDS[w] for w in words if w in SHAPE_WORDS], list(SHAPES)),
            "relation": relations[:1] or [0]}


def _position(items: list[dict], shape: str, color: str) -> tuple[int, int]:
    """1 + (row, col) of the only such item; (0, 0) when there is none; ignored when there are several."""
    matches = [item for item in items if item["shape"] == shape and item["color"] == color]
    if len(matches) > 1:
        return IGNORE, IGNORE
    return (1 + matches[0]["row"], 1 + matches[0]["col"]) if matches else (0, 0)


def summary_labels(docs: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Per doc: combination present (0/1), counts (shapes, colours, total), `_position` of every combination,
    `question_labels`, and `_position` of the (up to two) objects the question names by colour and shape (ignored
    where it names fewer); shapes as `SUMMARY_CLASSES` gives them."""
    labels = {name: torch.zeros(len(docs), n, dtype=torch.long) for name, (n, _) in SUMMARY_CLASSES.items()}
    for i, doc in enumerate(docs):
        question = question_labels(doc["question"])
        for name, values in question.items():
            labels[name][i] = torch.tensor(values)
        items = doc["scene"]
        for c, (shape, color) in enumerate(COMBOS):
            labels["combo"][i, c] = int(any(item["shape"] == shape and item["color"] == color for item in items))
            labels["row"][i, c], labels["col"][i, c] = _position(items, shape, color)
        for k, (color, shape) in enumerate(zip(question["colors"], question["shapes"])):
            named = _position(items, SHAPES[shape - 1], list(COLORS)[color - 1]) if color and shape else (IGNORE,) * 2
            labels["named"][i, 2 * k : 2 * k + 2] = torch.tensor(named)
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
