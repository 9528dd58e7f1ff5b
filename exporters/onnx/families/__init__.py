"""Per-family vision graphs of the ONNX build, keyed by ``model_type``; one module per family."""

from __future__ import annotations

from lmms_topo_plugin.exporters.onnx.families.base import OnnxFamily
from lmms_topo_plugin.exporters.onnx.families.idefics3 import IDEFICS3
from lmms_topo_plugin.exporters.onnx.families.llava import LLAVA
from lmms_topo_plugin.exporters.onnx.families.llava_next import LLAVA_NEXT
from lmms_topo_plugin.exporters.onnx.families.qwen import QWEN

FAMILIES: dict[str, OnnxFamily] = {
    "llava": LLAVA,
    "llava_next": LLAVA_NEXT,
    "qwen2_vl": QWEN,
    "qwen2_5_vl": QWEN,
    "idefics3": IDEFICS3,
}
SUPPORTED = tuple(FAMILIES)  # model_type values with an ONNX export today
