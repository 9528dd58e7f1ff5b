"""``token_method=halfv`` with its stages left open: the IVR and SSR layers and the SSR mode, detected on the
(layer-pruned) model itself.

The visual truncated-matrix-entropy curve of :mod:`.lifecycle` over calibration prompts (``calib_limit``, default
100, as ``topo-prune analyze --what entropy``) gives both layers (:func:`~.lifecycle.detect_stages`). The SSR mode
(:func:`~.lifecycle.ssr_mode_choice`) is ``freeze`` when top5 would keep none of the fewest visual tokens of a
calibration prompt (5% of 16 is 0; the KL is not computed then), else ``freeze`` when freezing the visual tokens
from the SSR layer on changes the next-token distribution by a mean KL of at most :data:`~.lifecycle.KL_THRESHOLD`,
else ``top5``. The curve, the visual-token counts and the KL are cached on disk under the model's fingerprint, its
removed layers and the prompts, so only the first run pays for them; the log line says what the detection cost
and whether it came from the cache.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from loguru import logger

from lmms_topo_plugin.cache import DiskCache, cache_key
from lmms_topo_plugin.calibration.sources import prompts_fingerprint
from lmms_topo_plugin.calibration.collect import run_collectors
from lmms_topo_plugin.models.loading import LoadedModel
from lmms_topo_plugin.tokens.lifecycle import (
    TOKEN_SETS, EntropyCollector, detect_stages, fewest_visual_tokens, freezing_kl, ssr_mode_choice, top5_is_empty,
)
from lmms_topo_plugin.tokens.methods import SSR_KEEP

LIFECYCLE_SAMPLES = 100
ENTROPY_K = 50


def detected_stages(loaded: LoadedModel, prompts: list, model_id: str, removed: list[int], cache: DiskCache,
                    batch_size: int, *, ssr_kl: bool, ssr_keep: float = SSR_KEEP) -> dict[str, Any]:
    """``{"ivr_layer", "ssr_layer", "samples", "fewest_visual_tokens", "cached", "seconds"}`` of the model as it is
    now (after layer removal); with ``ssr_kl`` also the ``"ssr_mode"`` it implies, its ``"ssr_mode_reason"`` and,
    unless top5 (keeping ``ssr_keep`` of them) would keep no visual token, the ``"kl_at_ssr"`` it was chosen by."""
    start = perf_counter()
    adapter, prompts_key = loaded.adapter, prompts_fingerprint(prompts)
    key = cache_key("ivr-visual-tokens", model_id, sorted(removed), prompts_key, ENTROPY_K)
    entry = cache.get_json("lifecycle", key)
    cached = entry is not None
    if not cached:
        collector = EntropyCollector(adapter.num_layers, adapter.final_norm, ENTROPY_K)
        entropy = run_collectors(adapter, loaded.processor, prompts, [collector], batch_size=batch_size,
                                 desc="Entropy (HalfV stages)")["truncated_entropy"]
        entry = {"curve": entropy[:, TOKEN_SETS.index("visual")].tolist(), "visual_tokens": collector.visual_tokens}
        cache.put_json("lifecycle", key, entry)
    stages = detect_stages(entry["curve"])
    fewest = fewest_visual_tokens(entry["visual_tokens"])
    found: dict[str, Any] = {"ivr_layer": stages.ivr, "ssr_layer": stages.ssr, "samples": len(prompts),
                             "fewest_visual_tokens": fewest}
    if ssr_kl:
        kl = None
        if not top5_is_empty(fewest, ssr_keep):
            kl_key = cache_key("ssr-kl", model_id, sorted(removed), prompts_key, stages.ssr)
            kl = cache.get_json("lifecycle", kl_key)
            cached = cached and kl is not None
            if kl is None:
                kl = freezing_kl(adapter, loaded.processor, prompts, batch_size=batch_size, layers=[stages.ssr])[0]
                cache.put_json("lifecycle", kl_key, kl)
            found["kl_at_ssr"] = kl
        mode, reason = ssr_mode_choice(kl, fewest, ssr_keep=ssr_keep)
        found |= {"ssr_mode": mode, "ssr_mode_reason": reason}
    found |= {"cached": cached, "seconds": round(perf_counter() - start, 1)}
    logger.info(detection_line(found, batch_size))
    return found


def detection_line(found: dict[str, Any], batch_size: int) -> str:
    """The log line of a detection: what it found, why the SSR mode, and what it cost."""
    mode = f", SSR mode {found['ssr_mode']} ({found['ssr_mode_reason']})" if "ssr_mode" in found else ""
    cost = (f"cached ({found['samples']} calibration prompts), read in {found['seconds']:.1f} s" if found["cached"]
            else f"took {found['seconds']:.1f} s over {found['samples']} calibration prompts at calib_batch_size="
                 f"{batch_size}, cached for later runs")
    return (f"topo_pruned: HalfV detection: IVR layer {found['ivr_layer']}, SSR layer {found['ssr_layer']}{mode}; "
            f"{cost}")
