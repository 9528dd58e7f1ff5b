"""What one family's ONNX build needs beyond the shared embedding and decoder graphs
(:mod:`lmms_topo_plugin.exporters.onnx.graphs`): its vision graph and how the runner feeds it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class OnnxFamily:
    """A family's vision graph: how it is built and exported, and how the runner feeds it.

    ``example`` picks the export's example inputs from a processor batch (in ``vision_inputs`` order);
    ``run_vision`` runs the ONNX Runtime session on a processor batch as numpy arrays (its ``vision_inputs`` and
    ``run_inputs``, and the build's ``constants`` from the manifest's ``vision_constants``) and returns the image
    features ``[image tokens, hidden]`` of all its images, in the order their image tokens appear."""

    vision: Callable[[Any], nn.Module]  # model → wrapper whose forward takes ``vision_inputs`` → image_features
    vision_inputs: tuple[str, ...]  # processor outputs the vision graph takes, in order
    vision_axes: tuple[dict[int, str] | None, ...]  # their dynamic dimensions
    per_image: bool  # the vision graph takes one image per run (stated in the manifest)
    positions: str  # decoder position_ids: "text" ``[batch, seq]`` or "mrope" ``[3, batch, seq]`` (..positions)
    example: Callable[[Mapping[str, torch.Tensor]], tuple[torch.Tensor, ...]]
    run_vision: Callable[[Any, Mapping[str, np.ndarray]], np.ndarray]
    run_inputs: tuple[str, ...] = ()  # further processor outputs that run_vision reads
    constants: Callable[[Any], dict[str, Any]] = lambda model: {}  # model → JSON values that run_vision reads
    genai: bool = False  # onnxruntime-genai 0.18's og.Model runs this family from our graphs (genai_config.json)


def batch_example(names: tuple[str, ...]) -> Callable[[Mapping[str, torch.Tensor]], tuple[torch.Tensor, ...]]:
    """Example inputs: the processor outputs ``names`` of the whole batch, ``pixel_values`` as float32."""
    return lambda inputs: tuple(inputs[name].float() if name == "pixel_values" else inputs[name] for name in names)


def flat_features(features: np.ndarray) -> np.ndarray:
    """``[..., hidden]`` → ``[tokens, hidden]``."""
    return features.reshape(-1, features.shape[-1])
