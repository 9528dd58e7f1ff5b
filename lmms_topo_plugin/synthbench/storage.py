"""Where the stored splits live and how a doc is written to / read from one JSONL line.

A line holds the doc's fields plus `image`, the rendered scene as base64 PNG. Reading gives the doc back with
`image` as a PIL RGB image.
"""

from __future__ import annotations

import base64
import io
import json
from importlib.resources import files
from importlib.resources.abc import Traversable

from PIL import Image

from lmms_topo_plugin.synthbench.png import encode_png
from lmms_topo_plugin.synthbench.scene import Scene, render


def data_dir() -> Traversable:
    """The shipped data folder, `tasks/topo_synth/data` (installed as package `lmms_topo_plugin.tasks`)."""
    return files("lmms_topo_plugin.tasks") / "topo_synth" / "data"


def file_name(split: str, kind: str) -> str:
    return f"{split}_{kind}.jsonl"


def scene_of(doc: dict) -> Scene:
    """The doc's scene, rebuilt from its `background` and `scene` description."""
    return Scene.from_description(doc["background"], doc["scene"])


def encode_line(doc: dict) -> str:
    """One JSONL line (with its newline) for an image-less doc; the image is rendered from its scene."""
    png = encode_png(render(scene_of(doc)))
    return json.dumps({**doc, "image": base64.b64encode(png).decode("ascii")}, separators=(",", ":")) + "\n"


def decode_image(data: str) -> Image.Image:
    """A PIL RGB image from base64 PNG text."""
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def read_records(split: str, kind: str) -> list[dict]:
    """The raw records of one shipped file (`image` still base64 text)."""
    with (data_dir() / file_name(split, kind)).open("r", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]
