"""``token_method=halfv`` with its stages left open: the IVR and SSR layers and the SSR mode, detected on the
(layer-pruned) model itself.

The visual truncated-matrix-entropy curve of :mod:`.lifecycle` over calibration prompts (``calib_limit``, default
100, as ``topo-prune analyze --what entropy``) gives both layers (:func:`~.lifecycle.detect_stages`); the SSR mode
is ``freeze`` when freezing the visual tokens from the SSR layer on changes the next-token distribution by a mean
KL of at most :data:`~.lifecycle.KL_THRESHOLD`, else ``top5``. The curve and the KL are cached on disk under the
model's fingerprint, its removed layers and the prompts, so a second run only reads them.
"""

from __future__ import annotations

from typing import Any

from loguru import logger

from ..cache import DiskCache, cache_key
from ..calib_data import prompts_fingerprint
from ..calibration import run_collectors
from ..loading import LoadedModel
from .lifecycle import KL_THRESHOLD, TOKEN_SETS, EntropyCollector, detect_stages, freezing_kl

LIFECYCLE_SAMPLES = 100
ENTROPY_K = 50


def detected_stages(loaded: LoadedModel, prompts: list, model_id: str, removed: list[int], cache: DiskCache,
                    batch_size: int, *, ssr_kl: bool) -> dict[str, Any]:
    """``{"ivr_layer", "ssr_layer", "samples", "cached"}`` of the model as it is now (after layer removal), with
    ``"kl_at_ssr"`` and the ``"ssr_mode"`` it implies when ``ssr_kl``."""
    adapter, prompts_key = loaded.adapter, prompts_fingerprint(prompts)
    key = cache_key("ivr", model_id, sorted(removed), prompts_key, ENTROPY_K)
    curve = cache.get_json("lifecycle", key)
    cached = curve is not None
    if not cached:
        entropy = run_collectors(adapter, loaded.processor, prompts,
                                 [EntropyCollector(adapter.num_layers, adapter.final_norm, ENTROPY_K)],
                                 batch_size=batch_size, desc="Entropy (HalfV stages)")["truncated_entropy"]
        curve = entropy[:, TOKEN_SETS.index("visual")].tolist()
        cache.put_json("lifecycle", key, curve)
    stages = detect_stages(curve)
    found: dict[str, Any] = {"ivr_layer": stages.ivr, "ssr_layer": stages.ssr, "samples": len(prompts)}
    if ssr_kl:
        kl_key = cache_key("ssr-kl", model_id, sorted(removed), prompts_key, stages.ssr)
        kl = cache.get_json("lifecycle", kl_key)
        cached = cached and kl is not None
        if kl is None:
            kl = freezing_kl(adapter, loaded.processor, prompts, batch_size=batch_size, layers=[stages.ssr])[0]
            cache.put_json("lifecycle", kl_key, kl)
        found |= {"kl_at_ssr": kl, "ssr_mode": "freeze" if kl <= KL_THRESHOLD else "top5"}
    found["cached"] = cached
    logger.info(f"topo_pruned: token_method=halfv: IVR layer {stages.ivr}, SSR layer {stages.ssr}"
                + (f" (KL of freezing there {found['kl_at_ssr']:.2g}: {found['ssr_mode']})" if ssr_kl else "")
                + f", detected on {len(prompts)} calibration prompts" + (" (cached)" if cached else ""))
    return found
