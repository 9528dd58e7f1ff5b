"""``topo-prune export``: rebuild a sweep's winner (or a configuration), save and validate it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lmms_topo_plugin.config.params import parse_model_args_text
from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.scorers.registry import get_method
from lmms_topo_plugin.exporters.checkpoint import SAVE_DTYPES, check_destination, is_checkpoint
from lmms_topo_plugin.exporters.onnx.builder_decoder import DECODERS, DEFAULT_DECODER
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
    parser.add_argument("--onnx-decoder", default=DEFAULT_DECODER, choices=DECODERS,
                        help="with --onnx: whose decoder graph the build gets: builder (onnxruntime-genai's model "
                        "builder: fused GroupQueryAttention, one shared KV buffer; LLaMA/Mistral/Qwen2 text models "
                        "with head sizes a multiple of 16, one width for every layer, fp32/int4), torch (ours, "
                        "torch.onnx; every family), auto (builder where it can, else torch, the reason recorded) "
                        f"(default: {DEFAULT_DECODER})")


def run(args: argparse.Namespace) -> int:
    from lmms_topo_plugin.exporters.export import export_model_args, export_pareto, export_winner, holds_pareto_export

    if sum(map(bool, (args.winner, args.model_args, args.pareto))) != 1:
        raise ModelArgsError("export: give exactly one of --winner (a sweep's winner.json), --pareto (a sweep "
                             "directory) or --model-args")
    precisions = onnx_precisions(args.precision) if args.onnx else ()
    decoder = getattr(args, "onnx_decoder", DEFAULT_DECODER)
    check_destination(args.out, "--out", args.overwrite, holds_pareto_export if args.pareto else is_checkpoint)
    if args.pareto:
        index = export_pareto(args.pareto, args.out, args.save_dtype, precisions, decoder)
        for entry in json.loads(index.read_text())["configurations"]:
            print(f"{Path(args.out) / entry['dir']}: {entry['method']} at {entry['budget']:g}, removes "
                  f"{entry['removed_layers']}, {entry['metric']} {entry['value']:.3f}")
        print(f"index: {index}")
        return 0
    check = None
    if args.onnx:
        check = onnx_check(decoder, precisions)
    if args.winner:
        out = export_winner(args.winner, args.out, args.save_dtype, precisions, check, decoder)
    else:
        model_args = parse_model_args_text(args.model_args)
        if args.onnx:
            refuse_token_modes_for_onnx(model_args)
            if decoder == "builder":
                refuse_builder_before_loading(model_args, precisions)
        out = export_model_args(model_args, args.out, args.save_dtype, precisions, check, decoder)
    report = json.loads((out / "export_report.json").read_text())
    print(f"checkpoint: {out} ({report['num_layers']} decoder layers, {report['dtype']}; reloaded logits within "
          f"{report['max_abs_logit_difference']:.1g} of the pruned model)")
    if args.onnx:
        onnx = report["onnx"]
        print(f"onnx: {out / 'onnx'} (fp32, {onnx.get('decoder', 'torch')} decoder; max logit difference to PyTorch "
              f"{onnx['max_abs_logit_difference']:.1g}, greedy tokens identical: {onnx['greedy_tokens_identical']})")
        for precision, variant in onnx["variants"].items():
            print(f"onnx {precision}: max logit difference to fp32 {variant['max_abs_logit_difference_vs_fp32']:.3g}, "
                  f"greedy tokens agreeing with fp32 {variant['greedy_token_agreement_vs_fp32']:.0%}")
    return 0


def onnx_check(decoder: str, precisions: tuple[str, ...]):
    """What runs on the pruned model before anything is written: ONNX supports it, and with ``--onnx-decoder
    builder`` the model builder can build its decoder (one line naming the reason otherwise)."""
    from lmms_topo_plugin.exporters.onnx.builder_decoder import resolve_decoder
    from lmms_topo_plugin.exporters.onnx.graphs import check_supported

    def check(loaded) -> None:
        check_supported(loaded)
        if decoder == "builder":
            resolve_decoder(loaded, decoder, precisions)

    return check


def refuse_builder_before_loading(model_args: dict[str, str], precisions: tuple[str, ...]) -> None:
    """``--onnx-decoder builder``: what the checkpoint's config alone rules out (its family's positions, text model,
    head size; the precisions), refused before any weights load."""
    from lmms_topo_plugin.exporters.onnx.builder_decoder import BuilderUnsupported, config_limits
    from lmms_topo_plugin.models.loading import load_config, resolve_pretrained

    config = load_config(resolve_pretrained(model_args.get("pretrained")))
    try:
        config_limits(config.model_type, config.get_text_config(), precisions)
    except BuilderUnsupported as error:
        raise BuilderUnsupported(f"--onnx-decoder builder: {error}") from None


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
