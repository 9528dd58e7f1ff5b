"""Layer scorers: importance of each decoder layer, and which layers to remove for a budget.

Torch-Pruning keeps importance, pruner and ratio apart; here a scorer computes importance from calibration
statistics (``needs`` names them), ``select`` turns importance and a layer budget into the removed set, and
surgery applies it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..errors import NonFiniteError


@dataclass
class LayerScores:
    """Per-layer scores of one method.

    ``importance[l]`` is for decoder layer ``l`` (input ``h_l``, output ``h_{l+1}``); higher means keep.
    It is ``None`` for methods that choose layers without scoring them (spacing). ``details`` holds other
    named per-layer or per-depth series worth reporting.
    """

    importance: list[float] | None
    details: dict[str, list] = field(default_factory=dict)

    def check_finite(self, method: str) -> "LayerScores":
        """Refuse NaN/inf importance (no selection may be made from it), naming the layers; returns ``self``."""
        bad = [layer for layer, value in enumerate(self.importance or []) if not math.isfinite(value)]
        if bad:
            raise NonFiniteError(f"method={method} produced non-finite scores (NaN or inf) for decoder layers {bad}; "
                                 "nothing was removed")
        return self

    def to_json(self) -> dict:
        return {"importance": self.importance, "details": self.details}

    @classmethod
    def from_json(cls, data: dict) -> "LayerScores":
        return cls(data["importance"], data.get("details", {}))


class LayerScorer:
    """Base class of every registered layer method."""

    method_name: ClassVar[str]
    version: ClassVar[int] = 1  # bump when the scores change meaning: part of the scores' cache key
    needs: ClassVar[tuple[str, ...]] = ()
    min_samples: ClassVar[int] = 1
    default_samples: ClassVar[int] = 64  # calibration samples when calib_limit is not given (per domain, if any)
    domains: ClassVar[tuple[str, ...]] = ()  # labelled calibration domains (domain-aware methods), else one set

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = seed

    def score(self, stats: dict[str, torch.Tensor], num_layers: int) -> LayerScores:
        raise NotImplementedError

    @classmethod
    def report_plots(cls, scores: LayerScores, removed: list[int]) -> dict[str, bytes]:
        """Method-specific figures for the run report, ``{name: PNG bytes}`` (none by default)."""
        return {}

    def max_removable(self, num_candidates: int) -> int:
        """How many of ``num_candidates`` removable layers this method can remove at most."""
        return num_candidates

    def select(self, scores: LayerScores, n_remove: int, candidates: list[int]) -> list[int]:
        """The ``n_remove`` candidates of lowest importance (ties broken by depth), sorted."""
        assert scores.importance is not None
        ranked = sorted(candidates, key=lambda layer: (scores.importance[layer], layer))
        return sorted(ranked[:n_remove])
