"""Tiny random VLMs of every family load offline and run forward, generate and batches like Hub models."""

import huggingface_hub
import pytest
import torch
import transformers
from transformers import AutoModelForImageTextToText
from transformers.utils import is_torchvision_available

from lmms_topo_plugin.families import qwen
from lmms_topo_plugin.families.tiny import build_tiny_vlm, example_image, example_messages, tiny_config, tiny_model
from lmms_topo_plugin.families.tokenizer import build_tokenizer
from lmms_topo_plugin.models.processors import load_processor
from table import FAMILIES

QUESTIONS = ("What is in the image?", "How many red circles are there in this small picture?")
TEXT_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids")


@pytest.fixture(scope="module", params=FAMILIES)
def checkpoint(request, tiny_checkpoints):
    """(family, directory) of a tiny model saved once per family (build_tiny_vlm's default 4 layers)."""
    family = request.param
    return family, tiny_checkpoints(family, 4)


@pytest.fixture(scope="module")
def loaded(checkpoint):
    """(family, processor, model) loaded from the saved directory with the Hub switched off."""
    family, directory = checkpoint
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once at import time
        processor = load_processor(directory)
        model = AutoModelForImageTextToText.from_pretrained(directory).eval()
    return family, processor, model


def _inputs(processor, rows=(0,), **kwargs):
    """Processor inputs for prompts `rows`: row i asks QUESTIONS[i] about example_image(i)."""
    texts = [
        processor.apply_chat_template(example_messages(QUESTIONS[i]), add_generation_prompt=True, tokenize=False)
        for i in rows
    ]
    return processor(images=[example_image(i) for i in rows], text=texts, return_tensors="pt", **kwargs)


def _generate(model, inputs, **kwargs):
    """The greedily generated continuation of at most 5 tokens."""
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=5, do_sample=False, **kwargs)
    return output[:, inputs["input_ids"].shape[1] :]


def test_unknown_family_names_the_allowed_ones(tmp_path):
    with pytest.raises(ValueError, match="qwen2_5_vl"):
        build_tiny_vlm("gpt2", tmp_path)


@pytest.mark.parametrize("family", FAMILIES)
def test_config_has_requested_size_and_grouped_query_attention(family):
    text_config = tiny_config(family, num_layers=2, hidden_size=32).get_text_config()
    assert (text_config.num_hidden_layers, text_config.hidden_size) == (2, 32)
    assert text_config.num_key_value_heads < text_config.num_attention_heads


def test_processor_is_auto_processor_or_image_only_stand_in(loaded, checkpoint):
    family, processor, _ = loaded
    stand_in = family.startswith("qwen") and not is_torchvision_available()
    if stand_in:
        assert type(processor).__module__ == qwen.__name__
        assert (checkpoint[1] / "preprocessor_config.json").is_file()  # lets torchvision loaders add videos
        with pytest.raises(ValueError, match="torchvision"):
            processor(text=["<|vision_start|><|video_pad|><|vision_end|>"], videos=[[example_image()]])
    else:
        assert type(processor).__module__.startswith("transformers.")
    assert isinstance(processor, getattr(transformers, type(processor).__name__))


def test_reloaded_logits_equal_in_memory_model(loaded):
    family, processor, model = loaded
    tokenizer = processor.tokenizer
    in_memory = tiny_model(tiny_config(family, tokenizer=tokenizer), tokenizer, seed=0)
    inputs = _inputs(processor)
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, in_memory(**inputs).logits, rtol=0, atol=0)


def test_image_tokens_match_image_features(loaded):
    family, processor, model = loaded
    inputs = _inputs(processor)
    image_inputs = {key: value for key, value in inputs.items() if key not in TEXT_KEYS}
    with torch.no_grad():
        features = model.get_image_features(**image_inputs).pooler_output
        logits = model(**inputs).logits
    n_features = sum(f.reshape(-1, f.shape[-1]).shape[0] for f in features)
    n_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    # llava (32/8)^2, idefics3 (32/4)^2 / 2^2 after pixel shuffle, qwen a 4x6 patch grid of the 48x32 image merged
    # 2x2; llava_next 2x2 base tokens + its 1x2 anyres grid unpadded to 2x4 plus one newline per row
    assert n_tokens == {"llava": 16, "llava_next": 14, "qwen2_vl": 6, "qwen2_5_vl": 6, "idefics3": 16}[family]
    assert n_tokens == n_features
    assert logits.shape == (*inputs["input_ids"].shape, model.config.get_text_config().vocab_size)


def test_generation_is_the_same_with_and_without_cache(loaded):
    _, processor, model = loaded
    inputs = _inputs(processor)
    cached = _generate(model, inputs, use_cache=True)
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1]
    logits[list(model.generation_config.suppress_tokens)] = -torch.inf
    assert cached[0, 0].item() == logits.argmax().item()  # greedy: the forward pass's best allowed token
    eos = model.generation_config.eos_token_id
    assert cached.shape[1] == 5 or cached[0, -1].item() == eos, cached  # max_new_tokens, unless it ended
    assert torch.equal(cached, _generate(model, inputs, use_cache=False))


def test_left_padded_batch_generates_like_single_prompts(loaded):
    _, processor, model = loaded
    batch = _inputs(processor, rows=(0, 1), padding=True, padding_side="left")
    assert (batch["attention_mask"][:, 0] == 0).any(), "the shorter prompt should be left-padded"
    batched = _generate(model, batch)
    for row in (0, 1):
        single = _generate(model, _inputs(processor, rows=(row,)))
        assert torch.equal(batched[row, : single.shape[1]], single[0])


def test_tokenizer_splits_punctuation_and_keeps_specials_whole():
    tokenizer = build_tokenizer(["what", "is", "it"], {"bos_token": "<s>", "extra": ["<image>"]})
    ids = tokenizer("<s>What<image>is IT?!", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["<s>", "what", "<image>", "is", "it", "?", "!"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "what is it ? !"
