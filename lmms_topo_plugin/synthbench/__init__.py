"""A seeded synthetic multimodal benchmark: coloured shapes on a patch-aligned grid, five kinds of questions.

Stored splits (`calib`, `test`, `dev`) ship as JSONL under `tasks/topo_synth/data/` and are served to lmms-eval by
the `topo_synth*` tasks (`topo_synth_dev*` for dev); `iter_examples` is an endless training stream that never
repeats a `calib` or `test` item, and `dev` avoids every item the bundled model trained on.
Rebuild the stored files with `python -m lmms_topo_plugin.synthbench build [--out DIR]`.
"""

from lmms_topo_plugin.synthbench.questions import DOMAINS, KINDS
from lmms_topo_plugin.synthbench.scene import (
    BACKGROUNDS, CELL, COLORS, GRID, MAX_ITEMS, MIN_ITEMS, SHAPES, Item, Scene, random_scene, render_image,
)
from lmms_topo_plugin.synthbench.scoring import exact_match, pope_f1, pope_pair, pope_precision, pope_recall
from lmms_topo_plugin.synthbench.build import build_files, write_files
from lmms_topo_plugin.synthbench.splits import SPLITS, iter_examples, load_split
from lmms_topo_plugin.synthbench.storage import data_dir, scene_of
from lmms_topo_plugin.synthbench.text import INSTRUCTION, normalize_answer, prompt_for, tokenize, vocabulary

__all__ = [
    "BACKGROUNDS",
    "CELL",
    "COLORS",
    "DOMAINS",
    "GRID",
    "INSTRUCTION",
    "KINDS",
    "MAX_ITEMS",
    "MIN_ITEMS",
    "SHAPES",
    "SPLITS",
    "Item",
    "Scene",
    "build_files",
    "data_dir",
    "exact_match",
    "iter_examples",
    "load_split",
    "normalize_answer",
    "pope_f1",
    "pope_pair",
    "pope_precision",
    "pope_recall",
    "prompt_for",
    "random_scene",
    "render_image",
    "scene_of",
    "tokenize",
    "vocabulary",
    "write_files",
]
