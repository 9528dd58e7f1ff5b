"""CoMP's search, training-free: masks on the loaded model advanced stage by stage until ``sparsity`` of the dense
prefill FLOPs is removed, then one plan (kept units per site, visual tokens kept).

A stage advances one mode: a parameter mode drops the ``comp_step`` fraction of its dense units with the lowest
CIP scores (re-scored on the masked model before each stage under ``mps``; scored once on the dense model under
``joint``); ``vision_tokens`` lowers the visual tokens kept from ``comp_token_layer`` on by ``comp_step``. No
site loses its last unit. The stage that reaches the target stops as soon as it does (units one at a time, the
keep fraction by bisection). Its cost, the increase in validation loss (mean KL of the next-token distribution
at the end of each held-out prompt to the dense model's) per fraction of dense FLOPs saved, feeds the schedule
(:mod:`.schedule`). Under ``uniform`` every site of a tower and kind keeps the same count (each drops its own
lowest units), and the sites the config cannot describe are left whole.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.scorers.comp.collect import query_head_mask, unit_scores
from lmms_topo_plugin.scorers.comp.config import CompConfig
from lmms_topo_plugin.scorers.comp.flops import FlopsModel, measure_load
from lmms_topo_plugin.scorers.comp.schedule import MultiModeScheduler
from lmms_topo_plugin.surgery.widths import uniform_units, width_masks, width_sites
from lmms_topo_plugin.tokens.methods import CollaborativeTokens

MODE_TOWERS = {"vision_params": "vision", "language_params": "text", "projector_params": "projector"}
MIN_TOKEN_KEEP = 0.02  # vision_tokens never keeps less than this fraction


@dataclass
class CompResult:
    """What the search chose: kept unit indices per site (every site, pruned or not) of its dense units, the
    visual tokens kept
    (None: not pruned), FLOPs per held-out prompt before and after, and one row per stage."""

    kept: dict[str, list[int]]
    dense_units: dict[str, int]
    layout: str
    token_layer: int
    token_keep: float | None
    flops_dense: float
    flops_pruned: float
    validation_kl: float  # mean KL(dense ‖ pruned) at the end of the held-out prompts
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """The fraction of dense prefill FLOPs removed."""
        return 1.0 - self.flops_pruned / self.flops_dense

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CompResult":
        return cls(**data)


class CompSearch:
    """One search on a loaded model: its sites, FLOPs model, dense reference and the masks it advances."""

    def __init__(self, loaded: Any, config: CompConfig, sparsity: float, calibration: Sequence[Mapping],
                 validation: Sequence[Mapping], seed: int, importance: str = "cip", method: str = "comp") -> None:
        self.config, self.seed, self.importance, self.method = config, seed, importance, method
        self.model = loaded.model
        self.adapter = loaded.adapter
        self.sites = search_sites(self.adapter, config.comp_widths)
        self.calibration, self.validation = calibration, validation
        visual = [self.adapter.image_token_mask(batch["input_ids"]) for batch in validation]
        self.flops = FlopsModel(self.sites, [measure_load(self.model, self.sites, batch, mask)
                                             for batch, mask in zip(validation, visual)], config.comp_token_layer)
        self.kept = {site.name: list(range(site.units)) for site in self.sites}
        self.token_keep: float | None = None
        self.modes = present_modes(config.modes, self.sites, visual)
        self.target = (1.0 - sparsity) * self.flops.dense
        check_reachable(sparsity, self.flops, self.sites, self.modes, method, config.comp_widths)
        self.reference = self.last_log_probs()

    # -- the model as the masks make it -------------------------------------------------------------------

    def current_flops(self, keep: float | None | str = "now") -> float:
        """FLOPs of the widths kept now, with ``keep`` of the visual tokens (default: the current fraction)."""
        return self.flops.flops({name: len(units) for name, units in self.kept.items()},
                                self.token_keep if keep == "now" else keep)

    def attached(self, stack: ExitStack) -> None:
        """Enter the current masks (and token pruning) on the model for the body of ``stack``."""
        stack.enter_context(width_masks(self.adapter, self.kept))
        if self.token_keep is not None:
            layer = self.config.comp_token_layer
            site = next((s for s in self.sites if s.name == f"text.{layer}.attn"), None)
            heads = None
            if site is not None and self.config.comp_collaborative:
                num_heads = self.adapter.layer_adapter(layer).num_heads
                heads = tuple(int(h) for h in query_head_mask(site, self.kept[site.name], num_heads).nonzero()[:, 0])
            pruner = CollaborativeTokens(layer=layer, keep=self.token_keep, heads=heads)
            stack.enter_context(pruner.attach(self.adapter))

    def last_log_probs(self) -> list[torch.Tensor]:
        """Log-probabilities of the next token at the end of every held-out prompt, on the current model."""
        rows = []
        with ExitStack() as stack, torch.inference_mode():
            self.attached(stack)
            for batch in self.validation:
                rows.append(self.model(**batch, use_cache=False).logits[0, -1].float().log_softmax(-1))
        return rows

    def loss(self) -> float:
        """Mean KL(dense ‖ current) of the next-token distribution at the end of the held-out prompts."""
        now = self.last_log_probs() if (self.token_keep is not None or self.any_pruned()) else self.reference
        return float(sum((ref.exp() * (ref - cur)).sum() for ref, cur in zip(self.reference, now)) / len(now))

    def any_pruned(self) -> bool:
        return any(len(self.kept[site.name]) < site.units for site in self.sites)

    def scores(self) -> dict[str, torch.Tensor]:
        """Every unit's score on the model as the masks make it (``random``: a seeded draw per site)."""
        if self.importance == "random":
            generator = torch.Generator().manual_seed(self.seed)
            return {site.name: torch.rand(site.units, generator=generator) for site in self.sites}
        with ExitStack() as stack:
            self.attached(stack)
            return unit_scores(self.model, self.sites, self.kept, self.calibration,
                               collaborative=self.config.comp_collaborative)

    # -- stages -------------------------------------------------------------------------------------------

    def advance(self, mode: str, scores: Mapping[str, torch.Tensor]) -> bool:
        """One stage of ``mode``; False when it can prune nothing more."""
        if mode == "vision_tokens":
            return self.advance_tokens()
        sites = [site for site in self.sites if site.tower == MODE_TOWERS[mode]]
        dense_units = sum(site.units for site in sites)
        budget = max(1, math.ceil(self.config.comp_step * dense_units))
        order = self.uniform_order(sites, scores) if self.config.comp_widths == "uniform" else \
            self.global_order(sites, scores)
        dropped = 0
        for group in order:
            if dropped >= budget or self.current_flops() <= self.target:
                break
            for name, unit in group:
                self.kept[name].remove(unit)
            dropped += len(group)
        return dropped > 0

    def blocks(self, site, ranked: list[int]) -> list[list[int]]:
        """``ranked`` units of ``site`` (lowest first) in the blocks they are dropped in: one unit each, or for
        MLP and projector channels under ``comp_multiple=N`` blocks that leave the site a multiple of N."""
        size = self.config.comp_multiple if site.kind == "channels" else 1
        cuts = [0, *range(len(ranked) % size or size, len(ranked) + 1, size)]
        return [ranked[start:end] for start, end in zip(cuts, cuts[1:])]

    def global_order(self, sites: Sequence, scores: Mapping[str, torch.Tensor]) -> list[list[tuple[str, int]]]:
        """Kept units of ``sites`` in blocks (:meth:`blocks`) from the lowest mean score up, never a site's last
        block."""
        ranked = []
        for site in sites:
            units = sorted(self.kept[site.name], key=lambda unit, n=site.name: float(scores[n][unit]))
            for block in self.blocks(site, units)[:-1]:
                mean = sum(float(scores[site.name][unit]) for unit in block) / len(block)
                ranked.append((mean, site.name, block))
        return [[(name, unit) for unit in block] for _, name, block in sorted(ranked)]

    def uniform_order(self, sites: Sequence, scores: Mapping[str, torch.Tensor]) -> list[list[tuple[str, int]]]:
        """Rounds that drop one block (:meth:`blocks`) from every site of a kind (each its own lowest units), heads
        and channels in turn by the fraction of their width already gone, so the widths stay equal within a
        kind."""
        kinds: dict[str, list] = {}
        for site in sites:
            kinds.setdefault(site.kind, []).append(site)
        rounds = []
        for members in kinds.values():
            ranked = {site.name: self.blocks(site, sorted(self.kept[site.name],
                                                          key=lambda u, n=site.name: float(scores[n][u])))
                      for site in members}
            dropped = 0
            for step in range(len(ranked[members[0].name]) - 1):
                dropped += len(ranked[members[0].name][step])
                rounds.append((dropped / members[0].units,
                               [(site.name, unit) for site in members for unit in ranked[site.name][step]]))
        return [group for _, group in sorted(rounds, key=lambda item: item[0])]

    def advance_tokens(self) -> bool:
        """Lower the visual tokens kept by a step (further while no held-out prompt loses a token), stopping at
        the target; False when even the fewest tokens save nothing more."""
        now = self.current_flops()
        keep = 1.0 if self.token_keep is None else self.token_keep
        lower = max(MIN_TOKEN_KEEP, keep - self.config.comp_step)
        while lower > MIN_TOKEN_KEEP and self.current_flops(keep=lower) >= now:
            lower = max(MIN_TOKEN_KEEP, lower - self.config.comp_step)
        if self.current_flops(keep=lower) >= now:
            return False
        if self.current_flops(keep=lower) < self.target:  # the target falls inside this step: bisect to it
            high = keep
            for _ in range(30):
                middle = (lower + high) / 2
                lower, high = (lower, middle) if self.current_flops(keep=middle) <= self.target else (middle, high)
            lower = high if self.current_flops(keep=high) <= self.target else lower
        self.token_keep = lower
        return True

    def run(self) -> CompResult:
        """Stages until the target is met; the plan and every stage's row."""
        config = self.config
        scheduler = MultiModeScheduler(lambda0=config.comp_lambda0, i_max=config.comp_imax, rho=config.comp_explore,
                                       tau=config.comp_tau, seed=self.seed, explore=config.comp_explore > 0)
        available = list(self.modes)
        history: list[dict[str, Any]] = []
        dense_scores = self.scores() if config.comp_schedule == "joint" else None
        loss, flops = 0.0, self.flops.dense
        turn = 0
        goal = self.flops.dense - self.target
        with tqdm(total=100, desc=f"topo_pruned: comp to {1 - self.target / self.flops.dense:.0%} fewer FLOPs",
                  unit="%", leave=False) as bar:
            while self.current_flops() > self.target and available:
                if config.comp_schedule == "joint":
                    mode, why = available[turn % len(available)], "turn"
                    turn += 1
                else:
                    mode, why = scheduler.next_mode(available)
                scores = dense_scores if dense_scores is not None else (
                    self.scores() if mode != "vision_tokens" else {})
                if not self.advance(mode, scores):
                    available.remove(mode)
                    continue
                new_flops = self.current_flops()
                if new_flops >= flops:  # units that cost nothing on the held-out prompts: no cost to learn
                    continue
                new_loss = self.loss() if config.comp_schedule == "mps" else float("nan")
                cost = (new_loss - loss) / ((flops - new_flops) / self.flops.dense)
                if config.comp_schedule == "mps":
                    scheduler.report(mode, cost)
                history.append({"stage": len(history), "mode": mode, "why": why, "cost": cost, "loss": new_loss,
                                 "rate": 1 - new_flops / self.flops.dense, "token_keep": self.token_keep})
                bar.n = min(100, round(100 * (self.flops.dense - new_flops) / goal))
                bar.set_postfix(mode=mode, kl=f"{new_loss:.3g}")
                loss, flops = new_loss, new_flops
        final_loss = self.loss()
        return CompResult({name: list(units) for name, units in self.kept.items()}, dict(self.flops.dense_units),
                          config.comp_widths, config.comp_token_layer, self.token_keep, self.flops.dense, self.current_flops(), final_loss, history)


def search_sites(adapter, layout: str) -> list:
    """The width sites a search of ``layout`` prunes: all of them, or under ``uniform`` those the config can state."""
    describable = uniform_units(adapter) if layout == "uniform" else None
    return [site for site in width_sites(adapter) if describable is None or (site.tower, site.kind) in describable]


def present_modes(modes: Sequence[str], sites: Sequence, visual: Sequence[torch.Tensor]) -> list[str]:
    """The ``modes`` this model and these prompts have something to prune in (sites of the tower; visual tokens)."""
    def exists(mode: str) -> bool:
        if mode == "vision_tokens":
            return any(bool(mask.any()) for mask in visual)
        return any(site.tower == MODE_TOWERS[mode] for site in sites)
    return [mode for mode in modes if exists(mode)]


def check_reachable(sparsity: float, flops: FlopsModel, sites: Sequence, modes: Sequence[str], method: str,
                    layout: str) -> None:
    """Refuse a target the modes cannot reach (every site of their towers at one unit, the fewest visual tokens)."""
    floor_units = {site.name: 1 for site in sites if mode_of(site) in modes}
    keep = MIN_TOKEN_KEEP if "vision_tokens" in modes else None
    reachable = 1.0 - flops.flops(floor_units, keep) / flops.dense
    if sparsity > reachable:
        raise ModelArgsError(f"model_args: sparsity={sparsity:g} is not reachable by method={method} on this model "
                             f"with comp_modes={':'.join(modes)} and comp_widths={layout}: at most "
                             f"{math.floor(reachable * 1000) / 1000:g} of the prefill FLOPs can go")


def mode_of(site) -> str:
    """The parameter mode that prunes ``site``."""
    return next(mode for mode, tower in MODE_TOWERS.items() if tower == site.tower)
