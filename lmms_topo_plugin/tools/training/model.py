"""The default model's architecture: LLaVA (CLIP vision tower, MLP projector, Llama decoder) sized for the
synthetic benchmark, with the word-level tokenizer, CLIP image processor and LLaVA chat template of the tiny
test models.

The CLIP tower sees the 64 px image in 16 px patches, so each of the 16 image tokens is one grid cell.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import transformers
from transformers import LlavaConfig, PreTrainedTokenizerFast
from transformers.processing_utils import ProcessorMixin

from lmms_topo_plugin.synthbench import CELL, GRID, vocabulary
from lmms_topo_plugin.families.llava import Clip
from lmms_topo_plugin.families.tiny import tiny_model, tiny_tokenizer

CLIP = Clip(image_size=GRID * CELL, patch_size=CELL)


@dataclass(frozen=True)
class ModelSpec:
    """Sizes of the model; the defaults are the shipped default model's."""

    text_layers: int = 12
    text_width: int = 160
    text_heads: int = 4
    text_kv_heads: int = 4
    text_mlp: int = 384
    vision_layers: int = 2
    vision_width: int = 96
    vision_heads: int = 4
    vision_mlp: int = 192

    def to_dict(self) -> dict:
        return asdict(self)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the benchmark's vocabulary, with LLaVA's special tokens and chat template."""
    return tiny_tokenizer("llava", vocabulary())


def build_processor(tokenizer: PreTrainedTokenizerFast | None = None) -> ProcessorMixin:
    """A `LlavaProcessor`: 64 px CLIP preprocessing, one `<image>` token per 16 px patch."""
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer()
    image_processor = transformers.CLIPImageProcessorPil(**CLIP.image_processor_kwargs())
    return transformers.LlavaProcessor(
        image_processor, tokenizer, chat_template=tokenizer.chat_template, **CLIP.processor_kwargs()
    )


def build_config(spec: ModelSpec, tokenizer: PreTrainedTokenizerFast) -> LlavaConfig:
    """The `LlavaConfig`: last-layer CLIP patch features (CLS dropped) feed a Llama decoder."""
    text = dict(
        model_type="llama",
        hidden_size=spec.text_width,
        intermediate_size=spec.text_mlp,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_kv_heads,
        vocab_size=len(tokenizer),
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(
        model_type="clip_vision_model",
        hidden_size=spec.vision_width,
        intermediate_size=spec.vision_mlp,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        projection_dim=spec.vision_width,
        image_size=CLIP.image_size,
        patch_size=CLIP.patch_size,
    )
    config_kwargs = dict(CLIP.config_kwargs(), vision_feature_layer=-1)
    return LlavaConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        **config_kwargs,
    )


def build_model(spec: ModelSpec, seed: int = 0):
    """(model, processor) with random weights deterministic in `seed`; the model is in train mode."""
    tokenizer = build_tokenizer()
    model = tiny_model(build_config(spec, tokenizer), tokenizer, seed)
    return model.train(), build_processor(tokenizer)
