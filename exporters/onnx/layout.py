"""How an ONNX build lays out its graphs: the opset, when weights go to a ``.data`` file, a graph's files, and the
names of the KV-cache inputs and outputs; shared by our graphs (:mod:`.graphs`) and the model builder's
(:mod:`.builder_decoder`)."""

from __future__ import annotations

from pathlib import Path

OPSET = 18
# a graph whose weights pass this keeps them in ``<file>.data`` next to it (one protobuf file holds at most 2 GB)
EXTERNAL_DATA_BYTES = 1 << 30


def graph_files(onnx_dir: Path, file: str) -> list[str]:
    """A graph's files: ``file`` and, when its weights are external, ``file.data``."""
    return [file] + ([f"{file}.data"] if (onnx_dir / f"{file}.data").exists() else [])


def past_names(num_layers: int, prefix: str) -> list[str]:
    return [f"{prefix}.{layer}.{kind}" for layer in range(num_layers) for kind in ("key", "value")]
