"""Zigzag persistent homology of per-depth point clouds (TopoVLM, docs/methods/topology.md §1).

``analyze_topology(states, k=, alpha=, sigma=, engine=)`` turns clouds ``[N, L+1, d]`` into JSON-ready layer
scores; ``write_topology_plots(result, out_dir, removed=)`` draws them. Modules: ``complexes`` (kNN flag
complexes), ``zigzag`` (the intersection zigzag, bars → depths), ``engines`` (its barcode: quiver, dionysus), ``consistency`` (scores, EPI),
``analysis`` (the pipeline and the ε rule), ``plots``, ``synthetic`` (test and benchmark clouds).
"""

from lmms_topo_plugin.topology.analysis import analyze_topology, select_epsilon


def __getattr__(name: str):
    """``write_topology_plots`` is imported on first use: matplotlib stays out of ``import`` time."""
    if name == "write_topology_plots":
        from lmms_topo_plugin.topology.plots import write_topology_plots

        return write_topology_plots
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["analyze_topology", "select_epsilon", "write_topology_plots"]
