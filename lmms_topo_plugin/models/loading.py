"""Resolve ``pretrained``, check the architecture, and load model + processor with transformers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForImageTextToText, PretrainedConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

from lmms_topo_plugin.families import VLMAdapter, adapter_class_for
from lmms_topo_plugin.config.prune import LoadConfig
from lmms_topo_plugin.errors import ModelArgsError, ModelLoadError
from lmms_topo_plugin.failures import first_line, is_out_of_memory, out_of_memory_as_failure
from lmms_topo_plugin.models.processors import load_processor
from lmms_topo_plugin.records import pruning_record_of
from lmms_topo_plugin.surgery.widths import slice_widths

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
            model = _from_pretrained(pretrained, hf_config, kwargs)
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


def _from_pretrained(pretrained: str, hf_config: PretrainedConfig, kwargs: dict[str, Any]) -> PreTrainedModel:
    """``from_pretrained``; a checkpoint whose widths are pruned per layer (a shape the config cannot state) is
    built at its recorded widths first, then loaded by transformers' own loader (checkpoint key renaming, dtype,
    device_map, tied weights, generation config)."""
    widths = (pruning_record_of(hf_config) or {}).get("widths") or {}
    if widths.get("layout") != "per_layer":
        return AutoModelForImageTextToText.from_pretrained(pretrained, **kwargs)
    model_class = MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING[type(hf_config)]
    try:
        model, info = _at_widths(model_class, widths["kept"]).from_pretrained(pretrained, output_loading_info=True,
                                                                              **kwargs)
    except RuntimeError as error:
        if "ignore_mismatched_sizes" not in str(error):
            raise
        raise ValueError("the weights do not fit the per-layer widths that config.json states (topo_pruning.widths): "
                         "a weight's shape differs (transformers' loading report above names it)") from error
    unloaded = sorted(info["missing_keys"] | info["unexpected_keys"])  # a mismatched shape raises in transformers
    if unloaded:
        raise ValueError(f"the weights do not fit the recorded per-layer widths: {len(unloaded)} keys missing or "
                         f"unexpected, e.g. {unloaded[0]}")
    model.__class__ = model_class  # the loaded model is a plain instance of its class
    return model


def model_class_at_widths(hf_config: PretrainedConfig) -> type[PreTrainedModel]:
    """The model class of ``hf_config``, built at the per-layer widths its pruning record states (if any)."""
    model_class = MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING[type(hf_config)]
    widths = (pruning_record_of(hf_config) or {}).get("widths") or {}
    return _at_widths(model_class, widths["kept"]) if widths.get("layout") == "per_layer" else model_class


def _at_widths(model_class: type[PreTrainedModel], kept: dict[str, list[int]]) -> type[PreTrainedModel]:
    """``model_class`` (same name) whose construction ends with :func:`slice_widths` of ``kept``, so that
    ``from_pretrained`` creates the pruned shapes (on the meta device) before it loads the weights into them."""

    def __init__(self, config, *args, **kwargs):
        model_class.__init__(self, config, *args, **kwargs)
        slice_widths(adapter_class_for(config)(self), kept)

    return type(model_class.__name__, (model_class,), {"__init__": __init__, "__module__": model_class.__module__,
                                                        "__qualname__": model_class.__qualname__})
