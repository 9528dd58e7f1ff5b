"""The typed configs of the visual-token pruners (``token_*`` keys of ``model_args``) and the writer of the
token-pruning record a run saves (pruning record, report, sweep rows, winner, card); its reader is
:func:`lmms_topo_plugin.tokens.from_record`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from lmms_topo_plugin.config.params import option

# transformers sizes a decoding step's attention mask and positions by layer 0's KV cache, so that cache must hold
# the whole prompt: no token stage may drop tokens from layer 0's input
FIRST_TOKEN_LAYER = 1
WHY_NOT_LAYER_0 = "layer 0's KV cache must hold the whole prompt: generation sizes its mask by it"
LAYER_HELP = f"decoder layer (of the pruned model) from which visual tokens are dropped; from 1 on ({WHY_NOT_LAYER_0})"


@dataclass(frozen=True)
class TokenConfig:
    """``token_method=fastv|random|cit``: keep ``token_keep`` of the visual tokens from ``token_layer`` on (prefill)."""

    token_method: str = option(str, None, "visual-token pruning during prefill (combinable with a layer method=): "
                               "fastv, halfv, random or cit (CoMP's token importance)")
    token_keep: float = option(float, 0.5, "fraction of the visual tokens token_method keeps", low=0.0, high=1.0,
                               check=lambda value: None if value > 0 else "expected a float in (0, 1]")
    token_layer: int | None = option(int, 2, LAYER_HELP, low=FIRST_TOKEN_LAYER, why=WHY_NOT_LAYER_0)

    @property
    def needs_detection(self) -> bool:
        """Whether a stage is left to the lifecycle of the loaded model (HalfV only)."""
        return False

    def to_record(self, seed: int) -> dict[str, Any]:
        """The record saved with the model and in reports (the run's ``seed`` drives the random baseline)."""
        return {"method": self.token_method, "keep": self.token_keep, "layer": self.token_layer, "seed": seed}

    def model_args(self) -> dict[str, Any]:
        """The ``model_args`` that give this config back."""
        return {key: value for key, value in dataclasses.asdict(self).items() if value is not None}


@dataclass(frozen=True)
class HalfVConfig(TokenConfig):
    """``token_method=halfv``: step 1 at its IVR layer, step 2 from its SSR layer; either may be detected."""

    token_layer: int | None = option(int, None, LAYER_HELP + "; halfv: its IVR layer (default: detected, the visual "
                                     "entropy curve's; topo-prune analyze --what entropy shows it)",
                                     low=FIRST_TOKEN_LAYER, why=WHY_NOT_LAYER_0)
    token_anchor: float = option(float, 0.1, "halfv: fraction of the kept visual tokens chosen by relevance (the "
                                 "rest by diversity)", low=0.0, high=1.0)
    token_ssr_mode: str = option(str, "auto", "halfv step 2 from the SSR layer: freeze (visual tokens give keys and "
                                 "values only), top5 (keep the 5% of the visual tokens the last token attends to "
                                 "most), off, or auto (freeze when freezing the visual tokens there changes the "
                                 "next-token distribution by a KL of at most 1e-3 on the calibration prompts, else "
                                 "top5)", choices=("auto", "freeze", "top5", "off"))
    token_ssr_layer: int | None = option(int, None, "halfv: the SSR layer (of the pruned model) where step 2 starts; "
                                         "default: detected (the visual entropy curve's minimum)",
                                         low=FIRST_TOKEN_LAYER, why=WHY_NOT_LAYER_0)

    @property
    def needs_detection(self) -> bool:
        return self.token_layer is None or self.token_ssr_mode == "auto" or (
            self.token_ssr_mode != "off" and self.token_ssr_layer is None)

    def to_record(self, seed: int) -> dict[str, Any]:
        return super().to_record(seed) | {"anchor": self.token_anchor, "ssr_mode": self.token_ssr_mode,
                                          "ssr_layer": self.token_ssr_layer}
