"""Batches of prompt + answer for the teacher's targets and the student's training, and where each row's answer is.

A row is the prompt exactly as evaluation encodes it (left-padded to the batch's longest prompt), then its answer
tokens, then right padding to the longest answer. The prompt part is therefore the very ``input_ids`` a prompt-only
forward sees, which lets a visual-token pruner choose its tokens on the prompt alone, as in deployment, and keep
that choice for the forward over prompt + answer (:meth:`TokenPruner.attach` keeps a selection for an extended
prompt). Causal attention keeps the right padding from touching the real tokens; left padding shifts every real
position of a row by the same amount, which rotary attention does not see.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from lmms_topo_plugin.calibration.collect import move_inputs
from lmms_topo_plugin.models.prompting import Prompt, encode


@dataclass(frozen=True)
class AnswerBatch:
    """Model inputs of prompt + answer rows and of the prompts alone, and per row the position of its first answer
    token and the answer's length."""

    inputs: dict[str, Any]
    prompt_inputs: dict[str, Any]
    starts: list[int]
    lengths: list[int]

    @property
    def tokens(self) -> int:
        return sum(self.lengths)

    def predicting_positions(self, output_length: int) -> torch.Tensor:
        """``[tokens, 2]`` (row, position) of the logits that predict each answer token, in row order. A visual-token
        pruner drops tokens before the answers (the same number in every row), so the model returns fewer
        positions: they shift by the difference."""
        shift = self.inputs["input_ids"].shape[1] - output_length
        return torch.tensor([(row, start - 1 + j - shift) for row, (start, length) in
                             enumerate(zip(self.starts, self.lengths)) for j in range(length)], dtype=torch.long)


def pad_id(processor: Any) -> int:
    tokenizer = processor.tokenizer
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def answer_batch(processor: Any, adapter: Any, prompts: Sequence[Prompt], answers: Sequence[Sequence[int]]) -> AnswerBatch:
    """``prompts`` encoded by the checkpoint's processor (as evaluation encodes them), each followed by its answer
    token ids, then right padding. Every tensor laid out along the tokens (ids, mask, token types) is extended; the
    others (pixels, image grids) are kept as the processor made them. ``prompt_inputs`` is the prompt part alone."""
    inputs = dict(encode(processor, adapter, prompts))
    ids = inputs["input_ids"]
    width = max(len(answer) for answer in answers)
    out = dict(inputs)
    for key, value in inputs.items():
        if not _along_tokens(value, ids):
            continue
        fill = pad_id(processor) if key == "input_ids" else 0
        tail = torch.full((len(prompts), width), fill, dtype=value.dtype)
        for row, answer in enumerate(answers):
            if key == "input_ids":
                tail[row, :len(answer)] = torch.tensor(answer, dtype=value.dtype)
            elif key == "attention_mask":
                tail[row, :len(answer)] = 1
        out[key] = torch.cat([value, tail], dim=1)
    return AnswerBatch(out, inputs, [ids.shape[1]] * len(prompts), [len(answer) for answer in answers])


def _along_tokens(value: Any, ids: torch.Tensor) -> bool:
    return isinstance(value, torch.Tensor) and value.shape == ids.shape


def answer_logits(loaded: Any, batch: AnswerBatch, token_pruner: Any = None) -> torch.Tensor:
    """``[tokens, vocab]`` float32 logits of the loaded model at the positions that predict ``batch``'s answer tokens.
    With ``token_pruner`` attached: it chooses the visual tokens on the prompts alone (a forward without gradients),
    as when the model answers, and the forward over prompt + answer keeps that choice."""
    return answer_outputs(loaded, batch, token_pruner)[0]


def answer_outputs(loaded: Any, batch: AnswerBatch, token_pruner: Any = None,
                   states: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`answer_logits`, and with ``states`` the residual stream at the same positions ``[tokens, layers + 1,
    hidden]``: entering each decoder layer, then the final norm's output (:func:`residual_streams`); else None."""
    model = loaded.model
    with token_pruner.attach(loaded.adapter) if token_pruner is not None else nullcontext():
        if token_pruner is not None:
            with torch.no_grad():
                model(**move_inputs(batch.prompt_inputs, model.device, model.dtype), use_cache=False)
        with residual_streams(loaded.adapter) if states else nullcontext() as captured:
            logits = model(**move_inputs(batch.inputs, model.device, model.dtype), use_cache=False).logits
    where = batch.predicting_positions(logits.shape[1]).to(logits.device)
    if not states:
        return logits[where[:, 0], where[:, 1]].float(), None
    picked = []
    for state in captured:  # after a token pruner's layer a state has fewer positions: they shift as the logits'
        at = batch.predicting_positions(state.shape[1]).to(state.device)
        picked.append(state[at[:, 0], at[:, 1]])
    return logits[where[:, 0], where[:, 1]].float(), torch.stack(picked, dim=1).float()


@contextmanager
def residual_streams(adapter: Any) -> Iterator[list[torch.Tensor]]:
    """While open, a forward of the model fills the yielded list with its residual stream: the hidden states entering
    each decoder layer of ``adapter`` in order (``[batch, positions, hidden]``, as the layer gets them, after any
    hook already on it, e.g. a token pruner's), then the final norm's output. The list holds the last forward's."""
    captured: list[torch.Tensor] = []

    def entering(index: int):
        def hook(module, args, kwargs):
            if index == 0:
                captured.clear()
            captured.append(args[0] if args else kwargs["hidden_states"])
        return hook

    handles = [layer.register_forward_pre_hook(entering(index), with_kwargs=True)
               for index, layer in enumerate(adapter.layers)]
    handles.append(adapter.final_norm.register_forward_hook(lambda module, args, output: captured.append(output)))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()
