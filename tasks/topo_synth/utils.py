"""lmms-eval hooks for the topo_synth tasks (referenced from the YAMLs with `!function utils.<name>`)."""

import base64

import datasets

from lmms_topo_plugin.synthbench import exact_match, pope_f1, pope_pair, pope_precision, pope_recall, prompt_for

__all__ = [
    "process_docs",
    "doc_to_visual",
    "doc_to_text",
    "process_results",
    "process_results_presence",
    "pope_precision",
    "pope_recall",
    "pope_f1",
]


def _png_bytes(record: dict) -> dict:
    return {"image": {"bytes": base64.b64decode(record["image"]), "path": None}}


def process_docs(dataset: datasets.Dataset) -> datasets.Dataset:
    """Turn the base64 PNG column into a `datasets.Image` column, so docs hold PIL images and lmms-eval leaves
    the pixels out of logged samples."""
    features = dataset.features.copy()
    features["image"] = datasets.Image()
    return dataset.map(_png_bytes, features=features, keep_in_memory=True)


def doc_to_visual(doc: dict) -> list:
    """The scene image, as a one-element list."""
    return [doc["image"].convert("RGB")]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """`prompt_for(doc)` between the optional `pre_prompt` and `post_prompt` of `lmms_eval_specific_kwargs`."""
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{prompt_for(doc)}{kwargs.get('post_prompt', '')}"


def process_results(doc: dict, results: list) -> dict:
    """Exact match of the first generation after `normalize_answer`."""
    return {"exact_match": exact_match(results[0], doc["answer"])}


def process_results_presence(doc: dict, results: list) -> dict:
    """Exact match plus the (gold, prediction) pair the POPE precision/recall/F1 aggregations consume."""
    pair = pope_pair(results[0], doc["answer"])
    return {**process_results(doc, results), "precision": pair, "recall": pair, "f1": pair}
