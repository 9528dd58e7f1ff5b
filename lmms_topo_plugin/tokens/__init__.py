"""Visual-token pruners (prefill-only hooks on a loaded model), registered by name."""

from __future__ import annotations

from .base import PrunedPrompt, TokenPruner
from .methods import FastV, RandomTokens

TOKEN_METHODS: dict[str, type[TokenPruner]] = {cls.name: cls for cls in (FastV, RandomTokens)}

__all__ = ["TOKEN_METHODS", "FastV", "PrunedPrompt", "RandomTokens", "TokenPruner"]
