"""Resolve ``pretrained``, check the architecture, and load model + processor with transformers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForImageTextToText, PretrainedConfig

from lmms_topo_plugin.families import VLMAdapter, adapter_class_for
from lmms_topo_plugin.config.prune import LoadConfig
from lmms_topo_plugin.errors import ModelArgsError, ModelLoadError
from lmms_topo_plugin.failures import first_line, is_out_of_memory, out_of_memory_as_failure
from lmms_topo_plugin.models.processors import load_processor

BUNDLED_MODEL_DIR = Path(__file__).parents[1] / "default_model"


def resolve_pretrained(pretrained: str | None) -> str:
    """A local directory or Hub id; a clear error for a missing directory or no default."""
    if pretrained is None:
        if (BUNDLED_MODEL_DIR / "config.json").exists():
            return str(BUNDLED_MODEL_DIR)
        raise ModelArgsError(
            "model_args: pretrained= is required (no bundled default model is installed); "
            "build a local one with `topo-prune build-demo-model DIR` and pass pretrained=DIR"
        )
    path = Path(pretrained).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelArgsError(f"model_args: pretrained={pretrained!r} is a directory without config.json")
        return str(path.resolve())
    looks_local = pretrained.startswith((".", "/", "~")) or pretrained.count("/") > 1  # Hub ids are "org/name"
    if looks_local or path.exists():
        raise ModelArgsError(f"model_args: pretrained={pretrained!r} is not an existing model directory")
    return pretrained


def load_config(pretrained: str, revision: str | None = None) -> PretrainedConfig:
    """The checkpoint's config (cheap: no weights), with a one-line error when it cannot be read."""
    try:
        return AutoConfig.from_pretrained(pretrained, revision=revision)
    except (OSError, ValueError) as error:
        raise ModelArgsError(f"model_args: pretrained={pretrained!r} could not be loaded: {first_line(error)}") from None


def resolve_device(device: str | None) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelArgsError(f"model_args: device={device!r} but CUDA is not available here; use device=cpu")
    return device


def resolve_dtype(dtype: str | None, device: str) -> Any:
    if dtype is None:
        return torch.float32 if device == "cpu" else "auto"
    return "auto" if dtype == "auto" else getattr(torch, dtype)


@dataclass
class LoadedModel:
    """A loaded checkpoint with its processor and adapter (plain object: survives lmms-eval's ``clean()``)."""

    model: Any
    processor: Any
    adapter: VLMAdapter
    source: str


def load_model(load: LoadConfig, pretrained: str, hf_config: PretrainedConfig) -> LoadedModel:
    """Load weights and processor and wrap the model in its family's adapter.

    Raises :class:`ModelLoadError` (one line) when transformers cannot load them, and
    :class:`~lmms_topo_plugin.errors.OutOfMemory` when they do not fit.
    """
    adapter_class = adapter_class_for(hf_config)
    device = resolve_device(load.device)
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(load.dtype, device), "revision": load.revision}
    if load.attn_implementation:
        kwargs["attn_implementation"] = load.attn_implementation
    if load.device_map:
        kwargs["device_map"] = load.device_map
    with out_of_memory_as_failure(f"loading the weights of {pretrained} on {load.device_map or device}",
                                  "use dtype=bfloat16 or float16, or device_map=auto"):
        try:
            model = AutoModelForImageTextToText.from_pretrained(pretrained, **kwargs)
            if not load.device_map:
                model.to(device)
            model.eval()
            processor = load_processor(pretrained, revision=load.revision)
        except Exception as error:
            if is_out_of_memory(error):
                raise
            raise ModelLoadError(f"pretrained={pretrained!r} failed to load: {type(error).__name__}: "
                                 f"{first_line(error)}") from error
    return LoadedModel(model, processor, adapter_class(model), pretrained)
