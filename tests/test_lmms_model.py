"""The lmms-eval model in-process: request layouts, log-likelihood, multi-round, clean(), caching."""

from pathlib import Path

import pytest
import torch
from lmms_eval import evaluator
from lmms_eval.api.instance import Instance
from lmms_eval.tasks import TaskManager
from transformers import AutoModelForImageTextToText

from lmms_topo_plugin.api import load_pruned
from lmms_topo_plugin.integrations.lmms_eval.tasks import bundled_tasks_dir
from lmms_topo_plugin.calibration.collect import move_inputs
from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.runtime.generation import continuation_nll, generate
from lmms_topo_plugin.integrations.lmms_eval.model import TopoPrunedChat, TopoPrunedSimple
from lmms_topo_plugin.models.prompting import Prompt, encode
from lmms_topo_plugin.synthbench import exact_match, load_split, prompt_for
from lmms_topo_plugin.families.tiny import example_image

FIXTURE_TASKS = str(Path(__file__).parent / "fixtures")
META = {"task": "t", "doc_id": 0, "repeats": 1}


def make(cls, checkpoint, tmp_path, **extra):
    args = {"pretrained": str(checkpoint), "device": "cpu", "report_dir": str(tmp_path / "reports"), **extra}
    return cls(**args)


def evaluate(lm, tasks, limit):
    manager = TaskManager(include_path=[bundled_tasks_dir(), FIXTURE_TASKS], include_defaults=False)
    return evaluator.simple_evaluate(model=lm, tasks=tasks, limit=limit, task_manager=manager)["results"]


def expected_exact_match(loaded, docs):
    """Exact match of greedy answers generated one prompt at a time, outside lmms-eval (topo_synth's settings)."""
    answers = [generate(loaded, [Prompt.from_text(prompt_for(doc), [doc["image"]])],
                        {"max_new_tokens": 5, "do_sample": False}, ["\n"])[0] for doc in docs]
    return sum(exact_match(answer, doc["answer"]) for answer, doc in zip(answers, docs)) / len(docs)


def expected_choice_accuracy(loaded, docs, choices=("yes", "no")):
    """Accuracy of the choice with the smallest negative log-likelihood (" " + choice after the prompt)."""
    hits = 0
    for doc in docs:
        prompt = Prompt.from_text(prompt_for(doc), [doc["image"]])
        nlls = [continuation_nll(loaded, prompt, f" {choice}")[0] for choice in choices]
        hits += choices[nlls.index(min(nlls))] == doc["answer"]
    return hits / len(docs)


def test_simple_layout_generation_and_multiple_choice_survive_clean(tiny_checkpoints, tmp_path):
    lm = make(TopoPrunedSimple, tiny_checkpoints("llava"), tmp_path, method="spacing", n_remove=2, batch_size=3)
    results = evaluate(lm, ["topo_synth_count", "topo_fixture_presence_mc"], limit=5)
    assert lm.loaded.adapter.num_layers == 4
    assert results["topo_synth_count"]["exact_match,none"] == expected_exact_match(
        lm.loaded, load_split("test", ["count"])[:5])
    assert results["topo_fixture_presence_mc"]["acc,none"] == expected_choice_accuracy(
        lm.loaded, load_split("test", ["presence"])[:5])
    lm.clean()  # lmms-eval calls this after every run
    again = evaluate(lm, ["topo_synth_count"], limit=5)
    assert again["topo_synth_count"]["exact_match,none"] == results["topo_synth_count"]["exact_match,none"]


def test_chat_and_simple_layouts_give_the_same_answers(tiny_checkpoints, tmp_path):
    checkpoint = tiny_checkpoints("qwen2_vl")
    chat = make(TopoPrunedChat, checkpoint, tmp_path, batch_size=4)
    simple = make(TopoPrunedSimple, checkpoint, tmp_path, batch_size=1)
    manager = TaskManager(include_path=[bundled_tasks_dir()], include_defaults=False)
    chat_out = evaluator.simple_evaluate(model=chat, tasks=["topo_synth_attribute"], limit=6, task_manager=manager,
                                         log_samples=True)["samples"]["topo_synth_attribute"]
    simple_out = evaluator.simple_evaluate(model=simple, tasks=["topo_synth_attribute"], limit=6, task_manager=manager,
                                           log_samples=True)["samples"]["topo_synth_attribute"]
    assert [s["resps"] for s in chat_out] == [s["resps"] for s in simple_out]


def test_loglikelihood_is_the_negative_log_likelihood(tiny_checkpoints, tmp_path):
    lm = make(TopoPrunedSimple, tiny_checkpoints("idefics3"), tmp_path)
    doc = {"image": example_image(3)}
    lm.task_dict = {"t": {"test": [doc]}}
    prompt = Prompt.from_text("How many circles?", [doc["image"]])
    inputs = encode(lm.loaded.processor, lm.loaded.adapter, [prompt])
    tokenizer = lm.loaded.processor.tokenizer

    def slow_nll_and_greedy(target):
        """Score the continuation token by token, one forward pass per token."""
        logp, greedy, ids = 0.0, True, inputs["input_ids"]
        with torch.inference_mode():
            for token in target:
                batch = move_inputs({**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids)}, "cpu",
                                    torch.float32)
                logits = lm.model(**batch).logits[0, -1]
                logp += torch.log_softmax(logits, -1)[token].item()
                greedy = greedy and int(logits.argmax()) == token
                ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
        return -logp, greedy

    # the model's own greedy next word, and a continuation that is not greedy
    with torch.inference_mode():
        first = int(lm.model(**move_inputs(inputs, "cpu", torch.float32)).logits[0, -1].argmax())
    greedy_word = " " + tokenizer.decode([first])
    assert tokenizer(greedy_word, add_special_tokens=False)["input_ids"] == [first]
    continuations = [" 3", greedy_word + " 3", greedy_word]
    requests = [Instance("loglikelihood", ("How many circles?", c, lambda d: [d["image"]], 0, "t", "test"), 0, META)
                for c in continuations]
    answers = lm.loglikelihood(requests)
    expected = [slow_nll_and_greedy(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in continuations]
    assert [greedy for _, greedy in expected] == [False, False, True]  # both outcomes are covered
    for (nll, greedy), (expected_nll, expected_greedy), continuation in zip(answers, expected, continuations):
        assert nll == pytest.approx(expected_nll, rel=1e-4, abs=1e-4), continuation
        assert greedy is expected_greedy, continuation  # a Python bool: lmms-eval's unwrap fix checks the type


def test_multi_round_feeds_previous_outputs_back(tiny_checkpoints, tmp_path):
    lm = make(TopoPrunedChat, tiny_checkpoints("llava"), tmp_path)
    doc = {"image": example_image(4)}
    lm.task_dict = {"t": {"test": [doc]}}
    seen = []

    def messages_of(d, round_idx):
        content = [{"type": "image", "url": d["image"]}, {"type": "text", "text": f"round {round_idx}"}]
        return [{"role": "user", "content": content}]

    def doc_to_messages(d, round_idx=None, previous_output=None, previous_round_info=None):
        if round_idx is None:
            return messages_of(d, 0)
        seen.append(list(previous_output))
        return messages_of(d, round_idx), round_idx >= 3, previous_output, {"round": round_idx}

    request = Instance("generate_until_multi_round", ("", doc_to_messages, {"max_new_tokens": 3}, 0, "t", "test"), 0, META)
    (outputs,) = lm.generate_until_multi_round([request])
    assert len(outputs) == 3
    assert seen == [outputs[:1], outputs[:2], outputs[:3]]
    # each round is the fresh prompt of that round, generated on its own
    settings = {"max_new_tokens": 3, "do_sample": False}
    assert outputs == [generate(lm.loaded, [Prompt.from_lmms_messages(messages_of(doc, i))], settings, [])[0]
                       for i in range(3)]


def test_dense_method_is_the_unchanged_model(tiny_checkpoints, tmp_path):
    checkpoint = tiny_checkpoints("qwen2_5_vl")
    loaded, report = load_pruned({"pretrained": str(checkpoint), "method": "none", "device": "cpu"})
    assert report.plan["removed_layers"] == [] and report.parameters_after == report.parameters_before
    reference = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32).eval()
    inputs = move_inputs(encode(loaded.processor, loaded.adapter, [Prompt.from_text("hi", [example_image()])]),
                         "cpu", torch.float32)
    with torch.inference_mode():
        assert torch.equal(loaded.model(**inputs).logits, reference(**inputs).logits)


def test_second_budget_reuses_cached_scores(tiny_checkpoints, tmp_path):
    base = {"pretrained": str(tiny_checkpoints("llava", 8)), "method": "block_influence", "device": "cpu",
            "calib_limit": "8"}
    _, first = load_pruned({**base, "sparsity": "0.25"})
    _, second = load_pruned({**base, "sparsity": "0.5"})
    assert "calibrate" in first.timings_s and not first.cache["scores_hit"]
    assert second.cache["scores_hit"] and "calibrate" not in second.timings_s
    assert second.plan["scores"] == first.plan["scores"]
    assert set(first.plan["removed_layers"]) <= set(second.plan["removed_layers"])
    _, fresh = load_pruned({**base, "sparsity": "0.5", "recompute": "true"})
    assert "calibrate" in fresh.timings_s and fresh.plan["removed_layers"] == second.plan["removed_layers"]


def test_calibration_from_an_lmms_eval_task(tiny_checkpoints, tmp_path):
    base = {"pretrained": str(tiny_checkpoints("llava", 8)), "method": "angular", "n_remove": "2", "device": "cpu"}
    _, report = load_pruned({**base, "calib_task": "topo_synth_math", "calib_limit": "6"})
    assert report.calibration["source"] == "topo_synth_math" and report.calibration["samples"] == 6
    _, default = load_pruned({**base, "calib_limit": "6"})
    assert default.calibration["fingerprint"] != report.calibration["fingerprint"]
    with pytest.raises(ModelArgsError, match=r"^model_args: calib_task='no_such_task' is not a known lmms-eval task"):
        load_pruned({**base, "calib_task": "no_such_task"})
    with pytest.raises(ModelArgsError) as error:
        load_pruned({**base, "calib_task": "topo_synth_math", "calib_limit": "999"})
    assert str(error.value) == "model_args: calib_limit=999 but calib_task=topo_synth_math has only 100 samples"


def test_calibration_size_defaults_to_the_methods_own(tiny_checkpoints):
    base = {"pretrained": str(tiny_checkpoints("llava", 6)), "n_remove": "1", "device": "cpu"}
    _, topology = load_pruned({**base, "method": "topology"})
    _, angular = load_pruned({**base, "method": "angular"})
    assert topology.calibration["samples"] == 256 and angular.calibration["samples"] == 64
