"""Architecture adapters: look up the adapter for a config's ``model_type``."""

from __future__ import annotations

from transformers import PretrainedConfig, PreTrainedModel

from lmms_topo_plugin.errors import UnsupportedArchitectureError
from lmms_topo_plugin.adapters.base import VLMAdapter
from lmms_topo_plugin.adapters.families import ADAPTER_CLASSES

_BY_MODEL_TYPE: dict[str, type[VLMAdapter]] = {
    model_type: cls for cls in ADAPTER_CLASSES for model_type in cls.model_types
}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted(_BY_MODEL_TYPE))


def adapter_class_for(config: PretrainedConfig) -> type[VLMAdapter]:
    """The adapter class for ``config``; a clear error listing the supported families otherwise."""
    model_type = getattr(config, "model_type", None)
    try:
        return _BY_MODEL_TYPE[model_type]
    except KeyError:
        raise UnsupportedArchitectureError(
            f"model_args: pretrained has architecture {model_type!r}, which topo_pruned does not support; "
            f"supported model_type values: {', '.join(SUPPORTED_MODEL_TYPES)}"
        ) from None


def get_adapter(model: PreTrainedModel) -> VLMAdapter:
    """Wrap a loaded model in its family's adapter."""
    return adapter_class_for(model.config)(model)


__all__ = ["VLMAdapter", "SUPPORTED_MODEL_TYPES", "adapter_class_for", "get_adapter"]
