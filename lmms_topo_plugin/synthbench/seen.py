"""The stream items the bundled default model trained on, replayed from its `training_log.json` without images.

`training.train` draws stage 1 from `data.kind_mixture(f"{seed}/vision")` (every kind weighted 1), `vision_steps`
batches of `vision_batch` docs (stage 1 never stops early), and stage 2 from `data.kind_mixture(seed,
kind_weights)`, `stage2.steps_done` batches of `batch` docs. A mixture with seed `m` picks each doc's kind with
`random.Random(f"mix/{m}").choices` and takes the next doc of that kind's own stream, `iter_examples(f"{m}/{kind}",
[kind])`. `mixture_docs` replays a mixture without rendering images (the tests check it against
`training.data.kind_mixture` itself). The bundled log gives 400 * 64 + 3000 * 64 = 217,600 stream docs.
"""

from __future__ import annotations

import json
import random
from functools import lru_cache
from importlib.resources import files
from itertools import islice
from typing import Iterator, Union

from lmms_topo_plugin.synthbench.questions import KINDS
from lmms_topo_plugin.synthbench.splits import Key, doc_key, stream_docs

Stage = tuple[Union[int, str], dict[str, float], int]  # mixture seed, kind weights, docs drawn


def training_log() -> dict:
    """The bundled model's `training_log.json`."""
    return json.loads((files("lmms_topo_plugin") / "default_model" / "training_log.json").read_text("utf-8"))


def training_stages(log: dict) -> list[Stage]:
    """The two stream draws a training log records: stage 1 (vision), then stage 2 (question answering)."""
    config = log["config"]
    uniform = {kind: 1.0 for kind in KINDS}
    return [(f"{config['seed']}/vision", uniform, config["vision_steps"] * config["vision_batch"]),
            (config["seed"], config["kind_weights"], log["stage2"]["steps_done"] * config["batch"])]


def mixture_kinds(seed: Union[int, str], weights: dict[str, float]) -> Iterator[str]:
    """The kind of each doc of `kind_mixture(seed, weights)`: one `choices` call per doc, as it makes them."""
    kinds = [kind for kind in KINDS if weights.get(kind, 0) > 0]
    rng = random.Random(f"mix/{seed}")
    while True:
        yield rng.choices(kinds, weights=[weights[kind] for kind in kinds])[0]


def mixture_docs(seed: Union[int, str], weights: dict[str, float]) -> Iterator[dict]:
    """`kind_mixture(seed, weights)` without images: the same docs in the same order."""
    streams = {kind: stream_docs(f"{seed}/{kind}", (kind,)) for kind in KINDS if weights.get(kind, 0) > 0}
    return (next(streams[kind]) for kind in mixture_kinds(seed, weights))


@lru_cache(maxsize=1)
def bundled_training_keys() -> frozenset[Key]:
    """The scene+question of every doc the bundled model's training run drew (both stages)."""
    return frozenset(doc_key(doc) for seed, weights, n in training_stages(training_log())
                     for doc in islice(mixture_docs(seed, weights), n))
