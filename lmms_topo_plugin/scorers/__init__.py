"""Built-in layer scorers; importing this package registers them."""

from . import baselines, similarity  # noqa: F401
from .base import LayerScorer, LayerScores

__all__ = ["LayerScorer", "LayerScores"]
