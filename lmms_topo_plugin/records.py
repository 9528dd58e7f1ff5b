"""The records the plugin saves, their schemas in one place, and one reader and one writer for each.

- the pruning record (``topo_pruning`` in a pruned checkpoint's ``config.json``, and in its ONNX manifest), with
  ``recovery`` when the weights were trained after pruning (``recover=kd``);
- a sweep's winner (``winner.json``) and its Pareto front (``pareto.json``);
- an ONNX build's manifest (``onnx/manifest.json``).

A writer stamps ``schema`` and ``version``; a reader accepts every version up to the current one (records written
by earlier versions keep loading) and refuses anything else with one line naming the argument it came from.
The run report (``topo_pruned.report/v1``) keeps its one-string schema in :data:`REPORT_SCHEMA`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmms_topo_plugin.errors import ModelArgsError

REPORT_SCHEMA = "topo_pruned.report/v1"


@dataclass(frozen=True)
class Schema:
    """A record kind: its ``schema`` name, the version this code writes, and what writes it (for errors)."""

    name: str
    version: int
    written_by: str

    def stamp(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` with this schema's name and current version first."""
        return {"schema": self.name, "version": self.version, **body}

    def holds(self, record: Any) -> bool:
        """Whether ``record`` is of this kind, at a version this code reads."""
        return (isinstance(record, dict) and record.get("schema") == self.name
                and isinstance(record.get("version"), int) and 1 <= record["version"] <= self.version)

    def read(self, path: str | Path, argument: str) -> dict[str, Any]:
        """The record in the JSON file ``path``; one line naming ``argument`` when it is missing or not of this kind."""
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ModelArgsError(f"{argument}: cannot read {path} (written by {self.written_by}): {error}") from None
        if not self.holds(record):
            raise ModelArgsError(f"{argument}: {path} is not a {self.name} v{self.version} record (written by "
                                 f"{self.written_by})")
        return record


PRUNING = Schema("lmms_topo_plugin.pruning", 1, "topo-prune prune/export")
WINNER = Schema("lmms_topo_plugin.sweep_winner", 1, "topo-prune sweep")
PARETO = Schema("lmms_topo_plugin.sweep_pareto", 1, "topo-prune sweep")
# v2: "decoder" says which decoder graph the build has (torch; builder: onnxruntime-genai's model builder, fed
# right-padded, its KV cache in shared buffers, its logits from the lm_head graph); a v1 build's is ours (torch)
ONNX_BUILD = Schema("lmms_topo_plugin.onnx_build", 2, "topo-prune export --onnx")


def pruning_record_of(model_config: Any) -> dict[str, Any] | None:
    """The pruning record a model config carries (a transformers config, or ``config.json`` read as a dict); None
    for a model nobody pruned."""
    if isinstance(model_config, dict):
        return model_config.get("topo_pruning") or None
    return getattr(model_config, "topo_pruning", None) or None


def token_record_of(model_config: Any) -> dict[str, Any] | None:
    """The visual-token pruning a model config's pruning record states (None without it)."""
    return (pruning_record_of(model_config) or {}).get("token_pruning")


def recovery_record_of(model_config: Any) -> dict[str, Any] | None:
    """What recovery (``recover=kd``) did to a model's weights after pruning, as its pruning record states it (None
    for weights as pruning left them): :meth:`lmms_topo_plugin.recovery.run.RecoveryRecord.summary` (data, steps,
    parameters, held-out KL before and after, ``weights_changed``)."""
    return (pruning_record_of(model_config) or {}).get("recovery")


def set_pruning_record(model_config: Any, record: dict[str, Any]) -> None:
    """Store ``record`` (a :data:`PRUNING` record) in the model config, saved with the checkpoint."""
    model_config.topo_pruning = record
