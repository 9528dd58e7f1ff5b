"""Budget → units, in one place: pure functions from a config's budget and a method's scores to the layers a run
removes, and the plan a run applies (identical on every rank of a multi-process evaluation)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from lmms_topo_plugin.config.prune import LayerConfig, PruneConfig
from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.scorers.registry import DENSE_METHOD, get_method
from lmms_topo_plugin.tokens.configs import TokenConfig

if TYPE_CHECKING:
    from lmms_topo_plugin.scorers.base import LayerScorer, LayerScores
    from lmms_topo_plugin.scorers.comp.search import CompResult


@dataclass(frozen=True)
class RemoveLayers:
    """Remove these decoder layers (indices of the model the plan was made for)."""

    layers: tuple[int, ...]
    kind: ClassVar[str] = "remove_layers"

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "layers": list(self.layers)}


@dataclass(frozen=True)
class PruneVisualTokens:
    """Prune visual tokens during prefill as ``tokens`` says (layer indices of the model after the actions before
    it); ``seed`` drives the random baseline. Applied at inference, from the pruning record saved with the model."""

    tokens: TokenConfig
    seed: int
    kind: ClassVar[str] = "prune_visual_tokens"

    def record(self) -> dict[str, Any]:
        """The token-pruning record (:mod:`lmms_topo_plugin.tokens.configs`)."""
        return self.tokens.to_record(self.seed)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.record()}


@dataclass(frozen=True)
class SliceWidths:
    """Keep these units (attention head groups, MLP or projector channels) of every width site, by site name
    (:mod:`lmms_topo_plugin.surgery.widths`), in ``layout`` ``per_layer`` or ``uniform``."""

    kept: dict[str, tuple[int, ...]]
    layout: str
    kind: ClassVar[str] = "slice_widths"

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "layout": self.layout, "kept": {name: list(units) for name, units in self.kept.items()}}


Action = RemoveLayers | SliceWidths | PruneVisualTokens


@dataclass(frozen=True)
class PrunePlan:
    """What a run decided, as ordered actions (remove layers or slice widths, then prune visual tokens), with the
    scores that chose them (a width method: its search's FLOPs and stages) among ``candidates`` of
    ``num_layers``."""

    method: str
    num_layers: int
    actions: tuple[Action, ...]
    scores: dict[str, Any] | None
    candidates: list[int]

    @property
    def removed_layers(self) -> list[int]:
        return [layer for action in self.actions if isinstance(action, RemoveLayers) for layer in action.layers]

    @property
    def kept_layers(self) -> list[int]:
        """The decoder layers the plan keeps, as indices of the model it was made for (before its actions)."""
        removed = set(self.removed_layers)
        return [layer for layer in range(self.num_layers) if layer not in removed]

    @property
    def n_remove(self) -> int:
        return len(self.removed_layers)

    @property
    def widths(self) -> SliceWidths | None:
        return next((action for action in self.actions if isinstance(action, SliceWidths)), None)

    @property
    def token_pruning(self) -> dict[str, Any] | None:
        """The token-pruning record of the plan's :class:`PruneVisualTokens` (None without one)."""
        tokens = [action.record() for action in self.actions if isinstance(action, PruneVisualTokens)]
        return tokens[-1] if tokens else None

    def as_dict(self) -> dict[str, Any]:
        """The report's ``plan``."""
        return {"method": self.method, "num_layers": self.num_layers, "n_remove": self.n_remove,
                "removed_layers": self.removed_layers, "scores": self.scores, "candidates": self.candidates,
                "actions": [action.as_dict() for action in self.actions]}


def ordered_actions(removed_layers: list[int], config: PruneConfig) -> tuple[Action, ...]:
    """Layers first (the token stages count layers of the pruned model), then visual tokens."""
    actions: list[Action] = [RemoveLayers(tuple(removed_layers))] if removed_layers else []
    if config.tokens is not None:
        actions.append(PruneVisualTokens(config.tokens, config.run.seed))
    return tuple(actions)


def method_scorer(config: PruneConfig) -> LayerScorer | None:
    """The scorer of ``config``'s layer method with its parameters and seed (None for the dense model)."""
    if config.method == DENSE_METHOD:
        return None
    return get_method(config.method).create(config.layers.params, seed=config.run.seed)


def removable_candidates(layers: LayerConfig, num_layers: int) -> list[int]:
    """Decoder layers a method may remove (first and last excluded when ``keep_first_last``)."""
    return list(range(1, num_layers - 1)) if layers.keep_first_last else list(range(num_layers))


def layer_budget(layers: LayerConfig, num_layers: int, scorer: LayerScorer | None) -> int:
    """How many of ``num_layers`` decoder layers ``layers`` removes, checked against what ``scorer`` (the method's;
    None for the dense model) can remove."""
    if scorer is not None and scorer.unit != "layers":
        return 0
    n = layers.n_remove if layers.n_remove is not None else int(round((layers.sparsity or 0.0) * num_layers + 1e-9))
    if n == 0 or layers.method == DENSE_METHOD:
        return 0
    limit = scorer.max_removable(len(removable_candidates(layers, num_layers)))
    if n >= num_layers:
        raise ModelArgsError(
            f"model_args: removing {n} of {num_layers} decoder layers would remove every layer; "
            f"allowed: sparsity <= {limit / num_layers:.3f} or n_remove <= {limit}"
        )
    if n > limit:
        reason = " with keep_first_last=true" if layers.keep_first_last else ""
        raise ModelArgsError(
            f"model_args: method={layers.method} can remove at most {limit} of {num_layers} decoder layers{reason}, "
            f"asked for {n}; allowed: n_remove <= {limit} or sparsity <= {limit / num_layers:.3f}"
        )
    return n


def plan_layers(config: PruneConfig, scorer: LayerScorer | None, scores: LayerScores | None,
                num_layers: int) -> PrunePlan:
    """The plan for ``config`` (its layer budget, its token pruning) from already computed ``scores`` (None at
    budget 0 or for the dense model): a pure function, no model involved. The sweep scores a method once and calls
    this for every budget."""
    layers = config.layers
    n_remove = layer_budget(layers, num_layers, scorer)
    candidates = removable_candidates(layers, num_layers)
    removed: list[int] = []
    if n_remove:  # no selection from scores that cannot rank the candidates (exit 5, before any surgery)
        scores.check_informative(layers.method, n_remove, candidates, scorer.signal_hint(scores))
        removed = scorer.select(scores, n_remove, candidates)
    return PrunePlan(layers.method, num_layers, ordered_actions(removed, config),
                     scores.to_json() if scores is not None else None, candidates)


def plan_from_record(method: str, num_layers: int, removed_layers: list[int], config: PruneConfig,
                     widths: dict[str, Any] | None = None, tokens: dict[str, Any] | None = None,
                     search: dict[str, Any] | None = None) -> PrunePlan:
    """The plan a saved record states (a sweep's winner: its layers and ``config``'s token pruning; a width
    method's: its ``widths`` action as the report lists it, its own token-pruning record ``tokens`` and what its
    ``search`` reached)."""
    if widths is None:
        return PrunePlan(method, num_layers, ordered_actions(list(removed_layers), config), None,
                         removable_candidates(config.layers, num_layers))
    from lmms_topo_plugin.tokens import from_record

    pruning = PruneVisualTokens(from_record(tokens), tokens.get("seed", config.run.seed)) if tokens else None
    return PrunePlan(method, num_layers, width_actions(widths["kept"], widths["layout"], pruning), search, [])


def width_actions(kept: dict[str, Any], layout: str, tokens: PruneVisualTokens | None) -> tuple[Action, ...]:
    """A width plan's actions: slice the widths, then (when there is one) its visual-token pruning."""
    widths = SliceWidths({name: tuple(units) for name, units in kept.items()}, layout)
    return (widths, tokens) if tokens is not None else (widths,)


def plan_widths(config: PruneConfig, result: CompResult, num_layers: int) -> PrunePlan:
    """The plan of a width method's search ``result``: its widths, then its visual-token pruning (CoMP's token
    importance from its token layer on)."""
    tokens = None
    if result.token_keep is not None:
        tokens = PruneVisualTokens(TokenConfig(token_method="cit", token_keep=result.token_keep,
                                               token_layer=result.token_layer), config.run.seed)
    summary = {key: value for key, value in result.as_dict().items() if key != "kept"}
    return PrunePlan(config.method, num_layers, width_actions(result.kept, result.layout, tokens),
                     summary | {"rate": result.rate}, [])
