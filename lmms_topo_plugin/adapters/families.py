"""One adapter class per supported architecture family."""

from __future__ import annotations

from lmms_topo_plugin.adapters.base import VLMAdapter


class LlavaAdapter(VLMAdapter):
    """LLaVA-1.5 and LLaVA-NeXT: CLIP vision tower, projector, Llama/Mistral/Vicuna decoder."""

    model_types = ("llava", "llava_next")


class QwenVLAdapter(VLMAdapter):
    """Qwen2-VL and Qwen2.5-VL: native-resolution ViT with patch merger, Qwen2 decoder with M-RoPE."""

    model_types = ("qwen2_vl", "qwen2_5_vl")
    vision_tower_attr = "visual"


class Idefics3Adapter(VLMAdapter):
    """Idefics3 and SmolVLM: SigLIP vision encoder, pixel-shuffle connector, Llama decoder."""

    model_types = ("idefics3", "smolvlm")
    text_model_attr = "text_model"
    vision_tower_attr = "vision_model"
    nested_images = True


ADAPTER_CLASSES: tuple[type[VLMAdapter], ...] = (LlavaAdapter, QwenVLAdapter, Idefics3Adapter)
