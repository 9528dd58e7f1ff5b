"""The synthetic benchmark: determinism, balance, answer correctness, scoring, and its lmms-eval tasks."""

from __future__ import annotations

import hashlib
import itertools
import re
import socket
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from lmms_topo_plugin import synthbench
from lmms_topo_plugin.synthbench import (
    DOMAINS,
    KINDS,
    SPLITS,
    iter_examples,
    load_split,
    normalize_answer,
    pope_f1,
    pope_precision,
    pope_recall,
    prompt_for,
    tokenize,
    vocabulary,
)
from lmms_topo_plugin.synthbench.__main__ import main as build_main

TASKS_DIR = Path(__file__).resolve().parents[1] / "tasks"
DATA_DIR = TASKS_DIR / "topo_synth" / "data"
SIZES = {"calib": 64, "test": 100}
TASK_NAMES = [f"topo_synth_{kind}" for kind in KINDS]
RGB = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "black": (0, 0, 0),
    "white": (255, 255, 255),
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def splits() -> dict[str, list[dict]]:
    return {split: load_split(split) for split in SPLITS}


# --- determinism and shipped data ----------------------------------------------------------------------------


def test_build_is_byte_identical_and_equals_the_shipped_files(tmp_path):
    first, second = synthbench.build_files(), synthbench.build_files()
    assert first == second
    build_main(["build", "--out", str(tmp_path)])
    shipped = {path.name: sha256(path.read_bytes()) for path in DATA_DIR.glob("*.jsonl")}
    fresh = {path.name: sha256(path.read_bytes()) for path in tmp_path.glob("*.jsonl")}
    assert fresh == {name: sha256(text.encode()) for name, text in first.items()}
    assert shipped == fresh, "shipped data differ from a fresh build: run `python -m lmms_topo_plugin.synthbench build`"
    assert sum(path.stat().st_size for path in DATA_DIR.glob("*.jsonl")) < 3_000_000


def test_iter_examples_is_seeded_and_cycles_kinds():
    def head(seed, kinds=None, n=10):
        docs = itertools.islice(iter_examples(seed, kinds), n)
        return [(d["kind"], d["question"], d["answer"], d["background"], d["scene"]) for d in docs]

    assert head(0) == head(0)
    assert head(0) != head(1)
    assert [kind for kind, *_ in head(3)] == list(KINDS) * 2
    assert {kind for kind, *_ in head(3, ["count", "math"])} == {"count", "math"}
    doc = next(iter_examples(5))
    assert isinstance(doc["image"], Image.Image) and doc["image"].size == (64, 64) and doc["image"].mode == "RGB"


# --- splits --------------------------------------------------------------------------------------------------


def test_every_kind_in_both_splits_with_balanced_yes_no(splits):
    for split, docs in splits.items():
        by_kind = Counter(doc["kind"] for doc in docs)
        assert by_kind == {kind: SIZES[split] for kind in KINDS}
        assert len({doc["id"] for doc in docs}) == len(docs)
        for doc in docs:
            assert set(doc) >= {"image", "question", "answer", "kind", "domain", "id", "scene"}
            assert doc["domain"] == ("math" if doc["kind"] == "math" else "nonmath") and doc["domain"] in DOMAINS
            assert doc["image"].size == (64, 64) and doc["image"].mode == "RGB"
            assert 2 <= len(doc["scene"]) <= 6
        for kind in ("presence", "spatial"):
            answers = Counter(doc["answer"] for doc in docs if doc["kind"] == kind)
            assert answers == {"yes": SIZES[split] // 2, "no": SIZES[split] // 2}
        comparisons = Counter(doc["answer"] for doc in docs if doc["kind"] == "math" and doc["answer"] in ("yes", "no"))
        assert min(comparisons.values()) >= 0.3 * sum(comparisons.values())


def test_splits_are_disjoint(splits):
    def keys(docs):
        return [(d["background"], tuple(sorted(tuple(i.values()) for i in d["scene"])), d["question"]) for d in docs]

    calib, test = keys(splits["calib"]), keys(splits["test"])
    assert len(set(calib)) == len(calib) and len(set(test)) == len(test)
    assert not set(calib) & set(test)
    assert not set(calib + test) & set(keys(itertools.islice(iter_examples(0), 2000)))


# --- answers recomputed from the scene, independently of the generator -------------------------------------

SINGULAR = {"circles": "circle", "squares": "square", "triangles": "triangle", "crosses": "cross"}


def count_group(scene, phrase):
    if phrase == "shapes":
        return len(scene)
    if phrase in SINGULAR:
        return sum(item["shape"] == SINGULAR[phrase] for item in scene)
    color = re.fullmatch(r"(\w+) shapes", phrase).group(1)
    return sum(item["color"] == color for item in scene)


def only(items):
    assert len(items) == 1, f"ambiguous reference: {items}"
    return items[0]


def solve(question, scene):
    q = question.lower()
    yes_no = {True: "yes", False: "no"}
    if m := re.fullmatch(r"is there a (\w+) (\w+) in the image\?", q):
        return yes_no[any((i["color"], i["shape"]) == m.groups() for i in scene)]
    if m := re.fullmatch(r"what color is the (\w+)\?", q):
        return only([i for i in scene if i["shape"] == m[1]])["color"]
    if m := re.fullmatch(r"what shape is the (\w+) object\?", q):
        return only([i for i in scene if i["color"] == m[1]])["shape"]
    if m := re.fullmatch(r"is the (\w+) (\w+) (to the left of|to the right of|above|below) the (\w+) (\w+)\?", q):
        a = only([i for i in scene if (i["color"], i["shape"]) == (m[1], m[2])])
        b = only([i for i in scene if (i["color"], i["shape"]) == (m[4], m[5])])
        holds = {
            "to the left of": a["col"] < b["col"],
            "to the right of": a["col"] > b["col"],
            "above": a["row"] < b["row"],
            "below": a["row"] > b["row"],
        }
        return yes_no[holds[m[3]]]
    if m := re.fullmatch(r"how many (.+) and (.+) are there in total\?", q):
        return str(count_group(scene, m[1]) + count_group(scene, m[2]))
    if m := re.fullmatch(r"how many more (.+) than (.+) are there\?", q):
        difference = count_group(scene, m[1]) - count_group(scene, m[2])
        assert difference >= 0
        return str(difference)
    if m := re.fullmatch(r"are there more (.+) than (.+)\?", q):
        return yes_no[count_group(scene, m[1]) > count_group(scene, m[2])]
    if m := re.fullmatch(r"how many (.+) are there\?", q):
        return str(count_group(scene, m[1]))
    raise AssertionError(f"unknown question form: {question}")


def test_answers_and_images_agree_with_the_scene(splits):
    stream = list(itertools.islice(iter_examples(11), 500))
    for doc in [*splits["calib"], *splits["test"], *stream]:
        assert solve(doc["question"], doc["scene"]) == doc["answer"], doc["id"]
        pixels = doc["image"].load()
        occupied = {(item["row"], item["col"]): item["color"] for item in doc["scene"]}
        for row, col in itertools.product(range(4), range(4)):
            expected = occupied.get((row, col), doc["background"])
            assert pixels[col * 16 + 8, row * 16 + 8] == RGB[expected], (doc["id"], row, col)


def test_presence_negatives_are_hard(splits):
    for doc in splits["test"]:
        if doc["kind"] == "presence" and doc["answer"] == "no":
            color, shape = re.fullmatch(r"Is there a (\w+) (\w+) in the image\?", doc["question"]).groups()
            assert any(item["shape"] == shape or item["color"] == color for item in doc["scene"])


# --- text ----------------------------------------------------------------------------------------------------


def test_prompt_and_vocabulary_cover_every_token(splits):
    words = set(vocabulary())
    assert words == {word.lower() for word in words} and "?" in words and "." in words
    for doc in [*splits["calib"], *splits["test"], *itertools.islice(iter_examples(2), 1000)]:
        prompt = prompt_for(doc)
        assert prompt.startswith(doc["question"] + "\n")
        assert set(tokenize(prompt)) | {doc["answer"]} <= words
        assert normalize_answer(doc["answer"]) == doc["answer"]
    tokens = tokenize("How many red shapes are there?\nAnswer, now!")
    assert tokens == ["how", "many", "red", "shapes", "are", "there", "?", "answer", ",", "now", "!"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Yes.", "yes"),
        ("  NO, it is not", "no"),
        ("Three", "3"),
        ("ten.", "10"),
        ("zero", "0"),
        ("4", "4"),
        ("Circle!", "circle"),
        ("- red", "red"),
        ("", ""),
        ("...", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_unknown_split_or_kind_is_a_clear_error():
    with pytest.raises(ValueError, match=r"split must be one of \('calib', 'test'\)"):
        load_split("train")
    with pytest.raises(ValueError, match=r"kinds must be .*'presence', 'attribute', 'count', 'spatial', 'math'"):
        load_split("test", ["colour"])
    with pytest.raises(ValueError, match="kinds must be"):
        iter_examples(0, ["colour"])
    assert {doc["kind"] for doc in load_split("calib", "math")} == {"math"}


def test_pope_aggregation_on_a_hand_made_list():
    pairs = [("yes", "yes"), ("yes", "yes"), ("yes", "no"), ("no", "yes"), ("no", "no"), ("no", "maybe")]
    assert pope_precision(pairs) == pytest.approx(2 / 3)
    assert pope_recall(pairs) == pytest.approx(2 / 3)
    assert pope_f1(pairs) == pytest.approx(2 / 3)
    pairs = [("yes", "yes"), ("yes", "no"), ("yes", "no"), ("no", "no")]
    assert (pope_precision(pairs), pope_recall(pairs), pope_f1(pairs)) == pytest.approx((1.0, 1 / 3, 0.5))
    assert pope_precision([("yes", "no")]) == 0.0 and pope_f1([]) == 0.0


# --- lmms-eval -----------------------------------------------------------------------------------------------


def refuse_connection(*args):
    raise OSError("network is off in this test")


@pytest.fixture(scope="module")
def lmms_eval_tasks():
    """The topo_synth group and the chat variant of one task, loaded offline with sockets disabled."""
    import datasets
    from lmms_eval.tasks import TaskManager, get_task_dict

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
        patch.setattr(socket.socket, "connect", refuse_connection)
        manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
        groups = get_task_dict(["topo_synth", "topo_synth_calib"], manager)
        chat = get_task_dict(["topo_synth_presence"], manager, task_type="chat")["topo_synth_presence"]
    return groups, chat


def label(key) -> str:
    """A task dict key's name: groups are keyed by ConfigurableGroup objects, tasks by their names."""
    return getattr(key, "group_name", key)


def leaves(task_dict) -> dict:
    found = {}
    for key, value in task_dict.items():
        found.update(leaves(value) if isinstance(value, dict) else {key: value})
    return found


def test_topo_synth_group_has_the_five_test_tasks(lmms_eval_tasks):
    groups, _ = lmms_eval_tasks
    structure = {label(key): sorted(map(label, v)) if isinstance(v, dict) else None for key, v in groups.items()}
    assert structure == {"topo_synth": ["topo_synth_mathdomain", "topo_synth_nonmath"], "topo_synth_calib": None}
    tasks = leaves(groups)
    assert sorted(tasks) == sorted([*TASK_NAMES, "topo_synth_calib"])
    for name in TASK_NAMES:
        task = tasks[name]
        assert len(task.test_docs()) == SIZES["test"]
        generation = {"max_new_tokens": 5, "temperature": 0.0, "do_sample": False, "until": ["\n"]}
        assert task.config.generation_kwargs == generation
        data_file = Path(task.config.dataset_kwargs["data_files"]["test"])  # anchored at the YAML, not the cwd
        assert data_file.is_absolute() and data_file == DATA_DIR / f"test_{name.removeprefix('topo_synth_')}.jsonl"
    assert len(tasks["topo_synth_calib"].test_docs()) == len(KINDS) * SIZES["calib"]


def test_task_hooks_and_scores(lmms_eval_tasks):
    tasks = leaves(lmms_eval_tasks[0])
    for name in TASK_NAMES:
        task = tasks[name]
        doc = task.test_docs()[0]
        assert doc["kind"] == name.removeprefix("topo_synth_")
        assert task.doc_to_text(doc) == prompt_for(doc)
        (image,) = task.doc_to_visual(doc)
        assert image.mode == "RGB" and image.size == (64, 64)
        assert task.doc_to_target(doc) == doc["answer"]
        assert task.process_results(doc, [f" {doc['answer'].capitalize()}."])["exact_match"] == 1.0
        assert task.process_results(doc, ["purple"])["exact_match"] == 0.0
    presence = tasks["topo_synth_presence"]
    docs = presence.test_docs()
    results = [presence.process_results(doc, ["Yes"]) for doc in docs]
    aggregate = {metric: fn([result[metric] for result in results]) for metric, fn in presence.aggregation().items()}
    assert aggregate == pytest.approx({"exact_match": 0.5, "precision": 0.5, "recall": 1.0, "f1": 2 / 3})


def test_chat_models_get_the_image_then_the_text(lmms_eval_tasks):
    _, chat = lmms_eval_tasks
    doc = chat.test_docs()[0]
    (message,) = chat.doc_to_messages(doc)
    assert message["role"] == "user"
    image, text = message["content"]
    assert image["type"] == "image" and isinstance(image["url"], Image.Image)
    assert text == {"type": "text", "text": prompt_for(doc)}
