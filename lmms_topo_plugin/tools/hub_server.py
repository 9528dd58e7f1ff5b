"""A small local stand-in for the Hugging Face Hub HTTP API, spoken to by the real ``huggingface_hub`` client.

It serves what ``HfApi`` (huggingface_hub 2.4) needs to create model repos, push one atomic ``create_commit``
(regular files inline, large files over the basic Git LFS transfer) and read it all back (``model_info``,
``list_repo_files``/``list_repo_tree``, ``list_repo_commits``, ``hf_hub_download``, ``snapshot_download``)::

    with HubStandIn(tokens={"hf_test": "alice"}) as hub:
        api = HfApi(endpoint=hub.url, token="hf_test")

Rules: any known token may write to any namespace; ``create_repo`` without a namespace uses the token's user;
a new repo has one empty "initial commit"; private repos are readable with any known token; README metadata is
never rejected. A file goes over LFS when it is larger than ``lfs_threshold`` bytes or its name ends with one of
``lfs_suffixes``. Only ``main`` is writable; reads accept ``main`` or a commit id.

Client settings (``CLIENT_CONSTANTS`` to patch ``huggingface_hub.constants`` in-process, ``CLIENT_ENV`` for a
new process; the env vars are read at import only): with ``hf_xet`` importable the client sends LFS content given
as bytes or a path through Xet, never asking the LFS batch endpoint, and this stand-in cannot serve Xet (it
answers 501), so ``HF_HUB_DISABLE_XET`` must be on. ``HF_HUB_OFFLINE`` (set by the tests' conftest) must be off,
and ``HF_HUB_DISABLE_TELEMETRY`` on spares a lookup of ``https://huggingface.co/api/agent-harnesses``.

Fault injection: ``hub.fail(step, times, status)``. The client retries preupload, LFS batch, PUT and verify
requests answered 408/429/500/502/503/504 up to 5 times, sleeping 1+2+4+8+8 s (``http_backoff``; no setting
controls it). To keep such a test fast, inject a status it does not retry (e.g. 403), or patch the sleep:
``monkeypatch.setattr(huggingface_hub.utils._http, "time", types.SimpleNamespace(sleep=lambda s: None))``.
``create_repo`` and ``commit`` are not retried.

CLI: ``python -m lmms_topo_plugin.tools.hub_server --port 8765 --token hf_demo:demo-user [--storage DIR]``.
"""

import argparse
import base64
import hashlib
import json
import re
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

CLIENT_CONSTANTS = {"HF_HUB_OFFLINE": False, "HF_HUB_DISABLE_XET": True, "HF_HUB_DISABLE_TELEMETRY": True}
CLIENT_ENV = {"HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
STEPS = ("create_repo", "preupload", "lfs_batch", "lfs_upload", "lfs_verify", "commit")
LFS_SUFFIXES = (".safetensors", ".onnx", ".png", ".bin")
_NEEDS_USER = {"whoami", "create_repo", "preupload", "lfs_batch", "lfs_verify", "commit"}  # PUT: like a signed URL
_JSON = {"Content-Type": "application/json"}
_REPO = r"(?P<repo>[^/]+/[^/]+)"
_ROUTES = [(method, re.compile(pattern + "$"), name) for method, pattern, name in [
    ("GET", r"/api/whoami-v2", "whoami"),
    ("POST", r"/api/repos/create", "create_repo"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("GET", rf"/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?", "model_info"),
    ("POST", rf"/api/models/{_REPO}/preupload/(?P<rev>[^/]+)", "preupload"),
    ("POST", rf"/api/models/{_REPO}/commit/(?P<rev>[^/]+)", "commit"),
    ("GET", rf"/api/models/{_REPO}/commits/(?P<rev>[^/]+)", "list_commits"),
    ("GET", rf"/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree"),
    ("GET", rf"/api/models/{_REPO}/xet-write-token/(?P<rev>[^/]+)", "xet_token"),
    ("POST", rf"/{_REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
    ("POST", rf"/{_REPO}\.git/info/lfs/objects/verify", "lfs_verify"),
    ("PUT", rf"/{_REPO}\.git/info/lfs/objects/(?P<oid>[0-9a-f]{{64}})", "lfs_upload"),
    ("GET", rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
]]


class HubError(Exception):
    """An HTTP error answer: status, message and the ``X-Error-Code`` the client maps to an exception."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None, **extra):
        super().__init__(message)
        self.status, self.code, self.headers, self.extra = status, code, headers or {}, extra


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


class HubStandIn:
    """The Hub stand-in server; ``start()``/``close()`` or use it as a context manager."""

    def __init__(self, tokens: dict[str, str] | None = None, storage: str | Path | None = None, *,
                 lfs_threshold: int = 1 << 20, lfs_suffixes: tuple[str, ...] = LFS_SUFFIXES, host: str = "127.0.0.1",
                 port: int = 0):
        self.tokens = dict(tokens if tokens is not None else {"hf_test": "alice"})
        self.lfs_threshold, self.lfs_suffixes = lfs_threshold, lfs_suffixes
        self.lfs_uploads: list[str] = []  # sha256 of each object stored by an LFS PUT
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self._address, self._server, self._failures = (host, port), None, {}
        self._lock = threading.RLock()
        self._storage = Path(storage) if storage is not None else None
        self._blobs: dict[str, bytes] = {}
        self._repos: dict = {}  # repo_id -> {"private", "branches": {name: id}, "commits": {id: commit}}
        if self._storage is not None and (self._storage / "state.json").exists():
            self._repos = json.loads((self._storage / "state.json").read_text())

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> "HubStandIn":
        self._server = ThreadingHTTPServer(self._address, _Handler)
        self._server.daemon_threads, self._server.hub = True, self
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    __enter__ = start

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- accessors for tests -----------------------------------------------------------------------------------
    def fail(self, step: str, times: int = 1, status: int = 500) -> None:
        """Answer the next ``times`` requests of ``step`` (one of ``STEPS``) with ``status`` and a JSON error."""
        if step not in STEPS:
            raise ValueError(f"unknown step {step!r}; expected one of {STEPS}")
        with self._lock:
            self._failures[step] = (times, status)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        with self._lock:
            tree = self._commit_of(repo_id, revision)["tree"]
            return {path: self._blob(entry["sha256"]) for path, entry in sorted(tree.items())}

    def commits(self, repo_id: str, revision: str = "main") -> list[dict]:
        """Commits newest first: id, title, message, authors, date, paths (every path it added, changed or deleted)."""
        with self._lock:
            history = self._history(repo_id, revision)
            return [{k: v for k, v in c.items() if k not in ("tree", "parent")} for c in history]

    # -- storage -----------------------------------------------------------------------------------------------
    def _put_blob(self, data: bytes) -> str:
        oid = hashlib.sha256(data).hexdigest()
        if self._storage is None:
            self._blobs[oid] = data
        else:
            (self._storage / "blobs").mkdir(parents=True, exist_ok=True)
            (self._storage / "blobs" / oid).write_bytes(data)
        return oid

    def _has_blob(self, oid: str) -> bool:
        return oid in self._blobs if self._storage is None else (self._storage / "blobs" / oid).exists()

    def _blob(self, oid: str) -> bytes:
        return self._blobs[oid] if self._storage is None else (self._storage / "blobs" / oid).read_bytes()

    def _save(self) -> None:
        if self._storage is not None:
            self._storage.mkdir(parents=True, exist_ok=True)
            (self._storage / "state.json.tmp").write_text(json.dumps(self._repos))
            (self._storage / "state.json.tmp").replace(self._storage / "state.json")

    # ``user`` is the caller (None: anonymous, cannot see private repos); "" is the test accessors' own access.
    def _repo(self, repo_id: str, user: str | None) -> dict:
        repo = self._repos.get(repo_id)
        if repo is None or (repo["private"] and user is None):
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _commit_of(self, repo_id: str, rev: str, user: str | None = "") -> dict:
        repo = self._repo(repo_id, user)
        commit_id = repo["branches"].get(rev, rev)
        if commit_id not in repo["commits"]:
            raise HubError(404, f"Revision {rev} not found", "RevisionNotFound")
        return repo["commits"][commit_id]

    def _history(self, repo_id: str, rev: str, user: str | None = "") -> list[dict]:
        commit, commits = self._commit_of(repo_id, rev, user), self._repos[repo_id]["commits"]
        history = [commit]
        while history[-1]["parent"] is not None:
            history.append(commits[history[-1]["parent"]])
        return history

    def _add_commit(self, repo_id: str, parent: dict | None, tree: dict, title: str, message: str, user: str,
                    paths: list[str]) -> dict:
        repo = self._repos[repo_id]
        seed = json.dumps([repo_id, parent and parent["id"], tree, title, len(repo["commits"]), time.time_ns()])
        commit = {"id": hashlib.sha1(seed.encode()).hexdigest(), "title": title, "message": message,
                  "authors": [user], "date": _now(), "paths": sorted(paths), "parent": parent and parent["id"],
                  "tree": tree}
        repo["commits"][commit["id"]] = commit
        repo["branches"]["main"] = commit["id"]
        self._save()
        return commit

    # -- request handling --------------------------------------------------------------------------------------
    def _dispatch(self, method: str, target: str, headers, body: bytes) -> tuple[int, dict, bytes]:
        url = urlsplit(target)
        self.requests.append((method, url.path))
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            for route_method, pattern, name in _ROUTES:
                match = pattern.match(url.path)
                if match and (method == route_method or (method, route_method) == ("HEAD", "GET")):
                    break
            else:
                raise HubError(404, f"No route for {method} {url.path}")
            args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
            auth = headers.get("Authorization", "")
            user = self.tokens.get(auth.removeprefix("Bearer ").strip())
            if auth and user is None:
                raise HubError(401, "Invalid credentials in Authorization header")
            if name in _NEEDS_USER and user is None:
                raise HubError(401, "You must be authenticated to access this endpoint")
            with self._lock:
                times, status = self._failures.get(name, (0, 0))
                if times:
                    self._failures[name] = (times - 1, status)
                    raise HubError(status, f"injected failure of {name}")
                answer = getattr(self, "_on_" + name)(user=user, body=body, query=query, **args)
            return answer if isinstance(answer, tuple) else (200, _JSON, json.dumps(answer).encode())
        except HubError as err:
            headers = {**_JSON, "X-Error-Message": str(err), **({"X-Error-Code": err.code} if err.code else {})}
            return err.status, {**headers, **err.headers}, json.dumps({"error": str(err), **err.extra}).encode()
        except (KeyError, ValueError, TypeError, AttributeError) as err:
            return 400, _JSON, json.dumps({"error": f"malformed request: {err!r}"}).encode()

    def _on_whoami(self, user, **_):
        return {"type": "user", "name": user, "fullname": user, "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "stand-in", "role": "write"}}}

    def _on_validate_yaml(self, **_):  # create_commit posts README.md here first; any metadata is accepted
        return {"errors": [], "warnings": []}

    def _on_create_repo(self, user, body, **_):
        payload = json.loads(body)
        if payload.get("type", "model") != "model":
            raise HubError(400, "this stand-in only hosts model repos")
        repo_id = f"{payload.get('organization') or user}/{payload['name']}"
        if repo_id in self._repos:
            raise HubError(409, "You already created this model repo", url=f"{self.url}/{repo_id}")
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        self._repos[repo_id] = {"private": private, "branches": {}, "commits": {}}
        self._add_commit(repo_id, None, {}, "initial commit", "", user, [])
        return {"url": f"{self.url}/{repo_id}", "name": repo_id, "id": repo_id}

    def _on_model_info(self, repo, user, rev="main", **_):
        commit = self._commit_of(repo, rev, user)
        siblings = [{"rfilename": path, "size": e["size"], "blobId": e["oid"],
                     **({"lfs": {"sha256": e["sha256"], "size": e["size"], "pointerSize": 134}} if e["lfs"] else {})}
                    for path, e in sorted(commit["tree"].items())]
        return {"id": repo, "author": repo.split("/")[0], "sha": commit["id"], "private": self._repos[repo]["private"],
                "lastModified": commit["date"], "tags": [], "downloads": 0, "likes": 0, "siblings": siblings}

    def _on_preupload(self, repo, rev, user, body, **_):
        tree, files = self._commit_of(repo, rev, user)["tree"], []
        for f in json.loads(body)["files"]:
            lfs = f["size"] > self.lfs_threshold or f["path"].lower().endswith(self.lfs_suffixes)
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": tree[f["path"]]["oid"] if f["path"] in tree else None})
        return {"files": files}

    def _on_lfs_batch(self, repo, user, body, **_):
        self._repo(repo, user)
        objects = []
        for obj in json.loads(body)["objects"]:
            answer = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if not self._has_blob(obj["oid"]):
                lfs_url = f"{self.url}/{repo}.git/info/lfs/objects"
                answer["actions"] = {"upload": {"href": f"{lfs_url}/{obj['oid']}?size={obj['size']}", "header": {}},
                                     "verify": {"href": f"{lfs_url}/verify", "header": {}}}
            objects.append(answer)
        return {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}

    def _on_lfs_upload(self, repo, oid, body, query, **_):
        self._repo(repo, "")
        if hashlib.sha256(body).hexdigest() != oid or len(body) != int(query.get("size", len(body))):
            raise HubError(400, "uploaded content does not match its oid/size")
        self.lfs_uploads.append(self._put_blob(body))
        return 200, {}, b""

    def _on_lfs_verify(self, repo, user, body, **_):
        self._repo(repo, user)
        obj = json.loads(body)
        if not self._has_blob(obj["oid"]) or len(self._blob(obj["oid"])) != obj["size"]:
            raise HubError(404, f"LFS object {obj['oid']} not found")
        return {"success": True}

    def _on_xet_token(self, **_):
        raise HubError(501, "this Hub stand-in does not speak Xet: set HF_HUB_DISABLE_XET=1")

    def _on_commit(self, repo, rev, user, body, query, **_):
        if query.get("create_pr"):
            raise HubError(400, "pull requests are not supported by this stand-in")
        if rev != "main":
            raise HubError(404, f"Revision {rev} not found (only main is writable)", "RevisionNotFound")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0]["key"] != "header":
            raise HubError(400, "the commit payload must start with a header line")
        header, parent = lines[0]["value"], self._commit_of(repo, rev, user)
        if header.get("parentCommit") not in (None, parent["id"]):
            raise HubError(409, f"parent commit {header['parentCommit']} is not the head {parent['id']}")
        tree, paths = dict(parent["tree"]), []
        for item in lines[1:]:
            key, value = item["key"], item["value"]
            path, changed = value["path"], [value["path"]]
            if key == "file":
                data = base64.b64decode(value["content"])
                git_oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
                tree[path] = {"sha256": self._put_blob(data), "size": len(data), "oid": git_oid, "lfs": False}
            elif key == "lfsFile":
                if not self._has_blob(value["oid"]):
                    raise HubError(422, f"LFS object {value['oid']} for {path} was never uploaded")
                size = len(self._blob(value["oid"]))
                tree[path] = {"sha256": value["oid"], "size": size, "oid": value["oid"], "lfs": True}
            elif key == "deletedFile":
                if tree.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            elif key == "deletedFolder":
                changed = [p for p in tree if p.startswith(path.rstrip("/") + "/")]
                for gone in changed:
                    del tree[gone]
            else:
                raise HubError(400, f"unsupported commit operation {key!r}")
            paths += changed
        commit = self._add_commit(repo, parent, tree, header.get("summary", ""), header.get("description", ""), user,
                                  paths)
        return {"commitUrl": f"{self.url}/{repo}/commit/{commit['id']}", "commitOid": commit["id"], "success": True,
                "pullRequestUrl": None}

    def _on_list_commits(self, repo, rev, user, **_):
        return [{"id": c["id"], "title": c["title"], "message": c["message"], "date": c["date"],
                 "authors": [{"user": name} for name in c["authors"]]} for c in self._history(repo, rev, user)]

    def _on_tree(self, repo, rev, user, query, path="", **_):
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        recursive = query.get("recursive", "").lower() in ("1", "true")
        entries = {}
        for name, e in sorted(self._commit_of(repo, rev, user)["tree"].items()):
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix):].split("/")
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):  # the folders above it
                folder = prefix + "/".join(parts[:depth])
                entries.setdefault(folder, {"type": "directory", "path": folder, "oid": "0" * 40})
            if recursive or len(parts) == 1:
                lfs = {"lfs": {"oid": e["sha256"], "size": e["size"], "pointerSize": 134}} if e["lfs"] else {}
                entries[name] = {"type": "file", "path": name, "size": e["size"], "oid": e["oid"], **lfs}
        if prefix and not entries:
            raise HubError(404, f"Entry {path} not found", "EntryNotFound")
        return list(entries.values())

    def _on_resolve(self, repo, rev, path, user, **_):
        commit = self._commit_of(repo, rev, user)
        entry = commit["tree"].get(path)
        if entry is None:
            raise HubError(404, f"Entry {path} not found", "EntryNotFound", headers={"X-Repo-Commit": commit["id"]})
        headers = {"X-Repo-Commit": commit["id"], "ETag": f'"{entry["oid"]}"',
                   "Content-Type": "application/octet-stream"}
        if entry["lfs"]:
            headers.update({"X-Linked-Etag": f'"{entry["sha256"]}"', "X-Linked-Size": str(entry["size"])})
        return 200, headers, self._blob(entry["sha256"])


class _Handler(BaseHTTPRequestHandler):
    protocol_version, disable_nagle_algorithm = "HTTP/1.1", True  # keep-alive without 40 ms stalls

    def log_message(self, *args) -> None:
        pass

    def _serve(self) -> None:  # the client always sends Content-Length (no chunked bodies)
        request_body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, headers, body = self.server.hub._dispatch(self.command, self.path, self.headers, request_body)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a local stand-in for the Hugging Face Hub API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token", action="append", metavar="TOKEN:USER", help="a known token (repeatable)")
    parser.add_argument("--storage", help="directory that keeps the repos between runs (default: in memory)")
    parser.add_argument("--lfs-threshold", type=int, default=1 << 20, help="files above this size go over LFS")
    args = parser.parse_args(argv)
    tokens = dict(item.split(":", 1) for item in args.token or ["hf_demo:demo-user"])
    # Ctrl-C (SIGINT) stops it even when started in the background, where the shell hands it SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with HubStandIn(tokens, args.storage, lfs_threshold=args.lfs_threshold, host=args.host, port=args.port) as hub:
        print(f"Hub stand-in serving at {hub.url} (tokens: {', '.join(tokens)}); Ctrl-C to stop", flush=True)
        print("client environment: " + " ".join(f"{k}={v}" for k, v in CLIENT_ENV.items()), flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
