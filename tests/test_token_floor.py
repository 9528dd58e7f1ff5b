"""Issue 20, item 3: every token stage keeps at least one visual token of a prompt (a floor, with a warning that
names the stage and its parameter), ``token_ssr_mode=auto`` never picks top5 when it would keep none, and the
log says what HalfV's detection cost and whether it came from the cache. The tiny Llava has 16 visual tokens per
image, like the bundled model, so 5% of them is 0."""

import json
import re

import pytest
import torch
from loguru import logger

from lmms_topo_plugin.api import load_pruned
from lmms_topo_plugin.exporters.onnx.build import validation_prompts
from lmms_topo_plugin.models.prompting import encode
from lmms_topo_plugin.tokens import FastV, HalfV, RandomTokens
from lmms_topo_plugin.tokens.base import kept_count
from lmms_topo_plugin.tokens.lifecycle import ssr_mode_choice

FLOOR = "keeping 1 (the floor: a token stage keeps at least one visual token per prompt)"
TOP5_EMPTY = "top5 would keep 5% of 16 visual tokens = 0"


@pytest.fixture
def warnings():
    """The messages of the loguru warnings logged during the test."""
    messages: list[str] = []
    sink = logger.add(lambda message: messages.append(message.record["message"]), level="WARNING")
    yield messages
    logger.remove(sink)


def tiny_llava(tiny_checkpoints):
    return load_pruned({"pretrained": str(tiny_checkpoints("llava", 4)), "device": "cpu"})[0]


@pytest.mark.parametrize("count,fraction,kept", [
    (16, 0.05, 1), (19, 0.05, 1), (20, 0.05, 1), (40, 0.05, 2), (16, 0.25, 4), (3, 0.25, 1), (16, 1.0, 16), (0, 0.5, 0),
])
def test_a_stage_keeps_the_floor_of_its_share_but_at_least_one_visual_token(count, fraction, kept):
    assert kept_count(count, fraction) == kept


@pytest.mark.parametrize("pruner,kept,message", [
    (FastV(layer=1, keep=0.05), [1],
     "topo_pruned: token_method=fastv at layer 1: token_keep=0.05 keeps 5% of 16 visual tokens = 0; " + FLOOR),
    (RandomTokens(layer=2, keep=0.05, seed=3), [1],
     "topo_pruned: token_method=random at layer 2: token_keep=0.05 keeps 5% of 16 visual tokens = 0; " + FLOOR),
    (HalfV(layer=1, keep=0.05, anchor=0.1), [1],
     "topo_pruned: token_method=halfv at layer 1: token_keep=0.05 keeps 5% of 16 visual tokens = 0; " + FLOOR),
    (HalfV(layer=1, keep=0.5, anchor=0.1, ssr_layer=2, ssr_mode="top5"), [8, 1],
     "topo_pruned: token_method=halfv at layer 2: token_ssr_mode=top5 keeps 5% of 16 visual tokens = 0; " + FLOOR),
], ids=["fastv", "random", "halfv-step-1", "halfv-top5"])
def test_every_token_stage_keeps_at_least_one_visual_token_and_says_so_once(pruner, kept, message, tiny_checkpoints,
                                                                             warnings):
    loaded = tiny_llava(tiny_checkpoints)
    inputs = encode(loaded.processor, loaded.adapter, validation_prompts()[:1])
    assert int(loaded.adapter.image_token_mask(inputs["input_ids"]).sum()) == 16
    with pruner.attach(loaded.adapter) as state, torch.inference_mode():
        for _ in range(2):  # two prompts: the warning comes once
            loaded.model(**inputs, use_cache=False)
            prompt = state["prompt"]
            assert [int(prompt.visual.gather(1, stage).sum()) for stage in prompt.stages] == kept
        generated = loaded.model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 3
    assert warnings == [message]


def test_the_floor_is_per_prompt_and_rows_still_drop_alike(tiny_checkpoints, warnings):
    """Rows of 32 and 16 visual tokens at 5%: 1 and 1 (the floor) kept; each row drops the smaller row's 15, so
    the first keeps 17. Only the 16-token row needed the floor."""
    from lmms_topo_plugin.models.prompting import Prompt
    from lmms_topo_plugin.families.tiny import example_image

    loaded = tiny_llava(tiny_checkpoints)
    prompts = [Prompt.from_text("Compare them.", [example_image(1), example_image(2)]),
               Prompt.from_text("How many shapes are in this picture?", [example_image(3)])]
    inputs = encode(loaded.processor, loaded.adapter, prompts)
    with FastV(layer=1, keep=0.05).attach(loaded.adapter) as state, torch.inference_mode():
        loaded.model(**inputs, use_cache=False)
    prompt = state["prompt"]
    assert prompt.visual.sum(dim=1).tolist() == [32, 16]
    assert prompt.visual.gather(1, prompt.keep_index).sum(dim=1).tolist() == [17, 1]
    assert warnings == ["topo_pruned: token_method=fastv at layer 1: token_keep=0.05 keeps 5% of 16 visual tokens "
                        "= 0; " + FLOOR]


@pytest.mark.parametrize("kl,visual_tokens,choice", [
    (0.5, 16, ("freeze", TOP5_EMPTY)),
    (None, 16, ("freeze", TOP5_EMPTY)),  # the KL is not needed (detection skips it)
    (0.5, 19, ("freeze", "top5 would keep 5% of 19 visual tokens = 0")),
    (0.5, 20, ("top5", "KL of freezing the visual tokens from the SSR layer on 0.5 > 0.001")),
    (1e-4, 20, ("freeze", "KL of freezing the visual tokens from the SSR layer on 0.0001 <= 0.001")),
    (0.5, 0, ("top5", "KL of freezing the visual tokens from the SSR layer on 0.5 > 0.001")),
])
def test_auto_never_picks_top5_when_it_would_keep_no_visual_token(kl, visual_tokens, choice):
    assert ssr_mode_choice(kl, visual_tokens) == choice


def log_messages(text: str) -> list[str]:
    """The messages of the loguru lines in ``text`` (``time | LEVEL | place - message``, colours removed)."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines()
    return [line.split(" - ", 1)[1] for line in lines if " | " in line and " - " in line]


def test_the_prune_command_logs_and_records_what_halfv_detection_cost(tiny_checkpoints, tmp_path, capsys,
                                                                       monkeypatch):
    """``topo-prune prune`` with ``token_method=halfv`` on a layer-pruned model: auto picks freeze because top5
    would keep none of 16 visual tokens; the detection line gives its time (the clock is fixed here), its
    prompts and batch size, then "cached" on the second run; the checkpoint's record holds the seconds and the
    reason, the report the timing."""
    from lmms_topo_plugin.cli.main import main
    from lmms_topo_plugin.tokens import auto_layer

    clock = iter([100.0, 112.5, 200.0, 200.25])
    monkeypatch.setattr(auto_layer, "perf_counter", lambda: next(clock))
    args = (f"pretrained={tiny_checkpoints('llava', 6)},method=random,n_remove=1,device=cpu,token_method=halfv,"
            f"calib_limit=4,cache_dir={tmp_path / 'cache'}")
    assert main(["prune", "--model-args", args, "--save", str(tmp_path / "saved"),
                 "--report-dir", str(tmp_path / "reports")]) == 0
    record = json.loads((tmp_path / "saved" / "config.json").read_text())["topo_pruning"]["token_pruning"]
    ivr, ssr = record["layer"], record["ssr_layer"]
    assert ivr < ssr
    assert record == {"method": "halfv", "keep": 0.5, "layer": ivr, "seed": 0, "anchor": 0.1, "ssr_mode": "freeze",
                      "ssr_layer": ssr,
                      "detected": {"ivr_layer": ivr, "ssr_layer": ssr, "samples": 4, "fewest_visual_tokens": 16,
                                   "ssr_mode": "freeze", "ssr_mode_reason": TOP5_EMPTY, "cached": False,
                                   "seconds": 12.5}}
    found = f"topo_pruned: HalfV detection: IVR layer {ivr}, SSR layer {ssr}, SSR mode freeze ({TOP5_EMPTY}); "
    lines = [message for message in log_messages(capsys.readouterr().err) if "HalfV detection" in message]
    assert lines == [found + "took 12.5 s over 4 calibration prompts at calib_batch_size=8, cached for later runs"]
    latest = json.loads((tmp_path / "reports" / "topo_pruned_latest.json").read_text())
    report = json.loads((tmp_path / "reports" / latest["report"]).read_text())
    assert report["timings_s"]["token_stages"] > 0
    assert {key: report["config"][key] for key in ("token_layer", "token_ssr_mode", "token_ssr_layer")} == {
        "token_layer": ivr, "token_ssr_mode": "freeze", "token_ssr_layer": ssr}

    assert main(["prune", "--model-args", args, "--report-dir", str(tmp_path / "again")]) == 0
    lines = [message for message in log_messages(capsys.readouterr().err) if "HalfV detection" in message]
    assert lines == [found + "cached (4 calibration prompts), read in 0.2 s"]


def test_detection_chooses_by_the_kl_when_top5_keeps_tokens(tiny_checkpoints, tmp_path):
    """With a top5 share that keeps tokens of 16 (25%: 4), the mode comes from the freezing KL at the SSR layer,
    the same KL and mode as ``analyze --what entropy``'s computation."""
    from lmms_topo_plugin.cache import DiskCache
    from lmms_topo_plugin.config.prune import PruneConfig
    from lmms_topo_plugin.pipeline import calibration_prompts
    from lmms_topo_plugin.tokens.auto_layer import detected_stages
    from lmms_topo_plugin.tokens.lifecycle import analyze_lifecycle

    loaded = load_pruned({"pretrained": str(tiny_checkpoints("llava", 6)), "device": "cpu"})[0]
    prompts = calibration_prompts(PruneConfig.from_model_args({}), 4)
    found = detected_stages(loaded, prompts, "tiny", [], DiskCache(tmp_path), 2, ssr_kl=True, ssr_keep=0.25)
    lifecycle = analyze_lifecycle(loaded.adapter, loaded.processor, prompts, show_progress=False)
    kl = lifecycle["freezing_kl"][lifecycle["ssr_layer"]]
    assert found.pop("kl_at_ssr") == pytest.approx(kl, rel=1e-9)
    assert found.pop("seconds") >= 0
    mode = "freeze" if kl <= 1e-3 else "top5"
    assert found == {"ivr_layer": lifecycle["ivr_layer"], "ssr_layer": lifecycle["ssr_layer"], "samples": 4,
                     "fewest_visual_tokens": 16, "ssr_mode": mode, "cached": False,
                     "ssr_mode_reason": f"KL of freezing the visual tokens from the SSR layer on {kl:.2g} "
                                        f"{'<=' if mode == 'freeze' else '>'} 0.001"}
    # analyze's own choice on 16 tokens at 5%: freeze, for the reason the log gives
    assert (lifecycle["ssr_mode"], lifecycle["ssr_mode_reason"]) == ("freeze", TOP5_EMPTY)


@pytest.mark.e2e
def test_an_lmms_eval_run_with_top5_on_16_visual_tokens_keeps_one_and_warns_once(tiny_checkpoints, tmp_path):
    from cli import lmms_eval

    model_args = (f"pretrained={tiny_checkpoints('llava', 4)},device=cpu,token_method=halfv,token_keep=0.5,"
                  "token_layer=1,token_ssr_mode=top5,token_ssr_layer=2")
    result = lmms_eval(model_args, tmp_path / "out", limit=4)
    assert result.returncode == 0, result.stderr[-3000:]
    # lmms-eval sends the log to stdout, in colour
    assert [message for message in log_messages(result.stdout + result.stderr) if "the floor" in message] == [
        "topo_pruned: token_method=halfv at layer 2: token_ssr_mode=top5 keeps 5% of 16 visual tokens = 0; " + FLOOR]
    (results,) = (tmp_path / "out").rglob("*_results.json")
    assert "exact_match,none" in json.loads(results.read_text())["results"]["topo_synth_count"]
