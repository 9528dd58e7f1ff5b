"""``token_method=halfv`` without ``token_layer``: the IVR layer detected on the (layer-pruned) model itself.

The visual truncated-matrix-entropy curve of :mod:`.lifecycle` over calibration prompts (``calib_limit``, default
100, as ``topo-prune analyze --what entropy``), its IVR layer by :func:`~.lifecycle.detect_stages`. The curve is
cached on disk under the model's fingerprint, its removed layers and the prompts, so a second run only reads it.
"""

from __future__ import annotations

from loguru import logger

from ..cache import DiskCache, cache_key
from ..calib_data import prompts_fingerprint
from ..calibration import run_collectors
from ..loading import LoadedModel
from .lifecycle import TOKEN_SETS, EntropyCollector, detect_stages

LIFECYCLE_SAMPLES = 100
ENTROPY_K = 50


def detected_ivr_layer(loaded: LoadedModel, prompts: list, model_id: str, removed: list[int], cache: DiskCache,
                       batch_size: int) -> dict:
    """``{"layer": IVR layer, "samples": N, "cached": bool}`` of the model as it is now (after layer removal)."""
    key = cache_key("ivr", model_id, sorted(removed), prompts_fingerprint(prompts), ENTROPY_K)
    curve = cache.get_json("lifecycle", key)
    cached = curve is not None
    if not cached:
        adapter = loaded.adapter
        entropy = run_collectors(adapter, loaded.processor, prompts,
                                 [EntropyCollector(adapter.num_layers, adapter.final_norm, ENTROPY_K)],
                                 batch_size=batch_size, desc="Entropy (IVR layer)")["truncated_entropy"]
        curve = entropy[:, TOKEN_SETS.index("visual")].tolist()
        cache.put_json("lifecycle", key, curve)
    layer = detect_stages(curve).ivr
    logger.info(f"topo_pruned: token_method=halfv: IVR layer {layer} detected on {len(prompts)} calibration prompts"
                + (" (cached)" if cached else ""))
    return {"layer": layer, "samples": len(prompts), "cached": cached}
