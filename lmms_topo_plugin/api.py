"""Python entry point: load a checkpoint and prune it as ``model_args`` describe."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from loguru import logger

from lmms_topo_plugin.cache import DiskCache
from lmms_topo_plugin.config.prune import PruneConfig
from lmms_topo_plugin.records import pruning_record_of, set_pruning_record, token_record_of
from lmms_topo_plugin.tokens.configs import HalfVConfig
from lmms_topo_plugin.distributed import compute_on_rank0, is_distributed
from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.models.loading import LoadedModel, load_model
from lmms_topo_plugin.plan import PrunePlan
from lmms_topo_plugin.pipeline import (
    PruneReport, apply_plan, build_report, calibration_prompts, compute_plan, compute_scores, count_parameters,
    log_plan, model_fingerprint, prepare,
)
from lmms_topo_plugin.recovery.data import RecoveryData, recovery_data
from lmms_topo_plugin.recovery.run import Teacher, pruned_identity, recover, teach
from lmms_topo_plugin.scorers import LayerScores


def load_pruned(config: PruneConfig | dict[str, Any]) -> tuple[LoadedModel, PruneReport]:
    """Validate, load, calibrate/score (rank 0 only, cached), remove layers; return the model and a report.

    ``config`` is a :class:`PruneConfig` or a ``model_args``-style dict. Bad input raises
    :class:`~lmms_topo_plugin.errors.ModelArgsError` before any weights load.
    """
    if not isinstance(config, PruneConfig):
        config = PruneConfig.from_model_args(config)
    import torch.distributed as dist

    is_rank0 = not is_distributed() or dist.get_rank() == 0
    prepared = prepare(config, load_calibration=is_rank0)
    data = compute_on_rank0(lambda: draw_recovery_data(config)) if config.recovery.enabled else None
    timings: dict[str, float] = {}
    start = time.perf_counter()
    loaded = load_model(config.load, prepared.pretrained, prepared.hf_config)
    timings["load"] = time.perf_counter() - start
    params_before = count_parameters(loaded.model)
    cache = DiskCache(config.run.cache_dir, enabled=not config.run.recompute)
    plan, cache_info = compute_on_rank0(lambda: compute_plan(prepared, loaded, cache, timings))
    model_id = model_fingerprint(prepared.pretrained, prepared.hf_config, config.load.revision)
    teacher = None
    if data is not None:  # the teacher is the dense model: its targets before the plan changes it
        start = time.perf_counter()
        teacher = teach(config, data, loaded, model_id, cache)
        timings["teacher"] = time.perf_counter() - start
    start = time.perf_counter()
    kept = apply_plan(plan, prepared, loaded)
    timings["surgery"] = time.perf_counter() - start
    log_plan(plan)
    if config.needs_token_detection:
        start = time.perf_counter()
        tokens = detect_token_stages(config, prepared, loaded, plan.removed_layers, cache)
        prepared = dataclasses.replace(prepared, config=dataclasses.replace(config, tokens=tokens))
        timings["token_stages"] = time.perf_counter() - start
    recovery = None
    if teacher is not None:
        start = time.perf_counter()
        recovery = recover_pruned(teacher, loaded, config, model_id, plan, cache)
        timings["recover"] = time.perf_counter() - start
    return loaded, build_report(prepared, loaded, plan, kept, params_before, cache_info, timings, recovery)


def draw_recovery_data(config: PruneConfig) -> RecoveryData:
    """The recovery prompts of ``config`` (before the weights load: a bad ``calib_task`` or too few documents is
    one line)."""
    calibration = config.calibration
    return recovery_data(config.recovery.recover_samples, config.run.seed, calibration.calib_task,
                         calibration.include_path)


def recover_pruned(teacher: Teacher, loaded: LoadedModel, config: PruneConfig, model_id: str, plan: PrunePlan,
                   cache: DiskCache) -> dict[str, Any]:
    """Recovery of the pruned ``loaded`` (in place) with the token pruner its record states attached; the record is
    added to the model's pruning record (``recovery``: the weights changed) and returned."""
    from lmms_topo_plugin.tokens import token_pruner

    tokens = token_record_of(loaded.model.config)
    pruned_id = pruned_identity(model_id, [action.as_dict() for action in plan.actions], tokens)
    record = recover(teacher, loaded, config, pruned_id, cache, token_pruner(tokens), kept_layers=plan.kept_layers)
    set_pruning_record(loaded.model.config, pruning_record_of(loaded.model.config) | {"recovery": record.summary()})
    return record.as_dict()


def detect_token_stages(config: PruneConfig, prepared, loaded: LoadedModel, removed: list[int],
                        cache: DiskCache) -> HalfVConfig:
    """HalfV's IVR and SSR layers and SSR mode on the pruned model, where ``config`` leaves them open: the resolved
    token config, also written, with what was detected, into the model's pruning record. A step 2 that would start
    before step 1 (top5: not after it) is left out, with a warning and the reason in the record."""
    from lmms_topo_plugin.tokens.auto_layer import LIFECYCLE_SAMPLES, detected_stages

    asked = config.tokens
    prompts = calibration_prompts(config, config.calibration.calib_limit or LIFECYCLE_SAMPLES)
    model_id = model_fingerprint(prepared.pretrained, prepared.hf_config, config.load.revision)
    found = detected_stages(loaded, prompts, model_id, removed, cache, config.calibration.calib_batch_size,
                            ssr_kl=asked.token_ssr_mode == "auto")
    layer = found["ivr_layer"] if asked.token_layer is None else asked.token_layer
    mode = found["ssr_mode"] if asked.token_ssr_mode == "auto" else asked.token_ssr_mode
    ssr_layer = found["ssr_layer"] if asked.token_ssr_layer is None and asked.token_ssr_mode != "off" else (
        asked.token_ssr_layer)
    first = layer + (mode == "top5")
    if mode != "off" and ssr_layer < first:
        found["step_2_left_out"] = (f"SSR layer {ssr_layer} is before layer {first}, where {mode} could start "
                                    f"(step 1 at layer {layer})")
        logger.warning(f"topo_pruned: token_method=halfv: step 2 left out: {found['step_2_left_out']}")
        mode, ssr_layer = "off", None
    tokens = dataclasses.replace(asked, token_layer=layer, token_ssr_mode=mode, token_ssr_layer=ssr_layer)
    set_pruning_record(loaded.model.config, pruning_record_of(loaded.model.config)
                       | {"token_pruning": tokens.to_record(config.run.seed) | {"detected": found}})
    return tokens


def score_layers(config: PruneConfig | dict[str, Any]) -> tuple[LayerScores, dict[str, Any]]:
    """Calibrate and score every decoder layer with ``config.method`` without pruning (cached like a run).

    Returns the scores and a summary (model, method, parameters, calibration, cache, timings).
    """
    if not isinstance(config, PruneConfig):
        config = PruneConfig.from_model_args(config)
    prepared = prepare(config)
    if prepared.scorer is None:
        raise ModelArgsError("model_args: scoring needs a method other than none")
    timings: dict[str, float] = {}
    loaded = load_model(config.load, prepared.pretrained, prepared.hf_config)
    scores, cache_info = compute_scores(prepared, loaded, DiskCache(config.run.cache_dir, enabled=not config.run.recompute), timings)
    summary = {"pretrained": prepared.pretrained, "method": config.method, "params": config.method_params,
               "num_layers": prepared.num_layers, "calibration_samples": len(prepared.calibration_prompts),
               "cache": cache_info, "timings_s": timings}
    return scores, summary
