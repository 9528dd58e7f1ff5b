"""Calibration prompts: the bundled benchmark's calib split by default, or any lmms-eval task's documents."""

from __future__ import annotations

import hashlib
import random

from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.models.prompting import Prompt


def default_calibration_prompts(limit: int, seed: int) -> list[Prompt]:
    """``limit`` prompts drawn (seeded) from the bundled synthetic benchmark's calib split."""
    from lmms_topo_plugin import synthbench

    docs = synthbench.load_split("calib")
    chosen = _sample(docs, limit, seed, source="the bundled calib split")
    return [Prompt.from_text(synthbench.prompt_for(doc), [doc["image"]]) for doc in chosen]


DOMAINS = ("math", "nonmath")  # the calibration domains of the domain-aware methods, in sample order


def domain_calibration_prompts(limit: int, seed: int, tasks: dict[str, str | None],
                               include_path: str | None = None) -> tuple[list[Prompt], list[str]]:
    """``limit`` prompts of each domain (math first) and each prompt's domain: from ``tasks[domain]`` (an lmms-eval
    task) or, by default, the bundled calib split's documents of that domain."""
    from lmms_topo_plugin import synthbench

    prompts: list[Prompt] = []
    for domain in DOMAINS:
        if tasks.get(domain):
            prompts += task_calibration_prompts(tasks[domain], limit, seed, include_path)
            continue
        docs = [doc for doc in synthbench.load_split("calib") if doc["domain"] == domain]
        chosen = _sample(docs, limit, seed, source=f"the bundled calib split's {domain} documents")
        prompts += [Prompt.from_text(synthbench.prompt_for(doc), [doc["image"]]) for doc in chosen]
    return prompts, [domain for domain in DOMAINS for _ in range(limit)]


def task_calibration_prompts(task_name: str, limit: int, seed: int, include_path: str | None = None) -> list[Prompt]:
    """``limit`` prompts drawn (seeded) from the evaluation split of an lmms-eval task or group. The documents come
    from :mod:`lmms_topo_plugin.integrations.lmms_eval.tasks`, imported here: this module imports without
    lmms-eval."""
    from lmms_topo_plugin.integrations.lmms_eval.tasks import document_prompt, task_documents

    def unknown(name: str) -> ModelArgsError:
        return ModelArgsError(f"model_args: calib_task={name!r} is not a known lmms-eval task or group "
                              "(list them with `lmms-eval tasks`; add a directory with include_path=)")

    documents = task_documents(task_name, include_path, unknown)
    chosen = _sample(documents, limit, seed, source=f"calib_task={task_name}")
    return [document_prompt(task, doc) for task, doc in chosen]


def _sample(items: list, limit: int, seed: int, *, source: str) -> list:
    if limit > len(items):
        raise ModelArgsError(f"model_args: calib_limit={limit} but {source} has only {len(items)} samples")
    return random.Random(seed).sample(items, limit)


def prompts_fingerprint(prompts: list[Prompt]) -> str:
    """A content hash of the calibration prompts (text and image pixels), for cache keys."""
    digest = hashlib.sha256()
    for prompt in prompts:
        digest.update(repr(prompt.messages).encode())
        for image in prompt.images:
            digest.update(f"{image.size}{image.mode}".encode())
            digest.update(image.tobytes())
    return digest.hexdigest()[:24]
