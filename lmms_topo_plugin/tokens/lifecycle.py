"""HalfV's visual-token lifecycle (docs/methods/tokens.md): truncated matrix entropy per layer, its stages, and the KL
divergence of freezing the visual tokens from each layer on.

* **TME** of layer ``l`` and one sample: ``Z`` = the final norm of ``h_l`` (the layer's input) restricted to a
  token set (visual, text or all real tokens), float64, columns centred; the ``k`` largest eigenvalues of the
  smaller Gram matrix, ``p_i = λ_i / Σλ``, ``H = −Σ p_i ln p_i``; averaged over the samples.
* **Stages** from the visual curve (:func:`detect_stages`): SSR = its argmin; IVR = the first layer after the
  early plateau from which the curve falls at every step for ``span`` layers, by more than ``plateau`` of its range.
* **Freezing KL** of layer ``l``: KL(next-token distribution with the visual tokens frozen from layer ``l`` on ‖
  dense), at the last prompt position, averaged over the samples. Frozen visual tokens still give keys and
  values; their hidden states stop changing. A small KL from the SSR layer on (``kl_threshold``) means deep
  layers are inactive on visual tokens (SSR mode ``freeze``), otherwise ``top5`` (docs/methods/tokens.md) -- unless
  top5's 5% of the fewest visual tokens of a calibration prompt rounds down to none: then ``freeze``
  (:func:`ssr_mode_choice`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from lmms_topo_plugin.families import VLMAdapter
from lmms_topo_plugin.calibration.collect import BatchContext, Collector, move_inputs, run_collectors
from lmms_topo_plugin.calibration.hooks import HookSet
from lmms_topo_plugin.models.prompting import Prompt, encode
from lmms_topo_plugin.tokens.methods import SSR_KEEP

TOKEN_SETS = ("visual", "text", "all")
KL_THRESHOLD = 1e-3  # docs/methods/tokens.md: deep layers are inactive on visual tokens (freeze) at ~1e-4 or less


def truncated_matrix_entropy(states: torch.Tensor, k: int) -> float:
    """TME of ``states`` ``[n, d]`` (rows are tokens) from its ``k`` largest eigenvalues; 0 for fewer than 2 rows."""
    if states.shape[0] < 2:
        return 0.0
    z = states.double()
    z = z - z.mean(dim=0, keepdim=True)
    gram = z @ z.T if z.shape[0] <= z.shape[1] else z.T @ z
    eigenvalues = torch.linalg.eigvalsh(gram).flip(0).clamp(min=0.0)[:k]
    total = eigenvalues.sum()
    if total <= 0:
        return 0.0
    p = eigenvalues[eigenvalues > 0] / total
    return float(-(p * p.log()).sum())


class EntropyCollector(Collector):
    """Per layer (its input ``h_l``), the mean TME of the visual, text and all tokens: ``[L, 3]``; and each
    sample's number of visual tokens (:attr:`visual_tokens`)."""

    name = "truncated_entropy"

    def __init__(self, num_layers: int, final_norm: torch.nn.Module, k: int) -> None:
        super().__init__(num_layers)
        self.final_norm, self.k = final_norm, k
        self._sums = torch.zeros(num_layers, len(TOKEN_SETS), dtype=torch.float64)
        self._samples = 0
        self.visual_tokens: list[int] = []

    def update(self, layer: int, h_in: torch.Tensor, h_out: torch.Tensor, batch: BatchContext) -> None:
        normed = self.final_norm(h_in).double().cpu()
        real, image = batch.token_mask.cpu(), batch.image_mask.cpu() & batch.token_mask.cpu()
        for row in range(normed.shape[0]):
            masks = {"visual": image[row], "text": real[row] & ~image[row], "all": real[row]}
            for column, name in enumerate(TOKEN_SETS):
                self._sums[layer, column] += truncated_matrix_entropy(normed[row][masks[name]], self.k)
        if layer == 0:
            self._samples += normed.shape[0]
            self.visual_tokens += image.sum(dim=1).tolist()

    def result(self) -> torch.Tensor:
        return (self._sums / max(self._samples, 1)).float()


@dataclass(frozen=True)
class Stages:
    """Decoder layers where Stage II (IVR) and Stage III (SSR) begin."""

    ivr: int
    ssr: int


def detect_stages(curve: Sequence[float], plateau: float = 0.05, span: int = 2) -> Stages:
    """SSR = argmin of ``curve``; IVR = the first layer ``l ≥ 1`` before SSR from which the curve falls at every
    step for ``span`` layers (or until SSR), by more than ``plateau`` of its range in all (layer 1 when none does, also
    when SSR is layer 0: step 2 is then left out, since it cannot start before step 1)."""
    values = list(curve)
    ssr = min(range(len(values)), key=lambda layer: (values[layer], layer))
    tolerance = plateau * (max(values) - min(values))
    for layer in range(1, ssr):
        end = min(layer + span, ssr)
        if values[layer] - values[end] > tolerance and all(values[j + 1] < values[j] for j in range(layer, end)):
            return Stages(layer, ssr)
    return Stages(1, ssr)  # never 0: no token stage starts at layer 0 (tokens/configs.py, FIRST_TOKEN_LAYER)


def ssr_mode_choice(kl: float | None, visual_tokens: int, kl_threshold: float = KL_THRESHOLD,
                    ssr_keep: float = SSR_KEEP) -> tuple[str, str]:
    """``token_ssr_mode=auto``'s mode and the reason, from the freezing KL at the SSR layer and the fewest visual
    tokens of a calibration prompt: ``freeze`` when top5 would keep ``floor(visual_tokens * ssr_keep) = 0`` of them
    (``kl`` is not needed then and may be None), else ``freeze`` when ``kl <= kl_threshold``, else ``top5``."""
    if top5_is_empty(visual_tokens, ssr_keep):
        return "freeze", f"top5 would keep {ssr_keep * 100:g}% of {visual_tokens} visual tokens = 0"
    if kl <= kl_threshold:
        return "freeze", f"KL of freezing the visual tokens from the SSR layer on {kl:.2g} <= {kl_threshold:g}"
    return "top5", f"KL of freezing the visual tokens from the SSR layer on {kl:.2g} > {kl_threshold:g}"


def top5_is_empty(visual_tokens: int, ssr_keep: float = SSR_KEEP) -> bool:
    """Whether top5 would keep none of ``visual_tokens`` (> 0) without the floor: auto needs no KL then."""
    return visual_tokens > 0 and math.floor(visual_tokens * ssr_keep) == 0


def freezing_kl(adapter: VLMAdapter, processor: Any, prompts: Sequence[Prompt], *, batch_size: int = 8,
                layers: Sequence[int] | None = None) -> list[float]:
    """Per layer ``l`` of ``layers`` (default: all): mean KL(frozen from ``l`` on ‖ dense) of the last position's
    next-token distribution."""
    model, total = adapter.model, adapter.num_layers
    starts = list(range(total)) if layers is None else list(layers)
    sums = torch.zeros(len(starts), dtype=torch.float64)
    batches = [prompts[i : i + batch_size] for i in range(0, len(prompts), batch_size)]
    for batch in batches:
        inputs = move_inputs(encode(processor, adapter, batch), model.device, model.dtype)
        visual = adapter.image_token_mask(inputs["input_ids"])
        with torch.inference_mode():
            dense = model(**inputs, use_cache=False, logits_to_keep=1).logits[:, -1].double().log_softmax(-1)
            for position, start in enumerate(starts):
                with HookSet() as hooks:
                    for index in range(start, total):
                        hooks.after(adapter.layers[index], _freeze(adapter.layer_adapter(index), visual))
                    frozen = model(**inputs, use_cache=False, logits_to_keep=1).logits[:, -1].double().log_softmax(-1)
                sums[position] += (frozen.exp() * (frozen - dense)).sum(dim=-1).clamp(min=0).sum().cpu()
    return (sums / len(prompts)).tolist()


def _freeze(calls, visual: torch.Tensor):
    """A post-hook that puts the layer's input back at the visual positions of its output."""
    def hook(module, args, kwargs, output):
        hidden_in, hidden_out = calls.hidden_states(args, kwargs), calls.output_states(output)
        frozen = torch.where(visual[..., None].to(hidden_out.device), hidden_in, hidden_out)
        return (frozen, *output[1:]) if isinstance(output, tuple) else frozen
    return hook


def analyze_lifecycle(adapter: VLMAdapter, processor: Any, prompts: Sequence[Prompt], *, k: int = 50,
                      batch_size: int = 8, kl_threshold: float = KL_THRESHOLD, show_progress: bool = True) -> dict[str, Any]:
    """The TME curves, the stages, the freezing KL per layer and the SSR mode, as a JSON-ready dict."""
    collector = EntropyCollector(adapter.num_layers, adapter.final_norm, k)
    entropy = run_collectors(adapter, processor, prompts, [collector], batch_size=batch_size,
                             show_progress=show_progress, desc="Entropy")["truncated_entropy"]
    curves = {name: entropy[:, column].tolist() for column, name in enumerate(TOKEN_SETS)}
    stages = detect_stages(curves["visual"])
    kl = freezing_kl(adapter, processor, prompts, batch_size=batch_size)
    fewest = fewest_visual_tokens(collector.visual_tokens)
    mode, reason = ssr_mode_choice(kl[stages.ssr], fewest, kl_threshold)
    return {"samples": len(prompts), "k": k, "curves": curves, "ivr_layer": stages.ivr, "ssr_layer": stages.ssr,
            "freezing_kl": kl, "kl_threshold": kl_threshold, "fewest_visual_tokens": fewest, "ssr_mode": mode,
            "ssr_mode_reason": reason}


def fewest_visual_tokens(counts: Sequence[int]) -> int:
    """The fewest visual tokens of a prompt that has any (0 when none has)."""
    return min((count for count in counts if count > 0), default=0)


def lifecycle_png(report: dict[str, Any]) -> bytes:
    """The three TME curves with the stages shaded, and the freezing KL per layer (log scale) below."""
    from lmms_topo_plugin.plotting import figure_png, subplots

    curves, layers = report["curves"], len(report["freezing_kl"])
    figure, (top, bottom) = subplots(2, 1, figsize=(9, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    bounds = [(-0.5, report["ivr_layer"] - 0.5, "Stage I: alignment", "#eeeeee"),
              (report["ivr_layer"] - 0.5, report["ssr_layer"] - 0.5, "Stage II: aggregation (from IVR)", "#d9ead3"),
              (report["ssr_layer"] - 0.5, layers - 0.5, "Stage III: saturation (from SSR)", "#cfe2f3")]
    for axis in (top, bottom):
        for low, high, label, colour in bounds:
            axis.axvspan(low, high, color=colour, label=label if axis is top else None, linewidth=0)
        axis.grid(alpha=0.3)
    for name in TOKEN_SETS:
        top.plot(range(layers), curves[name], marker="o", label=f"{name} tokens")
    top.set_ylabel(f"truncated matrix entropy (top {report['k']})")
    top.legend(fontsize="small")
    top.set_title(f"Visual-token lifecycle over {report['samples']} samples: IVR layer {report['ivr_layer']}, SSR "
                  f"layer {report['ssr_layer']} (mode {report['ssr_mode']})")
    bottom.semilogy(range(layers), [max(value, 1e-12) for value in report["freezing_kl"]], marker="o", color="black")
    bottom.axhline(report["kl_threshold"], color="red", linestyle="--", linewidth=1, label="freeze threshold")
    bottom.set_ylabel("KL, visual frozen from here")
    bottom.set_xlabel("decoder layer (its input h_l)")
    bottom.legend(fontsize="small")
    return figure_png(figure)
