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

from lmms_topo_plugin.errors import NonFiniteError, UninformativeScoresError
from lmms_topo_plugin.config.params import MethodConfig

# candidate importances within this (relative to 1 or their size) of each other are equal: no signal to rank by
TIE_TOLERANCE = 1e-9


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

    def check_informative(self, method: str, n_remove: int, candidates: list[int], hint: str) -> "LayerScores":
        """Refuse to choose ``n_remove`` of ``candidates`` when their importance carries no information: every
        candidate scored the same (a score undefined everywhere comes out constant too), so the choice would be a
        tie broken by depth. No choice is made when nothing or every candidate goes, nor for methods without
        importance (spacing); random importance never ties. ``hint`` says what to raise; returns ``self``."""
        if self.importance is None or not 0 < n_remove < len(candidates):
            return self
        values = [self.importance[layer] for layer in candidates]
        if max(values) - min(values) > TIE_TOLERANCE * max(1.0, abs(max(values)), abs(min(values))):
            return self
        raise UninformativeScoresError(
            f"method={method} gives every candidate decoder layer {candidates} the same importance ({values[0]:.4g}): "
            f"no information to choose {n_remove} of them by, so nothing was removed; {hint}")

    def to_json(self) -> dict:
        return {"importance": self.importance, "details": self.details}

    @classmethod
    def from_json(cls, data: dict) -> "LayerScores":
        return cls(data["importance"], data.get("details", {}))


class PruningMethod:
    """Base class of every registered method: its config, seed and what calibration it needs. ``unit`` says what
    it prunes: ``layers`` (a :class:`LayerScorer`: scores, then a layer budget) or ``widths`` (heads, channels and
    visual tokens chosen by a search on the loaded model, :mod:`lmms_topo_plugin.scorers.comp`)."""

    method_name: ClassVar[str]
    unit: ClassVar[str] = "layers"
    version: ClassVar[int] = 1  # bump when the results change meaning: part of their cache key
    needs: ClassVar[tuple[str, ...]] = ()
    min_samples: ClassVar[int] = 1
    default_samples: ClassVar[int] = 64  # calibration samples when calib_limit is not given (per domain, if any)
    domains: ClassVar[tuple[str, ...]] = ()  # labelled calibration domains (domain-aware methods), else one set

    def __init__(self, config: MethodConfig, *, seed: int = 0) -> None:
        self.config = config
        self.seed = seed


class LayerScorer(PruningMethod):
    """Base class of every registered layer method."""

    def score(self, stats: dict[str, torch.Tensor], num_layers: int) -> LayerScores:
        raise NotImplementedError

    @classmethod
    def report_plots(cls, scores: LayerScores, removed: list[int], *, protected: tuple[int, ...] | list[int] = ()
                     ) -> dict[str, bytes]:
        """Method-specific figures for the run report, ``{name: PNG bytes}`` (none by default); ``protected``:
        the layers no method may remove in this run (``keep_first_last``), for the figures to mark."""
        return {}

    def signal_hint(self, scores: LayerScores) -> str:
        """What to raise when ``scores`` carry no information (:meth:`LayerScores.check_informative`)."""
        return "raise calib_limit (more calibration samples)"

    def max_removable(self, num_candidates: int) -> int:
        """How many of ``num_candidates`` removable layers this method can remove at most."""
        return num_candidates

    def select(self, scores: LayerScores, n_remove: int, candidates: list[int]) -> list[int]:
        """The ``n_remove`` candidates of lowest importance (ties broken by depth), sorted."""
        assert scores.importance is not None
        ranked = sorted(candidates, key=lambda layer: (scores.importance[layer], layer))
        return sorted(ranked[:n_remove])
