"""Built-in layer scorers; importing this package registers them."""

from . import baselines, domain, similarity, topology  # noqa: F401
from .base import LayerScorer, LayerScores

__all__ = ["LayerScorer", "LayerScores"]
