"""Generation and log-likelihood on a loaded model, independent of lmms-eval's request layouts."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from lmms_topo_plugin.calibration.collect import move_inputs
from lmms_topo_plugin.models.loading import LoadedModel
from lmms_topo_plugin.models.prompting import Prompt, encode

_GENERATION_KEYS = ("max_new_tokens", "temperature", "top_p", "top_k", "num_beams", "do_sample", "repetition_penalty")


def generation_settings(gen_kwargs: dict[str, Any], default_max_new_tokens: int) -> tuple[dict[str, Any], list[str]]:
    """transformers ``generate`` arguments and the stop strings from a task's ``generation_kwargs``."""
    until = gen_kwargs.get("until") or []
    until = [until] if isinstance(until, str) else list(until)
    settings = {key: gen_kwargs[key] for key in _GENERATION_KEYS if gen_kwargs.get(key) is not None}
    settings.setdefault("max_new_tokens", default_max_new_tokens)
    temperature = float(settings.get("temperature", 0.0))
    settings["do_sample"] = temperature > 0  # lmms-eval convention: temperature 0 means greedy
    if not settings["do_sample"]:
        for key in ("temperature", "top_p", "top_k"):
            settings.pop(key, None)
    return settings, until


def cut_at_stop(text: str, until: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string."""
    for stop in until:
        if stop and stop in text:
            text = text.split(stop, 1)[0]
    return text


def generate(loaded: LoadedModel, prompts: Sequence[Prompt], settings: dict[str, Any], until: Sequence[str],
             *, use_cache: bool = True) -> list[str]:
    """Generate a continuation for each prompt of a batch (left-padded), cut at the stop strings."""
    tokenizer = loaded.processor.tokenizer
    inputs = encode(loaded.processor, loaded.adapter, prompts)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.inference_mode():
        output = loaded.model.generate(
            **move_inputs(inputs, loaded.model.device, loaded.model.dtype),
            **settings, use_cache=use_cache, pad_token_id=pad_id,
        )
    new_tokens = output[:, inputs["input_ids"].shape[1]:]
    texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return [cut_at_stop(text, until).strip() for text in texts]


def continuation_nll(loaded: LoadedModel, prompt: Prompt, continuation: str) -> tuple[float, bool]:
    """Negative log-likelihood of ``continuation`` after ``prompt``, and whether greedy decoding produces it."""
    tokenizer = loaded.processor.tokenizer
    inputs = encode(loaded.processor, loaded.adapter, [prompt])
    target = tokenizer(continuation, add_special_tokens=False, return_tensors="pt")["input_ids"]
    if target.shape[1] == 0:
        return 0.0, True
    prompt_shape = inputs["input_ids"].shape
    for key, value in list(inputs.items()):
        if isinstance(value, torch.Tensor) and value.shape == prompt_shape:  # ids, mask, token types
            tail = target if key == "input_ids" else (torch.ones_like(target) if key == "attention_mask" else torch.zeros_like(target))
            inputs[key] = torch.cat([value, tail.to(value.dtype)], dim=1)
    with torch.inference_mode():
        logits = loaded.model(**move_inputs(inputs, loaded.model.device, loaded.model.dtype), use_cache=False).logits
    predicted = logits[0, -target.shape[1] - 1 : -1].float()
    target = target[0].to(predicted.device)
    log_probs = torch.log_softmax(predicted, dim=-1)
    nll = -log_probs.gather(1, target[:, None]).sum().item()
    greedy = bool((predicted.argmax(dim=-1) == target).all())
    return float(nll), greedy


def prompt_logits(loaded: LoadedModel, prompts: list[Prompt]) -> torch.Tensor:
    """Float32 logits of a (left-padded) batch of prompts, every position, no cache: what an export (the reloaded
    checkpoint, the fp32 ONNX build) is checked against."""
    inputs = encode(loaded.processor, loaded.adapter, prompts)
    with torch.inference_mode():
        return loaded.model(**move_inputs(inputs, loaded.model.device, loaded.model.dtype), use_cache=False).logits.float()
