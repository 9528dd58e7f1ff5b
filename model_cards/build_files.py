"""The files of an export (``topo-prune export``'s ``build/``) that a model card is written from.

Every figure on a card comes from one of these files; :class:`BuildFiles` reads them once and names the file
each figure came from, so the card can say where.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmms_topo_plugin.records import pruning_record_of
from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.exporters.evidence import EVIDENCE_DIR, SWEEP_RECORD

CARD_NAME = "README.md"


@dataclass
class BuildFiles:
    """What ``build/`` holds: the checkpoint config and export report, and the optional sweep record, single-run
    pruning report and ONNX manifest and validation."""

    root: Path
    config: dict[str, Any]
    export_report: dict[str, Any]
    sweep_record: dict[str, Any] | None = None
    run_report: dict[str, Any] | None = None
    run_report_name: str | None = None
    onnx_manifest: dict[str, Any] | None = None
    onnx_validation: dict[str, Any] | None = None
    plots: list[str] = field(default_factory=list)

    @property
    def pruning(self) -> dict[str, Any] | None:
        """The checkpoint's ``topo_pruning`` record (``None`` for a dense export)."""
        return pruning_record_of(self.config)

    def files(self) -> list[Path]:
        """Every file of the build (relative paths, sorted), the card itself excluded."""
        return sorted(path.relative_to(self.root) for path in self.root.rglob("*")
                      if path.is_file() and path.relative_to(self.root) != Path(CARD_NAME))


def _json(path: Path, flag: str = "build") -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ModelArgsError(f"{flag}: cannot read {path}: {error}") from None


def read_build(root: str | Path) -> BuildFiles:
    """Read ``root``; a one-line error naming the build directory when it is not a ``topo-prune export`` output."""
    from lmms_topo_plugin.reports import LATEST_POINTER

    root = Path(root)
    for name in ("config.json", "export_report.json"):
        if not (root / name).is_file():
            raise ModelArgsError(f"build: {root} has no {name}; push a directory written by topo-prune export")
    build = BuildFiles(root, _json(root / "config.json"), _json(root / "export_report.json"))
    evidence = root / EVIDENCE_DIR
    if (evidence / SWEEP_RECORD).is_file():
        build.sweep_record = _json(evidence / SWEEP_RECORD)
    if (evidence / LATEST_POINTER).is_file():
        build.run_report_name = f"{EVIDENCE_DIR}/{_json(evidence / LATEST_POINTER)['report']}"
        build.run_report = _json(root / build.run_report_name)
    if (root / "onnx" / "manifest.json").is_file():
        build.onnx_manifest = _json(root / "onnx" / "manifest.json")
        build.onnx_validation = _json(root / "onnx" / "validation.json")
    build.plots = [str(path.relative_to(root)) for path in sorted(evidence.glob("*.png"))]
    return build
