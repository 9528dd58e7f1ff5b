"""Turn prompts (chat messages + images) into model inputs through the checkpoint's own processor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from PIL import Image
from transformers import BatchFeature

from lmms_topo_plugin.families import VLMAdapter


@dataclass
class Prompt:
    """One chat prompt in Hugging Face format, with images as ``{"type": "image"}`` placeholders.

    ``images`` holds the PIL images in the order their placeholders appear.
    """

    messages: list[dict[str, Any]]
    images: list[Image.Image] = field(default_factory=list)

    @classmethod
    def from_text(cls, text: str, images: Sequence[Image.Image] = ()) -> "Prompt":
        """A single user turn: the images first, then the text (the usual VQA layout)."""
        content: list[dict[str, Any]] = [{"type": "image"} for _ in images]
        content.append({"type": "text", "text": text})
        return cls([{"role": "user", "content": content}], [_rgb(image) for image in images])

    @classmethod
    def from_lmms_messages(cls, messages: Sequence[dict[str, Any]]) -> "Prompt":
        """Convert lmms-eval protocol messages (images under ``url``) to a prompt."""
        converted, images = [], []
        for message in messages:
            content = message["content"]
            if isinstance(content, str):
                content = [{"type": "text", "text": content}]
            parts = []
            for part in content:
                kind = part["type"]
                if kind == "text":
                    parts.append({"type": "text", "text": part["text"]})
                elif kind == "image":
                    parts.append({"type": "image"})
                    images.append(_rgb(part.get("url", part.get("image"))))
                else:
                    raise ValueError(f"topo_pruned handles text and image content, not {kind!r}")
            converted.append({"role": message["role"], "content": parts})
        return cls(converted, images)


def _rgb(image: Any) -> Image.Image:
    if isinstance(image, str):
        image = Image.open(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image or an image path, got {type(image).__name__}")
    return image.convert("RGB")


def render(processor: Any, prompt: Prompt, *, add_generation_prompt: bool = True) -> str:
    """The prompt as text, through the checkpoint's chat template."""
    if not getattr(processor, "chat_template", None):
        raise ValueError("the checkpoint's processor has no chat template; topo_pruned needs one to build prompts")
    return processor.apply_chat_template(
        prompt.messages, add_generation_prompt=add_generation_prompt, tokenize=False
    )


def encode(
    processor: Any, adapter: VLMAdapter, prompts: Sequence[Prompt], *, suffixes: Sequence[str] | None = None
) -> BatchFeature:
    """Tokenise a batch of prompts (left-padded) with their images; ``suffixes`` are appended verbatim.

    The shared processor is not modified: left padding (generation appends on the right of every row) is
    asked for in this call only.
    """
    texts = [render(processor, prompt) for prompt in prompts]
    if suffixes is not None:
        texts = [text + suffix for text, suffix in zip(texts, suffixes, strict=True)]
    kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True, "padding_side": "left"}
    if any(prompt.images for prompt in prompts):
        if adapter.nested_images:
            kwargs["images"] = [prompt.images for prompt in prompts]
        else:
            kwargs["images"] = [image for prompt in prompts for image in prompt.images]
    return processor(**kwargs)
