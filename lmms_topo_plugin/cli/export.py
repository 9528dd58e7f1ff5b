"""``topo-prune export``: rebuild a sweep's winner (or a configuration), save and validate it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lmms_topo_plugin.config.params import parse_model_args_text
from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.scorers.registry import get_method
from lmms_topo_plugin.exporters.checkpoint import SAVE_DTYPES, check_destination, is_checkpoint
from lmms_topo_plugin.failures import RESTARTS

NAME = "export"
HELP = ("rebuild a sweep's winner (or a model_args configuration) and save it "
        "as a from_pretrained checkpoint, validated by reloading it")
ON_INTERRUPT = f"no half-written checkpoint was left in --out; {RESTARTS}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--winner", help="a sweep's winner.json (its exact removed layers are re-applied)")
    parser.add_argument("--pareto", help="a sweep directory: export every configuration on its front (metric "
                        "against removed layers), each into OUT/<method>-<budget>-<calibration>, with OUT/index.json")
    parser.add_argument("--model-args", "--model_args", help="instead of --winner: key=value,... as for lmms-eval")
    parser.add_argument("--out", required=True, help="checkpoint directory (with --pareto: the folder of "
                        "checkpoints); one that holds an export is refused unless --overwrite")
    parser.add_argument("--overwrite", action="store_true", help="replace the export already in --out (its "
                        "checkpoint, onnx/ and the README.md a push wrote), after the new one validates")
    parser.add_argument("--save-dtype", default="base", choices=SAVE_DTYPES,
                        help="dtype of the saved weights (default: the base checkpoint's)")
    parser.add_argument("--onnx", action="store_true", help="also write the ONNX build (vision_encoder, "
                        "embed_tokens, decoder_model_merged with KV cache) to OUT/onnx, validated against PyTorch")
    parser.add_argument("--precision", default="fp32", help="with --onnx: comma-separated fp32, fp16, int4 "
                        "(*_fp16.onnx, *_q4.onnx weight-only MatMulNBits); fp32 is always written")


def run(args: argparse.Namespace) -> int:
    from lmms_topo_plugin.exporters.export import export_model_args, export_pareto, export_winner, holds_pareto_export

    if sum(map(bool, (args.winner, args.model_args, args.pareto))) != 1:
        raise ModelArgsError("export: give exactly one of --winner (a sweep's winner.json), --pareto (a sweep "
                             "directory) or --model-args")
    precisions = onnx_precisions(args.precision) if args.onnx else ()
    check_destination(args.out, "--out", args.overwrite, holds_pareto_export if args.pareto else is_checkpoint)
    if args.pareto:
        index = export_pareto(args.pareto, args.out, args.save_dtype, precisions)
        for entry in json.loads(index.read_text())["configurations"]:
            print(f"{Path(args.out) / entry['dir']}: {entry['method']} at {entry['budget']:g}, removes "
                  f"{entry['removed_layers']}, {entry['metric']} {entry['value']:.3f}")
        print(f"index: {index}")
        return 0
    check = None
    if args.onnx:
        from lmms_topo_plugin.exporters.onnx.graphs import check_supported as check
    if args.winner:
        out = export_winner(args.winner, args.out, args.save_dtype, precisions, check)
    else:
        model_args = parse_model_args_text(args.model_args)
        if args.onnx:
            refuse_token_modes_for_onnx(model_args)
        out = export_model_args(model_args, args.out, args.save_dtype, precisions, check)
    report = json.loads((out / "export_report.json").read_text())
    print(f"checkpoint: {out} ({report['num_layers']} decoder layers, {report['dtype']}; reloaded logits within "
          f"{report['max_abs_logit_difference']:.1g} of the pruned model)")
    if args.onnx:
        onnx = report["onnx"]
        print(f"onnx: {out / 'onnx'} (fp32; max logit difference to PyTorch {onnx['max_abs_logit_difference']:.1g}, "
              f"greedy tokens identical: {onnx['greedy_tokens_identical']})")
        for precision, variant in onnx["variants"].items():
            print(f"onnx {precision}: max logit difference to fp32 {variant['max_abs_logit_difference_vs_fp32']:.3g}, "
                  f"greedy tokens agreeing with fp32 {variant['greedy_token_agreement_vs_fp32']:.0%}")
    return 0


def refuse_token_modes_for_onnx(model_args: dict[str, str]) -> None:
    """Before any pruning: a width method that may prune visual tokens cannot be exported to ONNX (the graphs do
    not include token pruning), so say which ``comp_modes`` can."""
    from lmms_topo_plugin.config.prune import PruneConfig
    from lmms_topo_plugin.scorers.comp.config import PARAMETER_MODES

    config = PruneConfig.from_model_args(model_args)
    if config.method == "none" or get_method(config.method).unit != "widths":
        return
    if "vision_tokens" in get_method(config.method).create(config.layers.params).search_config().modes:
        raise ModelArgsError(f"--onnx: method={config.method} with comp_modes including vision_tokens may prune "
                             f"visual tokens, which the ONNX graphs do not include; export with "
                             f"comp_modes={':'.join(PARAMETER_MODES)}")


def onnx_precisions(text: str) -> tuple[str, ...]:
    """``--precision fp32,fp16,int4`` → ``("fp32", "fp16", "int4")``; fp32 is always built (the others derive from it)."""
    from lmms_topo_plugin.exporters.onnx.precision import PRECISIONS

    asked = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in asked if item not in PRECISIONS]
    if unknown:
        raise ModelArgsError(f"--precision: {unknown[0]!r} is not one of {', '.join(PRECISIONS)}")
    return ("fp32", *[precision for precision in PRECISIONS[1:] if precision in asked])
