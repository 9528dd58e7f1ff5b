"""Per-family vision graphs of the ONNX build, keyed by ``model_type``; one module per family."""

from __future__ import annotations

from .base import OnnxFamily
from .llava import LLAVA
from .qwen import QWEN

FAMILIES: dict[str, OnnxFamily] = {
    "llava": LLAVA,
    "qwen2_vl": QWEN,
    "qwen2_5_vl": QWEN,
}
SUPPORTED = tuple(FAMILIES)  # model_type values with an ONNX export today
