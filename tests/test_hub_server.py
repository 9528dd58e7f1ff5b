"""The Hub stand-in, driven by the real huggingface_hub client (HfApi, hf_hub_download)."""

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import types
import urllib.error
import urllib.request

import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.utils import _http

from cli import argv, environment, python
from lmms_topo_plugin.tools.hub_server import CLIENT_CONSTANTS, CLIENT_ENV, HubStandIn

BIG = os.urandom((1 << 20) + 1234)  # above the default 1 MiB threshold => LFS


@pytest.fixture(autouse=True)
def client_settings(monkeypatch):
    """conftest sets HF_HUB_OFFLINE=1 and the env vars are read at import: patch the client's constants."""
    for name, value in CLIENT_CONSTANTS.items():
        monkeypatch.setattr(constants, name, value)


@pytest.fixture
def hub():
    with HubStandIn(tokens={"hf_test": "alice"}) as hub:
        yield hub


@pytest.fixture
def api(hub):
    return HfApi(endpoint=hub.url, token="hf_test")


EXPECTED = {"README.md": b"---\nlicense: mit\n---\n# tiny\n", "nested/dir/config.json": b'{"a": 1}',
            "weights.dat": BIG, "model.safetensors": b"small but LFS by its suffix"}
LFS = {"weights.dat", "model.safetensors"}


def _ops(paths=EXPECTED):
    return [CommitOperationAdd(path, EXPECTED[path]) for path in paths]


def test_create_repo_conflict_private_and_missing(api):
    assert api.create_repo("alice/m").repo_id == "alice/m"
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("alice/m")
    assert err.value.response.status_code == 409
    assert api.create_repo("alice/m", exist_ok=True).repo_id == "alice/m"
    api.create_repo("secret", private=True)  # no namespace => the token's user
    assert api.model_info("alice/secret").private is True and api.model_info("alice/m").private is False
    with pytest.raises(RepositoryNotFoundError):
        api.repo_info("alice/missing")


def test_one_atomic_commit_with_regular_lfs_and_nested_files(hub, api, tmp_path):
    api.create_repo("alice/m")
    info = api.create_commit("alice/m", _ops(), commit_message="push", commit_description="details")
    commits = hub.commits("alice/m")
    assert [c["title"] for c in commits] == ["push", "initial commit"]
    assert commits[0]["id"] == info.oid and commits[0]["paths"] == sorted(EXPECTED)
    assert hub.files("alice/m") == EXPECTED
    assert sorted(hub.lfs_uploads) == sorted(hashlib.sha256(EXPECTED[path]).hexdigest() for path in LFS)
    for path, content in EXPECTED.items():
        local = hf_hub_download("alice/m", path, endpoint=hub.url, token="hf_test", cache_dir=tmp_path)
        assert open(local, "rb").read() == content
    assert sorted(api.list_repo_files("alice/m")) == sorted(EXPECTED)
    listed = api.list_repo_commits("alice/m")
    assert [c.commit_id for c in listed] == [c["id"] for c in commits] and listed[0].message == "details"
    model = api.model_info("alice/m")
    assert model.sha == info.oid and {s.rfilename for s in model.siblings if s.lfs} == LFS


def test_xet_must_be_disabled_when_hf_xet_is_importable(hub, api, monkeypatch, tmp_path):
    if importlib.util.find_spec("hf_xet") is None:
        pytest.skip("hf_xet not installed: the client always uses LFS")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")  # read at import only: no effect in this process
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    api.create_repo("alice/m")
    api.create_commit("alice/m", [CommitOperationAdd("small.txt", b"x")], commit_message="regular only works")
    with pytest.raises(OSError, match="xet-write-token"):  # hf_xet's ConnectionError: the stand-in answers 501
        api.create_commit("alice/m", [CommitOperationAdd("weights.dat", BIG)], commit_message="lfs via xet")
    assert not any("lfs/objects" in path for _, path in hub.requests)
    assert [c["title"] for c in hub.commits("alice/m")] == ["regular only works", "initial commit"]
    local = hf_hub_download("alice/m", "small.txt", endpoint=hub.url, token="hf_test", cache_dir=tmp_path)
    assert open(local, "rb").read() == b"x"  # downloads use plain HTTP: the stand-in sends no X-Xet-Hash


def test_client_env_in_a_fresh_process(hub):
    script = ("import sys; from huggingface_hub import HfApi; api = HfApi(endpoint=sys.argv[1], token='hf_test');"
              "api.create_repo('alice/m'); api.upload_file(path_or_fileobj=b'0' * 2_000_000, path_in_repo='w.bin',"
              " repo_id='alice/m')")
    python("-c", script, hub.url, env=CLIENT_ENV, check=True, timeout=60)
    assert hub.files("alice/m") == {"w.bin": b"0" * 2_000_000} and len(hub.lfs_uploads) == 1


def test_tokens_are_checked(hub, api):
    assert api.whoami()["name"] == "alice"
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=hub.url, token="hf_wrong").whoami()
    assert err.value.response.status_code == 401
    anonymous = HfApi(endpoint=hub.url, token=False)
    with pytest.raises(HfHubHTTPError) as err:
        anonymous.create_repo("alice/m")
    assert err.value.response.status_code == 401
    api.create_repo("alice/m")
    with pytest.raises(HfHubHTTPError):
        anonymous.create_commit("alice/m", _ops(), commit_message="anonymous")
    assert len(hub.commits("alice/m")) == 1 and not hub.lfs_uploads


def test_failed_commit_leaves_the_repo_unchanged_and_can_be_retried(hub, api):
    api.create_repo("alice/m")
    hub.fail("commit")
    operations = _ops()
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit("alice/m", operations, commit_message="push")
    assert err.value.response.status_code == 500
    assert len(hub.commits("alice/m")) == 1 and hub.files("alice/m") == {}
    api.create_commit("alice/m", operations, commit_message="push")
    assert [c["title"] for c in hub.commits("alice/m")] == ["push", "initial commit"]
    assert hub.files("alice/m") == EXPECTED and len(hub.lfs_uploads) == len(LFS)  # objects were not sent twice


def test_lfs_put_failures_and_retries_stay_fast(hub, api, monkeypatch):
    api.create_repo("alice/m")
    operations = ["README.md", "weights.dat"]
    hub.fail("lfs_upload", status=403)  # not a retried status => fails at once
    with pytest.raises(RuntimeError, match="weights.dat") as err:
        api.create_commit("alice/m", _ops(operations), commit_message="push")
    assert isinstance(err.value.__cause__, HfHubHTTPError) and len(hub.commits("alice/m")) == 1
    monkeypatch.setattr(_http, "time", types.SimpleNamespace(sleep=lambda seconds: None))  # no back-off sleeps
    hub.fail("lfs_upload", times=2, status=500)
    api.create_commit("alice/m", _ops(operations), commit_message="push")  # the client retries the PUT
    puts = [path for method, path in hub.requests if method == "PUT"]
    assert len(puts) == 4 and hub.files("alice/m") == {path: EXPECTED[path] for path in operations}


@pytest.mark.parametrize("step", ["preupload", "lfs_batch", "lfs_verify"])
def test_any_step_can_fail_without_a_commit(hub, api, step):
    api.create_repo("alice/m")
    hub.fail(step, status=403)
    with pytest.raises((HfHubHTTPError, RuntimeError)):
        api.create_commit("alice/m", _ops(), commit_message="push")
    assert len(hub.commits("alice/m")) == 1 and hub.files("alice/m") == {}
    hub.fail("create_repo", status=503)
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("alice/other")
    assert err.value.response.status_code == 503 and api.create_repo("alice/other").repo_id == "alice/other"


def test_commit_needs_uploaded_lfs_objects_and_the_right_parent(hub, api):
    api.create_repo("alice/m")
    head = api.model_info("alice/m").sha
    lines = [{"key": "header", "value": {"summary": "bad"}},
             {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": "ab" * 32, "size": 3}}]
    request = urllib.request.Request(f"{hub.url}/api/models/alice/m/commit/main", method="POST",
                                     data=b"".join(json.dumps(line).encode() + b"\n" for line in lines),
                                     headers={"Authorization": "Bearer hf_test"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request)
    assert err.value.code == 422
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit("alice/m", _ops(), commit_message="stale", parent_commit="0" * 40)
    assert err.value.response.status_code == 409
    assert [c["id"] for c in hub.commits("alice/m")] == [head]
    api.create_commit("alice/m", _ops(), commit_message="ok", parent_commit=head)


def test_second_commit_changes_only_what_it_says(hub, api):
    api.create_repo("alice/m")
    api.create_commit("alice/m", _ops(), commit_message="first")
    api.create_commit("alice/m", [CommitOperationAdd("extra.txt", b"more"), CommitOperationDelete("README.md")],
                      commit_message="second")
    assert hub.commits("alice/m")[0]["paths"] == ["README.md", "extra.txt"]
    expected = {**EXPECTED, "extra.txt": b"more"}
    del expected["README.md"]
    assert hub.files("alice/m") == expected
    assert hub.files("alice/m", revision=hub.commits("alice/m")[1]["id"]) == EXPECTED
    api.create_commit("alice/m", _ops(LFS), commit_message="unchanged")  # the client skips unchanged files
    assert len(hub.commits("alice/m")) == 3 and len(hub.lfs_uploads) == len(LFS)


def test_storage_directory_keeps_repos(tmp_path):
    with HubStandIn(storage=tmp_path) as hub:
        api = HfApi(endpoint=hub.url, token="hf_test")
        api.create_repo("alice/m")
        api.create_commit("alice/m", _ops(), commit_message="push")
    with HubStandIn(storage=tmp_path) as hub:
        assert hub.files("alice/m") == EXPECTED
        assert HfApi(endpoint=hub.url, token="hf_test").list_repo_commits("alice/m")[0].title == "push"


def test_cli_serves_until_interrupted():
    # its own Popen: the server runs until this test interrupts it
    process = subprocess.Popen(argv("python", "-m", "lmms_topo_plugin.tools.hub_server", "--port", "0",
                                    "--token", "hf_demo:demo-user"), stdout=subprocess.PIPE, text=True,
                               env=environment())
    try:
        url = process.stdout.readline().split()[4]
        assert HfApi(endpoint=url, token="hf_demo").whoami()["name"] == "demo-user"
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
