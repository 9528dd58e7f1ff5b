"""Search: score once, evaluate every budget and method through lmms-eval, measure, pick the winner under a rule.

    from lmms_topo_plugin.search import SweepSpec, run_sweep
    run_sweep(SweepSpec(model_args={"device": "cpu"}, methods=["topology", "angular"], budgets=[0.25, 0.5],
                        tasks=["topo_synth"], out=Path("sweep"), rule="keep>=0.95", objective="layers"))
"""

from lmms_topo_plugin.search.sweep import SweepSpec, run_sweep

__all__ = ["SweepSpec", "run_sweep"]
