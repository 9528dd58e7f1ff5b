"""The stored `calib`, `test` and `dev` splits and the infinite training stream.

Each split draws from its own seed space: `random.Random("<split>/<kind>")` for the stored splits,
`random.Random("train/<seed>")` for the stream (string seeds hash with SHA-512, so they are stable across runs and
platforms). On top of that, `test` skips any scene+question already in `calib`, and the stream skips every
scene+question of `calib` and `test` (`STREAM_HELDOUT`), so those three never share an item. `dev` (for choosing
method defaults) came later: the stream that trained the bundled model does not skip it, so `dev` skips `calib`,
`test` and every item of that run instead (`build`, `seen`). A future retraining stream should skip `dev` too
(add it to `STREAM_HELDOUT`; the bundled model's stream must keep skipping only `calib` and `test`).
"""

from __future__ import annotations

import random
from functools import lru_cache
from itertools import count
from typing import Iterator, Optional, Sequence, Union

from lmms_topo_plugin.synthbench.questions import KINDS, YES_NO, ask, domain_of
from lmms_topo_plugin.synthbench.scene import Scene, random_scene, render_image
from lmms_topo_plugin.synthbench.storage import decode_image, read_records, scene_of

SPLIT_SIZES = {"calib": 64, "test": 100, "dev": 100}  # docs per kind, built in this order; each avoids the earlier
SPLITS = tuple(SPLIT_SIZES)
STREAM_HELDOUT = ("calib", "test")  # what the training stream skips; changing it changes every stream

Key = tuple[Scene, str]


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def check_kinds(kinds: Union[str, Sequence[str], None]) -> tuple[str, ...]:
    """`kinds` as a tuple in canonical order; None means all, a single string means that kind."""
    if kinds is None:
        return KINDS
    wanted = [kinds] if isinstance(kinds, str) else list(kinds)
    unknown = [kind for kind in wanted if kind not in KINDS]
    if unknown or not wanted:
        raise ValueError(f"kinds must be None or a non-empty list drawn from {KINDS}, got {kinds!r}")
    return tuple(kind for kind in KINDS if kind in wanted)


def draw_doc(doc_id: str, kind: str, rng: random.Random, polarity: str) -> dict:
    """An image-less doc of `kind`: scenes are drawn from `rng` until one can carry the question."""
    while True:
        scene = random_scene(rng)
        qa = ask(kind, scene.items, rng, polarity)
        if qa is not None:
            question, answer = qa
            return {
                "id": doc_id,
                "kind": kind,
                "domain": domain_of(kind),
                "question": question,
                "answer": answer,
                "background": scene.background,
                "scene": scene.describe(),
            }


def doc_key(doc: dict) -> Key:
    """What makes two docs the same item: the scene and the question."""
    return scene_of(doc), doc["question"]


def build_docs(split: str, kind: str, exclude: frozenset[Key] = frozenset()) -> list[dict]:
    """The image-less docs of one stored split and kind; yes/no answers alternate, so they are balanced."""
    rng = random.Random(f"{check_split(split)}/{kind}")
    docs: list[dict] = []
    seen = set(exclude)
    while len(docs) < SPLIT_SIZES[split]:
        doc = draw_doc(f"{split}-{kind}-{len(docs):04d}", kind, rng, YES_NO[len(docs) % 2])
        if doc_key(doc) not in seen:
            seen.add(doc_key(doc))
            docs.append(doc)
    return docs


def load_split(split: str, kinds: Optional[Sequence[str]] = None) -> list[dict]:
    """Docs of a shipped split (`calib`, `test` or `dev`), in kind order, each with `image` a PIL RGB image."""
    split, kinds = check_split(split), check_kinds(kinds)
    records = [record for kind in kinds for record in read_records(split, kind)]
    return [{**record, "image": decode_image(record["image"])} for record in records]


@lru_cache(maxsize=1)
def heldout_keys() -> frozenset[Key]:
    """The scene+question of every doc in the splits the stream skips (`STREAM_HELDOUT`)."""
    return frozenset(doc_key(record) for split in STREAM_HELDOUT for kind in KINDS
                     for record in read_records(split, kind))


def iter_examples(seed: Union[int, str], kinds: Optional[Sequence[str]] = None) -> Iterator[dict]:
    """An endless stream of training docs (kinds in turn, random yes/no polarity), with PIL images, never
    repeating an item of `calib` or `test`."""
    return ({**doc, "image": render_image(scene_of(doc))} for doc in stream_docs(seed, check_kinds(kinds)))


def stream_docs(seed: Union[int, str], kinds: tuple[str, ...]) -> Iterator[dict]:
    """The image-less docs of `iter_examples(seed, kinds)`, in the same order."""
    rng, heldout = random.Random(f"train/{seed}"), heldout_keys()
    for index in count():
        kind = kinds[index % len(kinds)]
        while True:
            doc = draw_doc(f"train-{seed}-{index}", kind, rng, rng.choice(YES_NO))
            if doc_key(doc) not in heldout:
                break
        yield doc
