"""The stored files: every split's docs, built in `SPLITS` order, each avoiding what it must not repeat.

`test` avoids `calib`; `dev` avoids `calib`, `test` and every stream item the bundled model trained on
(`seen.bundled_training_keys`, replayed from its training log), because that stream predates `dev` and does not
skip it. A future retraining stream should skip `dev` as well (`splits.STREAM_HELDOUT`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from lmms_topo_plugin.synthbench.questions import KINDS
from lmms_topo_plugin.synthbench.seen import bundled_training_keys
from lmms_topo_plugin.synthbench.splits import SPLITS, Key, build_docs, doc_key
from lmms_topo_plugin.synthbench.storage import encode_line, file_name


def excluded(split: str, earlier: frozenset[Key]) -> frozenset[Key]:
    """What `split` must avoid: the items of the splits built before it and, for `dev`, the bundled model's
    training items."""
    return earlier | bundled_training_keys() if split == "dev" else earlier


def build_files() -> dict[str, str]:
    """Every stored file's name and exact content."""
    contents = {}
    taken: set[Key] = set()
    for split in SPLITS:
        exclude = excluded(split, frozenset(taken))
        built = {kind: build_docs(split, kind, exclude) for kind in KINDS}
        for kind, docs in built.items():
            taken.update(doc_key(doc) for doc in docs)
            contents[file_name(split, kind)] = "".join(encode_line(doc) for doc in docs)
    return contents


def write_files(out_dir: Union[str, Path]) -> dict[Path, int]:
    """Build the stored files into `out_dir` (each written atomically); returns their paths and sizes."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, text in build_files().items():
        data = text.encode("utf-8")
        tmp = out / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, out / name)
        written[out / name] = len(data)
    return written
