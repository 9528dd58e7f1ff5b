"""``method=comp`` in the registry: a width method whose plan comes from :class:`~.search.CompSearch`."""

from __future__ import annotations

from typing import Any, Mapping

from lmms_topo_plugin.scorers.base import PruningMethod
from lmms_topo_plugin.scorers.comp.config import CompConfig
from lmms_topo_plugin.scorers.registry import register_layer_method


@register_layer_method(
    "comp",
    config_class=CompConfig,
    description="CoMP (training-free here): attention head groups and MLP channels of the decoder, vision tower "
    "and projector, and visual tokens, pruned together in stages (token-weighted Wanda importance, head-masked "
    "token importance, the cheapest mode per stage) until sparsity= of the dense prefill FLOPs is removed",
)
class CompMethod(PruningMethod):
    unit = "widths"
    version = 1
    needs = ("comp_importance",)
    default_samples = 32

    @property
    def min_samples(self) -> int:
        """The held-out prompts and at least as many to score with."""
        return 2 * self.config.comp_val

    @classmethod
    def plan_figures(cls, plan: Mapping[str, Any]) -> dict[str, bytes]:
        """The run report's figures: what each layer kept, and the stages (:mod:`.plots`)."""
        from lmms_topo_plugin.scorers.comp.plots import comp_figures

        return comp_figures(plan)
