"""What an export carries in ``build/pruning/``: where its configuration came from and what was measured.

From a sweep (``--winner``, ``--pareto``): the configuration's sweep record (``sweep_record.json``: its metrics
and the dense model's, measured cost on the sweep's hardware, the rule, tasks, limit and versions), the sweep's
tables and Pareto plot, and the method's per-layer scores with the removed layers marked. From a single run
(``--model-args``): that run's pruning report and plots. The model card is written from these files and the
checkpoint's own reports, never from anything else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from loguru import logger

EVIDENCE_DIR = "pruning"
SWEEP_RECORD = "sweep_record.json"
SWEEP_FILES = ("results.md", "results.csv", "pareto.png")


def sweep_evidence(record: dict[str, Any], sweep_dir: Path, selected_as: str) -> dict[str, bytes]:
    """The files of one sweep configuration (``selected_as``: ``winner`` or ``pareto_front``), by name."""
    from lmms_topo_plugin.reports import score_figures
    from lmms_topo_plugin.scorers import LayerScores
    from lmms_topo_plugin.search.sweep import scores_path
    from lmms_topo_plugin.search.variants import label_of

    files = {SWEEP_RECORD: (json.dumps({**record, "selected_as": selected_as}, indent=2) + "\n").encode()}
    files.update({name: (sweep_dir / name).read_bytes() for name in SWEEP_FILES if (sweep_dir / name).is_file()})
    winner = record["winner"]
    path = scores_path(sweep_dir / "scores", label_of(winner), winner.get("calib_limit"))
    saved = json.loads(path.read_text()) if path.is_file() else None
    if saved is None or saved["method_params"] != winner.get("method_params") or saved["calibration"] != winner.get("calibration"):
        logger.warning(f"topo-prune export: no scores of this configuration in {path.parent} (sweeps before "
                       "lmms-topo-plugin 0.1 did not save them); the build has no score plot")
        return files
    files["scores.json"] = path.read_bytes()
    figures = score_figures(winner["method"], LayerScores.from_json(saved["scores"]), winner["removed_layers"])
    files.update({"scores.png" if name == "scores" else f"{winner['method']}_{name}.png": png
                  for name, png in figures.items()})
    return files


def writer(files: dict[str, bytes]) -> Callable[[Path], None]:
    """A callable that writes ``files`` into ``<build>/pruning/`` (for :func:`export_checkpoint`'s ``evidence``)."""
    from lmms_topo_plugin.cache import atomic_write_bytes

    def write(build: Path) -> None:
        for name, data in files.items():
            atomic_write_bytes(build / EVIDENCE_DIR / name, data)

    return write


def report_writer(report: Any) -> Callable[[Path], None]:
    """A callable that writes a single run's pruning report and plots into ``<build>/pruning/``."""
    from lmms_topo_plugin.reports import write_report

    return lambda build: write_report(report, build / EVIDENCE_DIR)
