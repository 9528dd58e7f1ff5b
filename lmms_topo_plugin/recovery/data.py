"""The prompts recovery trains on, and the few it holds out to measure the KL before and after.

By default they are fresh, seeded draws from the bundled benchmark's training generator
(:func:`lmms_topo_plugin.synthbench.iter_examples`, which never yields a ``calib`` or ``test`` item), with every
``dev`` item skipped as well, so recovery never sees a split that evaluates or tunes it. With ``calib_task=`` they
are documents of that lmms-eval task, drawn (seeded) like calibration's.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice

from lmms_topo_plugin.calibration.sources import prompts_fingerprint
from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.models.prompting import Prompt

BUNDLED_STREAM = "bundled:topo_synth/train-stream"
MAX_HELDOUT = 64


def heldout_count(samples: int) -> int:
    """Prompts held out besides ``samples`` training prompts: a quarter of them, at least 2, at most 64."""
    return min(MAX_HELDOUT, max(2, samples // 4))


@dataclass(frozen=True)
class RecoveryData:
    """Training prompts, held-out prompts, where they come from and a content hash of both."""

    train: list[Prompt]
    heldout: list[Prompt]
    source: str
    fingerprint: str

    @property
    def prompts(self) -> list[Prompt]:
        """Training then held-out prompts: the order of the teacher's targets."""
        return [*self.train, *self.heldout]

    def describe(self) -> dict:
        return {"source": self.source, "samples": len(self.train), "heldout": len(self.heldout),
                "fingerprint": self.fingerprint}


def recovery_data(samples: int, seed: int, calib_task: str | None = None,
                  include_path: str | None = None) -> RecoveryData:
    """``samples`` training prompts and :func:`heldout_count` held-out ones, seeded by ``seed``: from ``calib_task``
    (an lmms-eval task) or the bundled training generator."""
    total = samples + heldout_count(samples)
    if calib_task:
        prompts = task_prompts(calib_task, total, seed, include_path, samples)
        source = f"calib_task={calib_task}"
    else:
        prompts = generator_prompts(total, seed)
        source = f"{BUNDLED_STREAM} (seed recover/{seed}; calib, dev and test items skipped)"
    return RecoveryData(prompts[:samples], prompts[samples:], source, prompts_fingerprint(prompts))


def generator_prompts(count: int, seed: int) -> list[Prompt]:
    """``count`` prompts of the training generator's stream seeded ``recover/<seed>`` (a stream the bundled model did
    not train on), skipping every ``dev`` item (the stream already skips ``calib`` and ``test``)."""
    from lmms_topo_plugin import synthbench
    from lmms_topo_plugin.synthbench.splits import doc_key

    dev = dev_keys()
    docs = (doc for doc in synthbench.iter_examples(f"recover/{seed}") if doc_key(doc) not in dev)
    return [Prompt.from_text(synthbench.prompt_for(doc), [doc["image"]]) for doc in islice(docs, count)]


@lru_cache(maxsize=1)
def dev_keys() -> frozenset:
    """The scene and question of every ``dev`` document."""
    from lmms_topo_plugin.synthbench import KINDS
    from lmms_topo_plugin.synthbench.splits import doc_key
    from lmms_topo_plugin.synthbench.storage import read_records

    return frozenset(doc_key(record) for kind in KINDS for record in read_records("dev", kind))


def task_prompts(task_name: str, count: int, seed: int, include_path: str | None, samples: int) -> list[Prompt]:
    """``count`` documents of an lmms-eval task's evaluation split, drawn with ``random.Random(seed)``."""
    from lmms_topo_plugin.integrations.lmms_eval.tasks import document_prompt, task_documents

    def unknown(name: str) -> ModelArgsError:
        return ModelArgsError(f"model_args: calib_task={name!r} is not a known lmms-eval task or group "
                              "(list them with `lmms-eval tasks`; add a directory with include_path=)")

    documents = task_documents(task_name, include_path, unknown)
    if count > len(documents):
        raise ModelArgsError(f"model_args: recover_samples={samples} needs {count} documents ({count - samples} held "
                             f"out) but calib_task={task_name} has only {len(documents)}")
    return [document_prompt(task, doc) for task, doc in random.Random(seed).sample(documents, count)]
