"""Load a checkpoint's processor, with image-only stand-ins for processors that need torchvision.

Without torchvision, transformers 5 cannot build a Qwen2-VL or Qwen2.5-VL processor at all:
`AutoProcessor.from_pretrained` fails loading `Qwen2VLVideoProcessor` (a torchvision-only class),
and constructing the processor with `video_processor=None` fails too, because `ProcessorMixin`
checks every constructor argument against `VideoProcessorMixin`, which is not importable then.
The stand-ins here are subclasses whose constructor has no video processor, so images and text
are processed by the real class's code while videos are unsupported.
"""

from __future__ import annotations

import os

import transformers
from transformers import AutoConfig, AutoProcessor
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING
from transformers.processing_utils import ProcessorMixin
from transformers.utils import is_torchvision_available


class _WithoutVideo:
    """Mixin: a processor constructor without the `video_processor` argument (nor attribute)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        # ProcessorMixin reads its sub-processors off this signature and pairs them with the positional
        # arguments the real constructor passes on, so the trailing None video processor is dropped.
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    def validate_inputs(self, images=None, text=None, videos=None, audio=None, **kwargs):
        """Rejects videos, which only the torchvision video processor handles."""
        if videos is not None:
            raise ValueError(f"this image-only {type(self).__name__} takes no videos: they need torchvision")
        super().validate_inputs(images=images, text=text, videos=videos, audio=audio, **kwargs)

    def save_pretrained(self, save_directory, **kwargs):
        """Saves like the full processor, plus the image processor's own `preprocessor_config.json`.

        That file is what Hub checkpoints of these families carry: loaders that have torchvision
        derive the missing video processor from it, so the directory loads with `AutoProcessor` there.
        """
        files = super().save_pretrained(save_directory, **kwargs)
        return files + self.image_processor.save_pretrained(save_directory)


# Named like the classes they stand in for, so that saved files name a class every loader knows.
class Qwen2VLProcessor(_WithoutVideo, transformers.Qwen2VLProcessor):
    """Image-only Qwen2-VL processor."""


class Qwen2_5_VLProcessor(_WithoutVideo, transformers.Qwen2_5_VLProcessor):
    """Image-only Qwen2.5-VL processor."""


_IMAGE_ONLY = {
    transformers.Qwen2VLProcessor: Qwen2VLProcessor,
    transformers.Qwen2_5_VLProcessor: Qwen2_5_VLProcessor,
}


def image_only_processor_class(processor_cls: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """The image-only stand-in for `processor_cls` if it has one, else `processor_cls` itself."""
    return _IMAGE_ONLY.get(processor_cls, processor_cls)


def load_processor(path_or_id: str | os.PathLike, **kwargs) -> ProcessorMixin:
    """Loads the processor of a checkpoint (a directory or a Hub id); `kwargs` go to `from_pretrained`.

    `AutoProcessor` is used whenever torchvision is installed, and for every family without a
    stand-in; otherwise the image-only stand-in loads the same files.
    """
    if not is_torchvision_available():
        config_cls = type(AutoConfig.from_pretrained(path_or_id))
        stand_in = _IMAGE_ONLY.get(PROCESSOR_MAPPING[config_cls]) if config_cls in PROCESSOR_MAPPING else None
        if stand_in is not None:
            return stand_in.from_pretrained(path_or_id, **kwargs)
    return AutoProcessor.from_pretrained(path_or_id, **kwargs)
