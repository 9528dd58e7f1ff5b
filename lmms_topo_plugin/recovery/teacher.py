"""The teacher's targets: the dense model's own greedy answers to the recovery prompts, and its next-token
distribution (top ``recover_topk``, renormalised) at every answer position. Computed before pruning, cached on disk
under the dense model, the prompts and the teacher's settings.

Memory: ``answer tokens × k`` token ids (int32) and log-probabilities (float32), 8·k bytes per answer token (1 KiB at
k = 128), instead of 2·vocab bytes at float16 (300 KiB for a 152k vocabulary). With ``recover_hidden`` also the
residual stream at every depth (``recovery.sequences.residual_streams``), float16: 2·(layers + 1)·hidden bytes per
answer token (264 KiB for 32 layers of 4096).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from lmms_topo_plugin.cache import DiskCache, cache_key
from lmms_topo_plugin.calibration.collect import move_inputs
from lmms_topo_plugin.config.recovery import RecoveryConfig
from lmms_topo_plugin.models.prompting import Prompt, encode
from lmms_topo_plugin.recovery.loss import top_k_targets
from lmms_topo_plugin.recovery.sequences import answer_batch, answer_outputs, pad_id

TEACHER_VERSION = 1


@dataclass(frozen=True)
class TeacherTargets:
    """Per prompt (in the order of :attr:`RecoveryData.prompts`) its answer's token ids; per answer token (all
    prompts' answers concatenated) the teacher's top-k token ids and renormalised log-probabilities."""

    answer_ids: torch.Tensor  # [tokens] int32
    answer_lengths: torch.Tensor  # [prompts] int32
    top_ids: torch.Tensor  # [tokens, k] int32
    top_log_probs: torch.Tensor  # [tokens, k] float32
    # with recover_hidden: [tokens, layers + 1, hidden] float16, entering each layer, then the final norm's output
    hidden_states: torch.Tensor | None = None

    @property
    def offsets(self) -> list[int]:
        return [0, *torch.cumsum(self.answer_lengths, 0).tolist()]

    def answers(self, rows: Sequence[int]) -> list[list[int]]:
        offsets = self.offsets
        return [self.answer_ids[offsets[row]:offsets[row + 1]].tolist() for row in rows]

    def targets(self, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(top_ids, top_log_probs)`` of the answer tokens of ``rows``, in that order."""
        index = self._token_index(rows)
        return self.top_ids[index], self.top_log_probs[index]

    def states(self, rows: Sequence[int]) -> torch.Tensor:
        """The teacher's residual stream ``[tokens, layers + 1, hidden]`` at the answer tokens of ``rows``."""
        return self.hidden_states[self._token_index(rows)]

    def _token_index(self, rows: Sequence[int]) -> torch.Tensor:
        offsets = self.offsets
        return torch.cat([torch.arange(offsets[row], offsets[row + 1]) for row in rows])

    def to_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {"answer_ids": self.answer_ids, "answer_lengths": self.answer_lengths, "top_ids": self.top_ids,
                   "top_log_probs": self.top_log_probs}
        return tensors | ({"hidden_states": self.hidden_states} if self.hidden_states is not None else {})

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "TeacherTargets":
        names = ("answer_ids", "answer_lengths", "top_ids", "top_log_probs")
        return cls(**{name: tensors[name] for name in names}, hidden_states=tensors.get("hidden_states"))


def greedy_answers(loaded: Any, prompts: Sequence[Prompt], max_new_tokens: int) -> list[list[int]]:
    """The model's greedy continuation of each prompt (its generation config: stop tokens, suppressed tokens),
    up to and including its first end-of-sequence token. Image and video placeholder tokens are never chosen: in
    an answer the student reads back, the model would take one for a missing image."""
    model = loaded.model
    inputs = encode(loaded.processor, loaded.adapter, prompts)
    placeholders = {loaded.adapter.image_token_id, getattr(model.config, "video_token_id", None)} - {None}
    with torch.inference_mode():
        output = model.generate(**move_inputs(inputs, model.device, model.dtype), do_sample=False,
                                max_new_tokens=max_new_tokens, pad_token_id=pad_id(loaded.processor),
                                bad_words_ids=[[token] for token in sorted(placeholders)])
    eos = model.generation_config.eos_token_id
    stops = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    answers = []
    for row in output[:, inputs["input_ids"].shape[1]:].tolist():
        cut = next((i + 1 for i, token in enumerate(row) if token in stops), len(row))
        answers.append(row[:cut])
    return answers


def compute_targets(loaded: Any, prompts: Sequence[Prompt], recovery: RecoveryConfig) -> TeacherTargets:
    """Greedy answers of ``loaded`` (the dense model) and its top-k distributions on them (with ``recover_hidden``
    also its residual stream), in batches of ``recover_batch_size``."""
    ids, lengths, top_ids, top_log_probs, states = [], [], [], [], []
    size = recovery.recover_batch_size
    batches = [prompts[i:i + size] for i in range(0, len(prompts), size)]
    for batch in tqdm(batches, desc="topo_pruned recover: teacher answers", unit="batch"):
        answers = greedy_answers(loaded, batch, recovery.recover_max_new_tokens)
        with torch.inference_mode():
            logits, hidden = answer_outputs(loaded, answer_batch(loaded.processor, loaded.adapter, batch, answers),
                                            states=recovery.matches_hidden)
        if hidden is not None:
            states.append(hidden.to(torch.float16).cpu())
        chosen, log_probs = top_k_targets(logits, recovery.recover_topk)
        ids += [token for answer in answers for token in answer]
        lengths += [len(answer) for answer in answers]
        top_ids.append(chosen.to(torch.int32).cpu())
        top_log_probs.append(log_probs.cpu())
    return TeacherTargets(torch.tensor(ids, dtype=torch.int32), torch.tensor(lengths, dtype=torch.int32),
                          torch.cat(top_ids), torch.cat(top_log_probs), torch.cat(states) if states else None)


def teacher_key(model_id: str, data_fingerprint: str, recovery: RecoveryConfig, model: Any) -> str:
    """The cache key of the teacher's targets: dense model, prompts, teacher settings, dtype and attention kernel."""
    return cache_key("teacher", model_id, data_fingerprint, recovery.data_fingerprint(), str(model.dtype),
                     model.config._attn_implementation, recovery.recover_batch_size, TEACHER_VERSION)


def cached_targets(loaded: Any, prompts: Sequence[Prompt], recovery: RecoveryConfig, key: str,
                   cache: DiskCache) -> tuple[TeacherTargets, dict[str, Any]]:
    """The teacher's targets from ``cache`` under ``key``, or computed (then stored); and what happened."""
    cached = cache.get_tensors("teacher", key)
    if cached is not None:
        targets = TeacherTargets.from_tensors(cached)
        return targets, {"key": key, "hit": True, "answer_tokens": int(targets.answer_ids.numel()), "seconds": 0.0}
    start = time.perf_counter()
    targets = compute_targets(loaded, prompts, recovery)
    cache.put_tensors("teacher", key, targets.to_tensors())
    return targets, {"key": key, "hit": False, "answer_tokens": int(targets.answer_ids.numel()),
                     "seconds": round(time.perf_counter() - start, 4)}
