"""A loopback stand-in for the Hugging Face Hub: the endpoints the real `huggingface_hub` client calls.

Test code only. Repositories live in memory as git-like histories: every commit has a 40-hex id, branches
and tags point at commits, files are served through `/resolve/` with the headers the client relies on
(`X-Repo-Commit`, `ETag`, `Content-Length`) and not-found answers carry `X-Error-Code`. Writes need a token
from `HubServer.tokens`; pushing without one answers 401 as the Hub does.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_INVALID = "\0invalid-token"  # the "user" of a request whose token the server does not know
_GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.h5 filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob: what the Hub reports as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    """One commit: a full snapshot of the files, its parent and message."""

    oid: str
    files: Dict[str, bytes]
    parent: Optional[str]
    message: str


@dataclass
class Repo:
    """A model repository: commits, branches and tags."""

    repo_id: str
    private: bool
    commits: Dict[str, Commit] = field(default_factory=dict)
    branches: Dict[str, str] = field(default_factory=dict)
    tags: Dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Optional[str]:
        """Commit id for a branch, tag or full commit id; None when unknown."""
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.tags:
            return self.tags[revision]
        if _COMMIT_RE.match(revision) and revision in self.commits:
            return revision
        return None

    def commit(self, branch: str, files: Dict[str, bytes], message: str) -> str:
        """Record a new commit on `branch` and return its id."""
        parent = self.branches.get(branch)
        listing = "".join(f"{git_blob_sha1(files[p])} {p}\n" for p in sorted(files))
        header = f"tree-listing {hashlib.sha1(listing.encode()).hexdigest()}\nparent {parent}\n"
        oid = hashlib.sha1(f"{header}n {len(self.commits)}\n\n{message}".encode()).hexdigest()
        self.commits[oid] = Commit(oid, dict(files), parent, message)
        self.branches[branch] = oid
        return oid


class _HubError(Exception):
    """An HTTP error answer: status, Hub error code header and message."""

    def __init__(self, status: int, code: Optional[str], message: str,
                 headers: Optional[Dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})


class HubServer:
    """A threaded HTTP server on 127.0.0.1 with an in-memory Hub; use as a context manager."""

    def __init__(self, tokens: Optional[Dict[str, str]] = None) -> None:
        self.tokens: Dict[str, str] = dict(tokens or {"hf_test_write_token": "tester"})
        self.repos: Dict[str, Repo] = {}
        self.requests: List[Tuple[str, str]] = []
        self.lock = threading.RLock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="hub-test-server",
                                        daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- helpers for tests -------------------------------------------------------------------------------------
    def file_bytes(self, repo_id: str, path: str, revision: str = "main") -> bytes:
        """The content of a file at a revision."""
        repo = self.repos[repo_id]
        return repo.commits[repo.resolve(revision)].files[path]

    def tamper(self, repo_id: str, path: str, data: bytes, revision: str = "main") -> None:
        """Replace a file's bytes inside an existing commit, as a compromised mirror would."""
        with self.lock:
            repo = self.repos[repo_id]
            repo.commits[repo.resolve(revision)].files[path] = data

    def count(self, method: Optional[str] = None) -> int:
        """How many requests the server answered (optionally of one method)."""
        with self.lock:
            return sum(1 for m, _ in self.requests if method is None or m == method)

    # --- request handling ----------------------------------------------------------------------------------------
    def handle(self, method: str, url: str, headers: Dict[str, str], body: bytes) -> Tuple[int, Dict[str, str], bytes]:
        """Route one request; returns (status, headers, body)."""
        with self.lock:
            self.requests.append((method, url))
            parts = urlsplit(url)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            segs = [unquote(s) for s in parts.path.split("/")[1:]]
            user = self._user(headers)
            try:
                return self._route(method, segs, query, headers, body, user)
            except _HubError as err:
                hdrs = {"X-Error-Message": err.message, **err.headers}
                if err.code:
                    hdrs["X-Error-Code"] = err.code
                return err.status, hdrs, json.dumps({"error": err.message}).encode()

    def _user(self, headers: Dict[str, str]) -> Optional[str]:
        """The user a request's bearer token belongs to; None without a token, _INVALID for an unknown one."""
        auth = headers.get("authorization", "")
        if not auth:
            return None
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else auth
        return self.tokens.get(token, _INVALID)

    def _require_user(self, user: Optional[str]) -> str:
        if user is None:
            raise _HubError(401, None, "You must be authenticated to do this: pass a token with write access")
        if user == _INVALID:
            raise _HubError(401, None, "Invalid credentials in Authorization header")
        return user

    def _repo(self, repo_id: str, user: Optional[str]) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and user in (None, _INVALID)):
            raise _HubError(404 if repo is None else 401, "RepoNotFound", "Repository not found")
        return repo

    def _commit(self, repo: Repo, revision: str) -> Commit:
        oid = repo.resolve(revision)
        if oid is None:
            raise _HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return repo.commits[oid]

    def _route(self, method, segs, query, headers, body, user) -> Tuple[int, Dict[str, str], bytes]:
        if segs[:1] == ["api"]:
            return self._api(method, segs[1:], query, headers, body, user)
        if len(segs) >= 5 and segs[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(method, "/".join(segs[:2]), segs[3], "/".join(segs[4:]), user)
        raise _HubError(404, None, f"no route for {method} /{'/'.join(segs)}")

    def _api(self, method, segs, query, headers, body, user):
        if method == "POST" and segs == ["repos", "create"]:
            return self._create_repo(json.loads(body or b"{}"), user)
        if method == "POST" and segs == ["validate-yaml"]:
            return self._validate_yaml(json.loads(body or b"{}"))
        if method == "GET" and segs == ["whoami-v2"]:
            name = self._require_user(user)
            return _json({"type": "user", "name": name, "orgs": [], "auth": {"accessToken": {"role": "write"}}})
        if len(segs) < 3 or segs[0] != "models":
            raise _HubError(404, None, f"unknown API route /api/{'/'.join(segs)}")
        repo_id, rest = "/".join(segs[1:3]), segs[3:]
        repo = self._repo(repo_id, user)
        if method == "GET" and not rest:
            return self._info(repo, "main")
        if method == "GET" and rest[:1] == ["revision"] and len(rest) == 2:
            return self._info(repo, rest[1])
        if method == "GET" and rest[:1] == ["tree"] and len(rest) >= 2:
            return self._tree(repo, rest[1], "/".join(rest[2:]), query.get("recursive", "false").lower() == "true")
        if method == "GET" and rest == ["refs"]:
            return _json({
                "branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": c}
                             for b, c in repo.branches.items()],
                "tags": [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": c} for t, c in repo.tags.items()],
                "converts": [],
            })
        if method == "POST" and len(rest) == 2 and rest[0] == "preupload":
            self._require_user(user)
            return self._preupload(repo, rest[1], json.loads(body))
        if method == "POST" and len(rest) == 2 and rest[0] == "commit":
            name = self._require_user(user)
            return self._commit_files(repo, rest[1], body, name)
        if method == "POST" and len(rest) == 2 and rest[0] == "branch":
            self._require_user(user)
            return self._create_ref(repo, repo.branches, rest[1], json.loads(body or b"{}").get("startingPoint"))
        if method == "POST" and len(rest) == 2 and rest[0] == "tag":
            self._require_user(user)
            return self._create_ref(repo, repo.tags, json.loads(body)["tag"], rest[1])
        raise _HubError(404, None, f"unknown API route {method} /api/{'/'.join(segs)}")

    def _create_repo(self, payload: dict, user: Optional[str]):
        name = self._require_user(user)
        if payload.get("type", "model") != "model":
            raise _HubError(400, None, "this test Hub only hosts model repositories")
        repo_id = f"{payload.get('organization') or name}/{payload['name']}"
        if repo_id in self.repos:
            return 409, {"X-Error-Message": "You already created this model repo"}, json.dumps(
                {"error": "You already created this model repo", "url": f"{self.endpoint}/{repo_id}"}).encode()
        repo = Repo(repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
        repo.commit("main", {".gitattributes": _GITATTRIBUTES}, "initial commit")
        self.repos[repo_id] = repo
        return _json({"url": f"{self.endpoint}/{repo_id}", "name": repo_id})

    def _validate_yaml(self, payload: dict):
        content = payload.get("content", "")
        match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
        if not match:
            return _json({"errors": [], "warnings": [{"message": "empty or missing yaml metadata in repo card"}]})
        try:
            meta = yaml.safe_load(match.group(1))
        except yaml.YAMLError as err:
            return _json({"errors": [{"message": f"invalid YAML: {err}"}], "warnings": []}, status=400)
        if not isinstance(meta, dict):
            return _json({"errors": [{"message": "metadata must be a mapping"}], "warnings": []}, status=400)
        return _json({"errors": [], "warnings": []})

    def _info(self, repo: Repo, revision: str):
        commit = self._commit(repo, revision)
        return _json({
            "id": repo.repo_id, "modelId": repo.repo_id, "sha": commit.oid, "private": repo.private,
            "author": repo.repo_id.split("/")[0], "tags": [], "library_name": "clusvpr-zoo",
            "siblings": [{"rfilename": p} for p in sorted(commit.files)],
        })

    def _tree(self, repo: Repo, revision: str, prefix: str, recursive: bool):
        commit = self._commit(repo, revision)
        base = prefix.rstrip("/") + "/" if prefix else ""
        entries, folders = [], set()
        for path in sorted(commit.files):
            if not path.startswith(base):
                continue
            rel = path[len(base):]
            if "/" in rel and not recursive:
                folders.add(base + rel.split("/")[0])
                continue
            data = commit.files[path]
            entries.append({"type": "file", "path": path, "size": len(data), "oid": git_blob_sha1(data)})
        entries += [{"type": "directory", "path": f, "oid": "0" * 40} for f in sorted(folders)]
        if prefix and not entries:
            raise _HubError(404, "EntryNotFound", f"{prefix} does not exist at {revision}")
        return _json(entries)

    def _preupload(self, repo: Repo, revision: str, payload: dict):
        commit = self._commit(repo, revision)
        files = []
        for f in payload.get("files", []):
            old = commit.files.get(f["path"])
            files.append({"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                          "oid": git_blob_sha1(old) if old is not None else None})
        return _json({"files": files, "commitOid": commit.oid})

    def _commit_files(self, repo: Repo, revision: str, body: bytes, user: str):
        if revision not in repo.branches:
            if repo.resolve(revision) is not None:
                raise _HubError(400, None, f"{revision} is not a branch: commits go to branches only")
            raise _HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HubError(400, None, "commit payload must start with a header line")
        header = lines[0]["value"]
        head = repo.branches[revision]
        if header.get("parentCommit") and header["parentCommit"] != head:
            raise _HubError(412, None, f"parent commit {header['parentCommit']} is not the head of {revision}")
        files = dict(repo.commits[head].files)
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                if value.get("encoding") != "base64":
                    raise _HubError(400, None, "file content must be base64")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise _HubError(404, "EntryNotFound", "A file with this name doesn't exist")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: d for p, d in files.items() if not p.startswith(prefix)}
            else:
                raise _HubError(400, None, f"unsupported commit operation {key!r}: this Hub takes regular files only")
        oid = repo.commit(revision, files, header.get("summary", ""))
        return _json({"success": True, "commitOid": oid, "commitUrl": f"{self.endpoint}/{repo.repo_id}/commit/{oid}",
                      "pullRequestUrl": None})

    def _create_ref(self, repo: Repo, table: Dict[str, str], name: str, starting_point: Optional[str]):
        if name in table:
            raise _HubError(409, None, f"reference {name} already exists")
        oid = repo.resolve(starting_point or "main")
        if oid is None:
            raise _HubError(404, "RevisionNotFound", f"Invalid rev id: {starting_point}")
        table[name] = oid
        return _json({})

    def _resolve(self, method: str, repo_id: str, revision: str, path: str, user: Optional[str]):
        repo = self._repo(repo_id, user)
        commit = self._commit(repo, revision)
        if path not in commit.files:
            raise _HubError(404, "EntryNotFound", f"{path} does not exist at {revision}", {"X-Repo-Commit": commit.oid})
        data = commit.files[path]
        hdrs = {"X-Repo-Commit": commit.oid, "ETag": f'"{git_blob_sha1(data)}"',
                "Content-Type": "application/octet-stream", "Content-Length": str(len(data)),
                "Accept-Ranges": "bytes"}
        return 200, hdrs, (b"" if method == "HEAD" else data)



def _json(obj, status: int = 200) -> Tuple[int, Dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(obj).encode()


def _make_handler(hub: HubServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in separate writes: do not wait for ACKs

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _serve(self) -> None:
            body = self._body()
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, hdrs, payload = hub.handle(self.command, self.path, headers, body)
            self.send_response(status)
            for k, v in hdrs.items():
                self.send_header(k, v)
            if "Content-Length" not in hdrs:
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args) -> None:  # keep test output clean
            pass

    return Handler
