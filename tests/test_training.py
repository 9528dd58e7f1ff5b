"""Smoke tests of the default model's training recipe on a tiny config (a few seconds on CPU)."""

import json

import torch
from transformers import AutoModelForImageTextToText

from lmms_topo_plugin.families import get_adapter
from lmms_topo_plugin.models.processors import load_processor
from lmms_topo_plugin.synthbench import load_split
from lmms_topo_plugin.tools.training import data
from lmms_topo_plugin.tools.training.model import ModelSpec, build_model
from lmms_topo_plugin.tools.training.train import (
    PatchHead,
    TrainConfig,
    caption_accuracy,
    patch_features,
    suffix_forward,
    train,
)

TINY = ModelSpec(text_layers=2, text_width=32, text_mlp=64, text_heads=2, text_kv_heads=2,
                 vision_layers=1, vision_width=32, vision_mlp=64, vision_heads=2)


def _losses(step_fn, params, steps=20, lr=3e-3):
    optimizer = torch.optim.AdamW(params, lr=lr)
    losses = []
    for _ in range(steps):
        loss = step_fn()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_both_stages_learn_a_fixed_batch():
    torch.manual_seed(0)
    model, processor = build_model(TINY, seed=0)
    docs = data.take(data.kind_mixture(0), 8)

    vision = data.vision_batch(processor, docs)
    head = PatchHead(model.config.vision_config.hidden_size)

    def vision_step():
        logits = head(patch_features(model, vision["pixel_values"]))
        return sum(torch.nn.functional.cross_entropy(v.flatten(0, 1), vision[k].flatten(), ignore_index=data.IGNORE)
                   for k, v in logits.items())

    losses = _losses(vision_step, [*model.model.vision_tower.parameters(), *head.parameters()])
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]

    batch = data.qa_batch(processor, get_adapter(model), docs)
    def qa_step():
        logits, targets, _ = suffix_forward(model, batch, 2, bf16=False)
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())

    losses = _losses(qa_step, list(model.parameters()))
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.8 * losses[0]


def test_prompt_format_has_one_image_token_per_cell_and_targets_at_the_end():
    model, processor = build_model(TINY, seed=0)
    docs = data.take(data.kind_mixture(1), 4)
    batch = data.qa_batch(processor, get_adapter(model), docs)
    tokenizer = processor.tokenizer
    image_id = model.config.image_token_index
    assert ((batch["input_ids"] == image_id).sum(1) == 16).all()
    assert tokenizer.unk_token_id not in batch["input_ids"].tolist()
    assert (batch["input_ids"][:, -1] == tokenizer.eos_token_id).all()
    answers = tokenizer.convert_ids_to_tokens(batch["input_ids"][:, -2].tolist())
    assert answers == [doc["answer"] for doc in docs]


def test_caption_names_every_cell_in_order():
    model, processor = build_model(TINY, seed=0)
    docs = data.take(data.kind_mixture(2), 4)
    batch = data.caption_batch(processor, get_adapter(model), docs)
    tokenizer = processor.tokenizer
    assert tokenizer.unk_token_id not in batch["input_ids"].tolist()
    for doc, row in zip(docs, batch["input_ids"]):
        words = tokenizer.convert_ids_to_tokens(row[-data.CAPTION_TARGETS :].tolist())
        assert words[-1] == tokenizer.eos_token and len(words) == 33
        cells = [" ".join(words[i : i + 2]) for i in range(0, 32, 2)]
        for item in doc["scene"]:
            assert cells[item["row"] * 4 + item["col"]] == f"{item['color']} {item['shape']}"
        assert cells.count(data.EMPTY_CELL) == 16 - len(doc["scene"])


def test_scene_summary_labels():
    doc = {"question": "Is the red circle to the left of the blue cross?", "scene": [{"shape": "circle", "color": "red", "row": 1, "col": 2},
                     {"shape": "circle", "color": "blue", "row": 3, "col": 0},
                     {"shape": "cross", "color": "blue", "row": 0, "col": 0},
                     {"shape": "cross", "color": "blue", "row": 2, "col": 3}]}
    labels = data.summary_labels([doc])
    red_circle, blue_cross = data.COMBOS.index(("circle", "red")), data.COMBOS.index(("cross", "blue"))
    assert labels["combo"][0].tolist() == [int(c in (red_circle, blue_cross, data.COMBOS.index(("circle", "blue"))))
                                           for c in range(16)]
    assert (labels["row"][0, red_circle], labels["col"][0, red_circle]) == (2, 3)  # 1 + row, 1 + col
    assert labels["row"][0, blue_cross] == data.IGNORE  # two blue crosses: no single position
    assert labels["row"][0, data.COMBOS.index(("square", "red"))] == 0  # absent
    # circle, square, triangle, cross; red, green, blue, yellow; all
    assert labels["count"][0].tolist() == [2, 0, 0, 2, 1, 0, 3, 0, 4]
    assert {name: labels[name][0].tolist() for name in ("template", "colors", "shapes", "relation")} == {
        "template": [4], "colors": [1, 3], "shapes": [1, 4], "relation": [1]}
    assert labels["named"][0].tolist() == [2, 3, data.IGNORE, data.IGNORE]  # the red circle; two blue crosses
    difference = data.question_labels("How many more circles than blue shapes are there?")
    assert difference == {"template": [6], "colors": [3, 0], "shapes": [1, 0], "relation": [0]}


def without_time(entry):
    return {k: v for k, v in entry.items() if k != "minutes"}


def test_recipe_saves_a_reloadable_fp16_checkpoint(tmp_path):
    cfg = TrainConfig(spec=TINY, vision_steps=3, steps=3, batch=4, vision_batch=4, warmup=1, eval_every=3,
                      log_every=1, kind_weights={"count": 1.0}, caption_steps=1, caption_every=2,
                      summary_layer=1)
    log = train(cfg, tmp_path / "model")
    written = json.loads((tmp_path / "model" / "training_log.json").read_text())
    assert written["stage2"]["steps_done"] == log["stage2"]["steps_done"] == 3
    assert written["final_monitor"] == log["final_monitor"] == log["history"][-1]
    assert log["final_monitor"]["step"] == 3

    # seeded: the same recipe without saving gives the same monitor, and its fp32 model (saving rounds the returned
    # one to fp16 and back) reproduces the logged caption accuracy on the first 128 calib docs exactly
    unsaved = train(cfg)
    assert without_time(unsaved["final_monitor"]) == without_time(log["final_monitor"])
    monitor_docs = load_split(cfg.eval_split)[:128]
    processor = load_processor(tmp_path / "model")
    batch = data.caption_batch(processor, get_adapter(unsaved["model"]), monitor_docs)
    assert caption_accuracy(unsaved["model"], batch, cfg.bf16) == log["final_monitor"]["caption_tokens"]

    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "model")
    assert model.config.model_type == "llava" and model.dtype == torch.float16
    assert processor.chat_template and processor.tokenizer.eos_token == "</s>"
    # the fp16 checkpoint, read back in fp32, agrees up to a few near-tied caption tokens of the 128 x 32
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "model", dtype=torch.float32)
    reloaded_batch = data.caption_batch(processor, get_adapter(reloaded), monitor_docs)
    tokens = 128 * (data.CAPTION_TARGETS - 1)
    difference = caption_accuracy(reloaded, reloaded_batch, cfg.bf16) - log["final_monitor"]["caption_tokens"]
    assert abs(difference) <= 4 / tokens
