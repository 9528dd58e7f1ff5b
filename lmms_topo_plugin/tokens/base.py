"""Visual-token pruning during prefill, as hooks on a loaded model that detach cleanly.

At decoder layer ``layer`` of the prompt's forward, a pruner scores the visual tokens (:meth:`TokenPruner.relevance`)
and drops the lowest ones; every later layer computes and caches only the kept tokens. Kept tokens keep their
original rotary / M-RoPE positions (the position embeddings, ids and attention mask are gathered, not recomputed),
the KV cache of those layers holds the reduced sequence, and decoding steps attend to it (their attention mask is
restricted to the kept prompt positions). Text tokens are never dropped. The choice is made once per prompt: a
later forward without a cache over the prompt plus generated tokens reuses it, so generation with and without
the cache agree. Rows of a batch drop the same number of visual tokens (the smallest row's budget), so the
batch stays rectangular.

    with FastV(layer=2, keep=0.25).attach(loaded.adapter) as state:
        loaded.model.generate(...)
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator

import torch

from ..adapters import VLMAdapter
from ..adapters.layers import DecoderLayerAdapter
from ..errors import ModelArgsError
from ..hooks import HookSet


@dataclass
class PrunedPrompt:
    """The current prompt's selection: its token ids, visual mask and the kept positions (``[B, T']``)."""

    input_ids: torch.Tensor
    visual: torch.Tensor
    keep_index: torch.Tensor | None = None
    counts: list[tuple[int, int]] = field(default_factory=list)  # (tokens in, tokens kept) per pruning


@dataclass
class TokenPruner:
    """Keep ``keep`` of the visual tokens from decoder layer ``layer`` on (prefill only)."""

    layer: int = 2
    keep: float = 0.5
    name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if not 0.0 < self.keep <= 1.0:
            raise ModelArgsError(f"model_args: token_keep={self.keep} is out of range; expected a float in (0, 1]")
        if self.layer < 0:
            raise ModelArgsError(f"model_args: token_layer={self.layer} is out of range; expected an int >= 0")

    def relevance(self, layer: DecoderLayerAdapter, hidden: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` scores of every position (only the visual ones are read); higher is kept."""
        raise NotImplementedError

    def drop_count(self, visual: torch.Tensor) -> int:
        """How many visual tokens every row drops: the smallest row's ``count - floor(count * keep)``."""
        return min(count - math.floor(count * self.keep) for count in visual.sum(dim=1).tolist())

    def keep_index(self, adapter: VLMAdapter, layer: DecoderLayerAdapter, hidden: torch.Tensor,
                   visual: torch.Tensor) -> torch.Tensor:
        """``[B, T']`` sorted positions to keep: every non-visual one and the most relevant visual ones."""
        drop = self.drop_count(visual)
        scores = self.relevance(layer, hidden, visual).float().masked_fill(~visual, float("inf"))
        dropped = scores.topk(drop, dim=1, largest=False).indices if drop else scores[:, :0].long()
        kept = torch.ones_like(visual).scatter(1, dropped, False)
        return kept.nonzero()[:, 1].view(visual.shape[0], -1)

    @contextmanager
    def attach(self, adapter: VLMAdapter) -> Iterator[dict[str, Any]]:
        """Prune while the context is open; yields a dict whose ``"prompt"`` is the last :class:`PrunedPrompt`."""
        if self.layer >= adapter.num_layers:
            raise ModelArgsError(f"model_args: token_layer={self.layer} is out of range; the model has "
                                 f"{adapter.num_layers} decoder layers")
        state: dict[str, Any] = {"prompt": None}
        with HookSet() as hooks:
            hooks.before(adapter.model, lambda module, args, kwargs: self._see_inputs(adapter, state, args, kwargs))
            for index in range(self.layer, adapter.num_layers):
                calls = adapter.layer_adapter(index)
                hooks.before(adapter.layers[index],
                             lambda module, args, kwargs, calls=calls, first=index == self.layer:
                             self._restrict(adapter, calls, state, args, kwargs, first))
            yield state

    def _see_inputs(self, adapter: VLMAdapter, state: dict, args: tuple, kwargs: dict) -> None:
        """Before the model's forward: a new prompt, the same prompt extended (no cache), or a decoding step."""
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None and cache.get_seq_length() > 0:
            return
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None:
            raise ModelArgsError("token pruning needs input_ids (it finds the visual tokens by their id), not inputs_embeds")
        prompt = state["prompt"]
        if (prompt is not None and prompt.keep_index is not None and input_ids.shape[0] == prompt.input_ids.shape[0]
                and input_ids.shape[1] > prompt.input_ids.shape[1]
                and torch.equal(input_ids[:, : prompt.input_ids.shape[1]], prompt.input_ids)):
            return  # the same prompt, extended by generated tokens: keep its selection
        state["prompt"] = PrunedPrompt(input_ids, adapter.image_token_mask(input_ids))

    def _restrict(self, adapter: VLMAdapter, calls: DecoderLayerAdapter, state: dict, args: tuple, kwargs: dict,
                  first: bool):
        """Before a layer from ``self.layer`` on: drop the pruned tokens (first layer) and restrict its kwargs."""
        prompt: PrunedPrompt = state["prompt"]
        hidden = calls.hidden_states(args, kwargs)
        cache = kwargs.get("cache")
        decoding = cache is not None and cache.get_seq_length(calls.cache_index) > 0
        if decoding:  # new tokens attend to the kept prompt positions and to the tokens generated since
            mask = kwargs.get("attention_mask")
            if not isinstance(mask, torch.Tensor):
                return None
            batch, prompt_length = prompt.keep_index.shape[0], prompt.input_ids.shape[1]
            new = torch.arange(prompt_length, mask.shape[-1], device=mask.device).expand(batch, -1)
            return args, calls.keep_tokens(kwargs, None, torch.cat([prompt.keep_index.to(mask.device), new], dim=1))
        length = prompt.input_ids.shape[1]
        if first and (prompt.keep_index is None or hidden.shape[1] == length):
            prompt.keep_index = self.keep_index(adapter, calls, hidden, prompt.visual.to(hidden.device))
        index = prompt.keep_index.to(hidden.device)
        extra = hidden.shape[1] - length if first else hidden.shape[1] - index.shape[1]
        if extra > 0:  # generated tokens after the prompt (a forward without cache): all kept
            index = torch.cat([index, torch.arange(length, length + extra, device=hidden.device).expand(
                index.shape[0], -1)], dim=1)
        if first:
            prompt.counts.append((hidden.shape[1], index.shape[1]))
            args, kwargs = calls.with_hidden_states(args, kwargs, hidden.gather(
                1, index[..., None].expand(-1, -1, hidden.shape[-1])))
        return args, calls.keep_tokens(kwargs, index, index)
