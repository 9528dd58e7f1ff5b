"""lmms-eval entry point (group ``lmms_eval.models``): registers ``--model topo_pruned``.

lmms-eval 0.7.3 loads every plugin's entry point without per-plugin error handling, so this module must never
raise and stays import-light: it imports nothing but lmms-eval's own registry (already loaded by then), and
no torch, transformers or matplotlib. The model classes are imported by lmms-eval only when selected.
"""

from __future__ import annotations

import sys

MODEL_ID = "topo_pruned"
CHAT_CLASS = "lmms_topo_plugin.integrations.lmms_eval.model.TopoPrunedChat"
SIMPLE_CLASS = "lmms_topo_plugin.integrations.lmms_eval.model.TopoPrunedSimple"


def manifests() -> list:
    """The chat implementation is the default; ``--force_simple`` selects the simple one.

    Returns ``[]`` (with a one-line warning) when this lmms-eval has no manifest registry, instead of raising
    and stopping the plugins registered after this one.
    """
    try:
        from lmms_eval.models.registry_v2 import ModelManifest

        return [ModelManifest(model_id=MODEL_ID, chat_class_path=CHAT_CLASS, simple_class_path=SIMPLE_CLASS)]
    except Exception as error:  # noqa: BLE001  (an entry point must not break the harness)
        print(f"lmms_topo_plugin: cannot register --model {MODEL_ID} with this lmms-eval "
              f"({type(error).__name__}: {error}); lmms-eval>=0.7.3,<0.8 is supported", file=sys.stderr)
        return []
