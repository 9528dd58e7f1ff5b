"""``topo-prune prune``: prune as model_args describe, write the report, optionally save the checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from lmms_topo_plugin.config.params import parse_model_args_text
from lmms_topo_plugin.exporters.checkpoint import SAVE_DTYPES, check_destination
from lmms_topo_plugin.failures import RESTARTS

NAME = "prune"
HELP = "prune a model as model_args describe; write the report, optionally save"
ON_INTERRUPT = RESTARTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-args", "--model_args", required=True, help="the same key=value,... string lmms-eval takes")
    parser.add_argument("--report-dir", default="topo_prune_reports", help="where the pruning report and its plots go")
    parser.add_argument("--save", help="save the pruned checkpoint (from_pretrained-loadable) here")
    parser.add_argument("--save-dtype", default="base", choices=SAVE_DTYPES,
                       help="dtype of the saved weights (default: the base checkpoint's, e.g. float16)")


def run(args: argparse.Namespace) -> int:
    from lmms_topo_plugin.api import load_pruned
    from lmms_topo_plugin.exporters.checkpoint import save_checkpoint, save_dtype
    from lmms_topo_plugin.exporters.export import dtype_name
    from lmms_topo_plugin.models.loading import load_config, resolve_pretrained
    from lmms_topo_plugin.reports import write_report

    model_args = parse_model_args_text(args.model_args)
    if args.save:
        check_destination(args.save, "--save", overwrite=True)  # a previous checkpoint there is replaced whole
    loaded, report = load_pruned(model_args)
    for path in write_report(report, Path(args.report_dir)):
        print(f"report: {path}")
    if args.save:
        base = load_config(resolve_pretrained(model_args.get("pretrained")), model_args.get("revision"))
        dtype = save_dtype(args.save_dtype, getattr(base, "dtype", None))
        save_checkpoint(loaded.model, loaded.processor, args.save, dtype)
        print(f"pruned checkpoint ({dtype_name(dtype or loaded.model.dtype)}): {args.save}")
    return 0
