"""Built-in methods (layer scorers, and CoMP's width method); importing this package registers them."""

from lmms_topo_plugin.scorers import baselines, domain, similarity, topology  # noqa: F401
from lmms_topo_plugin.scorers.comp import method as comp_method  # noqa: F401
from lmms_topo_plugin.scorers.base import LayerScorer, LayerScores

__all__ = ["LayerScorer", "LayerScores"]
