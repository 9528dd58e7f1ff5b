"""Reading what the ``lmms-eval`` CLI wrote, for tests that recompute its numbers another way."""

from __future__ import annotations

import json
from pathlib import Path


def logged_samples(results_file: str | Path, task: str) -> list[dict]:
    """The per-document samples logged next to ``results_file`` (``--log_samples``) for ``task``, by ``doc_id``."""
    results_file = Path(results_file)
    files = sorted(results_file.parent.glob(f"*_samples_{task}.jsonl"))
    if len(files) != 1:
        raise FileNotFoundError(f"expected one samples file of {task} next to {results_file}, found {len(files)}")
    rows = [json.loads(line) for line in files[0].read_text().splitlines() if line.strip()]
    return sorted(rows, key=lambda row: row["doc_id"])


def response_text(row: dict) -> str:
    """The filtered response of a generation sample (lmms-eval writes a string, or a one-element list)."""
    response = row["filtered_resps"]
    while isinstance(response, list):
        if len(response) != 1:
            raise ValueError(f"expected one response, got {response!r}")
        response = response[0]
    return response
