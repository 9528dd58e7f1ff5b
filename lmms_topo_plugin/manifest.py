"""lmms-eval entry point (group ``lmms_eval.models``): registers ``--model topo_pruned``."""

from lmms_eval.models.registry_v2 import ModelManifest


def manifests() -> list[ModelManifest]:
    """The chat implementation is the default; ``--force_simple`` selects the simple one."""
    return [
        ModelManifest(
            model_id="topo_pruned",
            chat_class_path="lmms_topo_plugin.lmms_model.TopoPrunedChat",
            simple_class_path="lmms_topo_plugin.lmms_model.TopoPrunedSimple",
        )
    ]
