"""Load a checkpoint's processor, with the image-only stand-ins of processors that need torchvision.

Without torchvision, transformers 5 cannot build some families' processors (Qwen2-VL, Qwen2.5-VL: their video
processor needs it); those families' modules define image-only stand-ins, listed in
:data:`lmms_topo_plugin.families.IMAGE_ONLY_PROCESSORS`, which process images and text with the real class's code.
"""

from __future__ import annotations

import os

from transformers import AutoConfig, AutoProcessor
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING
from transformers.processing_utils import ProcessorMixin
from transformers.utils import is_torchvision_available

from lmms_topo_plugin.families import IMAGE_ONLY_PROCESSORS


def load_processor(path_or_id: str | os.PathLike, **kwargs) -> ProcessorMixin:
    """Loads the processor of a checkpoint (a directory or a Hub id); `kwargs` go to `from_pretrained`.

    `AutoProcessor` is used whenever torchvision is installed, and for every family without a
    stand-in; otherwise the image-only stand-in loads the same files.
    """
    if not is_torchvision_available():
        config_cls = type(AutoConfig.from_pretrained(path_or_id))
        stand_in = IMAGE_ONLY_PROCESSORS.get(PROCESSOR_MAPPING[config_cls]) if config_cls in PROCESSOR_MAPPING else None
        if stand_in is not None:
            return stand_in.from_pretrained(path_or_id, **kwargs)
    return AutoProcessor.from_pretrained(path_or_id, **kwargs)
