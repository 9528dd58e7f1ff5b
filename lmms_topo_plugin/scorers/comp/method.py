"""The width methods in the registry: ``comp`` and the width-only baselines it is compared with, each a search
(:class:`~.search.CompSearch`) under its own settings."""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Sequence

from lmms_topo_plugin.scorers.base import PruningMethod
from lmms_topo_plugin.scorers.comp.config import PARAMETER_MODES, CompConfig, WidthSearchConfig
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
    version = 2  # 2: results state their layout and token layer
    needs = ("comp_importance",)
    default_samples = 32
    importance: ClassVar[str] = "cip"  # how units are ranked: CoMP's importance, or "random" (seeded)

    @property
    def min_samples(self) -> int:
        """The held-out prompts and at least as many to score with."""
        return 2 * self.config.comp_val

    def search_config(self) -> CompConfig:
        """The settings its search runs with."""
        return self.config

    def check_reachable(self, pretrained: str, hf_config: Any, prompts: Sequence[Any], sparsity: float,
                        method: str, revision: str | None = None) -> None:
        """Refuse, before the weights load, a ``sparsity`` the search cannot reach (:mod:`.preflight`)."""
        from lmms_topo_plugin.scorers.comp.preflight import check_reachable_before_loading

        params = self.search_config()
        check_reachable_before_loading(pretrained, hf_config, prompts[-params.comp_val:], params, sparsity, method,
                                       revision)

    @classmethod
    def plan_figures(cls, plan: Mapping[str, Any]) -> dict[str, bytes]:
        """The run report's figures: what each layer kept, and the stages (:mod:`.plots`)."""
        from lmms_topo_plugin.scorers.comp.plots import comp_figures

        return comp_figures(plan)


@register_layer_method(
    "wanda_widths",
    config_class=WidthSearchConfig,
    description="width-only baseline: attention head groups and MLP channels (decoder, vision tower, projector) "
    "ranked once on the dense model by plain Wanda importance (no token weighting), pruned mode by mode to "
    "sparsity= of the dense prefill FLOPs; no visual tokens",
)
class WandaWidthsMethod(CompMethod):
    def search_config(self) -> CompConfig:
        return CompConfig(comp_widths=self.config.comp_widths, comp_step=self.config.comp_step,
                          comp_val=self.config.comp_val, comp_multiple=self.config.comp_multiple,
                          comp_modes=":".join(PARAMETER_MODES),
                          comp_collaborative=False, comp_schedule="joint")


@register_layer_method(
    "random_widths",
    config_class=WidthSearchConfig,
    description="random baseline of the width methods: head groups and MLP channels in a seeded random order "
    "(seed=), pruned mode by mode to sparsity= of the dense prefill FLOPs",
)
class RandomWidthsMethod(WandaWidthsMethod):
    importance = "random"
