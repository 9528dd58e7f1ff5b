"""The supported architecture families: one module each (:mod:`.llava`, :mod:`.llava_next`, :mod:`.qwen`,
:mod:`.idefics3`), listed once in :data:`FAMILIES`. Every lookup by ``model_type`` (the adapter, the ONNX vision
graph, the tiny test-model recipe, the image-only processor stand-ins) is derived from that table, so adding a
family is adding its module and one line to it."""

from __future__ import annotations

from transformers import PretrainedConfig, PreTrainedModel
from transformers.processing_utils import ProcessorMixin

from lmms_topo_plugin.errors import UnsupportedArchitectureError
from lmms_topo_plugin.families import idefics3, llava, llava_next, qwen
from lmms_topo_plugin.families.base import Family, VLMAdapter
from lmms_topo_plugin.families.onnx_graph import OnnxFamily
from lmms_topo_plugin.families.recipe import TinyRecipe

FAMILIES: tuple[Family, ...] = (llava.FAMILY, llava_next.FAMILY, qwen.FAMILY, idefics3.FAMILY)

_BY_MODEL_TYPE: dict[str, Family] = {model_type: family for family in FAMILIES for model_type in family.model_types}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted(_BY_MODEL_TYPE))
# model_type values with an ONNX export, and their vision graphs
ONNX_FAMILIES: dict[str, OnnxFamily] = {model_type: graph for family in FAMILIES
                                        for model_type, graph in family.onnx.items()}
ONNX_MODEL_TYPES: tuple[str, ...] = tuple(ONNX_FAMILIES)
# model_type values with a tiny random-weight test model (:mod:`.tiny`), and their recipes
TINY_RECIPES: dict[str, TinyRecipe] = {model_type: recipe for family in FAMILIES
                                       for model_type, recipe in family.tiny.items()}
TINY_MODEL_TYPES: tuple[str, ...] = tuple(TINY_RECIPES)
# processor classes that need torchvision → their image-only stand-ins
IMAGE_ONLY_PROCESSORS: dict[type[ProcessorMixin], type[ProcessorMixin]] = {
    real: stand_in for family in FAMILIES for real, stand_in in family.image_only_processors.items()}


def family_for(model_type: str | None) -> Family:
    """The family of ``model_type``; a clear error listing the supported ones otherwise."""
    try:
        return _BY_MODEL_TYPE[model_type]
    except KeyError:
        raise UnsupportedArchitectureError(
            f"model_args: pretrained has architecture {model_type!r}, which topo_pruned does not support; "
            f"supported model_type values: {', '.join(SUPPORTED_MODEL_TYPES)}"
        ) from None


def adapter_class_for(config: PretrainedConfig) -> type[VLMAdapter]:
    """The adapter class for ``config``'s ``model_type`` (:func:`family_for`'s error otherwise)."""
    return family_for(getattr(config, "model_type", None)).adapter


def get_adapter(model: PreTrainedModel) -> VLMAdapter:
    """Wrap a loaded model in its family's adapter."""
    return adapter_class_for(model.config)(model)


def image_only_processor_class(processor_cls: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """The image-only stand-in for `processor_cls` if it has one, else `processor_cls` itself."""
    return IMAGE_ONLY_PROCESSORS.get(processor_cls, processor_cls)


def tiny_recipe(model_type: str) -> TinyRecipe:
    """The tiny test-model recipe of ``model_type``, or a ValueError naming the allowed ones."""
    if model_type not in TINY_RECIPES:
        raise ValueError(f"unknown model family {model_type!r}; expected one of {', '.join(TINY_MODEL_TYPES)}")
    return TINY_RECIPES[model_type]


__all__ = [
    "FAMILIES", "Family", "VLMAdapter", "SUPPORTED_MODEL_TYPES", "ONNX_FAMILIES", "ONNX_MODEL_TYPES", "TINY_RECIPES",
    "TINY_MODEL_TYPES", "IMAGE_ONLY_PROCESSORS", "family_for", "adapter_class_for", "get_adapter",
    "image_only_processor_class", "tiny_recipe",
]
