"""One calibration forward pass with hooks on the decoder layers, keeping only what scorers asked for.

Each *collector* reduces a layer's input/output hidden states to a small statistic as the batch goes by,
so memory stays bounded: nothing holds every layer's full sequence at once.

Depth convention: ``h_l`` is the hidden state entering decoder layer ``l`` (``h_0`` is the embedded prompt,
image features merged in) and ``h_L`` is the last layer's output before the final norm. Decoder layer ``l``
maps ``h_l`` to ``h_{l+1}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Sequence

import torch
from tqdm.auto import tqdm

from lmms_topo_plugin.families import VLMAdapter
from lmms_topo_plugin.errors import NonFiniteError
from lmms_topo_plugin.calibration.hooks import HookSet
from lmms_topo_plugin.models.prompting import Prompt, encode

# Bump when a collector's statistic changes meaning: part of the cache key of calibration statistics.
COLLECTORS_VERSION = 2


@dataclass
class BatchContext:
    """What collectors may need about the current batch besides the hidden states."""

    token_mask: torch.Tensor  # [B, T] bool: real (non-padding) tokens
    image_mask: torch.Tensor  # [B, T] bool: visual-token positions


class Collector:
    """Reduces the hidden states of every layer, batch after batch, to one tensor."""

    name: ClassVar[str]

    def __init__(self, num_layers: int) -> None:
        self.num_layers = num_layers

    def update(self, layer: int, h_in: torch.Tensor, h_out: torch.Tensor, batch: BatchContext) -> None:
        raise NotImplementedError

    def result(self) -> torch.Tensor:
        raise NotImplementedError


class DepthStates(Collector):
    """One vector per sample at every depth: a point cloud ``[N, L+1, d]`` (float32); subclasses pick the vector."""

    def __init__(self, num_layers: int) -> None:
        super().__init__(num_layers)
        self._depths: list[list[torch.Tensor]] = [[] for _ in range(num_layers + 1)]

    def pick(self, hidden: torch.Tensor, batch: BatchContext) -> torch.Tensor:
        raise NotImplementedError

    def update(self, layer: int, h_in: torch.Tensor, h_out: torch.Tensor, batch: BatchContext) -> None:
        self._keep(layer, self.pick(h_in, batch))
        if layer == self.num_layers - 1:
            self._keep(layer + 1, self.pick(h_out, batch))

    def _keep(self, depth: int, states: torch.Tensor) -> None:
        self._depths[depth].append(states.detach().float().cpu())

    def result(self) -> torch.Tensor:
        return torch.stack([torch.cat(chunks) for chunks in self._depths], dim=1)


class LastTokenStates(DepthStates):
    """The last prompt token's state (batches are left-padded, so position -1)."""

    name = "last_token"

    def pick(self, hidden: torch.Tensor, batch: BatchContext) -> torch.Tensor:
        return hidden[:, -1]


class VisualMeanStates(DepthStates):
    """The mean of the visual-token states of each sample."""

    name = "visual_mean"

    def pick(self, hidden: torch.Tensor, batch: BatchContext) -> torch.Tensor:
        mask = batch.image_mask.to(hidden.device)
        counts = mask.sum(dim=1, keepdim=True)
        if bool((counts == 0).any()):
            raise ValueError("visual_mean needs every calibration prompt to contain an image")
        return (hidden.float() * mask[..., None]).sum(dim=1) / counts


class PromptMeanStates(DepthStates):
    """The mean of the states of all of a sample's prompt tokens (text and visual; padding excluded)."""

    name = "prompt_mean"

    def pick(self, hidden: torch.Tensor, batch: BatchContext) -> torch.Tensor:
        mask = batch.token_mask.to(hidden.device)
        return (hidden.float() * mask[..., None]).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1)


class TokenCosine(Collector):
    """Per layer, the mean over samples and real tokens of ``cos(h_l, h_{l+1})``: shape ``[L]``."""

    name = "token_cosine"

    def __init__(self, num_layers: int) -> None:
        super().__init__(num_layers)
        self._sum = torch.zeros(num_layers, dtype=torch.float64)
        self._count = torch.zeros(num_layers, dtype=torch.float64)

    def update(self, layer: int, h_in: torch.Tensor, h_out: torch.Tensor, batch: BatchContext) -> None:
        cosine = torch.nn.functional.cosine_similarity(h_in.float(), h_out.float(), dim=-1)
        mask = batch.token_mask.to(cosine.device)
        self._sum[layer] += cosine[mask].double().sum().cpu()
        self._count[layer] += mask.sum().cpu()

    def result(self) -> torch.Tensor:
        return (self._sum / self._count.clamp(min=1)).float()


class SampleTokenCosine(Collector):
    """Per sample and layer, the mean over the sample's real tokens of ``cos(h_l, h_{l+1})``: ``[N, L]``."""

    name = "sample_token_cosine"

    def __init__(self, num_layers: int) -> None:
        super().__init__(num_layers)
        self._batches: list[list[torch.Tensor]] = [[] for _ in range(num_layers)]

    def update(self, layer: int, h_in: torch.Tensor, h_out: torch.Tensor, batch: BatchContext) -> None:
        cosine = torch.nn.functional.cosine_similarity(h_in.float(), h_out.float(), dim=-1).double()
        mask = batch.token_mask.to(cosine.device)
        self._batches[layer].append(((cosine * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)).cpu())

    def result(self) -> torch.Tensor:
        return torch.stack([torch.cat(chunks) for chunks in self._batches], dim=1).float()


COLLECTORS: dict[str, type[Collector]] = {
    cls.name: cls for cls in (LastTokenStates, VisualMeanStates, PromptMeanStates, TokenCosine, SampleTokenCosine)}


def check_finite(hidden: torch.Tensor, token_mask: torch.Tensor, where: str) -> None:
    """Refuse NaN/inf in the real (non-padding) tokens' states: no statistic may be computed from them."""
    if not bool(torch.isfinite(hidden[token_mask]).all()):
        raise NonFiniteError(
            f"non-finite hidden states (NaN or inf) in {where} during calibration; check the checkpoint's weights "
            "of that layer, or use dtype=float32 if a half-precision dtype overflows"
        )


def move_inputs(inputs: Any, device: torch.device | str, dtype: torch.dtype) -> dict[str, Any]:
    """Inputs on ``device``; floating tensors (pixel values) cast to the model's dtype."""
    moved = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device)
            if value.is_floating_point():
                value = value.to(dtype)
        moved[key] = value
    return moved


def calibrate(
    adapter: VLMAdapter,
    processor: Any,
    prompts: Sequence[Prompt],
    needs: Iterable[str],
    *,
    batch_size: int = 8,
    show_progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Run ``prompts`` through the model once and return ``{statistic name: tensor}`` for ``needs``."""
    unknown = set(needs) - set(COLLECTORS)
    if unknown:
        raise ValueError(f"unknown calibration statistics {sorted(unknown)}; known: {sorted(COLLECTORS)}")
    collectors = [COLLECTORS[name](adapter.num_layers) for name in sorted(set(needs))]
    return run_collectors(adapter, processor, prompts, collectors, batch_size=batch_size, show_progress=show_progress)


def run_collectors(adapter: VLMAdapter, processor: Any, prompts: Sequence[Prompt], collectors: Sequence[Collector], *,
                   batch_size: int = 8, show_progress: bool = True, desc: str = "Calibrating") -> dict[str, torch.Tensor]:
    """One pass of ``prompts`` with every collector hooked on every decoder layer; ``{collector.name: result}``."""
    if not collectors:
        return {}
    model = adapter.model
    device, dtype = model.device, model.dtype
    current: dict[str, BatchContext] = {}

    def hook_for(layer: int):
        calls = adapter.layer_adapter(layer)

        def hook(module, args, kwargs, output):
            h_in, h_out = calls.hidden_states(args, kwargs), calls.output_states(output)
            mask = current["batch"].token_mask.to(h_out.device)
            if layer == 0:
                check_finite(h_in, mask, "the embedded prompt h_0 (input of decoder layer 0)")
            check_finite(h_out, mask, f"the output of decoder layer {layer} (h_{layer + 1})")
            for collector in collectors:
                collector.update(layer, h_in, h_out, current["batch"])

        return hook

    batches = [prompts[i : i + batch_size] for i in range(0, len(prompts), batch_size)]
    with HookSet() as hooks, torch.inference_mode():
        for i, layer in enumerate(adapter.layers):
            hooks.after(layer, hook_for(i))
        for batch in tqdm(batches, desc=desc, unit="batch", disable=not show_progress):
            inputs = encode(processor, adapter, batch)
            current["batch"] = BatchContext(
                token_mask=inputs["attention_mask"].bool(), image_mask=adapter.image_token_mask(inputs["input_ids"])
            )
            adapter.backbone(**move_inputs(inputs, device, dtype), use_cache=False)
    return {collector.name: collector.result() for collector in collectors}
