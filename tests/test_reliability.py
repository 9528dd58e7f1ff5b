"""Side effects and cache keys: what a run leaves behind, and what makes a cached result stale."""

import json
import os
import stat
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForImageTextToText

from cli import python
from lmms_topo_plugin.api import load_pruned, score_layers
from lmms_topo_plugin.cache import DiskCache, atomic_write_bytes
from lmms_topo_plugin.cli.main import main
from lmms_topo_plugin.models.loading import load_config, load_model
from lmms_topo_plugin.pipeline import model_fingerprint
from lmms_topo_plugin.config.prune import LoadConfig
from lmms_topo_plugin.models.prompting import Prompt, encode
from lmms_topo_plugin.families.tiny import example_image


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_get_the_mode_of_an_ordinary_file(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "report.json", b"{}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "report.json").stat().st_mode) == mode


@pytest.mark.parametrize("kind", ["json", "tensors"])
def test_a_truncated_cache_entry_is_a_miss_and_gets_rewritten(tmp_path, kind):
    cache = DiskCache(tmp_path)
    if kind == "json":
        path = cache.put_json("scores", "k", {"importance": [1.0, 2.0]})
        get, value = (lambda: cache.get_json("scores", "k")), {"importance": [1.0, 2.0]}
    else:
        path = cache.put_tensors("stats", "k", {"token_cosine": torch.arange(4.0)})
        get, value = (lambda: cache.get_tensors("stats", "k")), None
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert get() is None
    if kind == "json":
        cache.put_json("scores", "k", value)
        assert get() == value


def test_a_run_recovers_from_a_truncated_scores_entry(tiny_checkpoints, tmp_path):
    args = {"pretrained": str(tiny_checkpoints("llava", 6)), "method": "block_influence", "n_remove": 1,
            "device": "cpu", "calib_limit": 4, "cache_dir": str(tmp_path / "cache")}
    _, first = load_pruned(args)
    scores_file = tmp_path / "cache" / "scores" / f"{first.cache['scores_key']}.json"
    scores_file.write_text(scores_file.read_text()[:20])
    _, second = load_pruned(args)
    assert (second.cache["scores_hit"], second.cache["stats_hit"]) == (False, True)
    assert second.plan["removed_layers"] == first.plan["removed_layers"]
    assert json.loads(scores_file.read_text()) == first.plan["scores"]


def test_encoding_left_pads_without_changing_the_shared_processor(tiny_checkpoints):
    checkpoint = str(tiny_checkpoints("llava", 6))
    loaded = load_model(LoadConfig(device="cpu"), checkpoint, load_config(checkpoint))
    tokenizer = loaded.processor.tokenizer
    tokenizer.padding_side = "right"
    batch = [Prompt.from_text("hi", [example_image(0)]),
             Prompt.from_text("how many shapes are in the picture", [example_image(1)])]
    inputs = encode(loaded.processor, loaded.adapter, batch)
    assert tokenizer.padding_side == "right"
    mask = inputs["attention_mask"]
    short = int(mask[0].sum())
    assert mask[0].tolist() == [0] * (mask.shape[1] - short) + [1] * short


def test_parsing_model_args_and_drawing_plots_leave_matplotlib_alone():
    code = textwrap.dedent("""
        import sys
        from lmms_topo_plugin.config.prune import PruneConfig
        PruneConfig.from_model_args({"method": "topology", "sparsity": "0.25"})
        print("matplotlib" in sys.modules)
        import matplotlib
        before = matplotlib.get_backend()
        from lmms_topo_plugin.topology.synthetic import drifting_clouds
        from lmms_topo_plugin.topology import analyze_topology
        from lmms_topo_plugin.scorers.topology import TopologyScorer
        from lmms_topo_plugin.scorers import LayerScores
        result = analyze_topology(drifting_clouds(4, 12, 8, transition=2, seed=0), k=4)
        details = {k: v for k, v in result.items() if k != "importance"}
        pngs = TopologyScorer.report_plots(LayerScores(result["importance"], details), [1])
        print(sorted(pngs), all(png.startswith(b"\\x89PNG") for png in pngs.values()))
        print(matplotlib.get_backend() == before, "matplotlib.pyplot" in sys.modules)
    """)
    result = python("-c", code, env={"MPLBACKEND": "svg"}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == ["False", "['barcode', 'consistency', 'diagnostics', 'epi'] True", "True False"]


def test_cache_keys_change_with_batch_size_dtype_attention_and_scorer_version(tiny_checkpoints, tmp_path,
                                                                           monkeypatch):
    base = {"pretrained": str(tiny_checkpoints("llava", 6)), "method": "block_influence", "n_remove": 1,
            "device": "cpu", "calib_limit": 4, "cache_dir": str(tmp_path / "cache"), "attn_implementation": "eager"}

    def key(**changes):
        return score_layers({**base, **changes})[1]["cache"]["scores_key"]

    reference = key()
    assert key() == reference
    variants = {"calib_batch_size": key(calib_batch_size=2), "dtype": key(dtype="bfloat16"),
                "attn_implementation": key(attn_implementation="sdpa")}
    from lmms_topo_plugin.scorers.similarity import BlockInfluence

    monkeypatch.setattr(BlockInfluence, "version", BlockInfluence.version + 1)
    variants["scorer version"] = key()
    assert len({reference, *variants.values()}) == 1 + len(variants), variants


def test_a_hub_model_is_identified_by_its_resolved_commit():
    class HubConfig:
        _commit_hash = "0123abcd"

    assert model_fingerprint("org/model", HubConfig()) == "org/model@0123abcd"
    assert model_fingerprint("org/model", object(), "v1.0") == "org/model@v1.0"


def test_a_local_checkpoint_is_identified_by_its_content_not_its_place_or_file_times(tiny_checkpoints, tmp_path):
    import shutil

    checkpoint = Path(tiny_checkpoints("llava", 4))
    config = load_config(str(checkpoint))
    original = model_fingerprint(str(checkpoint), config)
    copy = shutil.copytree(checkpoint, tmp_path / "elsewhere" / checkpoint.name)
    os.utime(copy / "model.safetensors", ns=(1, 1))  # a fresh clone or copy: other file times
    assert model_fingerprint(str(copy), config) == original
    assert original.split("#")[0] == checkpoint.name and len(original.split("#")[1]) == 16
    weights = bytearray((copy / "model.safetensors").read_bytes())
    weights[-1] ^= 1  # one bit of one weight
    (copy / "model.safetensors").write_bytes(bytes(weights))
    assert model_fingerprint(str(copy), config) != original


def tensor_dtypes(checkpoint: Path) -> set[str]:
    with safe_open(checkpoint / "model.safetensors", "pt") as handle:
        return {str(handle.get_slice(name).get_dtype()) for name in handle.keys()}


def test_prune_save_keeps_the_base_dtype_and_the_pruning_history(tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["prune", "--model-args", "method=spacing,n_remove=2,device=cpu", "--report-dir",
                 str(tmp_path / "r"), "--save", str(first)]) == 0
    assert tensor_dtypes(first) == {"F16"}  # the bundled base model is float16; the run itself is float32
    assert stat.S_IMODE(first.stat().st_mode) == 0o777 & ~_umask()
    assert main(["prune", "--model-args", f"pretrained={first},method=spacing,n_remove=1,device=cpu",
                 "--report-dir", str(tmp_path / "r"), "--save", str(second), "--save-dtype", "float32"]) == 0
    assert tensor_dtypes(second) == {"F32"}
    record = AutoModelForImageTextToText.from_pretrained(second).config.topo_pruning
    assert (record["schema"], record["version"], record["method"]) == ("lmms_topo_plugin.pruning", 1, "spacing")
    assert (record["original_num_hidden_layers"], record["base_model"]) == (10, str(first))
    (earlier,) = record["history"]
    assert (earlier["original_num_hidden_layers"], len(earlier["removed_layers"]), "history" in earlier) == (12, 2, False)
    assert "lmms_topo_plugin/default_model" in earlier["base_model"]


def test_prune_save_refuses_to_replace_a_directory_that_is_not_a_checkpoint(tmp_path, capsys):
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "todo.txt").write_text("keep me")
    assert main(["prune", "--model-args", "method=spacing,n_remove=1,device=cpu", "--report-dir", str(tmp_path / "r"),
                 "--save", str(precious)]) == 2
    assert (precious / "todo.txt").read_text() == "keep me"
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"topo-prune: --save {precious} exists and is not an export (it holds other files); choose another --save "
        f"or remove {precious}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_the_results_folder_names_the_latest_report_and_its_plots(tiny_checkpoints, tmp_path):
    from lmms_topo_plugin.reports import write_report

    _, report = load_pruned({"pretrained": str(tiny_checkpoints("llava", 6)), "method": "block_influence",
                             "n_remove": 1, "device": "cpu", "calib_limit": 4})
    written = write_report(report, tmp_path)
    pointer = json.loads((tmp_path / "topo_pruned_latest.json").read_text())
    assert [pointer["report"], *pointer["plots"]] == [path.name for path in written]
    assert (pointer["method"], pointer["removed_layers"]) == ("block_influence", report.plan["removed_layers"])
    assert json.loads(written[0].read_text())["plots"] == {"scores": written[1].name}
