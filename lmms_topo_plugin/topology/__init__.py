"""Zigzag persistent homology of per-depth point clouds (TopoVLM, docs METHODS.md section 1).

``analyze_topology(states, k=, alpha=, sigma=, engine=)`` turns clouds ``[N, L+1, d]`` into JSON-ready layer
scores; ``write_topology_plots(result, out_dir, removed=)`` draws them. Modules: ``complexes`` (kNN flag
complexes), ``zigzag`` (the intersection zigzag, dionysus, bars → depths), ``consistency`` (scores, EPI),
``analysis`` (the pipeline and the ε rule), ``plots``, ``synthetic`` (test and benchmark clouds).
"""

from .analysis import analyze_topology, select_epsilon
from .plots import write_topology_plots

__all__ = ["analyze_topology", "select_epsilon", "write_topology_plots"]
