"""What a family's tiny random-weight model is made of; :mod:`lmms_topo_plugin.families.tiny` builds it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

VISION_WIDTH = 32

# The chat templates render a message's content, a string or a list of image/text items, through this macro.
RENDER_CONTENT = (
    "{% macro render(content, image) %}"
    "{% if content is string %}{{ content }}{% else %}{% for item in content %}"
    "{% if item['type'] == 'image' %}{{ image }}{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% endmacro %}"
)


@dataclass(frozen=True)
class TinyRecipe:
    """How one model type's tiny model differs: classes, tokens, template, processing and config fields."""

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
