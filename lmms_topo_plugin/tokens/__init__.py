"""Visual-token pruners (prefill-only hooks on a loaded model), registered by name."""

from __future__ import annotations

from lmms_topo_plugin.tokens.base import PrunedPrompt, TokenPruner
from lmms_topo_plugin.tokens.configs import HalfVConfig, TokenConfig
from lmms_topo_plugin.tokens.methods import CollaborativeTokens, FastV, HalfV, RandomTokens

TOKEN_METHODS: dict[str, type[TokenPruner]] = {cls.name: cls for cls in (FastV, HalfV, RandomTokens, CollaborativeTokens)}


def config_class(method: str) -> type[TokenConfig]:
    """The config class of ``token_method=method`` (KeyError for a name no pruner has)."""
    return TOKEN_METHODS[method].config_class


def from_record(record: dict | None) -> TokenConfig | None:
    """The config a token-pruning record states (None for none); a HalfV record written before step 2 existed has
    no ``ssr_mode``: step 1 alone."""
    if not record:
        return None
    values = {"token_method": record["method"], "token_keep": record["keep"], "token_layer": record["layer"]}
    if record["method"] == "halfv":
        values |= {"token_anchor": record["anchor"], "token_ssr_mode": record.get("ssr_mode", "off"),
                   "token_ssr_layer": record.get("ssr_layer")}
    return config_class(record["method"])(**values)


def record_model_args(record: dict | None) -> dict:
    """The ``model_args`` that give back a token-pruning record (``{}`` for none)."""
    config = from_record(record)
    return config.model_args() if config is not None else {}


def token_pruner(record: dict | None) -> TokenPruner | None:
    """The pruner a token-pruning record describes (``PruneConfig.token_pruning`` or a checkpoint's)."""
    config = from_record(record)
    if config is None:
        return None
    cls = TOKEN_METHODS[config.token_method]
    extra = {"seed": record.get("seed", 0)} if cls is RandomTokens else {}
    if isinstance(config, HalfVConfig):
        extra = {"anchor": config.token_anchor, "ssr_layer": config.token_ssr_layer, "ssr_mode": config.token_ssr_mode}
    return cls(layer=config.token_layer, keep=config.token_keep, **extra)


__all__ = ["config_class", "from_record", "record_model_args", "token_pruner", "TOKEN_METHODS", "CollaborativeTokens", "FastV", "HalfV", "PrunedPrompt", "RandomTokens", "TokenPruner"]
