"""``topo-prune regimes``: classify the budgets of a finished sweep."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "regimes"
HELP = ("mark each budget of a finished sweep as ranking-sensitive, "
        "converging or continuity-dominated; write regimes.{json,md,png}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", help="a directory written by topo-prune sweep")
    parser.add_argument("--metric", help="task/metric (default: the sweep's)")
    parser.add_argument("--sensitive-spread", "--sensitive_spread", type=float, default=0.10,
                         help="spread (max - min of the metric over methods) from which a budget is ranking-sensitive")
    parser.add_argument("--spacing-margin", "--spacing_margin", type=float, default=0.01,
                         help="by how much spacing must beat every other method for continuity-dominated")
    parser.add_argument("--out", help="output directory (default: the sweep directory)")


def run(args: argparse.Namespace) -> int:
    from lmms_topo_plugin.search.regimes import RegimeRule, write_regimes

    rule = RegimeRule(sensitive_spread=args.sensitive_spread, spacing_margin=args.spacing_margin)
    report = write_regimes(Path(args.sweep), args.metric, rule, Path(args.out) if args.out else None)
    for entry in report["budgets"]:
        print(f"budget {entry['budget']:g}: {entry['regime']} (spread {entry['spread']:.3f}, layer overlap "
              f"{entry['layer_overlap']:.2f}, best {', '.join(entry['best'])})")
    out = Path(args.out or args.sweep)
    print(f"regimes: {out / 'regimes.md'} (and regimes.json, regimes.png)")
    return 0
