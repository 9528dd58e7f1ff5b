"""Tiny random-weight vision-language models of real transformers architectures, built offline from the recipes
of the family modules (:data:`lmms_topo_plugin.families.TINY_RECIPES`). The default model
(:mod:`lmms_topo_plugin.tools.training.model`), the demo model (``topo-prune build-demo-model``) and the tests are
built with them.

Each family is saved like a Hub checkpoint (config, safetensors weights, generation config,
tokenizer, image processor, processor and chat template), so code under test loads it through
the same `from_pretrained` paths as a real model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image
from transformers import AutoModelForImageTextToText, PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerFast
from transformers.processing_utils import ProcessorMixin

from lmms_topo_plugin.families import image_only_processor_class, tiny_recipe
from lmms_topo_plugin.families.recipe import TinyRecipe
from lmms_topo_plugin.families.tokenizer import build_tokenizer

NUM_HEADS = 4
NUM_KV_HEADS = 2

# -- builders -------------------------------------------------------------------------------------


def tiny_tokenizer(family: str, vocab_words: list[str] | None = None) -> PreTrainedTokenizerFast:
    """The family's word-level tokenizer, with its special tokens and chat template."""
    spec = tiny_recipe(family)
    return build_tokenizer(vocab_words, spec.special_tokens, chat_template=spec.chat_template)


def _mrope_section(head_dim: int) -> list[int]:
    """Temporal, height and width shares of the rotary half-dimension, in the real 2:3:3 ratio."""
    half = head_dim // 2
    temporal = half // 4
    height = (half - temporal) // 2
    return [temporal, height, half - temporal - height]


def _text_config(
    spec: TinyRecipe, tokenizer: PreTrainedTokenizerFast, num_layers: int, hidden_size: int, overrides: dict | None = None
) -> dict:
    """The decoder's sub-config: `num_layers` layers, grouped-query attention, the tokenizer's ids, then `overrides`."""
    if hidden_size % (2 * NUM_HEADS):
        raise ValueError(f"hidden_size must be a multiple of {2 * NUM_HEADS}, got {hidden_size}")
    text = dict(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_KV_HEADS,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    text.update(spec.text_kwargs)
    if spec.mrope:
        mrope_section = _mrope_section(hidden_size // NUM_HEADS)
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_section}
    text.update(overrides or {})
    return text


def tiny_config(
    family: str,
    *,
    num_layers: int = 4,
    hidden_size: int = 64,
    tokenizer: PreTrainedTokenizerFast | None = None,
    text_overrides: dict | None = None,
) -> PreTrainedConfig:
    """The family's tiny config (no weights); token ids come from `tokenizer` (default: `tiny_tokenizer`).

    `text_overrides` are extra text-config fields, e.g. ``use_sliding_window``/``max_window_layers`` for Qwen2-VL.
    """
    spec = tiny_recipe(family)
    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer(family)
    token_ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in spec.token_fields.items()}
    config_class = getattr(transformers, spec.config_class)
    return config_class(
        text_config=_text_config(spec, tokenizer, num_layers, hidden_size, text_overrides),
        vision_config=spec.vision_config(hidden_size),
        **token_ids,
        **spec.config_kwargs,
    )


def tiny_processor(family: str, tokenizer: PreTrainedTokenizerFast | None = None) -> ProcessorMixin:
    """The family's processor (image-only where the real one needs torchvision for videos)."""
    spec = tiny_recipe(family)
    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer(family)
    image_processor = getattr(transformers, spec.image_processor_class)(**spec.image_processor_kwargs)
    processor_class = image_only_processor_class(getattr(transformers, spec.processor_class))
    return processor_class(image_processor, tokenizer, chat_template=spec.chat_template, **spec.processor_kwargs)


def tiny_model(config: PreTrainedConfig, tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> PreTrainedModel:
    """Random weights for `config`, deterministic in `seed`, without touching the global RNG.

    Its generation config suppresses every special token but eos, as trained models never emit
    them: a random one would, and an image placeholder it emitted would count as an image once the
    sequence is re-fed without KV cache.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config)
    special_ids = [i for i, token in tokenizer.added_tokens_decoder.items() if token.special]
    model.generation_config.update(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        suppress_tokens=[i for i in special_ids if i != tokenizer.eos_token_id],
    )
    return model.eval()


def build_tiny_vlm(
    family: str,
    out_dir: str | Path,
    *,
    num_layers: int = 4,
    hidden_size: int = 64,
    seed: int = 0,
    vocab_words: list[str] | None = None,
    text_overrides: dict | None = None,
) -> Path:
    """Builds a tiny random model of `family` with its processor and saves both into `out_dir`."""
    out_dir = Path(out_dir)
    tokenizer = tiny_tokenizer(family, vocab_words)
    config = tiny_config(
        family, num_layers=num_layers, hidden_size=hidden_size, tokenizer=tokenizer, text_overrides=text_overrides
    )
    tiny_model(config, tokenizer, seed).save_pretrained(out_dir)
    tiny_processor(family, tokenizer).save_pretrained(out_dir)
    return out_dir


# -- example inputs ------------------------------------------------------------------------------


def example_messages(question: str = "What is in the image?") -> list[dict]:
    """One user turn with an image followed by `question`, in the Hugging Face chat format."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


def example_image(seed: int = 0, size: tuple[int, int] = (48, 32)) -> Image.Image:
    """A small random RGB image of `size` (width, height), deterministic in `seed`."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)
