"""``topo-prune analyze``: score every layer without pruning (or HalfV's visual-token lifecycle)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lmms_topo_plugin.config.params import parse_model_args_text
from lmms_topo_plugin.failures import RESTARTS

NAME = "analyze"
HELP = "score every layer without pruning; write the scores JSON and plots"
ON_INTERRUPT = RESTARTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--what", default="topology", help="the method whose scores to compute (default topology), "
                         "or entropy: HalfV's visual-token lifecycle (TME curves, IVR/SSR layers, freezing KL)")
    parser.add_argument("--model-args", "--model_args", default="", help="key=value,... as for lmms-eval (pretrained=, calib_*, topo_*)")
    parser.add_argument("--out", default="topo_analysis", help="output directory")
    parser.add_argument("--entropy-k", "--entropy_k", type=int, default=50,
                         help="--what entropy: eigenvalues kept in the truncated matrix entropy")
    parser.add_argument("--kl-threshold", "--kl_threshold", type=float, default=1e-3,
                         help="--what entropy: freezing KL at the SSR layer up to which the SSR mode is freeze")


def run(args: argparse.Namespace) -> int:
    from lmms_topo_plugin.api import score_layers
    from lmms_topo_plugin.cache import atomic_write_bytes, atomic_write_json
    from lmms_topo_plugin.scorers.registry import get_method

    if args.what == "entropy":
        return analyze_entropy(args)
    model_args = {**parse_model_args_text(args.model_args), "method": args.what}
    if "sparsity" not in model_args:
        model_args.setdefault("n_remove", "0")  # scoring only
    scores, summary = score_layers(model_args)
    out = Path(args.out)
    atomic_write_json(out / f"{args.what}_scores.json", {**summary, "scores": scores.to_json()})
    print(f"scores: {out / f'{args.what}_scores.json'}")
    for name, png in get_method(args.what).scorer_class.report_plots(scores, []).items():
        atomic_write_bytes(out / f"{args.what}_{name}.png", png)
        print(f"plot: {out / f'{args.what}_{name}.png'}")
    return 0


def analyze_entropy(args: argparse.Namespace) -> int:
    """``analyze --what entropy``: HalfV's visual-token lifecycle on the calibration prompts (default 100)."""
    from lmms_topo_plugin.api import load_pruned
    from lmms_topo_plugin.cache import atomic_write_bytes, atomic_write_json
    from lmms_topo_plugin.config.prune import PruneConfig
    from lmms_topo_plugin.pipeline import calibration_prompts
    from lmms_topo_plugin.tokens.lifecycle import analyze_lifecycle, lifecycle_png

    model_args = parse_model_args_text(args.model_args)
    config = PruneConfig.from_model_args(model_args)
    prompts = calibration_prompts(config, config.calibration.calib_limit or 100)
    loaded, _ = load_pruned(model_args)
    report = analyze_lifecycle(loaded.adapter, loaded.processor, prompts, k=args.entropy_k,
                               batch_size=config.calibration.calib_batch_size, kl_threshold=args.kl_threshold)
    out = Path(args.out)
    atomic_write_json(out / "entropy.json", {"pretrained": loaded.source, "calibration": config.calibration.source,
                                             **report})
    atomic_write_bytes(out / "entropy.png", lifecycle_png(report))
    print(f"IVR layer {report['ivr_layer']}, SSR layer {report['ssr_layer']} (mode {report['ssr_mode']}): "
          f"{out / 'entropy.json'}, {out / 'entropy.png'}")
    return 0
