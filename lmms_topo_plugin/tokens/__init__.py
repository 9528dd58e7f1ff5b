"""Visual-token pruners (prefill-only hooks on a loaded model), registered by name."""

from __future__ import annotations

from lmms_topo_plugin.tokens.base import PrunedPrompt, TokenPruner
from lmms_topo_plugin.tokens.methods import FastV, HalfV, RandomTokens

TOKEN_METHODS: dict[str, type[TokenPruner]] = {cls.name: cls for cls in (FastV, HalfV, RandomTokens)}


def token_pruner(record: dict | None) -> TokenPruner | None:
    """The pruner a token-pruning record describes (``PruneConfig.token_pruning`` or a checkpoint's)."""
    if not record:
        return None
    cls = TOKEN_METHODS[record["method"]]
    extra = {"seed": record.get("seed", 0)} if cls is RandomTokens else {}
    if cls is HalfV:  # records written before step 2 existed have no ssr_mode: step 1 alone
        extra = {"anchor": record["anchor"], "ssr_layer": record.get("ssr_layer"),
                 "ssr_mode": record.get("ssr_mode", "off")}
    return cls(layer=record["layer"], keep=record["keep"], **extra)


__all__ = ["token_pruner", "TOKEN_METHODS", "FastV", "HalfV", "PrunedPrompt", "RandomTokens", "TokenPruner"]
