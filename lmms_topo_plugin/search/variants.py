"""Method variants in a sweep: ``topology[topo_k=5,topo_score=multiscale]`` is the topology method with those
parameters on top of ``--model-args``, evaluated, tabled and plotted as its own line next to the others.

A row keeps the registered ``method`` (what an export re-applies) and adds ``variant``, the label as written.
"""

from __future__ import annotations

import re

from lmms_topo_plugin.config.params import parse_model_args_text
from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.search.rules import SweepArgsError

_VARIANT = re.compile(r"([A-Za-z0-9_]+)(?:\[([^\[\]]*)\])?")


def split_methods(text: str) -> list[str]:
    """``--methods`` split at the commas outside brackets: ``"a,b[x=1,y=2]"`` → ``["a", "b[x=1,y=2]"]``."""
    entries, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth not in (0, 1):
            raise SweepArgsError(f"--methods: unbalanced brackets in {text!r}")
        if char == "," and depth == 0:
            entries.append(current.strip())
            current = ""
        else:
            current += char
    if depth:
        raise SweepArgsError(f"--methods: unbalanced brackets in {text!r}")
    return [entry for entry in entries + [current.strip()] if entry]


def parse_variant(entry: str) -> tuple[str, dict[str, str]]:
    """``"name[key=value,...]"`` → ``(name, {key: value})``; a plain name has no parameters."""
    match = _VARIANT.fullmatch(entry.replace(" ", ""))
    if match is None:
        raise SweepArgsError(f"--methods: {entry!r} is not a method name or name[key=value,...]")
    name, inside = match.group(1), match.group(2)
    try:
        params = parse_model_args_text(inside or "", where=f"--methods: {entry!r}")
    except ModelArgsError as error:
        raise SweepArgsError(str(error)) from None
    if inside is not None and not params:
        raise SweepArgsError(f"--methods: {entry!r} has empty brackets")
    return name, params


def label_of(row: dict) -> str:
    """The line a row belongs to: its variant label, or its method for rows written before variants existed."""
    return row.get("variant") or row["method"]


def file_stem(label: str) -> str:
    """A label as a file-name part: ``topology[topo_k=5]`` → ``topology_topo_k=5``."""
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", label).strip("_")
