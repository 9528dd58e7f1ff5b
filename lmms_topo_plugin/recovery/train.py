"""Train the pruned model towards the teacher's targets: LoRA adapters (PEFT) on every linear layer of the decoder,
merged into the weights and unloaded afterwards, or every decoder weight (``recover_params=full``).

AdamW at a constant learning rate, no weight decay, gradients clipped to norm 1. Deterministic: the LoRA
initialisation and the batch order are seeded, adapters have no dropout and the model stays in eval mode.
Under ``torchrun``/``accelerate launch`` every rank holds a copy of the model and takes its share of each global
batch (rows ``rank, rank + world, ...``); each rank's loss is its rows' KL summed over answer tokens and divided by
the tokens of the whole batch, and the gradients are summed over the ranks (``all_reduce``), so the update is the
one a single process makes on the whole batch and every rank ends with the same weights. A visual-token pruner
attached to the model stays attached while it trains: the model learns the condition it is deployed in.

With ``recover_hidden`` the objective per answer token is the KL plus that weight times the hidden-state term at
matched depths (:func:`matched_depths`): the stream entering each kept layer is pulled towards the dense model's
entering the same layer, so the layers before a removed block learn to stand in for it.
"""

from __future__ import annotations

import random
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from lmms_topo_plugin.config.recovery import RecoveryConfig
from lmms_topo_plugin.distributed import is_distributed, rank
from lmms_topo_plugin.models.prompting import Prompt
from lmms_topo_plugin.recovery.loss import hidden_token_losses, kd_token_losses
from lmms_topo_plugin.recovery.sequences import answer_batch, answer_outputs
from lmms_topo_plugin.recovery.teacher import TeacherTargets

CLIP_NORM = 1.0


@dataclass(frozen=True)
class TrainResult:
    """The training loss (the objective per answer token of each step's batch: the KL, plus the weighted
    hidden-state term with ``recover_hidden``), the held-out KL and hidden-state term (None without) before and
    after."""

    losses: list[float]
    kl_before: float
    kl_after: float
    seconds: float
    hidden_before: float | None = None
    hidden_after: float | None = None


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if is_distributed() else 1


def decoder_linears(loaded: Any) -> list[str]:
    """Names (in the model) of every ``nn.Linear`` inside the decoder's layers, as the family adapter finds them:
    LoRA's targets, whatever each family calls its projections."""
    inside = {id(module) for layer in loaded.adapter.layers for module in layer.modules()
              if isinstance(module, nn.Linear)}
    return [name for name, module in loaded.model.named_modules() if id(module) in inside]


def decoder_parameters(loaded: Any) -> list[str]:
    """Names (in the model) of every parameter of the decoder's layers and its final norm (``full``'s weights)."""
    inside = {id(parameter) for module in (*loaded.adapter.layers, loaded.adapter.final_norm)
              for parameter in module.parameters()}
    return [name for name, parameter in loaded.model.named_parameters() if id(parameter) in inside]


def changed_parameters(loaded: Any, recovery: RecoveryConfig) -> list[str]:
    """Names of the parameters a recovery with ``recovery`` changes in this (pruned) model: the weight of every
    decoder linear layer (LoRA merges into them; biases stay) or every :func:`decoder_parameters` (full)."""
    if recovery.recover_params == "lora":
        return [f"{name}.weight" for name in decoder_linears(loaded)]
    return decoder_parameters(loaded)


@contextmanager
def weights_restored(loaded: Any, names: Sequence[str]) -> Iterator[None]:
    """The parameters ``names`` (e.g. :func:`changed_parameters`) as they are now, put back when the context closes:
    a sweep recovers one configuration of the model it holds, evaluates it, and moves on to the next."""
    wanted = set(names)
    saved = {name: parameter.detach().clone() for name, parameter in loaded.model.named_parameters() if name in wanted}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, parameter in loaded.model.named_parameters():
                if name in saved:
                    parameter.copy_(saved[name])


def batch_rows(samples: int, batch_size: int, steps: int, seed: int) -> Iterator[list[int]]:
    """``steps`` global batches of training rows: seeded permutations of ``range(samples)``, one after another."""
    rng, queue = random.Random(f"recover/{seed}"), []
    for _ in range(steps):
        while len(queue) < batch_size:
            order = list(range(samples))
            rng.shuffle(order)
            queue += order
        yield queue[:batch_size]
        queue = queue[batch_size:]


def matched_depths(kept_layers: Sequence[int], teacher_layers: int) -> tuple[list[int], list[int]]:
    """``(student depths, teacher depths)`` that the hidden-state term compares, as indices of
    :func:`~lmms_topo_plugin.recovery.sequences.residual_streams`' list: the stream entering the student's layer
    ``j`` and the teacher's layer ``kept_layers[j]`` (left out where that is the teacher's first layer: the embeddings,
    the same in both), then both final norms' outputs."""
    pairs = [(student, teacher) for student, teacher in enumerate(kept_layers) if teacher > 0]
    pairs.append((len(kept_layers), teacher_layers))
    return [student for student, _ in pairs], [teacher for _, teacher in pairs]


def heldout_losses(loaded: Any, prompts: Sequence[Prompt], rows: Sequence[int], targets: TeacherTargets,
                   batch_size: int, token_pruner: Any = None,
                   depths: tuple[list[int], list[int]] | None = None) -> tuple[float, float | None]:
    """The KL per answer token of ``loaded`` against the teacher on ``prompts`` (the targets' rows ``rows``), and
    with ``depths`` (:func:`matched_depths`) the hidden-state term per answer token (else None)."""
    kl_total, hidden_total, tokens = 0.0, 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            kl, hidden = token_losses(loaded, prompts, list(rows[start:start + batch_size]), targets, token_pruner,
                                      depths)
            kl_total += float(kl.sum())
            hidden_total += float(hidden.sum()) if hidden is not None else 0.0
            tokens += kl.shape[0]
    return kl_total / tokens, hidden_total / tokens if depths is not None else None


def token_losses(loaded: Any, prompts: Sequence[Prompt], rows: list[int], targets: TeacherTargets, token_pruner: Any,
                 depths: tuple[list[int], list[int]] | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per answer token of ``rows`` (in order): the KL, and with ``depths`` the hidden-state term (else None)."""
    batch = answer_batch(loaded.processor, loaded.adapter, [prompts[row] for row in rows], targets.answers(rows))
    logits, states = answer_outputs(loaded, batch, token_pruner, states=depths is not None)
    ids, log_probs = targets.targets(rows)
    kl = kd_token_losses(logits, ids.to(logits.device), log_probs.to(logits.device))
    if depths is None:
        return kl, None
    student, teacher = depths
    return kl, hidden_token_losses(states[:, student], targets.states(rows)[:, teacher].to(states.device))


def train(loaded: Any, prompts: Sequence[Prompt], train_rows: Sequence[int], heldout_rows: Sequence[int],
          targets: TeacherTargets, recovery: RecoveryConfig, seed: int, token_pruner: Any = None,
          progress: bool = True, kept_layers: Sequence[int] | None = None) -> tuple[TrainResult, dict[str, torch.Tensor]]:
    """Train ``loaded.model`` in place on ``prompts[train_rows]`` (``targets`` rows of the same indices). Returns the
    losses and the trained tensors by parameter name (CPU copies: the LoRA factors before merging, or every decoder
    parameter), which :func:`load_trained` puts back into the same pruned model. The model is a plain transformers
    model again afterwards (LoRA merged and unloaded), every parameter's ``requires_grad`` as it was.
    ``kept_layers``: the teacher's layer each of the model's layers was (default: the same index), which the
    hidden-state term's depths follow."""
    start = time.perf_counter()
    depths = None
    if recovery.matches_hidden:
        kept = list(range(loaded.adapter.num_layers)) if kept_layers is None else list(kept_layers)
        if len(kept) != loaded.adapter.num_layers:
            raise ValueError(f"kept_layers names {len(kept)} layers; the model has {loaded.adapter.num_layers}")
        depths = matched_depths(kept, targets.hidden_states.shape[1] - 1)
    heldout = (loaded, prompts, heldout_rows, targets, recovery.recover_batch_size, token_pruner, depths)
    kl_before, hidden_before = heldout_losses(*heldout)
    with trainable(loaded, recovery, seed) as params:
        losses = _optimise(loaded, prompts, list(train_rows), targets, recovery, seed, list(params.values()),
                           token_pruner, progress, depths)
        trained = {name: parameter.detach().to("cpu", copy=True) for name, parameter in params.items()}
    kl_after, hidden_after = heldout_losses(*heldout)
    return TrainResult(losses, kl_before, kl_after, time.perf_counter() - start, hidden_before, hidden_after), trained


def load_trained(loaded: Any, trained: dict[str, torch.Tensor], recovery: RecoveryConfig, seed: int) -> None:
    """Put tensors that :func:`train` returned back into the same pruned model: the result equals the trained one."""
    with trainable(loaded, recovery, seed) as params:
        missing = sorted(set(params) ^ set(trained))
        if missing:
            raise ValueError(f"the stored recovery does not fit this model: {len(missing)} tensors differ, e.g. "
                             f"{missing[0]}")
        with torch.no_grad():
            for name, parameter in params.items():
                parameter.copy_(trained[name])


@contextmanager
def trainable(loaded: Any, recovery: RecoveryConfig, seed: int) -> Iterator[dict[str, nn.Parameter]]:
    """The parameters that train, by name, while the context is open: LoRA adapters on :func:`decoder_linears`
    (merged into the weights when the context closes normally, taken out unmerged when it is left by an exception)
    or the :func:`decoder_parameters`. Every ``requires_grad`` is restored and every gradient dropped afterwards."""
    model = loaded.model
    flags = {name: parameter.requires_grad for name, parameter in model.named_parameters()}
    wrapped = None
    try:
        if recovery.recover_params == "lora":
            wrapped = _attach_lora(model, decoder_linears(loaded), recovery.recover_lora_rank, seed)
        else:
            chosen = set(decoder_parameters(loaded))
            for name, parameter in model.named_parameters():
                parameter.requires_grad_(name in chosen)
        yield {name: parameter for name, parameter in model.named_parameters() if parameter.requires_grad}
        if wrapped is not None:
            wrapped.merge_and_unload()
            wrapped = None
    finally:
        if wrapped is not None:  # interrupted: the adapters come out, the pruned weights stay as they were
            wrapped.unload()
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(flags.get(name, False))
            parameter.grad = None


def _attach_lora(model: nn.Module, targets: list[str], rank_: int, seed: int):
    """PEFT's LoRA on ``targets`` (module names), initialised from ``seed``; the model's modules are replaced in
    place (``model`` keeps working, with the adapters); returns PEFT's wrapper, which merges and unloads them."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank_, lora_alpha=2 * rank_, lora_dropout=0.0, target_modules=targets, bias="none")
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def _optimise(loaded: Any, prompts: Sequence[Prompt], train_rows: list[int], targets: TeacherTargets,
              recovery: RecoveryConfig, seed: int, params: list[nn.Parameter], token_pruner: Any,
              progress: bool, depths: tuple[list[int], list[int]] | None) -> list[float]:
    optimizer = torch.optim.AdamW(params, lr=recovery.recover_lr, weight_decay=0.0)
    world, me = world_size(), rank()
    device = loaded.model.device
    losses = []
    steps = batch_rows(len(train_rows), recovery.recover_batch_size, recovery.recover_steps, seed)
    bar = tqdm(steps, total=recovery.recover_steps, desc="topo_pruned recover", unit="step",
               disable=not progress or me != 0)
    with torch.enable_grad():
        for batch in bar:
            rows = [train_rows[index] for index in batch]
            tokens = int(sum(targets.answer_lengths[row] for row in rows))
            mine = rows[me::world]
            optimizer.zero_grad(set_to_none=True)
            local = torch.zeros((), device=device)
            if mine:
                kl, hidden = token_losses(loaded, prompts, mine, targets, token_pruner, depths)
                local = kl.sum() + (recovery.recover_hidden * hidden.sum() if hidden is not None else 0.0)
                (local / tokens).backward()
            loss = _sum_over_ranks(params, local.detach()) / tokens
            torch.nn.utils.clip_grad_norm_(params, CLIP_NORM)
            optimizer.step()
            losses.append(float(loss))
            bar.set_postfix(loss=f"{losses[-1]:.4g}")
    optimizer.zero_grad(set_to_none=True)
    return losses


def _sum_over_ranks(params: list[nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
    """Sum every parameter's gradient (a missing one counts as zero) and ``loss`` over the ranks, in one
    ``all_reduce`` of a flat buffer; returns the summed loss. One process: nothing to do."""
    for parameter in params:
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
    if not is_distributed():
        return loss
    import torch.distributed as dist

    flat = torch.cat([loss.reshape(1).float(), *(p.grad.reshape(-1).float() for p in params)])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 1
    for parameter in params:
        size = parameter.grad.numel()
        parameter.grad.copy_(flat[offset:offset + size].view_as(parameter.grad))
        offset += size
    return flat[0]
