"""``topo-prune push``: a sweep winner's build and its generated card arrive on a Hub stand-in in one commit.

The real huggingface_hub client talks to :class:`~lmms_topo_plugin.tools.hub_server.HubStandIn` on 127.0.0.1.
"""

import hashlib
import json
import re
import shutil
import types
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

import cli
from lmms_topo_plugin.cli.main import main
from lmms_topo_plugin.models.loading import BUNDLED_MODEL_DIR
from lmms_topo_plugin.tools.hub_server import CLIENT_CONSTANTS, CLIENT_ENV, HubStandIn

pytestmark = pytest.mark.e2e  # the end-to-end tier (real CLI runs, exports): pytest -m e2e

TOKEN = "hf_test_token"
REPO = "alice/tiny-pruned"
# the records that name the base model's directory; the push publishes them with its name instead
REWRITTEN = {"config.json", "export_report.json", "onnx/manifest.json", "pruning/sweep_record.json"}


@pytest.fixture(scope="module")
def built(tiny_checkpoints, tmp_path_factory):
    """A tiny LLaVA swept (random and spacing at 1/3), its winner exported with the ONNX build; and the base."""
    from lmms_topo_plugin.search import SweepSpec, run_sweep

    root = tmp_path_factory.mktemp("push")
    base = tiny_checkpoints("llava", 6)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LMMS_TOPO_CACHE", str(root / "cache"))
        result = run_sweep(SweepSpec(model_args={"pretrained": str(base), "device": "cpu"},
                                     methods=["random", "spacing"], budgets=[0.34], calib_limits=[4],
                                     tasks=["topo_synth_count"], out=root / "sweep", rule="metric>=0", limit=4,
                                     cost_repeats=1))
        assert main(["export", "--winner", str(root / "sweep" / "winner.json"), "--out", str(root / "build"),
                     "--onnx"]) == 0
    return root / "build", result, Path(base)


@pytest.fixture(scope="module")
def bundled(tmp_path_factory):
    """The bundled default model pruned by a single run (2 of its 12 layers) and exported with the ONNX build."""
    root = tmp_path_factory.mktemp("bundled")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LMMS_TOPO_CACHE", str(root / "cache"))
        assert main(["export", "--model-args", "method=block_influence,n_remove=2,device=cpu,calib_limit=4",
                     "--out", str(root / "build"), "--onnx"]) == 0
    return root / "build"


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


def push(build: Path, hub, *flags: str, base: str | None = "none") -> int:
    """``topo-prune push`` of ``build`` to the stand-in; ``--base-model base`` unless ``base`` is None."""
    base_flag = ["--base-model", base] if base is not None else []
    return main(["push", str(build), "--repo-id", REPO, "--endpoint", hub.url, "--license", "apache-2.0", *base_flag,
                 *flags])


def last_line(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def base_of(build: Path) -> str:
    """The base model's directory as the build's pruning record names it (absolute)."""
    return json.loads((build / "config.json").read_text())["topo_pruning"]["base_model"]


def assert_published(files: dict[str, bytes], build: Path, rewritten: set[str] = REWRITTEN,
                     other_paths: tuple[str, ...] = ()) -> None:
    """``files`` (the repository's) are the build's: byte for byte, except that the records in ``rewritten`` name
    the base model (and ``other_paths``) by the directory's name where the build's name it by its absolute path."""
    base = base_of(build)
    local = {str(path.relative_to(build)): path.read_bytes() for path in build.rglob("*") if path.is_file()}
    assert sorted(files) == sorted(local)
    assert {name for name in local if files[name] != local[name]} == rewritten
    for name in rewritten:
        assert base.encode() in local[name]  # the file on disk keeps its path (export and the loader read it)
        text = local[name].decode()
        for path in (base, *other_paths):
            text = text.replace(path, Path(path).name)
        assert json.loads(files[name]) == json.loads(text)


def test_push_sends_the_build_and_its_card_in_one_commit(build, built, hub, capsys):
    assert push(build, hub, "--token", TOKEN) == 0
    files = hub.files(REPO)
    assert "README.md" in files and "onnx/decoder_model_merged.onnx" in files
    assert_published(files, build)
    assert files["README.md"] == (build / "README.md").read_bytes()
    (commit,) = [c for c in hub.commits(REPO) if c["paths"]]  # one commit besides the repository's empty first one
    assert sorted(commit["paths"]) == sorted(files)
    model = files["model.safetensors"]
    assert hashlib.sha256(model).hexdigest() in hub.lfs_uploads  # the weights went over LFS
    assert ("topo-prune push: local paths replaced by directory names in the uploaded config.json, "
            "export_report.json, onnx/manifest.json, pruning/sweep_record.json (the build's own files are "
            "unchanged)") in capsys.readouterr().err.splitlines()


def test_no_published_file_names_the_build_or_the_base_by_its_path(build, built, hub, tmp_path):
    base = built[2]
    assert push(build, hub, "--token", TOKEN, base="acme/tiny-llava") == 0
    files = hub.files(REPO)
    local_paths = {str(build), str(build.resolve()), str(base), str(base.resolve()), base_of(build)}
    leaks = {(name, path) for name, data in files.items() for path in local_paths if path.encode() in data}
    assert leaks == set()
    config = json.loads(files["config.json"])["topo_pruning"]
    digest = json.loads((build / "config.json").read_text())["topo_pruning"]["base_model_fingerprint"].split("#")[1]
    assert config["base_model"] == base.name
    assert config["base_model_fingerprint"] == f"{base.name}#{digest}"
    assert json.loads(files["pruning/sweep_record.json"])["model_args"]["pretrained"] == base.name
    (tmp_path / "arrived.md").write_bytes(files["README.md"])
    card = ModelCard.load(tmp_path / "arrived.md")
    assert card.data.base_model == "acme/tiny-llava"
    assert (f"- **Base model:** [`acme/tiny-llava`](https://huggingface.co/acme/tiny-llava), fingerprint "
            f"`{digest}`.") in card.text.splitlines()
    reproduce = [line for line in card.text.splitlines() if line.startswith("lmms-eval") and "method=" in line]
    assert len(reproduce) == 1 and reproduce[0].startswith(
        "lmms-eval --model topo_pruned --model_args pretrained=acme/tiny-llava,device=cpu,method=")


def test_the_bundled_model_is_published_by_name_and_its_onnx_example_runs(bundled, hub, tmp_path):
    build = tmp_path / "build"
    shutil.copytree(bundled, build)
    assert push(build, hub, "--token", TOKEN) == 0  # --base-model none
    files = hub.files(REPO)
    report = json.loads((build / "pruning" / "topo_pruned_latest.json").read_text())["report"]
    cache = str(bundled.parent / "cache")  # where the export's pruning run kept its scores (its report says)
    assert_published(files, build, {"config.json", "export_report.json", "onnx/manifest.json", f"pruning/{report}"},
                     (cache,))
    local_paths = {str(build), str(build.resolve()), str(BUNDLED_MODEL_DIR), str(BUNDLED_MODEL_DIR.resolve()), cache}
    assert base_of(build) in {str(BUNDLED_MODEL_DIR), str(BUNDLED_MODEL_DIR.resolve())}
    assert {(name, path) for name, data in files.items() for path in local_paths if path.encode() in data} == set()
    fingerprint = json.loads((build / "config.json").read_text())["topo_pruning"]["base_model_fingerprint"]
    assert json.loads(files["config.json"])["topo_pruning"]["base_model_fingerprint"] == (
        "default_model#" + fingerprint.split("#")[1])
    (tmp_path / "arrived.md").write_bytes(files["README.md"])
    card = ModelCard.load(tmp_path / "arrived.md")
    assert card.data.base_model is None  # --base-model none
    lines = card.text.splitlines()
    assert lines[lines.index("# tiny-pruned") + 2].startswith(
        "The bundled default model of lmms-topo-plugin (`default_model`) with **2 of its 12 decoder layers removed**")
    assert (f"- **Base model:** the bundled default model (`default_model`, shipped with lmms-topo-plugin), "
            f"fingerprint `{fingerprint.split('#')[1]}`.") in lines
    bash = re.findall(r"```bash\n(hf download .*?)```", card.text, re.S)
    assert bash == [f"hf download {REPO} --local-dir tiny-pruned\n"
                    "topo-prune onnx-generate tiny-pruned --image example.png --prompt "
                    "\"$(topo-prune example-image example.png)\"\n"]
    # the card's commands, as a reader runs them: download this repository, ask the ONNX build the example's question
    env = {**CLIENT_ENV, "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN}  # and the venv's bin on PATH (tests/cli.py)
    (tmp_path / "reader").mkdir()
    run = cli.run("bash", "-eu", "-c", bash[0], cwd=tmp_path / "reader", env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    from PIL import Image

    from lmms_topo_plugin.runtime.onnx_runner import OnnxVLM
    from lmms_topo_plugin.models.prompting import Prompt

    question = cli.topo_prune("example-image", tmp_path / "mine.png", env=env, check=True).stdout.rstrip("\n")
    assert "\n" in question  # the question and its answer format: two lines, passed whole by "$(...)"
    prompt = Prompt.from_text(question, [Image.open(tmp_path / "mine.png")])
    (expected,) = OnnxVLM(str(build), provider="cpu").generate([prompt], max_new_tokens=32)
    assert run.stdout.splitlines()[-1] == expected


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
    assert card.data.base_model is None  # --base-model none
    method = result["winner"]["method"]
    assert {"pruned", method, "lmms-eval", "onnx"} <= set(card.data.tags)
    removed = ", ".join(map(str, result["winner"]["removed_layers"]))
    assert f"removed layers {removed} (0-based indices" in card.text


def test_dry_run_writes_the_card_and_lists_the_files_without_any_request(build, hub, capsys):
    assert push(build, hub, "--dry-run", base=None) == 0
    out, err = capsys.readouterr()
    assert err.splitlines()[-1] == ("topo-prune push: the base model is not a Hub id; the push will refuse without "
                                    "--base-model ID or --base-model none")
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


def test_a_rejected_token_is_named_with_its_remedy(build, hub, capsys):
    assert push(build, hub, "--token", "hf_wrong") == 8
    assert last_line(capsys) == ("topo-prune: push failed during the token check (whoami): Invalid user token; "
                                 "nothing was committed; the Hub refused the token: check it with `hf auth whoami`, "
                                 "log in again with `hf auth login`, or pass a valid one with --token")
    assert [path for _, path in hub.requests] == ["/api/whoami-v2"]  # nothing created, nothing uploaded


def test_a_token_without_write_access_is_not_told_to_rerun(build, hub, capsys):
    hub.fail("commit", times=1000, status=403)
    assert push(build, hub, "--token", TOKEN) == 8
    assert last_line(capsys) == ("topo-prune: push failed during the commit: 403 Forbidden: injected failure of "
                                 f"commit; nothing was committed; the token may not write to {REPO}: use a token "
                                 "with write access to alice (`hf auth login`, or --token)")
    assert [c for c in hub.commits(REPO) if c["paths"]] == []


def test_an_endpoint_without_xet_is_named_with_the_setting_that_avoids_it(build, hub, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)  # hf_xet is installed: LFS content goes over Xet
    assert push(build, hub, "--token", TOKEN) == 8
    assert last_line(capsys) == (
        "topo-prune: push failed during the upload: Server error: Request error: HTTP status server error (501 Not "
        f"Implemented), domain: {hub.url}/api/models/{REPO}/xet-write-token/main; nothing was committed; {hub.url} "
        "does not support Xet uploads: set HF_HUB_DISABLE_XET=1 to upload over Git LFS instead, then push again")
    assert [c for c in hub.commits(REPO) if c["paths"]] == []


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
    assert_published(files, build)


@pytest.mark.parametrize("step", ["commit", "preupload", "lfs_upload"])
def test_a_failed_step_commits_nothing_and_a_rerun_completes(step, build, hub, capsys, monkeypatch):
    import huggingface_hub.utils._http as http

    monkeypatch.setattr(http, "time", types.SimpleNamespace(sleep=lambda seconds: None))  # the client's back-off
    hub.fail(step, times=1000)  # a server that keeps failing: more than the client's 5 retries of every request
    assert push(build, hub, "--token", TOKEN) == 8
    named = {"commit": "the commit", "preupload": "the upload", "lfs_upload": "the upload"}[step]
    line = last_line(capsys)
    assert line.startswith(f"topo-prune: push failed during {named}: ")
    assert line.endswith("; nothing was committed, re-run the same command to finish the push")
    assert [c for c in hub.commits(REPO) if c["paths"]] == []
    hub.fail(step, times=0)  # the server recovers
    uploaded = list(hub.lfs_uploads)
    assert push(build, hub, "--token", TOKEN) == 0
    if step == "commit":  # every object had arrived: the re-run only commits
        assert hub.lfs_uploads == uploaded
    assert_published(hub.files(REPO), build)


def test_a_local_base_needs_base_model_before_any_request(build, built, hub, capsys):
    assert push(build, hub, "--token", TOKEN, base=None) == 2
    assert last_line(capsys) == (f"topo-prune: --base-model: the base model is the local directory {built[2].name}, "
                                 "not a Hub id; pass the Hub id it is published as (--base-model <user or "
                                 "organisation>/<name>) for the card's base_model, or --base-model none to publish "
                                 "without one")
    assert hub.requests == []


def test_the_bundled_base_needs_base_model_too(bundled, tmp_path, hub, capsys):
    shutil.copytree(bundled, tmp_path / "build")
    assert push(tmp_path / "build", hub, "--token", TOKEN, base=None) == 2
    assert last_line(capsys) == ("topo-prune: --base-model: the base model is the bundled default model, not a Hub "
                                 "id; pass the Hub id it is published as (--base-model <user or organisation>/<name>) "
                                 "for the card's base_model, or --base-model none to publish without one")
    assert hub.requests == []


@pytest.mark.parametrize("given", ["./my-base", "my-base", "/models/my-base"])
def test_a_base_model_that_is_no_hub_id_is_refused(given, build, hub, capsys):
    assert push(build, hub, "--token", TOKEN, base=given) == 2
    assert last_line(capsys) == (f"topo-prune: --base-model: {given!r} is not a Hub model id; pass <user or "
                                 "organisation>/<name>, or none to publish without base_model")
    assert hub.requests == []


def test_a_file_the_push_cannot_rewrite_is_refused_when_it_holds_the_base_path(build, hub, capsys):
    (build / "pruning" / "notes.png").write_bytes(b"\x89PNG\r\n\x1a\n" + base_of(build).encode() + b"\x00")
    assert push(build, hub, "--token", TOKEN) == 2
    assert last_line(capsys) == (f"topo-prune: build: pruning/notes.png contains the local path {base_of(build)!r}, "
                                 "and the push only rewrites the plugin's records and text files; remove the path "
                                 "from it (or the file from the build)")
    assert hub.requests == []


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
    build, result, _base = built
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


@pytest.mark.parametrize("hidden", ["", ",recover_hidden=0.5"])
def test_a_recovered_export_says_its_weights_were_changed_and_how(tiny_checkpoints, tmp_path, hub, hidden):
    args = (f"pretrained={tiny_checkpoints('llava', 6)},method=block_influence,n_remove=2,device=cpu,calib_limit=4,"
            f"recover=kd,recover_samples=8,recover_steps=3,recover_batch_size=4,recover_max_new_tokens=4{hidden}")
    assert main(["export", "--model-args", args, "--out", str(tmp_path / "recovered")]) == 0
    assert push(tmp_path / "recovered", hub, "--dry-run") == 0
    text = " ".join((tmp_path / "recovered" / "README.md").read_text().split())
    recovery = json.loads((tmp_path / "recovered" / "config.json").read_text())["topo_pruning"]["recovery"]
    assert "No weights were changed" not in text and "without any fine-tuning" not in text
    assert "knowledge-distillation" in ModelCard.load(tmp_path / "recovered" / "README.md").data.tags
    assert (f"**Recovered after pruning: the weights were changed.** The pruned model was distilled from the base "
            f"model (`recover=kd`): 3 steps training LoRA adapters of rank 8 on the decoder's linear layers, merged "
            f"into the weights, learning rate 0.001, batch 4, on 8 prompts from {recovery['data']['source']}") in text
    assert (f"{recovery['kl_before']:.4g} before, {recovery['kl_after']:.4g} after") in text
    assert ("`recover=kd,recover_samples=8,recover_steps=3,recover_lr=0.001,recover_params=lora,recover_batch_size=4,"
            f"recover_max_new_tokens=4,recover_topk=128,recover_lora_rank=8{hidden}`") in text
    matched = ("The objective also pulled the residual stream entering each kept decoder layer towards the base "
               "model's at the same depth (weight 0.5); its squared error relative to the base model's, on the "
               f"held-out prompts: {recovery['hidden_before']:.4g} before, {recovery['hidden_after']:.4g} after."
               if hidden else "residual stream")
    assert (matched in text) == bool(hidden)


def test_local_paths_become_names_in_records_and_text_and_other_files_stay(tmp_path):
    from lmms_topo_plugin.model_cards.local_paths import (Replacer, fingerprint_hash, is_bundled_model, portable,
                                                          public_copy)

    assert portable("/home/me/models/llava-tiny#c02e860a9ee8cae4") == "llava-tiny#c02e860a9ee8cae4"
    assert portable("C:\\models\\llava-tiny") == "llava-tiny"
    assert fingerprint_hash("/home/me/models/llava-tiny#c02e860a9ee8cae4") == "c02e860a9ee8cae4"
    assert fingerprint_hash("llava-hf/llava-1.5-7b-hf@8c85e9a") == "llava-hf/llava-1.5-7b-hf@8c85e9a"
    assert is_bundled_model(str(BUNDLED_MODEL_DIR)) and is_bundled_model("/elsewhere/lmms_topo_plugin/default_model")
    assert not is_bundled_model("llava-hf/llava-1.5-7b-hf") and not is_bundled_model("/models/default_model")
    (tmp_path / "pruning").mkdir()
    record = {"pretrained": "/home/me/models/llava-tiny", "cache": {"dir": "/home/me/.cache/topo"},
              "model_args": "pretrained=/home/me/models/llava-tiny,device=cpu", "note": "per /s and 1/3 of /tmp",
              "history": [{"base_model": "llava-hf/llava-1.5-7b-hf"}]}
    (tmp_path / "pruning" / "report.json").write_text(json.dumps(record, indent=2) + "\n")
    (tmp_path / "pruning" / "results.md").write_text("| /home/me/models/llava-tiny | /tmp |\n")
    (tmp_path / "tokenizer.json").write_text('{"vocab": {"/usr/bin/env": 7}}')
    replacer = Replacer()
    published = json.loads(public_copy(tmp_path, Path("pruning/report.json"), replacer))
    assert published == {"pretrained": "llava-tiny", "cache": {"dir": "topo"},
                         "model_args": "pretrained=llava-tiny,device=cpu", "note": "per /s and 1/3 of /tmp",
                         "history": [{"base_model": "llava-hf/llava-1.5-7b-hf"}]}
    assert public_copy(tmp_path, Path("pruning/results.md"), replacer) == b"| llava-tiny | /tmp |\n"
    assert public_copy(tmp_path, Path("tokenizer.json"), replacer) is None  # a vocabulary, not a record
