"""``topo-prune push``: a sweep winner's build and its generated card arrive on a Hub stand-in in one commit.

The real huggingface_hub client talks to :class:`~lmms_topo_plugin.testing.hub_server.HubStandIn` on 127.0.0.1.
"""

import hashlib
import json
import shutil
import types
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from lmms_topo_plugin.cli import main
from lmms_topo_plugin.testing.hub_server import CLIENT_CONSTANTS, HubStandIn

TOKEN = "hf_test_token"
REPO = "alice/tiny-pruned"


@pytest.fixture(scope="module")
def built(tiny_checkpoints, tmp_path_factory):
    """A tiny LLaVA swept (random and spacing at 1/3), its winner exported with the ONNX build."""
    from lmms_topo_plugin.search import SweepSpec, run_sweep

    root = tmp_path_factory.mktemp("push")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LMMS_TOPO_CACHE", str(root / "cache"))
        result = run_sweep(SweepSpec(model_args={"pretrained": str(tiny_checkpoints("llava", 6)), "device": "cpu"},
                                     methods=["random", "spacing"], budgets=[0.34], calib_limits=[4],
                                     tasks=["topo_synth_count"], out=root / "sweep", rule="metric>=0", limit=4,
                                     cost_repeats=1))
        assert main(["export", "--winner", str(root / "sweep" / "winner.json"), "--out", str(root / "build"),
                     "--onnx"]) == 0
    return root / "build", result


@pytest.fixture
def build(built, tmp_path):
    """A private copy of the build (a push writes README.md into it)."""
    copy = tmp_path / "build"
    shutil.copytree(built[0], copy)
    return copy


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """The stand-in, and a client that reaches it: online, LFS over HTTP (the stand-in serves no Xet), no token."""
    from huggingface_hub import constants

    for name, value in CLIENT_CONSTANTS.items():
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with HubStandIn(tokens={TOKEN: "alice"}) as server:
        yield server


def push(build: Path, hub, *flags: str) -> int:
    return main(["push", str(build), "--repo-id", REPO, "--endpoint", hub.url, "--license", "apache-2.0", *flags])


def last_line(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_push_sends_the_build_and_its_card_in_one_commit(build, built, hub, capsys):
    assert push(build, hub, "--token", TOKEN) == 0
    expected = {str(path.relative_to(build)): path.read_bytes() for path in build.rglob("*") if path.is_file()}
    assert "README.md" in expected and "onnx/decoder_model_merged.onnx" in expected
    assert hub.files(REPO) == expected
    (commit,) = [c for c in hub.commits(REPO) if c["paths"]]  # one commit besides the repository's empty first one
    assert sorted(commit["paths"]) == sorted(expected)
    assert hashlib.sha256(expected["model.safetensors"]).hexdigest() in hub.lfs_uploads  # the weights went over LFS


def test_the_card_metadata_parses_and_its_model_index_equals_the_lmms_eval_results(build, built, hub, tmp_path):
    assert push(build, hub, "--token", TOKEN) == 0
    (tmp_path / "arrived.md").write_bytes(hub.files(REPO)["README.md"])
    card = ModelCard.load(tmp_path / "arrived.md")
    result = built[1]
    winner_row = next(row for row in result["rows"] if row["key"] == result["winner"]["key"])
    dense_row = next(row for row in result["rows"] if row["method"] == "none")
    values = {f"{r.dataset_name}/{r.metric_type}": r.metric_value for r in card.data.eval_results}
    assert values == winner_row["metrics"]
    names = {f"{r.dataset_name}/{r.metric_type}": r.metric_name for r in card.data.eval_results}
    assert names == {name: f"{name.split('/')[1]} (dense base: {value:.4g})"
                     for name, value in dense_row["metrics"].items()}
    assert {r.dataset_args["limit"] for r in card.data.eval_results} == {4}
    assert (card.data.license, card.data.library_name, card.data.pipeline_tag) == (
        "apache-2.0", "transformers", "image-text-to-text")
    assert card.data.base_model is None  # a local base directory is not a Hub id
    method = result["winner"]["method"]
    assert {"pruned", method, "lmms-eval", "onnx"} <= set(card.data.tags)
    removed = ", ".join(map(str, result["winner"]["removed_layers"]))
    assert f"removed layers {removed} (0-based indices" in card.text


def test_dry_run_writes_the_card_and_lists_the_files_without_any_request(build, hub, capsys):
    assert push(build, hub, "--dry-run") == 0
    out = capsys.readouterr().out
    assert hub.requests == []
    assert (build / "README.md").is_file()
    listed = [line.split()[-1] for line in out.splitlines() if " MB  " in line]
    assert sorted(listed) == sorted(str(p.relative_to(build)) for p in build.rglob("*") if p.is_file())
    assert out.strip().splitlines()[-1].endswith("in one commit: 'Upload {}-pruned model: 2 of 6 decoder layers "
                                                 "removed (topo-prune push)'".format(
                                                     json.loads((build / "config.json").read_text())
                                                     ["topo_pruning"]["method"]))


def test_no_token_fails_before_any_request(build, hub, capsys):
    assert push(build, hub) == 8
    assert last_line(capsys) == ("topo-prune: no Hugging Face token: log in with `hf auth login`, set HF_TOKEN, "
                                 "or pass --token")
    assert hub.requests == []


def test_a_rejected_token_is_named(build, hub, capsys):
    assert push(build, hub, "--token", "hf_wrong") == 8
    assert last_line(capsys).startswith("topo-prune: push failed during the token check (whoami): ")
    assert [path for _, path in hub.requests] == ["/api/whoami-v2"]  # nothing created, nothing uploaded


def test_an_existing_repository_with_files_needs_exist_ok(build, hub, capsys):
    assert push(build, hub, "--token", TOKEN) == 0
    (build / "pruning" / "extra.txt").write_text("later\n")
    requests = len(hub.requests)
    assert push(build, hub, "--token", TOKEN) == 8
    assert last_line(capsys) == (f"topo-prune: --repo-id: {REPO} already exists at {hub.url} with "
                                 f"{len(hub.files(REPO))} files; pass --exist-ok to push a new commit to it")
    assert not any("preupload" in path or "commit" in path for _, path in hub.requests[requests:])
    (build / "pruning" / "results.csv").unlink()
    assert push(build, hub, "--token", TOKEN, "--exist-ok") == 0
    files = hub.files(REPO)
    assert "pruning/extra.txt" in files and "pruning/results.csv" not in files  # the repo equals the build


@pytest.mark.parametrize("step", ["commit", "preupload", "lfs_upload"])
def test_a_failed_step_commits_nothing_and_a_rerun_completes(step, build, hub, capsys, monkeypatch):
    import huggingface_hub.utils._http as http

    monkeypatch.setattr(http, "time", types.SimpleNamespace(sleep=lambda seconds: None))  # the client's back-off
    hub.fail(step, times=1000)  # a server that keeps failing: more than the client's 5 retries of every request
    assert push(build, hub, "--token", TOKEN) == 8
    named = {"commit": "the commit", "preupload": "the upload", "lfs_upload": "the upload"}[step]
    assert last_line(capsys).startswith(f"topo-prune: push failed during {named}: ")
    assert [c for c in hub.commits(REPO) if c["paths"]] == []
    hub.fail(step, times=0)  # the server recovers
    uploaded = list(hub.lfs_uploads)
    assert push(build, hub, "--token", TOKEN) == 0
    if step == "commit":  # every object had arrived: the re-run only commits
        assert hub.lfs_uploads == uploaded
    assert hub.files(REPO) == {str(p.relative_to(build)): p.read_bytes() for p in build.rglob("*") if p.is_file()}


def test_an_unknown_license_is_refused_before_any_request(build, hub, capsys):
    assert main(["push", str(build), "--repo-id", REPO, "--endpoint", hub.url, "--token", TOKEN]) == 2
    assert last_line(capsys) == ("topo-prune: --license: the base model's card states no license (or could not be "
                                 "read); pass the base model's license, e.g. --license apache-2.0")
    assert hub.requests == []
    assert "**License: not set.**" in (build / "README.md").read_text()


def test_a_readme_the_user_wrote_is_not_overwritten(build, hub, capsys):
    (build / "README.md").write_text("my notes\n")
    assert push(build, hub, "--token", TOKEN) == 2
    assert last_line(capsys) == (f"topo-prune: build: {build / 'README.md'} exists and was not written by "
                                 "topo-prune push; move it away first")
    assert (build / "README.md").read_text() == "my notes\n"


def test_a_directory_that_is_not_an_export_is_named(tmp_path, hub, capsys):
    assert push(tmp_path, hub, "--token", TOKEN) == 2
    assert last_line(capsys) == (f"topo-prune: build: {tmp_path} has no config.json; push a directory written by "
                                 "topo-prune export")


def test_a_winner_export_carries_the_sweep_record_and_scores_it_was_chosen_by(built):
    build, result = built
    sweep = build.parent / "sweep"
    record = json.loads((build / "pruning" / "sweep_record.json").read_text())
    assert record == {**json.loads((sweep / "winner.json").read_text()), "selected_as": "winner"}
    for name in ("results.md", "results.csv", "pareto.png"):
        assert (build / "pruning" / name).read_bytes() == (sweep / name).read_bytes()
    method = result["winner"]["method"]
    assert (build / "pruning" / "scores.json").read_bytes() == (sweep / "scores" / f"{method}-4.json").read_bytes()


def test_a_model_args_export_gets_a_card_without_evaluation(tiny_checkpoints, tmp_path, hub, capsys):
    args = f"pretrained={tiny_checkpoints('llava', 6)},method=block_influence,n_remove=2,device=cpu,calib_limit=4"
    assert main(["export", "--model-args", args, "--out", str(tmp_path / "single")]) == 0
    assert push(tmp_path / "single", hub, "--dry-run") == 0
    card = ModelCard.load(tmp_path / "single" / "README.md")
    assert card.data.eval_results is None and "onnx" not in card.data.tags
    assert "This build carries no evaluation" in card.text and "## Speed and memory" not in card.text
    report = json.loads((tmp_path / "single" / "pruning" / "topo_pruned_latest.json").read_text())["report"]
    assert f"report: `pruning/{report}`" in card.text
    assert "![pruning/" in card.text and (tmp_path / "single" / "pruning" / report).is_file()


def test_a_token_pruned_export_says_so_on_its_card(tiny_checkpoints, tmp_path, hub):
    args = (f"pretrained={tiny_checkpoints('llava', 6)},method=block_influence,n_remove=2,device=cpu,calib_limit=4,"
            "token_method=halfv,token_keep=0.25,token_layer=1,token_ssr_mode=freeze,token_ssr_layer=2")
    assert main(["export", "--model-args", args, "--out", str(tmp_path / "tokens")]) == 0
    assert push(tmp_path / "tokens", hub, "--dry-run") == 0
    text = (tmp_path / "tokens" / "README.md").read_text()
    assert ("**Visual-token pruning:** `halfv` keeps 0.25 of the visual tokens from decoder layer 1 (anchor ratio "
            "0.1); from layer 2 on they are frozen (`freeze`: keys and values only), during prefill.") in text
