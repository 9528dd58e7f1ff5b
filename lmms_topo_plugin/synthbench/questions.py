"""Questions about a scene, one generator per kind, with answers computed from the scene.

Every generator takes the scene's items, a `random.Random` and the answer wanted by yes/no questions
(`polarity`, "yes" or "no"; other questions ignore it), and returns `(question, answer)`, or None when the scene
cannot carry such a question unambiguously (the caller then draws another scene).
"""

from __future__ import annotations

import random
from collections import Counter
from itertools import permutations
from typing import Callable, NamedTuple, Optional, Sequence

from lmms_topo_plugin.synthbench.scene import COLORS, MAX_ITEMS, SHAPES, Item

KINDS = ("presence", "attribute", "count", "spatial", "math")
DOMAINS = ("math", "nonmath")
YES_NO = ("yes", "no")

PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
RELATIONS = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}

PRESENCE = "Is there a {color} {shape} in the image?"
COLOR_OF = "What color is the {shape}?"
SHAPE_OF = "What shape is the {color} object?"
COUNT = "How many {group} are there?"
SPATIAL = "Is the {color} {shape} {relation} the {other_color} {other_shape}?"
TOTAL = "How many {group} and {other_group} are there in total?"
DIFFERENCE = "How many more {group} than {other_group} are there?"
COMPARE = "Are there more {group} than {other_group}?"
TEMPLATES = (PRESENCE, COLOR_OF, SHAPE_OF, COUNT, SPATIAL, TOTAL, DIFFERENCE, COMPARE)

QA = Optional[tuple[str, str]]


class Group(NamedTuple):
    """A set of items named by one attribute value ("circles", "red shapes") or by nothing ("shapes")."""

    attribute: Optional[str]  # "shape", "color" or None for every item
    value: Optional[str]

    @property
    def phrase(self) -> str:
        if self.attribute == "shape":
            return PLURALS[self.value]
        return "shapes" if self.attribute is None else f"{self.value} shapes"

    def count(self, items: Sequence[Item]) -> int:
        return sum(1 for item in items if self.attribute is None or getattr(item, self.attribute) == self.value)


SHAPE_GROUPS = tuple(Group("shape", shape) for shape in SHAPES)
COLOR_GROUPS = tuple(Group("color", color) for color in COLORS)

ALL_GROUPS = (Group(None, None), *SHAPE_GROUPS, *COLOR_GROUPS)
FILLERS = (*SHAPES, *COLORS, *(group.phrase for group in ALL_GROUPS), *RELATIONS.values())
ANSWERS = (*YES_NO, *SHAPES, *COLORS, *(str(n) for n in range(MAX_ITEMS + 1)))


def domain_of(kind: str) -> str:
    """The domain of a kind: "math" for math, "nonmath" for the others."""
    return "math" if kind == "math" else "nonmath"


def ask_presence(items: Sequence[Item], rng: random.Random, polarity: str) -> QA:
    """POPE-style "Is there a red circle?"; a "no" is a hard negative: a present shape in a wrong colour, or a
    present colour on a wrong shape."""
    present = sorted({(item.shape, item.color) for item in items})
    if polarity == "yes":
        shape, color = rng.choice(present)
    else:
        wrong_color = [(s, c) for s in sorted({s for s, _ in present}) for c in COLORS if (s, c) not in present]
        wrong_shape = [(s, c) for c in sorted({c for _, c in present}) for s in SHAPES if (s, c) not in present]
        pools = [pool for pool in (wrong_color, wrong_shape) if pool]
        if not pools:
            return None
        shape, color = rng.choice(rng.choice(pools))
    return PRESENCE.format(color=color, shape=shape), polarity


def ask_attribute(items: Sequence[Item], rng: random.Random, polarity: str) -> QA:
    """The colour of the only item of a shape, or the shape of the only item of a colour."""
    shapes, colors = Counter(item.shape for item in items), Counter(item.color for item in items)
    options = [(COLOR_OF.format(shape=item.shape), item.color) for item in items if shapes[item.shape] == 1]
    options += [(SHAPE_OF.format(color=item.color), item.shape) for item in items if colors[item.color] == 1]
    return rng.choice(options) if options else None


def ask_count(items: Sequence[Item], rng: random.Random, polarity: str) -> QA:
    """How many items of a shape, of a colour, or in all (answers 0..MAX_ITEMS). Each group is a candidate once,
    plus once per item it holds, so that answers other than 0 and 1 are common."""
    candidates = list(ALL_GROUPS)
    candidates += [Group(attribute, getattr(item, attribute)) for item in items for attribute in ("shape", "color")]
    group = rng.choice(candidates)
    return COUNT.format(group=group.phrase), str(group.count(items))


def _holds(relation: str, item: Item, other: Item) -> bool:
    return {
        "left": item.col < other.col,
        "right": item.col > other.col,
        "above": item.row < other.row,
        "below": item.row > other.row,
    }[relation]


def ask_spatial(items: Sequence[Item], rng: random.Random, polarity: str) -> QA:
    """Is one item left of / right of / above / below another; both named by a colour+shape that is unique."""
    names = Counter((item.shape, item.color) for item in items)
    unique = [item for item in items if names[item.shape, item.color] == 1]
    options = [
        (item, relation, other)
        for item, other in permutations(unique, 2)
        for relation in RELATIONS
        if _holds(relation, item, other) == (polarity == "yes")
    ]
    if not options:
        return None
    item, relation, other = rng.choice(options)
    fill = {"relation": RELATIONS[relation], "other_color": other.color, "other_shape": other.shape}
    return SPATIAL.format(color=item.color, shape=item.shape, **fill), polarity


def ask_math(items: Sequence[Item], rng: random.Random, polarity: str) -> QA:
    """A sum, a (non-negative) difference or a comparison of the counts of two disjoint groups; pairs holding
    more items are likelier, so that answers other than 0 and 1 are common."""
    groups = rng.choice((SHAPE_GROUPS, COLOR_GROUPS))
    form = rng.choice((TOTAL, DIFFERENCE, COMPARE))
    pairs = list(permutations(groups, 2))
    if form == DIFFERENCE:
        pairs = [(a, b) for a, b in pairs if a.count(items) >= b.count(items)]
    if form == COMPARE:
        pairs = [(a, b) for a, b in pairs if (a.count(items) > b.count(items)) == (polarity == "yes")]
    if not pairs:
        return None
    a, b = rng.choices(pairs, weights=[1 + a.count(items) + b.count(items) for a, b in pairs])[0]
    first, second = a.count(items), b.count(items)
    answer = {TOTAL: first + second, DIFFERENCE: first - second, COMPARE: polarity}[form]
    return form.format(group=a.phrase, other_group=b.phrase), str(answer)


ASKERS: dict[str, Callable[[Sequence[Item], random.Random, str], QA]] = {
    "presence": ask_presence,
    "attribute": ask_attribute,
    "count": ask_count,
    "spatial": ask_spatial,
    "math": ask_math,
}


def ask(kind: str, items: Sequence[Item], rng: random.Random, polarity: str) -> QA:
    """A `(question, answer)` of `kind` about `items`, or None if the scene cannot carry one."""
    if kind not in ASKERS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return ASKERS[kind](items, rng, polarity)
