"""Scenes: coloured shapes on a grid whose cells line up with vision patches, and their rendering."""

from __future__ import annotations

import random
from typing import NamedTuple

import numpy as np
from PIL import Image

GRID = 4  # cells per side
CELL = 16  # pixels per cell side: one cell is one 16 px vision patch
MIN_ITEMS = 2
MAX_ITEMS = 6
SHAPES = ("circle", "square", "triangle", "cross")
COLORS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}
BACKGROUNDS = {"black": (0, 0, 0), "white": (255, 255, 255)}


class Item(NamedTuple):
    """One shape in one grid cell."""

    shape: str
    color: str
    row: int
    col: int


class Scene(NamedTuple):
    """A background and its items, sorted by (row, col)."""

    background: str
    items: tuple[Item, ...]

    def describe(self) -> list[dict]:
        """The items as JSON-ready dicts ({shape, color, row, col})."""
        return [item._asdict() for item in self.items]

    @classmethod
    def from_description(cls, background: str, items: list[dict]) -> Scene:
        """Inverse of `describe`."""
        return cls(background, tuple(sorted(Item(**item) for item in items)))


def random_scene(rng: random.Random, grid: int = GRID, min_items: int = MIN_ITEMS, max_items: int = MAX_ITEMS) -> Scene:
    """A scene of `min_items`..`max_items` shapes in distinct cells of a `grid` x `grid` board."""
    count = rng.randint(min_items, max_items)
    cells = sorted(rng.sample(range(grid * grid), count))
    items = tuple(Item(rng.choice(SHAPES), rng.choice(tuple(COLORS)), cell // grid, cell % grid) for cell in cells)
    return Scene(rng.choice(tuple(BACKGROUNDS)), items)


def shape_mask(shape: str, cell: int = CELL) -> np.ndarray:
    """Boolean `cell` x `cell` mask of `shape`, drawn with a margin so neighbours never touch."""
    margin = cell / 8
    half = cell / 2 - margin  # half the drawable extent
    y, x = np.mgrid[0:cell, 0:cell] + 0.5  # pixel centres
    dx, dy = x - cell / 2, y - cell / 2
    inside = (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "circle":
        return dx**2 + dy**2 <= half**2
    if shape == "square":
        return inside
    if shape == "triangle":  # apex up, base down
        return inside & (np.abs(dx) <= (dy + half) / 2)
    if shape == "cross":  # a plus sign with arms cell/4 thick
        arm = cell / 8
        return inside & ((np.abs(dx) <= arm) | (np.abs(dy) <= arm))
    raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")


def render(scene: Scene, grid: int = GRID, cell: int = CELL) -> np.ndarray:
    """The scene as a (grid*cell, grid*cell, 3) uint8 RGB array."""
    size = grid * cell
    pixels = np.empty((size, size, 3), dtype=np.uint8)
    pixels[:] = BACKGROUNDS[scene.background]
    for item in scene.items:
        patch = pixels[item.row * cell : (item.row + 1) * cell, item.col * cell : (item.col + 1) * cell]
        patch[shape_mask(item.shape, cell)] = COLORS[item.color]
    return pixels


def render_image(scene: Scene, grid: int = GRID, cell: int = CELL) -> Image.Image:
    """The scene as a PIL RGB image."""
    return Image.fromarray(render(scene, grid, cell))
