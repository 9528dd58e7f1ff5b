"""Built-in layer scorers; importing this package registers them."""

from lmms_topo_plugin.scorers import baselines, domain, similarity, topology  # noqa: F401
from lmms_topo_plugin.scorers.base import LayerScorer, LayerScores

__all__ = ["LayerScorer", "LayerScores"]
