"""The pruning pipeline: validate, calibrate (cached), score (cached), select, apply surgery, report.

``prepare`` does every check that needs no weights; ``prune_loaded`` does the rest on a loaded model.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from loguru import logger
from transformers import PretrainedConfig

from lmms_topo_plugin.cache import DiskCache, cache_key
from lmms_topo_plugin.calibration.sources import (
    DOMAINS, default_calibration_prompts, domain_calibration_prompts, prompts_fingerprint, task_calibration_prompts,
)
from lmms_topo_plugin.calibration.collect import COLLECTORS_VERSION, calibrate, move_inputs
from lmms_topo_plugin.config.prune import PruneConfig
from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.failures import out_of_memory_as_failure
from lmms_topo_plugin.models.loading import LoadedModel, load_config, resolve_pretrained
from lmms_topo_plugin.families import adapter_class_for
from lmms_topo_plugin.models.prompting import Prompt
from lmms_topo_plugin.scorers import LayerScorer, LayerScores
from lmms_topo_plugin.records import REPORT_SCHEMA, PRUNING, pruning_record_of, set_pruning_record, token_record_of
from lmms_topo_plugin.models.prompting import encode
from lmms_topo_plugin.plan import (
    PrunePlan, RemoveLayers, SliceWidths, layer_budget, method_scorer, plan_layers, plan_widths,
)
from lmms_topo_plugin.scorers.comp.search import CompResult, CompSearch
from lmms_topo_plugin.surgery.layers import remove_layers
from lmms_topo_plugin.surgery.widths import slice_widths, widths_record



@dataclass
class PruneReport:
    """Machine-readable record of a run, written as JSON next to the evaluation results."""

    schema: str
    pretrained: str
    model_type: str
    config: dict[str, Any]
    plan: dict[str, Any]
    kept_layers: list[int]
    parameters_before: int
    parameters_after: int
    calibration: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    recovery: dict[str, Any] | None = None  # recover=kd: the RecoveryRecord (lmms_topo_plugin.recovery.run)


@dataclass
class Prepared:
    """Everything checked and resolved before the weights load."""

    config: PruneConfig
    pretrained: str
    hf_config: PretrainedConfig
    num_layers: int
    n_remove: int  # the layer budget on this model (plan.layer_budget)
    scorer: LayerScorer | None
    calibration_prompts: list[Prompt]
    calibration_domains: list[str] = field(default_factory=list)  # each prompt's domain, for domain-aware methods


def prepare(config: PruneConfig, *, load_calibration: bool = True, check_widths: bool = True) -> Prepared:
    """All validation that needs no weights: model directory, architecture, budget, calibration data; with
    ``check_widths``, whether a width method can reach its budget (:func:`check_width_budget`)."""
    pretrained = resolve_pretrained(config.load.pretrained)
    hf_config = load_config(pretrained, config.load.revision)
    adapter_class_for(hf_config)
    num_layers = hf_config.get_text_config().num_hidden_layers
    scorer = method_scorer(config)
    n_remove = layer_budget(config.layers, num_layers, scorer)
    if scorer is not None and scorer.unit == "widths" and scorer.search_config().comp_token_layer >= num_layers:
        raise ModelArgsError(f"model_args: comp_token_layer={scorer.search_config().comp_token_layer} is out of "
                             f"range; the model has {num_layers} decoder layers")
    for key in ("token_layer", "token_ssr_layer"):
        layer = getattr(config.tokens, key, None)
        if layer is not None and layer >= num_layers - n_remove:
            raise ModelArgsError(f"model_args: {key}={layer} is out of range; the pruned model has "
                                 f"{num_layers - n_remove} decoder layers")
    prompts: list[Prompt] = []
    domains: list[str] = []
    if scorer is not None:
        limit = config.calibration.calib_limit or scorer.default_samples
        if scorer.needs and limit < scorer.min_samples:
            raise ModelArgsError(
                f"model_args: method={config.method} needs at least {scorer.min_samples} calibration samples, "
                f"calib_limit={limit}"
            )
        if scorer.needs and load_calibration and scorer.domains:
            prompts, domains = domain_calibration_prompts(limit, config.run.seed, scorer.calibration_tasks,
                                                          config.calibration.include_path)
        elif scorer.needs and load_calibration:
            prompts = calibration_prompts(config, limit)
            if "visual_mean" in scorer.needs and not all(prompt.images for prompt in prompts):
                raise ModelArgsError(
                    "model_args: topo_points=visual_mean needs an image in every calibration prompt; "
                    "the calibration data has text-only prompts (choose another calib_task or topo_points=last_token)"
                )
    prepared = Prepared(config, pretrained, hf_config, num_layers, n_remove, scorer, prompts, domains)
    if check_widths:
        check_width_budget(prepared, config)
    return prepared


def check_width_budget(prepared: Prepared, config: PruneConfig) -> None:
    """A width method's ``sparsity`` in ``config`` refused (one line) if its search cannot reach it on this model and
    these calibration prompts; counted without the weights. Nothing to check for other methods."""
    scorer = prepared.scorer
    if scorer is not None and scorer.unit == "widths" and prepared.calibration_prompts:
        scorer.check_reachable(prepared.pretrained, prepared.hf_config, prepared.calibration_prompts,
                               config.layers.sparsity, config.method, config.load.revision)


def calibration_prompts(config: PruneConfig, limit: int) -> list[Prompt]:
    calibration = config.calibration
    if calibration.calib_task:
        return task_calibration_prompts(calibration.calib_task, limit, config.run.seed, calibration.include_path)
    return default_calibration_prompts(limit, config.run.seed)


def model_fingerprint(pretrained: str, hf_config: PretrainedConfig, revision: str | None = None) -> str:
    """Identity of the checkpoint: a Hub id at its resolved commit, or a local directory's name and the content of
    its config and weight files (``name#hash``), so a copy, a move or a fresh clone of the same files is the same
    model (file times and the directory's location do not count)."""
    path = Path(pretrained)
    if not path.is_dir():
        return f"{pretrained}@{getattr(hf_config, '_commit_hash', None) or revision or 'main'}"
    digest = hashlib.sha256((path / "config.json").read_bytes())
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        stat = weights.stat()
        digest.update(f"{weights.name}:{file_sha256(str(weights), stat.st_size, stat.st_mtime_ns)}".encode())
    return f"{path.resolve().name}#{digest.hexdigest()[:16]}"


@functools.lru_cache(maxsize=256)
def file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file's bytes, read in 16 MiB chunks; remembered per process under its size and time, so a
    run that asks several times reads a large checkpoint once."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def compute_plan(prepared: Prepared, loaded: LoadedModel, cache: DiskCache, timings: dict[str, float]) -> tuple[PrunePlan, dict]:
    """Scores (from cache or a calibration pass) and the layers to remove; no model change yet."""
    config, scorer = prepared.config, prepared.scorer
    if scorer is not None and scorer.unit == "widths":
        result, cache_info = compute_widths(prepared, loaded, cache, timings)
        return plan_widths(config, result, prepared.num_layers), cache_info
    if scorer is None or prepared.n_remove == 0:
        return plan_layers(config, scorer, None, prepared.num_layers), {}
    scores, cache_info = compute_scores(prepared, loaded, cache, timings)
    return plan_layers(config, scorer, scores, prepared.num_layers), cache_info


def compute_scores(prepared: Prepared, loaded: LoadedModel, cache: DiskCache, timings: dict[str, float]) -> tuple[LayerScores, dict]:
    """The method's per-layer scores, from the cache or from calibration statistics (themselves cached)."""
    config, scorer = prepared.config, prepared.scorer
    model_id = model_fingerprint(prepared.pretrained, prepared.hf_config, config.load.revision)
    data_id = prompts_fingerprint(prepared.calibration_prompts) if scorer.needs else None
    stats_key = cache_key("stats", model_id, data_id, sorted(scorer.needs), str(loaded.model.dtype),
                          loaded.model.config._attn_implementation, config.calibration.calib_batch_size, COLLECTORS_VERSION)
    scores_key = cache_key("scores", stats_key, config.scorer_fingerprint(), scorer.version)
    cache_info = {"dir": str(cache.root), "scores_key": scores_key, "scores_hit": False, "stats_hit": False}
    cached_scores = cache.get_json("scores", scores_key)
    if cached_scores is not None:
        scores = LayerScores.from_json(cached_scores).check_finite(config.method)
        cache_info["scores_hit"] = True
    else:
        stats: dict = {}
        if scorer.needs:
            stats = cache.get_tensors("stats", stats_key) or {}
            cache_info["stats_hit"] = bool(stats)
            if not stats:
                start = time.perf_counter()
                with out_of_memory_as_failure(f"the calibration pass (calib_batch_size={config.calibration.calib_batch_size})",
                                              "lower calib_batch_size="):
                    stats = calibrate(
                        loaded.adapter, loaded.processor, prepared.calibration_prompts, scorer.needs,
                        batch_size=config.calibration.calib_batch_size,
                    )
                timings["calibrate"] = time.perf_counter() - start
                cache.put_tensors("stats", stats_key, stats)
        if prepared.calibration_domains:  # which samples belong to which domain (not a statistic: not cached)
            stats = {**stats, "sample_domain": torch.tensor([DOMAINS.index(d) for d in prepared.calibration_domains])}
        start = time.perf_counter()
        scores = scorer.score(stats, prepared.num_layers).check_finite(config.method)
        timings["score"] = time.perf_counter() - start
        cache.put_json("scores", scores_key, scores.to_json())
    return scores, cache_info


def compute_widths(prepared: Prepared, loaded: LoadedModel, cache: DiskCache,
                   timings: dict[str, float]) -> tuple[CompResult, dict]:
    """A width method's search result, from the cache or a search on the loaded model (the last ``comp_val``
    calibration prompts held out to score its stages, the others to score units)."""
    config = prepared.config
    params, prompts = prepared.scorer.search_config(), prepared.calibration_prompts
    model = loaded.model
    model_id = model_fingerprint(prepared.pretrained, prepared.hf_config, config.load.revision)
    key = cache_key("widths", model_id, prompts_fingerprint(prompts), config.scorer_fingerprint(),
                    config.layers.sparsity, str(model.dtype), model.config._attn_implementation, prepared.scorer.version)
    cache_info = {"dir": str(cache.root), "widths_key": key, "widths_hit": False}
    cached = cache.get_json("widths", key)
    if cached is not None:
        cache_info["widths_hit"] = True
        return CompResult.from_dict(cached), cache_info
    batches = [move_inputs(encode(loaded.processor, loaded.adapter, [prompt]), model.device, model.dtype)
               for prompt in prompts]
    start = time.perf_counter()
    with out_of_memory_as_failure("the comp search (one calibration prompt at a time)", "use fewer calib_limit="):
        search = CompSearch(loaded, params, config.layers.sparsity, batches[:-params.comp_val],
                            batches[-params.comp_val:], config.run.seed, prepared.scorer.importance, config.method)
        result = search.run()
    timings["search"] = time.perf_counter() - start
    cache.put_json("widths", key, result.as_dict())
    return result, cache_info


def pruning_record(plan: PrunePlan, prepared: Prepared, previous: dict | None,
                   details: dict | None = None) -> dict[str, Any]:
    """What this run removed, from which model, by which method (``details``: e.g. its parameters and
    calibration); earlier prunings of that model in ``history``."""
    earlier = []
    if previous:
        earlier = [*previous.get("history", []), {k: v for k, v in previous.items() if k != "history"}]
    return PRUNING.stamp({
        "method": plan.method,
        "base_model": prepared.pretrained,
        "base_model_fingerprint": model_fingerprint(prepared.pretrained, prepared.hf_config, prepared.config.load.revision),
        "original_num_hidden_layers": plan.num_layers,
        "removed_layers": plan.removed_layers,
        **(details or {}),
        "history": earlier,
    })


def apply_plan(plan: PrunePlan, prepared: Prepared, loaded: LoadedModel, details: dict | None = None) -> list[int]:
    """Apply the plan's actions in order and record what was done in the model config (saved with the model): the
    layers removed now, and the visual-token pruning planned or carried by the checkpoint, which the plugin
    re-applies on load. Returns the kept decoder layers (indices before this plan)."""
    kept = list(range(loaded.adapter.num_layers))
    widths = None
    for action in plan.actions:
        if isinstance(action, RemoveLayers):
            kept = remove_layers(loaded.adapter, action.layers)
        elif isinstance(action, SliceWidths):
            slice_widths(loaded.adapter, action.kept, layout=action.layout)
            widths = widths_record(action.kept, action.layout) | {"search": search_summary(plan.scores)}
    previous = pruning_record_of(loaded.model.config)
    tokens = plan.token_pruning or token_record_of(loaded.model.config)
    if plan.actions:
        record = pruning_record(plan, prepared, previous, details) | ({"widths": widths} if widths else {})
        set_pruning_record(loaded.model.config, record | ({"token_pruning": tokens} if tokens else {}))
    return kept


def search_summary(scores: dict[str, Any]) -> dict[str, Any]:
    """What a width method's search reached, for the pruning record and the card (no stage history)."""
    return {key: scores[key] for key in ("flops_dense", "flops_pruned", "rate", "validation_kl", "token_keep")}


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def build_report(prepared: Prepared, loaded: LoadedModel, plan: PrunePlan, kept: list[int], params_before: int,
                 cache_info: dict, timings: dict[str, float], recovery: dict[str, Any] | None = None) -> PruneReport:
    config = prepared.config
    calibration = {}
    if prepared.calibration_prompts and plan.scores is not None:  # prompts are loaded but unused at budget 0
        calibration = {
            "source": config.calibration.source,
            "samples": len(prepared.calibration_prompts),
            "fingerprint": prompts_fingerprint(prepared.calibration_prompts),
        }
    return PruneReport(
        schema=REPORT_SCHEMA,
        pretrained=prepared.pretrained,
        model_type=prepared.hf_config.model_type,
        config={k: v for k, v in config.as_dict().items()},
        plan=plan.as_dict(),
        kept_layers=kept,
        parameters_before=params_before,
        parameters_after=count_parameters(loaded.model),
        calibration=calibration,
        cache=cache_info,
        timings_s={k: round(v, 4) for k, v in timings.items()},
        recovery=recovery,
    )


def log_plan(plan: PrunePlan) -> None:
    if plan.widths is not None:
        summary, tokens = plan.scores, plan.token_pruning
        kept_tokens = f", {tokens['keep']:.2f} of the visual tokens kept" if tokens else ""
        logger.info(f"topo_pruned: method={plan.method} removes {summary['rate']:.1%} of the prefill FLOPs "
                    f"({summary['flops_dense'] / 1e9:.4g} → {summary['flops_pruned'] / 1e9:.4g} GFLOPs per prompt; "
                    f"{plan.widths.layout} widths{kept_tokens}; validation KL {summary['validation_kl']:.4g})")
    elif plan.removed_layers:
        logger.info(
            f"topo_pruned: method={plan.method} removes {len(plan.removed_layers)}/{plan.num_layers} decoder layers: "
            f"{plan.removed_layers}"
        )
    else:
        logger.info(f"topo_pruned: dense model ({plan.num_layers} decoder layers), method={plan.method}")


def report_json(report: PruneReport) -> str:
    return json.dumps(asdict(report), indent=2)
