"""Visual-token pruning during prefill, as hooks on a loaded model that detach cleanly.

At decoder layer ``layer`` of the prompt's forward, a pruner scores the visual tokens (:meth:`TokenPruner.relevance`)
and drops the lowest ones; every later layer computes and caches only the kept tokens. A pruner may select again
at later layers (:meth:`TokenPruner.selection_layers`, HalfV's top-5% at its SSR layer), and may freeze the visual
tokens from a layer on (:meth:`TokenPruner.frozen_from`): there they give keys and values only, their hidden
states stop changing, and queries, attention output and MLP run on the other tokens alone (with the KV cache the
visual keys and values are written into the cache before the layer runs on the rest; without one the layer runs
on every token and the visual states are put back, which is the same computation). Kept tokens keep their
original rotary / M-RoPE positions (the position embeddings, ids and attention mask are gathered, not recomputed),
the KV cache of those layers holds the reduced sequence, and decoding steps attend to it (their attention mask is
restricted to the kept prompt positions). Text tokens are never dropped. The choice is made once per prompt: a
later forward without a cache over the prompt plus generated tokens reuses it, so generation with and without
the cache agree. Rows of a batch drop the same number of visual tokens (the smallest row's budget), so the
batch stays rectangular. A selection never keeps fewer than one visual token of a prompt that has any
(:func:`kept_count`, the floor; a warning names the stage and its parameter the first time the floor applies).

    with FastV(layer=2, keep=0.25).attach(loaded.adapter) as state:
        loaded.model.generate(...)
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Sequence

import torch
from loguru import logger

from lmms_topo_plugin.config.params import params_of
from lmms_topo_plugin.tokens.configs import TokenConfig
from lmms_topo_plugin.families import VLMAdapter
from lmms_topo_plugin.families.layers import DecoderLayerAdapter, gather_tokens
from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.calibration.hooks import HookSet


@dataclass
class PrunedPrompt:
    """The current prompt's selection: its token ids, visual mask and, per selection layer, the kept positions."""

    input_ids: torch.Tensor
    visual: torch.Tensor
    stages: list[torch.Tensor] = field(default_factory=list)  # kept prompt positions ``[B, T_k]`` after each selection
    key_order: dict[int, torch.Tensor] = field(default_factory=dict)  # frozen layer → prompt positions in its cache
    seen: dict[int, tuple[int, int]] = field(default_factory=dict)  # layer → (query tokens, key tokens) in prefill

    @property
    def keep_index(self) -> torch.Tensor | None:
        """The prompt positions kept after the last selection."""
        return self.stages[-1] if self.stages else None

    @property
    def counts(self) -> list[tuple[int, int]]:
        """``(tokens in, tokens kept)`` of each selection."""
        lengths = [self.input_ids.shape[1], *(stage.shape[1] for stage in self.stages)]
        return list(zip(lengths, lengths[1:]))

    def reset(self) -> None:
        self.stages, self.key_order, self.seen = [], {}, {}


@dataclass
class TokenPruner:
    """Keep ``keep`` of the visual tokens from decoder layer ``layer`` on (prefill only). Built from a run's
    :class:`~lmms_topo_plugin.tokens.configs.TokenConfig` (where the defaults are), or given every value."""

    layer: int
    keep: float
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line for users (topo-prune methods)
    config_class: ClassVar[type[TokenConfig]] = TokenConfig  # its model_args (token_*), defaults included
    _floored: set = field(default_factory=set, init=False, repr=False, compare=False)  # warned (parameter, count)

    def __post_init__(self) -> None:
        """The values are checked against their config's options (one range, one message)."""
        params = params_of(self.config_class)
        params["token_keep"].parse("token_keep", self.keep)
        params["token_layer"].parse("token_layer", self.layer)

    def selection_layers(self) -> tuple[int, ...]:
        """The decoder layers at whose input visual tokens are selected, ascending."""
        return (self.layer,)

    def frozen_from(self) -> int | None:
        """The first layer whose visual tokens are frozen (None: none are)."""
        return None

    def named_layers(self) -> dict[str, int]:
        """The layers the pruner acts at, by their ``model_args`` key."""
        return {"token_layer": self.layer}

    def relevance(self, layer: DecoderLayerAdapter, hidden: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` scores of every position (only the visual ones are read); higher is kept."""
        raise NotImplementedError

    def drop_count(self, visual: torch.Tensor) -> int:
        """How many visual tokens every row drops at step 1 (``token_layer``): the smallest row's
        ``count - kept_count(count, keep)``."""
        counts = visual.sum(dim=1).tolist()
        return self.floored_drop(counts, counts, self.keep, f"token_keep={self.keep:g}", self.layer)

    def floored_drop(self, current: Sequence[int], original: Sequence[int], fraction: float, parameter: str,
                     layer: int) -> int:
        """How many visual tokens every row drops when a stage at ``layer`` keeps ``kept_count(original, fraction)``
        of each row's ``original`` visual tokens and the rows have ``current`` ones now: the smallest row's
        difference (never negative). Where the floor of one token applies, warns once per ``parameter`` and count."""
        for count in sorted(set(original)):
            if count > 0 and math.floor(count * fraction) == 0 and (parameter, count) not in self._floored:
                self._floored.add((parameter, count))
                logger.warning(f"topo_pruned: token_method={self.name} at layer {layer}: {parameter} keeps "
                               f"{fraction * 100:g}% of {count} visual tokens = 0; keeping 1 (the floor: a token "
                               f"stage keeps at least one visual token per prompt)")
        return max(0, min(now - kept_count(count, fraction) for now, count in zip(current, original, strict=True)))

    def keep_index(self, adapter: VLMAdapter, layer: DecoderLayerAdapter, hidden: torch.Tensor,
                   visual: torch.Tensor) -> torch.Tensor:
        """``[B, T']`` sorted positions to keep: every non-visual one and the most relevant visual ones."""
        return drop_lowest(self.relevance(layer, hidden, visual), visual, self.drop_count(visual))

    def select(self, stage: int, adapter: VLMAdapter, layer: DecoderLayerAdapter, hidden: torch.Tensor,
               visual: torch.Tensor, original_visual: torch.Tensor,
               rotary: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """Selection ``stage`` (at ``selection_layers()[stage]``) over the current tokens: ``[B, T']`` sorted
        indices into ``hidden`` to keep. ``visual``: the current visual mask; ``original_visual``: the prompt's;
        ``rotary``: the layer's ``cos``/``sin`` at the current tokens (None when the model passes none)."""
        return self.keep_index(adapter, layer, hidden, visual)

    @contextmanager
    def attach(self, adapter: VLMAdapter) -> Iterator[dict[str, Any]]:
        """Prune while the context is open; yields a dict whose ``"prompt"`` is the last :class:`PrunedPrompt`."""
        for key, layer in self.named_layers().items():
            if layer >= adapter.num_layers:
                raise ModelArgsError(f"model_args: {key}={layer} is out of range; the model has "
                                     f"{adapter.num_layers} decoder layers")
        state: dict[str, Any] = {"prompt": None}
        frozen = self.frozen_from()
        with HookSet() as hooks:
            hooks.before(adapter.model, lambda module, args, kwargs: self._see_inputs(adapter, state, args, kwargs))
            for index in range(self.selection_layers()[0], adapter.num_layers):
                calls = adapter.layer_adapter(index)
                hooks.before(adapter.layers[index], lambda module, args, kwargs, calls=calls, index=index:
                             self._restrict(adapter, calls, index, state, args, kwargs))
                if frozen is not None and index >= frozen:
                    hooks.after(adapter.layers[index], lambda module, args, kwargs, output, calls=calls:
                                _unfreeze(calls, state, output))
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
        if (prompt is not None and prompt.stages and input_ids.shape[0] == prompt.input_ids.shape[0]
                and input_ids.shape[1] > prompt.input_ids.shape[1]
                and torch.equal(input_ids[:, : prompt.input_ids.shape[1]], prompt.input_ids)):
            return  # the same prompt, extended by generated tokens: keep its selection
        state["prompt"] = PrunedPrompt(input_ids, adapter.image_token_mask(input_ids))

    def _restrict(self, adapter: VLMAdapter, calls: DecoderLayerAdapter, layer: int, state: dict, args: tuple,
                  kwargs: dict):
        """Before a layer from the first selection on: select (at a selection layer), drop what is not kept, and
        restrict the call's kwargs; at a frozen layer, leave the visual tokens out of the computation."""
        prompt: PrunedPrompt = state["prompt"]
        hidden = calls.hidden_states(args, kwargs)
        cache = kwargs.get("cache")
        points = self.selection_layers()
        stage = sum(point <= layer for point in points) - 1
        if cache is not None and cache.get_seq_length(calls.cache_index) > 0:  # a decoding step
            mask = kwargs.get("attention_mask")
            if not isinstance(mask, torch.Tensor):
                return None
            order = prompt.key_order.get(layer, prompt.stages[stage]).to(mask.device)
            new = torch.arange(prompt.input_ids.shape[1], mask.shape[-1], device=mask.device).expand(order.shape[0], -1)
            return args, calls.keep_tokens(kwargs, None, torch.cat([order, new], dim=1))
        length = prompt.input_ids.shape[1]
        if layer in points:
            hidden = self._select_at(adapter, calls, points.index(layer), prompt, hidden, kwargs)
            args, kwargs = calls.with_hidden_states(args, kwargs, hidden)
        kept = prompt.stages[stage].to(hidden.device)
        index = with_generated(kept, length, hidden.shape[1] - kept.shape[1])
        frozen = self.frozen_from()
        if frozen is None or layer < frozen:
            prompt.seen[layer] = (index.shape[1], index.shape[1])
            return args, calls.keep_tokens(kwargs, index, index)
        return freeze_call(calls, layer, state, args, kwargs, index)

    def _select_at(self, adapter: VLMAdapter, calls: DecoderLayerAdapter, stage: int, prompt: PrunedPrompt,
                   hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
        """Selection ``stage`` on the prompt part of ``hidden`` (computed once per prompt), the generated tokens
        after it kept; the reduced hidden states."""
        length = prompt.input_ids.shape[1]
        if stage == 0 and hidden.shape[1] == length:
            prompt.reset()  # a forward of exactly the prompt selects anew
        previous = prompt.stages[stage - 1].to(hidden.device) if stage else torch.arange(
            length, device=hidden.device).expand(hidden.shape[0], -1)
        if len(prompt.stages) == stage:
            visual = prompt.visual.to(hidden.device).gather(1, previous)
            embeddings = kwargs.get("position_embeddings")
            rotary = None if embeddings is None else tuple(
                gather_tokens(part, previous, dim=-2, batch_dim=-3) for part in embeddings)
            local = self.select(stage, adapter, calls, hidden[:, :previous.shape[1]], visual,
                                prompt.visual.to(hidden.device), rotary)
            prompt.stages.append(previous.gather(1, local))
        else:  # stages are sorted subsets of the stage before: their indices into it
            local = torch.searchsorted(previous.contiguous(), prompt.stages[stage].to(hidden.device))
        local = with_generated(local, previous.shape[1], hidden.shape[1] - previous.shape[1])
        return hidden.gather(1, local[..., None].expand(-1, -1, hidden.shape[-1]))


def kept_count(count: int, fraction: float) -> int:
    """The visual tokens a stage keeps of a prompt's ``count``: ``floor(count * fraction)``, but at least one when
    the prompt has any (the floor; without it a small image or a small fraction would keep none)."""
    return max(1, math.floor(count * fraction)) if count > 0 else 0


def drop_lowest(scores: torch.Tensor, visual: torch.Tensor, drop: int) -> torch.Tensor:
    """``[B, T']`` sorted positions without the ``drop`` lowest-scoring visual ones of each row."""
    scores = scores.float().masked_fill(~visual, float("inf"))
    dropped = scores.topk(drop, dim=1, largest=False).indices if drop else scores[:, :0].long()
    kept = torch.ones_like(visual).scatter(1, dropped, False)
    return kept.nonzero()[:, 1].view(visual.shape[0], -1)


def with_generated(index: torch.Tensor, start: int, extra: int) -> torch.Tensor:
    """``index`` (``[B, T']``) followed by the positions ``start, start + 1, ...`` of ``extra`` tokens generated
    after the prompt, which a forward without cache over the prompt and its continuation has."""
    if extra <= 0:
        return index
    return torch.cat([index, torch.arange(start, start + extra, device=index.device).expand(index.shape[0], -1)], 1)


def freeze_call(calls: DecoderLayerAdapter, layer: int, state: dict, args: tuple, kwargs: dict,
                index: torch.Tensor):
    """A frozen layer's call on the current tokens (original positions ``index``). With a KV cache: the visual
    tokens that need not be queries (every row computes as many queries as its row with the most other tokens)
    are written into the layer's cache as keys and values first, and the layer runs on the rest, attending to
    both. Without one (or under flash attention, which takes no mask): the layer runs on all tokens.
    :func:`_unfreeze` then puts the visual states back."""
    prompt: PrunedPrompt = state["prompt"]
    hidden = calls.hidden_states(args, kwargs)
    length = prompt.input_ids.shape[1]
    visual = torch.zeros_like(index, dtype=torch.bool)
    in_prompt = index < length
    visual[in_prompt] = prompt.visual.to(index.device).gather(1, index.clamp(max=length - 1))[in_prompt]
    cache = kwargs.get("cache")
    mask = kwargs.get("attention_mask")
    others = (~visual).sum(dim=1)
    queries = int(others.max())
    implementation = getattr(calls.attention.config, "_attn_implementation", "sdpa")
    if (cache is None or queries == index.shape[1] or implementation.startswith("flash")
            or not (mask is None or isinstance(mask, torch.Tensor))):
        state["frozen"] = (hidden, visual, None)
        prompt.seen[layer] = (index.shape[1], index.shape[1])
        return args, calls.keep_tokens(kwargs, index, index)
    # queries: the other tokens, topped up per row with its first visual tokens (their output is discarded)
    rank = visual.cumsum(dim=1)
    is_query = ~visual | (rank <= (queries - others)[:, None])
    batch = index.shape[0]
    query_local = is_query.nonzero()[:, 1].view(batch, -1)
    kv_local = (~is_query).nonzero()[:, 1].view(batch, -1)
    query_index, kv_index = index.gather(1, query_local), index.gather(1, kv_local)
    frozen_states = hidden.gather(1, kv_local[..., None].expand(-1, -1, hidden.shape[-1]))
    normed = calls.attention_input(frozen_states)
    rotary = tuple(gather_tokens(part, kv_index, dim=-2, batch_dim=-3) for part in kwargs["position_embeddings"])
    cache.update(calls.cache_keys(normed, rotary), calls.values(normed).transpose(1, 2), calls.cache_index)
    key_index = torch.cat([kv_index, query_index], dim=1)
    prompt.key_order[layer] = key_index
    prompt.seen[layer] = (queries, index.shape[1])
    restricted = calls.keep_tokens(kwargs, query_index, key_index)
    if mask is None:  # the model passed none (no padding, SDPA): causal by original position
        allowed = key_index[:, None, None, :] <= query_index[:, None, :, None]
        restricted["attention_mask"] = allowed if implementation == "sdpa" else torch.zeros(
            allowed.shape, dtype=hidden.dtype, device=hidden.device).masked_fill(~allowed, torch.finfo(hidden.dtype).min)
    state["frozen"] = (hidden, visual, query_local)
    query_states = hidden.gather(1, query_local[..., None].expand(-1, -1, hidden.shape[-1]))
    return calls.with_hidden_states(args, restricted, query_states)


def _unfreeze(calls: DecoderLayerAdapter, state: dict, output: Any):
    """After a frozen layer: the full sequence again, the visual tokens with the states they came in with."""
    frozen = state.pop("frozen", None)
    if frozen is None:  # a decoding step
        return None
    hidden, visual, query_local = frozen
    out = calls.output_states(output)
    if query_local is not None:
        out = hidden.scatter(1, query_local[..., None].expand(-1, -1, hidden.shape[-1]), out)
    out = torch.where(visual[..., None], hidden, out)
    return (out, *output[1:]) if isinstance(output, tuple) else out
