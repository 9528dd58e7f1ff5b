"""Recovery as two calls around pruning, for a single run (``load_pruned``), the sweep and export alike:

    data = recovery_data(samples, seed, calib_task)         # the prompts (before the weights load)
    teacher = teach(config, data, loaded, model_id, cache)  # dense model: greedy answers, targets (cached)
    ...apply the plan...
    record = recover(teacher, loaded, config, pruned_id, cache, token_pruner)   # trains in place (or loads, cached)

Both are pure in their inputs: the same dense model, prompts, pruned model (``pruned_id``, :func:`pruned_identity`),
recovery parameters and seed give the same weights, and a second call with them reads the weights from the cache
instead of training. The cache entry (kind ``recovered``) is written once, at the end, atomically: its tensors first,
then its JSON record, and an entry counts only when both are there, so an interrupted run leaves nothing a later
run would read.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from loguru import logger

from lmms_topo_plugin.cache import DiskCache, cache_key
from lmms_topo_plugin.config.prune import PruneConfig
from lmms_topo_plugin.distributed import compute_on_rank0, is_distributed, rank
from lmms_topo_plugin.recovery.data import RecoveryData
from lmms_topo_plugin.recovery.teacher import TeacherTargets, cached_targets, teacher_key
from lmms_topo_plugin.recovery.train import load_trained, train, world_size

RECOVERED_VERSION = 1


@dataclass(frozen=True)
class Teacher:
    """What :func:`teach` computed on the dense model: the prompts and the teacher's targets on them."""

    data: RecoveryData
    targets: TeacherTargets
    info: dict[str, Any]


@dataclass(frozen=True)
class RecoveryRecord:
    """What recovery did, for the report, the pruning record and the card."""

    method: str
    data: dict[str, Any]  # source, samples, heldout, fingerprint
    teacher: dict[str, Any]  # max_new_tokens, topk, answer_tokens, cache key and hit
    params: str  # lora or full
    lora_rank: int | None
    steps: int
    lr: float
    batch_size: int
    seed: int
    world_size: int
    token_pruner_attached: bool
    trained_parameters: int
    kl_before: float  # held-out KL per answer token against the dense model, before and after
    kl_after: float
    train_seconds: float  # of the training that made the weights (also on a cache hit)
    loss_curve: list[float] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)  # key, hit
    seconds: float = 0.0  # this run's recovery, teacher included
    weights_changed: bool = True
    hidden_weight: float = 0.0  # recover_hidden; with it, the held-out hidden-state term before and after
    hidden_before: float | None = None
    hidden_after: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> dict[str, Any]:
        """The record without the loss curve and this run's details (cache entries, time): the pruning record's
        ``recovery``, saved with the model."""
        teacher = {key: value for key, value in self.teacher.items() if key not in ("key", "hit")}
        return {key: value for key, value in self.as_dict().items()
                if key not in ("loss_curve", "cache", "seconds")} | {"teacher": teacher}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> "RecoveryRecord":
        return cls(**record)


def pruned_identity(model_id: str, plan_actions: list[dict[str, Any]], token_record: dict[str, Any] | None) -> str:
    """The pruned model's identity for cache keys: the dense model's fingerprint, the plan's layer and width actions
    and the visual-token pruning it runs with."""
    actions = [action for action in plan_actions if action.get("kind") != "prune_visual_tokens"]
    return cache_key("pruned", model_id, actions, token_record)


def teach(config: PruneConfig, data: RecoveryData, loaded: Any, model_id: str, cache: DiskCache) -> Teacher:
    """The teacher's targets on the recovery prompts ``data`` (:func:`~lmms_topo_plugin.recovery.data.recovery_data`),
    from ``loaded`` before it is pruned. Rank 0 computes them (or reads the cache); every rank gets the result."""
    recovery = config.recovery

    def compute() -> Teacher:
        start = time.perf_counter()
        key = teacher_key(model_id, data.fingerprint, recovery, loaded.model)
        targets, info = cached_targets(loaded, data.prompts, recovery, key, cache)
        info |= {"max_new_tokens": recovery.recover_max_new_tokens, "topk": recovery.recover_topk,
                 "seconds": round(time.perf_counter() - start, 4)}
        return Teacher(data, targets, info)

    return compute_on_rank0(compute)


def recovered_key(teacher: Teacher, config: PruneConfig, pruned_id: str, model: Any) -> str:
    return cache_key("recovered", pruned_id, teacher.data.fingerprint, teacher.info["key"], config.recovery.fingerprint(),
                     config.run.seed, str(model.dtype), model.config._attn_implementation, RECOVERED_VERSION)


def recover(teacher: Teacher, loaded: Any, config: PruneConfig, pruned_id: str, cache: DiskCache,
            token_pruner: Any = None, progress: bool = True, kept_layers: list[int] | None = None) -> RecoveryRecord:
    """Train the pruned ``loaded.model`` in place towards ``teacher`` (or load the weights an earlier run with the
    same inputs trained) and return the record. Every rank trains its share and ends with the same weights; on a
    cache hit rank 0 reads the entry and sends it to the others. ``kept_layers``: the teacher's layer each of the
    model's layers was (the plan's :attr:`~lmms_topo_plugin.plan.PrunePlan.kept_layers`), for ``recover_hidden``."""
    start = time.perf_counter()
    recovery, seed = config.recovery, config.run.seed
    key = recovered_key(teacher, config, pruned_id, loaded.model)
    found = _stored(cache, key) if rank() == 0 else None
    stored = compute_on_rank0(lambda: (found[0], sorted(found[1])) if found is not None else None)
    if stored is not None:
        record_json, names = stored
        tensors = _broadcast_tensors(found[1] if found is not None else None, names, loaded.model.device)
        load_trained(loaded, tensors, recovery, seed)
        record = RecoveryRecord.from_dict(record_json)
        logger.info(f"topo_pruned: recover=kd: weights from the cache ({key}); held-out KL {record.kl_before:.4g} → "
                    f"{record.kl_after:.4g}")
        return _with_run(record, {"key": key, "hit": True}, teacher, time.perf_counter() - start)
    data = teacher.data
    train_rows = range(len(data.train))
    heldout_rows = range(len(data.train), len(data.prompts))
    result, trained = train(loaded, data.prompts, train_rows, heldout_rows, teacher.targets, recovery, seed,
                            token_pruner, progress, kept_layers)
    record = RecoveryRecord(
        method=recovery.recover, data=data.describe(), teacher={}, params=recovery.recover_params,
        lora_rank=recovery.recover_lora_rank if recovery.recover_params == "lora" else None,
        steps=recovery.recover_steps, lr=recovery.recover_lr, batch_size=recovery.recover_batch_size, seed=seed,
        world_size=world_size(), token_pruner_attached=token_pruner is not None,
        trained_parameters=sum(tensor.numel() for tensor in trained.values()),
        kl_before=result.kl_before, kl_after=result.kl_after, train_seconds=round(result.seconds, 4),
        loss_curve=[round(loss, 6) for loss in result.losses], hidden_weight=recovery.recover_hidden,
        hidden_before=result.hidden_before, hidden_after=result.hidden_after)
    if rank() == 0:
        cache.put_tensors("recovered", key, trained)
        cache.put_json("recovered", key, record.as_dict())
    logger.info(f"topo_pruned: recover=kd: {recovery.recover_steps} steps ({recovery.recover_params}) in "
                f"{result.seconds:.1f}s; held-out KL {result.kl_before:.4g} → {result.kl_after:.4g}"
                + (f", hidden-state term {result.hidden_before:.4g} → {result.hidden_after:.4g}"
                   if result.hidden_before is not None else ""))
    return _with_run(record, {"key": key, "hit": False}, teacher, time.perf_counter() - start)


def _with_run(record: RecoveryRecord, cache_info: dict, teacher: Teacher, seconds: float) -> RecoveryRecord:
    teacher_info = {key: value for key, value in teacher.info.items() if key != "seconds"}
    return RecoveryRecord.from_dict(record.as_dict() | {"cache": cache_info, "teacher": teacher_info,
                                                        "seconds": round(seconds + teacher.info["seconds"], 4)})


def _stored(cache: DiskCache, key: str) -> tuple[dict, dict[str, torch.Tensor]] | None:
    """The entry's record and tensors, when both of its files are there and readable."""
    record = cache.get_json("recovered", key)
    tensors = cache.get_tensors("recovered", key) if record is not None else None
    return None if tensors is None else (record, tensors)


def _broadcast_tensors(tensors: dict[str, torch.Tensor] | None, names: list[str],
                       device: Any) -> dict[str, torch.Tensor]:
    """Rank 0's ``tensors`` on every rank, sent through ``device`` (the model's: a CUDA one under nccl); one
    process: as they are."""
    if not is_distributed():
        return tensors
    import torch.distributed as dist

    meta = [[(name, tuple(tensors[name].shape), tensors[name].dtype) for name in names] if rank() == 0 else None]
    dist.broadcast_object_list(meta, src=0)
    out = {}
    for name, shape, dtype in meta[0]:
        tensor = tensors[name].to(device).contiguous() if rank() == 0 else torch.empty(shape, dtype=dtype, device=device)
        dist.broadcast(tensor, src=0)
        out[name] = tensor.cpu()
    return out
