"""Tiny random-weight vision-language models of real transformers architectures, built offline.

Each family is saved like a Hub checkpoint (config, safetensors weights, generation config,
tokenizer, image processor, processor and chat template), so code under test loads it through
the same `from_pretrained` paths as a real model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image
from transformers import AutoModelForImageTextToText, PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerFast
from transformers.processing_utils import ProcessorMixin

from lmms_topo_plugin.models.processors import image_only_processor_class
from lmms_topo_plugin.testing.tokenizer import build_tokenizer

FAMILIES = ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "idefics3")

NUM_HEADS = 4
NUM_KV_HEADS = 2
VISION_WIDTH = 32

# -- chat templates: the real families' formats, over tokens the tiny tokenizers have ------------

_RENDER_CONTENT = (
    "{% macro render(content, image) %}"
    "{% if content is string %}{{ content }}{% else %}{% for item in content %}"
    "{% if item['type'] == 'image' %}{{ image }}{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% endmacro %}"
)

_LLAVA_TEMPLATE = _RENDER_CONTENT + (
    "{{ bos_token }}{% for message in messages %}"
    "{{ message['role'] | upper }}: {{ render(message['content'], '<image>\\n') }}"
    "{{ eos_token if message['role'] == 'assistant' else ' ' }}"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

# Mistral instruct format: the generation prompt is implicit after [/INST], as in the real template.
_MISTRAL_TEMPLATE = _RENDER_CONTENT + (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}[INST] {{ render(message['content'], '<image>\\n') }} [/INST]"
    "{% elif message['role'] == 'assistant' %}{{ render(message['content'], '') }}{{ eos_token }}"
    "{% else %}{{ render(message['content'], '') }}{{ '\\n\\n' }}{% endif %}"
    "{% endfor %}"
)

_QWEN_TEMPLATE = _RENDER_CONTENT + (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{{ render(message['content'], '<|vision_start|><|image_pad|><|vision_end|>') }}{{ '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_SMOLVLM_TEMPLATE = _RENDER_CONTENT + (
    "{{ bos_token }}{% for message in messages %}"
    "{% set starts_with_image = message['content'] is not string and message['content'][0]['type'] == 'image' %}"
    "{{ message['role'] | capitalize }}{{ ':' if starts_with_image else ': ' }}"
    "{{ render(message['content'], '<image>') }}{{ '<end_of_utterance>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# -- per-family table -----------------------------------------------------------------------------

_CLIP_VISION = dict(
    model_type="clip_vision_model",
    hidden_size=VISION_WIDTH,
    intermediate_size=2 * VISION_WIDTH,
    num_hidden_layers=2,
    num_attention_heads=2,
    projection_dim=VISION_WIDTH,
)
_LLAVA_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "image": ["<image>"]}
_QWEN_TOKENS = {
    "eos_token": "<|im_end|>",
    "pad_token": "<|endoftext|>",
    "markers": ["<|im_start|>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"],
}
_QWEN_TOKEN_FIELDS = {
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
}
# Qwen images are resized to multiples of patch_size * merge_size = 16 px, within 32x32 and 64x64 pixels.
_QWEN_IMAGE_PROCESSOR = dict(
    patch_size=8, merge_size=2, temporal_patch_size=2, size={"shortest_edge": 32 * 32, "longest_edge": 64 * 64}
)
_QWEN_VISION = dict(depth=2, num_heads=2, patch_size=8, spatial_merge_size=2, temporal_patch_size=2)
_LLAVA_NEXT_PINPOINTS = [[32, 32], [32, 64], [64, 32]]


@dataclass(frozen=True)
class _Clip:
    """A CLIP tower of `image_size` px in `patch_size` patches whose CLS feature is dropped."""

    image_size: int
    patch_size: int

    def vision_config(self, _text_hidden_size: int) -> dict:
        """The CLIP vision sub-config (its projector adapts to any text width)."""
        return dict(_CLIP_VISION, image_size=self.image_size, patch_size=self.patch_size)

    def image_processor_kwargs(self) -> dict:
        """Resize the short side to the tower's input size, then center-crop a square."""
        return dict(
            size={"shortest_edge": self.image_size}, crop_size={"height": self.image_size, "width": self.image_size}
        )

    def processor_kwargs(self) -> dict:
        """One image token per patch: CLS counted by the tower, then dropped by "default"."""
        return dict(patch_size=self.patch_size, vision_feature_select_strategy="default", num_additional_image_tokens=1)

    def config_kwargs(self) -> dict:
        """Features from the second-to-last layer, as LLaVA does."""
        return dict(
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
            image_seq_length=(self.image_size // self.patch_size) ** 2,
        )


_LLAVA_CLIP = _Clip(image_size=32, patch_size=8)
_LLAVA_NEXT_CLIP = _Clip(image_size=32, patch_size=16)


@dataclass(frozen=True)
class _Family:
    """How one family differs: classes, tokens, template, processing and config fields."""

    config_class: str
    processor_class: str
    image_processor_class: str
    image_processor_kwargs: dict
    special_tokens: dict
    chat_template: str
    token_fields: dict  # config field -> special token whose id it holds
    vision_config: Callable[[int], dict]  # text hidden size -> vision sub-config
    text_kwargs: dict = field(default_factory=dict)  # without model_type: the family's own text config
    mrope: bool = False
    processor_kwargs: dict = field(default_factory=dict)
    config_kwargs: dict = field(default_factory=dict)


_FAMILY_TABLE = {
    "llava": _Family(
        config_class="LlavaConfig",
        processor_class="LlavaProcessor",
        image_processor_class="CLIPImageProcessorPil",
        image_processor_kwargs=_LLAVA_CLIP.image_processor_kwargs(),
        special_tokens=_LLAVA_TOKENS,
        chat_template=_LLAVA_TEMPLATE,
        token_fields={"image_token_index": "<image>"},
        vision_config=_LLAVA_CLIP.vision_config,
        text_kwargs=dict(model_type="llama"),
        processor_kwargs=_LLAVA_CLIP.processor_kwargs(),
        config_kwargs=_LLAVA_CLIP.config_kwargs(),
    ),
    "llava_next": _Family(
        config_class="LlavaNextConfig",
        processor_class="LlavaNextProcessor",
        image_processor_class="LlavaNextImageProcessorPil",
        image_processor_kwargs=dict(
            _LLAVA_NEXT_CLIP.image_processor_kwargs(), image_grid_pinpoints=_LLAVA_NEXT_PINPOINTS
        ),
        special_tokens=dict(_LLAVA_TOKENS, instruction=["[INST]", "[/INST]"]),
        chat_template=_MISTRAL_TEMPLATE,
        token_fields={"image_token_index": "<image>"},
        vision_config=_LLAVA_NEXT_CLIP.vision_config,
        text_kwargs=dict(model_type="mistral", sliding_window=None),
        processor_kwargs=_LLAVA_NEXT_CLIP.processor_kwargs(),
        config_kwargs=dict(_LLAVA_NEXT_CLIP.config_kwargs(), image_grid_pinpoints=_LLAVA_NEXT_PINPOINTS),
    ),
    "qwen2_vl": _Family(
        config_class="Qwen2VLConfig",
        processor_class="Qwen2VLProcessor",
        image_processor_class="Qwen2VLImageProcessorPil",
        image_processor_kwargs=_QWEN_IMAGE_PROCESSOR,
        special_tokens=_QWEN_TOKENS,
        chat_template=_QWEN_TEMPLATE,
        token_fields=_QWEN_TOKEN_FIELDS,
        vision_config=lambda hidden: dict(_QWEN_VISION, embed_dim=VISION_WIDTH, mlp_ratio=2, hidden_size=hidden),
        mrope=True,
    ),
    "qwen2_5_vl": _Family(
        config_class="Qwen2_5_VLConfig",
        processor_class="Qwen2_5_VLProcessor",
        image_processor_class="Qwen2VLImageProcessorPil",
        image_processor_kwargs=_QWEN_IMAGE_PROCESSOR,
        special_tokens=_QWEN_TOKENS,
        chat_template=_QWEN_TEMPLATE,
        token_fields=_QWEN_TOKEN_FIELDS,
        # window_size is in pixels: 32 px = 2x2 merged patches, so window attention really partitions;
        # block 1 is a full-attention block as in the real model's fullatt_block_indexes.
        vision_config=lambda hidden: dict(
            _QWEN_VISION,
            hidden_size=VISION_WIDTH,
            intermediate_size=2 * VISION_WIDTH,
            out_hidden_size=hidden,
            window_size=32,
            fullatt_block_indexes=[1],
        ),
        mrope=True,
    ),
    "idefics3": _Family(
        config_class="Idefics3Config",
        processor_class="Idefics3Processor",
        image_processor_class="Idefics3ImageProcessorPil",
        image_processor_kwargs=dict(
            do_image_splitting=False, size={"longest_edge": 32}, max_image_size={"longest_edge": 32}
        ),
        special_tokens={
            "bos_token": "<|im_start|>",
            "eos_token": "<end_of_utterance>",
            "pad_token": "<|im_end|>",
            "image": ["<fake_token_around_image>", "<image>", "<global-img>"],
        },
        chat_template=_SMOLVLM_TEMPLATE,
        # the deprecated top-level pad id would otherwise default to 128002, outside the vocabulary
        token_fields={"image_token_id": "<image>", "pad_token_id": "<|im_end|>"},
        vision_config=lambda _: dict(
            hidden_size=VISION_WIDTH,
            intermediate_size=2 * VISION_WIDTH,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=4,
        ),
        text_kwargs=dict(model_type="llama"),
        # (32 / 4)^2 patches, merged 2x2 by pixel shuffle: 16 image tokens.
        processor_kwargs=dict(image_seq_len=16),
        config_kwargs=dict(scale_factor=2),
    ),
}


def _family(name: str) -> _Family:
    """The table entry of `name`, or a ValueError naming the allowed families."""
    if name not in _FAMILY_TABLE:
        raise ValueError(f"unknown model family {name!r}; expected one of {', '.join(FAMILIES)}")
    return _FAMILY_TABLE[name]


# -- builders -------------------------------------------------------------------------------------


def tiny_tokenizer(family: str, vocab_words: list[str] | None = None) -> PreTrainedTokenizerFast:
    """The family's word-level tokenizer, with its special tokens and chat template."""
    spec = _family(family)
    return build_tokenizer(vocab_words, spec.special_tokens, chat_template=spec.chat_template)


def _mrope_section(head_dim: int) -> list[int]:
    """Temporal, height and width shares of the rotary half-dimension, in the real 2:3:3 ratio."""
    half = head_dim // 2
    temporal = half // 4
    height = (half - temporal) // 2
    return [temporal, height, half - temporal - height]


def _text_config(
    spec: _Family, tokenizer: PreTrainedTokenizerFast, num_layers: int, hidden_size: int, overrides: dict | None = None
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
    spec = _family(family)
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
    spec = _family(family)
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
