"""``topo-prune sweep``: score once, evaluate every method x budget, measure, pick the winner."""

from __future__ import annotations

import argparse
from pathlib import Path

from lmms_topo_plugin.config.params import parse_model_args_text
from lmms_topo_plugin.errors import NoPassingConfiguration

NAME = "sweep"
HELP = ("score once, evaluate every method x budget through lmms-eval, measure "
        "speed and memory, pick the winner under a rule; resumable")
ON_INTERRUPT = "re-run the same command to resume (finished configurations are kept)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-args", "--model_args", default="", help="base model_args (pretrained=, device=, "
                       "dtype=, ...; default: the bundled model); method/sparsity come from --methods/--budgets")
    parser.add_argument("--methods", default="topology,block_influence,angular,random,spacing",
                       help="comma-separated methods, layer or width (topo-prune methods lists them); a variant sets "
                       "parameters for one entry: topology[topo_k=5,topo_alpha=2] is its own line in the results; "
                       "m,m[recover=kd] gives m without and with recovery (recover=kd in --model-args recovers every "
                       "pruned entry, never the dense reference; m[recover=none] opts out)")
    parser.add_argument("--budgets", default="0.125,0.25,0.375,0.5",
                        help="comma-separated sparsities in (0, 1): the fraction of decoder layers a layer method "
                        "removes, of the dense prefill FLOPs a width method removes")
    parser.add_argument("--calib-limits", "--calib_limits", default="",
                       help="comma-separated calibration sizes to sweep too (default: each method's own)")
    parser.add_argument("--tasks", default="topo_synth", help="comma-separated lmms-eval tasks or groups")
    parser.add_argument("--include-path", "--include_path", help="extra lmms-eval task directory")
    parser.add_argument("--limit", type=float, help="documents per task (an integer count, or a fraction < 1)")
    parser.add_argument("--rule", default="keep>=0.95",
                       help="keep>=X: at least X times the dense metric; metric>=V: at least V (default keep>=0.95)")
    parser.add_argument("--metric", help="task/metric the rule reads, as lmms-eval names it "
                       "(default: the first task's metric when it has one)")
    parser.add_argument("--objective", default="layers", help="among passing configurations: layers (most removed), "
                       "latency (lowest measured prefill), params (fewest parameters), flops (fewest prefill FLOPs; compares "
                       "width and layer methods)")
    parser.add_argument("--cost-repeats", "--cost_repeats", type=int, default=5,
                       help="timed repeats per configuration (median reported, after a warm-up)")
    parser.add_argument("--out", default="sweep", help="output directory (re-run the same command to resume)")


def run(args: argparse.Namespace) -> int:
    from lmms_topo_plugin.distributed import rank
    from lmms_topo_plugin.search import SweepSpec, run_sweep
    from lmms_topo_plugin.search.rules import SweepArgsError
    from lmms_topo_plugin.search.variants import split_methods

    def listed(text: str, convert, flag: str) -> list:
        try:
            return [convert(item.strip()) for item in text.split(",") if item.strip()]
        except ValueError:
            raise SweepArgsError(f"{flag}: {text!r} is not a comma-separated list of {convert.__name__}s") from None

    limit = args.limit if args.limit is None or args.limit < 1 else int(args.limit)
    spec = SweepSpec(
        model_args=parse_model_args_text(args.model_args), methods=split_methods(args.methods),
        budgets=listed(args.budgets, float, "--budgets"), tasks=listed(args.tasks, str, "--tasks"),
        out=Path(args.out), rule=args.rule, metric=args.metric, objective=args.objective,
        calib_limits=listed(args.calib_limits, int, "--calib-limits") or [None], include_path=args.include_path,
        limit=limit, cost_repeats=args.cost_repeats,
    )
    result = run_sweep(spec)
    if rank() != 0:  # under torchrun: rank 0 writes and judges
        return 0
    print(f"results: {spec.out / 'results.md'} (and results.csv, pareto.png)")
    if result["winner"] is None:
        raise NoPassingConfiguration(f"no configuration passes {args.rule} on {result['metric']}; "
                                     f"see {spec.out / 'results.md'}")
    winner = result["winner"]
    recovery = winner.get("recovery")
    recovered = (f", recovered: {recovery['steps']} steps, held-out KL {recovery['kl_before']:.4g} → "
                 f"{recovery['kl_after']:.4g}" if recovery else "")
    print(f"winner: {winner.get('variant') or winner['method']} at {winner['budget']:g} (removes "
          f"{winner['removed_layers']}{recovered}): {spec.out / 'winner.json'}")
    return 0
