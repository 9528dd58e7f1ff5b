"""The synthetic benchmark: determinism, balance, answer correctness, scoring, and its lmms-eval tasks."""

from __future__ import annotations

import hashlib
import itertools
import json
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
from lmms_topo_plugin.synthbench.seen import bundled_training_keys, mixture_docs, training_log, training_stages
from lmms_topo_plugin.synthbench.splits import doc_key

TASKS_DIR = Path(__file__).resolve().parents[1] / "tasks"
DATA_DIR = TASKS_DIR / "topo_synth" / "data"
SIZES = {"calib": 64, "test": 100, "dev": 100}
TASK_NAMES = [f"topo_synth_{kind}" for kind in KINDS]
DEV_TASK_NAMES = [f"topo_synth_dev_{kind}" for kind in KINDS]
# sha256 of the sorted `key_lines` of every item the bundled model's training run drew, computed with the training
# code that made the model (`training.data.kind_mixture` at the bundled model's commit): the stream must not change.
TRAINING_ITEMS = 217_123
TRAINING_KEYS_SHA256 = "667d5774a2d08af8df61dbeac85e0ecbacd4ea3f7db5d0a9ed8b504c82e97367"
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
    assert set(shipped) == {f"{split}_{kind}.jsonl" for split in SPLITS for kind in KINDS}
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


def key_lines(keys) -> list[str]:
    """Each scene+question as one canonical JSON line, sorted."""
    return sorted(json.dumps([scene.background, [list(item) for item in scene.items], question])
                  for scene, question in keys)


def test_training_items_are_those_of_the_bundled_run():
    stages = training_stages(training_log())
    assert [n for *_, n in stages] == [400 * 64, 3000 * 64]  # stage 1 and stage 2 docs drawn: 217,600 in all
    keys = bundled_training_keys()
    assert len(keys) == TRAINING_ITEMS  # a few items recur within the run
    assert sha256("\n".join(key_lines(keys)).encode()) == TRAINING_KEYS_SHA256


def test_replay_matches_the_training_mixture():
    from lmms_topo_plugin.tools.training import data

    def fields(docs):
        return [(d["id"], d["kind"], d["question"], d["answer"], d["background"], d["scene"]) for d in docs]

    vision, qa = training_stages(training_log())
    for real, (seed, weights, _) in [(data.kind_mixture(vision[0]), vision), (data.kind_mixture(qa[0], qa[1]), qa)]:
        assert fields(itertools.islice(real, 150)) == fields(itertools.islice(mixture_docs(seed, weights), 150))


def test_dev_avoids_calib_test_and_every_training_item(splits):
    keys = {split: [doc_key(doc) for doc in docs] for split, docs in splits.items()}
    dev = set(keys["dev"])
    assert len(dev) == len(keys["dev"]) == len(KINDS) * SIZES["dev"]
    assert not dev & set(keys["calib"]) and not dev & set(keys["test"])
    assert not dev & bundled_training_keys()
    assert {doc["id"] for doc in splits["dev"]} == {f"dev-{k}-{i:04d}" for k in KINDS for i in range(SIZES["dev"])}


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
    for doc in [*splits["calib"], *splits["test"], *splits["dev"], *stream]:
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
    with pytest.raises(ValueError, match=r"split must be one of \('calib', 'test', 'dev'\)"):
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


def offline_task_dicts(*requests: tuple[list[str], dict]) -> list[dict]:
    """lmms-eval task dicts of the bundled tasks (`get_task_dict(names, manager, **kwargs)` per request), loaded
    offline with sockets disabled."""
    import datasets
    from lmms_eval.tasks import TaskManager, get_task_dict

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
        patch.setattr(socket.socket, "connect", refuse_connection)
        manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
        return [get_task_dict(names, manager, **kwargs) for names, kwargs in requests]


@pytest.fixture(scope="module")
def lmms_eval_tasks():
    """The topo_synth group and the chat variant of one task."""
    groups, chat = offline_task_dicts((["topo_synth", "topo_synth_calib"], {}),
                                      (["topo_synth_presence"], {"task_type": "chat"}))
    return groups, chat["topo_synth_presence"]


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


def test_topo_synth_dev_mirrors_the_test_group(lmms_eval_tasks):
    from lmms_topo_plugin.integrations.lmms_eval.evaluate import available_metrics

    (dev,) = offline_task_dicts((["topo_synth_dev"], {}))
    (group, subgroups), = dev.items()
    assert label(group) == "topo_synth_dev"
    assert {label(key): sorted(v) for key, v in subgroups.items()} == {
        "topo_synth_dev_nonmath": sorted(DEV_TASK_NAMES[:4]), "topo_synth_dev_mathdomain": ["topo_synth_dev_math"]}
    tests, tasks = leaves(lmms_eval_tasks[0]), leaves(dev)
    for kind, name in zip(KINDS, DEV_TASK_NAMES):
        task, test = tasks[name], tests[f"topo_synth_{kind}"]
        assert [doc["id"] for doc in task.test_docs()] == [doc["id"] for doc in load_split("dev", kind)]
        data_file = Path(task.config.dataset_kwargs["data_files"]["dev"])
        assert data_file.is_absolute() and data_file == DATA_DIR / f"dev_{kind}.jsonl"
        assert task.config.metric_list == test.config.metric_list
        assert task.config.generation_kwargs == test.config.generation_kwargs
        doc = task.test_docs()[0]
        assert task.doc_to_text(doc) == prompt_for(doc) and task.doc_to_target(doc) == doc["answer"]
    metrics = available_metrics(dev)
    assert {"topo_synth_dev/exact_match", "topo_synth_dev_nonmath/exact_match",
            "topo_synth_dev_mathdomain/exact_match", "topo_synth_dev_presence/f1"} <= metrics
    assert {name.replace("topo_synth_dev", "topo_synth", 1) for name in metrics} == available_metrics(
        lmms_eval_tasks[0]) - {"topo_synth_calib/exact_match"}


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
