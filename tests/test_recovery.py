"""Recovery (``recover=kd``): the distillation loss, LoRA merging, training that lowers the held-out KL, the cache of
recovered weights, refusals before loading, data-parallel training and the inline lmms-eval journey."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from cli import lmms_eval, torchrun
from table import FAMILIES, REPRESENTATIVE_FAMILIES
from lmms_topo_plugin.config.prune import PruneConfig
from lmms_topo_plugin.config.recovery import RecoveryConfig
from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.recovery.loss import kd_loss, kd_token_losses, top_k_targets

# a small recovery on a tiny LLaVA (random weights): enough steps and learning rate to move it
TINY = "method=spacing,n_remove=2,recover=kd,recover_samples=24,recover_steps=12,recover_batch_size=4,recover_lr=0.01"


def _by_hand_kl(teacher_logits: list[list[float]], student_logits: list[list[float]], k: int) -> float:
    """Mean over rows of Σ_i p_i (log p_i − log q_i), p the teacher's softmax renormalised over its k most likely
    tokens, q the student's softmax over all of them: plain Python floats."""
    total = 0.0
    for teacher, student in zip(teacher_logits, student_logits):
        top = sorted(range(len(teacher)), key=lambda i: -teacher[i])[:k]
        p_norm = sum(math.exp(teacher[i]) for i in top)
        q_norm = sum(math.exp(value) for value in student)
        for i in top:
            p = math.exp(teacher[i]) / p_norm
            total += p * (math.log(p) - math.log(math.exp(student[i]) / q_norm))
    return total / len(teacher_logits)


@pytest.mark.parametrize("k", [7, 3])
def test_kd_loss_is_the_kl_computed_by_hand(k):
    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(5, 7, generator=generator, dtype=torch.float64) * 2
    student = torch.randn(5, 7, generator=generator, dtype=torch.float64) * 2
    ids, log_probs = top_k_targets(teacher, k)
    loss = kd_loss(student, ids, log_probs)
    assert abs(float(loss) - _by_hand_kl(teacher.tolist(), student.tolist(), k)) < 1e-6
    assert ids.shape == (5, k) and torch.allclose(log_probs.exp().sum(-1), torch.ones(5))


def test_kd_loss_is_zero_for_the_teacher_itself_and_positive_for_another_student():
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 3.0, -2.0]])
    ids, log_probs = top_k_targets(logits, 4)
    assert kd_token_losses(logits, ids, log_probs).abs().max() < 1e-6
    assert (kd_token_losses(logits.flip(-1), ids, log_probs) > 0.1).all()


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_the_teacher_never_answers_with_an_image_placeholder(tiny_checkpoints, family):
    """A dense model that would answer with its image token (a bias of +100 on that logit) answers otherwise: read
    back as part of prompt + answer, an image token without an image breaks the forward."""
    from lmms_topo_plugin.recovery.data import generator_prompts
    from lmms_topo_plugin.recovery.teacher import compute_targets, greedy_answers

    loaded = _loaded(tiny_checkpoints(family, 4))
    image = loaded.adapter.image_token_id
    loaded.model.generation_config.suppress_tokens = None  # the tiny recipes suppress it; real checkpoints do not
    loaded.model.lm_head.register_forward_hook(lambda module, args, output: output + 100 * (
        torch.arange(output.shape[-1]) == image))
    prompts = generator_prompts(2, seed=0)
    with torch.inference_mode():
        preferred = _logits(loaded, prompts)[:, -1].argmax(-1)
    assert (preferred == image).all()  # the bias works: left alone, the model answers with the image token
    answers = greedy_answers(loaded, prompts, max_new_tokens=3)
    assert all(len(answer) > 0 and image not in answer for answer in answers)
    targets = compute_targets(loaded, prompts, RecoveryConfig(recover="kd", recover_max_new_tokens=3))
    assert targets.answers([0, 1]) == answers


def test_hidden_term_is_the_relative_squared_error_computed_by_hand():
    from lmms_topo_plugin.recovery.loss import hidden_token_losses

    generator = torch.Generator().manual_seed(0)
    student = torch.randn(4, 3, 5, generator=generator, dtype=torch.float64)
    teacher = torch.randn(4, 3, 5, generator=generator, dtype=torch.float64)
    by_hand = [sum(sum((s - t) ** 2 for s, t in zip(student[p, d].tolist(), teacher[p, d].tolist()))
                   / sum(t * t for t in teacher[p, d].tolist()) for d in range(3)) / 3 for p in range(4)]
    assert hidden_token_losses(student, teacher).tolist() == pytest.approx(by_hand, rel=1e-6)
    assert hidden_token_losses(teacher, teacher).abs().max() == 0


@pytest.mark.parametrize("family", REPRESENTATIVE_FAMILIES)
def test_residual_streams_are_the_hidden_states_transformers_returns(tiny_checkpoints, family):
    """Entering each decoder layer, then the final norm's output: what ``output_hidden_states=True`` gives."""
    from lmms_topo_plugin.models.prompting import encode
    from lmms_topo_plugin.recovery.data import generator_prompts
    from lmms_topo_plugin.recovery.sequences import residual_streams

    loaded = _loaded(tiny_checkpoints(family, 4))
    inputs = encode(loaded.processor, loaded.adapter, generator_prompts(2, seed=0))
    with torch.no_grad(), residual_streams(loaded.adapter) as captured:
        expected = loaded.model(**inputs, output_hidden_states=True, use_cache=False).hidden_states
    assert len(captured) == len(expected) == 5
    assert all(torch.equal(ours, theirs) for ours, theirs in zip(captured, expected))


def test_matched_depths_pair_the_stream_entering_each_kept_layer_with_the_teachers(tiny_checkpoints):
    """Layers 2 and 4 of 6 removed: the student's stream entering its layer 1 (the teacher's 1) is the teacher's
    exactly, entering its layer 2 (the teacher's 3) it lacks layer 2's update, and so on to the final norm."""
    from lmms_topo_plugin.recovery.data import generator_prompts
    from lmms_topo_plugin.recovery.loss import hidden_token_losses
    from lmms_topo_plugin.recovery.sequences import answer_batch, answer_outputs
    from lmms_topo_plugin.recovery.train import matched_depths
    from lmms_topo_plugin.surgery.layers import layers_removed

    loaded = _loaded(tiny_checkpoints("llava", 6))
    words = loaded.processor.tokenizer("two three", add_special_tokens=False)["input_ids"]
    batch = answer_batch(loaded.processor, loaded.adapter, generator_prompts(2, seed=0), [words, words[:1]])
    with torch.inference_mode():
        _, teacher = answer_outputs(loaded, batch, states=True)
        with layers_removed(loaded.adapter, [2, 4]) as kept:
            _, student = answer_outputs(loaded, batch, states=True)
    assert kept == [0, 1, 3, 5] and teacher.shape[1:2] == (7,) and student.shape[1:2] == (5,)
    student_depths, teacher_depths = matched_depths(kept, 6)
    assert (student_depths, teacher_depths) == ([1, 2, 3, 4], [1, 3, 5, 6])
    per_depth = [hidden_token_losses(student[:, [s]], teacher[:, [t]]) for s, t in zip(student_depths, teacher_depths)]
    assert per_depth[0].abs().max() == 0 and all(error.min() > 1e-6 for error in per_depth[1:])


def _loaded(checkpoint):
    from lmms_topo_plugin.pipeline import prepare
    from lmms_topo_plugin.models.loading import load_model

    config = PruneConfig.from_model_args(f"pretrained={checkpoint}")
    prepared = prepare(config, load_calibration=False)
    return load_model(config.load, prepared.pretrained, prepared.hf_config)


def _logits(loaded, prompts):
    from lmms_topo_plugin.runtime.generation import prompt_logits

    return prompt_logits(loaded, prompts)


@pytest.mark.parametrize("family", REPRESENTATIVE_FAMILIES)
def test_lora_merged_gives_the_logits_of_the_unmerged_adapter(tiny_checkpoints, family):
    from lmms_topo_plugin.recovery.data import generator_prompts
    from lmms_topo_plugin.recovery.train import changed_parameters, decoder_linears, trainable, weights_restored

    loaded = _loaded(tiny_checkpoints(family, 4))
    prompts = generator_prompts(3, seed=0)
    dense, dense_state = _logits(loaded, prompts), _state(loaded)
    generator = torch.Generator().manual_seed(1)
    targets = decoder_linears(loaded)
    recovery = RecoveryConfig(recover="kd", recover_lora_rank=4)
    with weights_restored(loaded, changed_parameters(loaded, recovery)):
        with trainable(loaded, recovery, seed=0) as params:
            assert sorted({name.split(".lora_")[0] for name in params}) == sorted(targets)
            with torch.no_grad():
                for name, parameter in params.items():
                    if "lora_B" in name:  # B starts at zero: give the adapters something to merge
                        parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
            adapted = _logits(loaded, prompts)
        merged, merged_state = _logits(loaded, prompts), _state(loaded)
    assert (adapted - dense).abs().max() > 1e-3  # the adapters change the model
    assert (merged - adapted).abs().max() < 1e-5
    assert not any("lora" in name for name, _ in loaded.model.named_modules())
    assert all(parameter.requires_grad for parameter in loaded.model.parameters())
    changed = {name for name in dense_state if not torch.equal(dense_state[name], merged_state[name])}
    assert changed == set(changed_parameters(loaded, recovery))  # merging changed exactly those
    restored = _state(loaded)
    assert all(torch.equal(restored[name], dense_state[name]) for name in dense_state)


@pytest.mark.parametrize("family", REPRESENTATIVE_FAMILIES)
def test_a_token_pruner_chooses_on_the_prompt_as_when_the_model_answers(tiny_checkpoints, family):
    """The student's logits at the first answer position (prompt + answer, the pruner's choice made on the prompt)
    are the logits a prompt-only forward with the pruner gives for the next token: the deployed computation."""
    from lmms_topo_plugin.recovery.data import generator_prompts
    from lmms_topo_plugin.recovery.sequences import answer_batch, answer_logits
    from lmms_topo_plugin.tokens import FastV

    loaded = _loaded(tiny_checkpoints(family, 4))
    prompts = generator_prompts(3, seed=0)
    pruner = FastV(layer=1, keep=0.25)
    words = loaded.processor.tokenizer("two three four five six", add_special_tokens=False)["input_ids"]
    answers = [words[:2], words[2:3], words[3:5]]  # ordinary text tokens (a tiny Qwen's image token is id 5)
    batch = answer_batch(loaded.processor, loaded.adapter, prompts, answers)
    with torch.inference_mode():
        logits = answer_logits(loaded, batch, pruner)
        with pruner.attach(loaded.adapter):
            prompt_only = loaded.model(**batch.prompt_inputs, use_cache=False).logits[:, -1].float()
        unpruned = answer_logits(loaded, batch)
    first = [0, 2, 3]  # the first answer token of each row among the 5 answer tokens
    assert logits.shape == (5, prompt_only.shape[-1])
    assert (logits[first] - prompt_only).abs().max() < 1e-5
    assert (logits - unpruned).abs().max() > 1e-4  # the pruner was attached


def _state(loaded) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in loaded.model.state_dict().items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_recovery_lowers_the_heldout_kl_and_a_second_run_reads_the_same_weights(tiny_checkpoints, family):
    from lmms_topo_plugin.api import load_pruned
    from lmms_topo_plugin.records import recovery_record_of

    args = f"pretrained={tiny_checkpoints(family, 6)},{TINY}"
    loaded, report = load_pruned(args)
    record = report.recovery
    assert record["kl_after"] < record["kl_before"]
    assert record["cache"]["hit"] is False and record["teacher"]["hit"] is False
    assert record["weights_changed"] is True and len(record["loss_curve"]) == 12
    assert record["data"]["samples"] == 24 and record["data"]["heldout"] == 6
    assert record["data"]["source"].startswith("bundled:topo_synth/train-stream")
    saved = recovery_record_of(loaded.model.config)
    assert saved["kl_after"] == record["kl_after"] and "loss_curve" not in saved
    again, second = load_pruned(args)
    assert second.recovery["cache"] == {"key": record["cache"]["key"], "hit": True}
    assert second.recovery["teacher"]["hit"] is True
    assert second.recovery["kl_after"] == record["kl_after"]
    first_state, second_state = _state(loaded), _state(again)
    assert first_state.keys() == second_state.keys()
    assert all(torch.equal(first_state[name], second_state[name]) for name in first_state)


def test_hidden_state_matching_lowers_its_term_and_keeps_its_own_cache_entry(tiny_checkpoints):
    from lmms_topo_plugin.api import load_pruned

    args = f"pretrained={tiny_checkpoints('llava', 6)},{TINY}"
    _, plain = load_pruned(args)
    _, matched = load_pruned(f"{args},recover_hidden=1")
    record = matched.recovery
    assert record["hidden_weight"] == 1.0 and record["hidden_after"] < record["hidden_before"]
    assert record["kl_after"] < record["kl_before"]
    assert record["cache"]["hit"] is False and record["teacher"]["hit"] is False  # its own teacher (with states)
    assert record["cache"]["key"] != plain.recovery["cache"]["key"]
    assert record["kl_before"] == pytest.approx(plain.recovery["kl_before"], abs=1e-9)  # same model, same prompts
    assert plain.recovery["hidden_weight"] == 0.0 and plain.recovery["hidden_before"] is None
    assert record["loss_curve"] != plain.recovery["loss_curve"]


def test_full_recovery_of_a_width_pruned_model_changes_the_decoder_weights_only(tiny_checkpoints):
    from lmms_topo_plugin.api import load_pruned

    args = (f"pretrained={tiny_checkpoints('llava', 4)},method=comp,sparsity=0.2,calib_limit=16,recover=kd,"
            "recover_samples=8,recover_steps=3,recover_batch_size=4,recover_params=full,recover_lr=0.001")
    pruned, _ = load_pruned(args.split(",recover=")[0])
    loaded, report = load_pruned(args)
    record = report.recovery
    assert record["params"] == "full" and record["lora_rank"] is None
    assert [action["kind"] for action in report.plan["actions"]][0] == "slice_widths"  # the model is width-pruned
    before, after = _state(pruned), _state(loaded)
    changed = sorted(name for name in before if not torch.equal(before[name], after[name]))
    decoder = {name for name in before if ".language_model.layers." in name or ".language_model.norm." in name}
    assert changed and set(changed) <= decoder
    assert record["trained_parameters"] == sum(before[name].numel() for name in decoder)


@pytest.mark.parametrize("model_args, message", [
    ("recover=maybe", "model_args: recover='maybe' is not valid; expected one of none, kd"),
    ("method=spacing,n_remove=1,recover=kd,recover_steps=0",
     "model_args: recover_steps='0' is out of range; expected an int in [1, 1000000]"),
    ("method=spacing,n_remove=1,recover=kd,recover_lr=-1",
     "model_args: recover_lr='-1' is out of range; expected a float in [1e-08, 1.0]"),
    ("method=spacing,n_remove=1,recover=kd,recover_params=half",
     "model_args: recover_params='half' is not valid; expected one of lora, full"),
    ("method=spacing,n_remove=1,recover_steps=5", "model_args: recover_steps= needs recover=kd"),
    ("method=spacing,n_remove=1,recover_hidden=1", "model_args: recover_hidden= needs recover=kd"),
    ("method=spacing,n_remove=1,recover=kd,recover_hidden=-0.5",
     "model_args: recover_hidden='-0.5' is out of range; expected a float in [0.0, 1000.0]"),
    ("method=spacing,n_remove=1,recover=kd,recover_params=full,recover_lora_rank=4",
     "model_args: recover_lora_rank= is a parameter of recover_params=lora, not of recover_params=full"),
    ("recover=kd", "model_args: recover=kd trains a pruned model back towards the dense one; with method=none nothing "
                   "is pruned: set method= and sparsity=, or drop recover="),
    ("method=spacing,n_remove=0,recover=kd",
     "model_args: recover=kd with n_remove=0 has nothing to recover: the model is not pruned"),
])
def test_bad_recovery_values_are_refused_before_loading(model_args, message, monkeypatch):
    from lmms_topo_plugin import api

    monkeypatch.setattr(api, "load_model", lambda *a, **k: pytest.fail("weights loaded"))
    with pytest.raises(ModelArgsError) as error:
        api.load_pruned(model_args)
    assert str(error.value) == message


def test_the_recovery_keys_are_in_the_config_and_its_report_form():
    config = PruneConfig.from_model_args("method=spacing,n_remove=1,recover=kd,recover_steps=7")
    assert config.recovery == RecoveryConfig(recover="kd", recover_steps=7)
    assert config.as_dict()["recover_steps"] == 7 and config.as_dict()["recover"] == "kd"
    assert PruneConfig().recovery.enabled is False


def test_recovery_prompts_come_from_the_training_stream_never_dev_or_test():
    from lmms_topo_plugin import synthbench
    from lmms_topo_plugin.recovery.data import dev_keys, generator_prompts, recovery_data

    data = recovery_data(40, seed=3)
    assert len(data.train) == 40 and len(data.heldout) == 10
    def item(text, image):
        return text, hashlib.sha256(image.tobytes()).hexdigest()

    stored = {item(synthbench.prompt_for(doc), doc["image"]) for split in ("dev", "test", "calib")
              for doc in synthbench.load_split(split)}
    drawn = {item(prompt.messages[0]["content"][-1]["text"], prompt.images[0]) for prompt in data.prompts}
    assert len(drawn) == 50 and not drawn & stored
    assert dev_keys() and recovery_data(40, seed=3).fingerprint == data.fingerprint
    assert recovery_data(40, seed=4).fingerprint != data.fingerprint
    assert [p.messages for p in generator_prompts(5, seed=3)] == [p.messages for p in data.train[:5]]


DATA_PARALLEL = """
import json, sys, torch, torch.distributed as dist
from lmms_topo_plugin.api import load_pruned
from lmms_topo_plugin.distributed import join_launched_processes, rank
join_launched_processes()
loaded, report = load_pruned(sys.argv[1])
state = {name: tensor.tolist() for name, tensor in loaded.model.state_dict().items() if ".layers." in name}
with open(f"{sys.argv[2]}.{rank()}.json", "w") as handle:
    json.dump({"state": state, "recovery": report.recovery}, handle)
"""


@pytest.mark.e2e
def test_two_processes_end_with_the_weights_of_one_process_on_the_whole_batch(tiny_checkpoints, tmp_path):
    script = tmp_path / "recover.py"
    script.write_text(DATA_PARALLEL)
    args = f"pretrained={tiny_checkpoints('llava', 6)},{TINY.replace('recover_steps=12', 'recover_steps=4')},device=cpu"
    result = torchrun(2, script, f"{args},cache_dir={tmp_path / 'two'}", tmp_path / "two")
    assert result.returncode == 0, result.stderr[-3000:]
    from cli import python

    single = python(script, f"{args},cache_dir={tmp_path / 'one'}", tmp_path / "one")
    assert single.returncode == 0, single.stderr[-3000:]
    ranks = [json.loads(Path(f"{tmp_path / 'two'}.{r}.json").read_text()) for r in (0, 1)]
    one = json.loads(Path(f"{tmp_path / 'one'}.0.json").read_text())
    assert ranks[0]["state"] == ranks[1]["state"]  # every rank ends with the same weights, exactly
    assert ranks[0]["recovery"]["world_size"] == 2 and one["recovery"]["world_size"] == 1
    for name, values in one["state"].items():
        assert torch.allclose(torch.tensor(ranks[0]["state"][name]), torch.tensor(values), atol=1e-5), name
    assert ranks[0]["state"].keys() == one["state"].keys()
    assert ranks[0]["recovery"]["loss_curve"] == pytest.approx(one["recovery"]["loss_curve"], rel=1e-4)


@pytest.mark.e2e
def test_lmms_eval_evaluates_the_recovered_bundled_model_and_reports_it(tmp_path):
    out = tmp_path / "out"
    result = lmms_eval("method=block_influence,sparsity=0.25,recover=kd,recover_samples=32,recover_steps=5,device=cpu",
                       out, limit=8)
    assert result.returncode == 0, result.stderr[-3000:]
    (latest,) = out.rglob("topo_pruned_latest.json")
    pointer = json.loads(latest.read_text())
    report = json.loads((latest.parent / pointer["report"]).read_text())
    recovery = report["recovery"]
    assert recovery["weights_changed"] is True and recovery["steps"] == 5 and len(recovery["loss_curve"]) == 5
    assert recovery["data"]["source"].startswith("bundled:topo_synth/train-stream")
    assert "recovery" in report["plots"] and (latest.parent / report["plots"]["recovery"]).read_bytes()[:4] == b"\x89PNG"
    assert report["config"]["recover"] == "kd"
