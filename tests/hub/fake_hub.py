"""A small Hugging Face Hub stand-in on 127.0.0.1, for driving the real `huggingface_hub` client in tests.

It serves only the calls `snapshot_download`, `HfApi.model_info` and `HfApi.create_repo` make
(model info, tree listing, `resolve/` HEAD + GET with the metadata headers and Range resumes,
repo creation), with the status codes and `X-Error-Code` headers the real hub sends, plus
injectable faults: a connection dropped mid-file, a hung server, a corrupted file body.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

# Which files the real hub stores through Git LFS (its default .gitattributes patterns).
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack", ".onnx", ".model")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    commit: str = "a" * 40
    gated: bool = False
    private: bool = False

    def meta(self, name: str) -> dict:
        data = self.files[name]
        entry = {"size": len(data), "oid": git_blob_sha1(data)}
        if name.endswith(LFS_SUFFIXES):
            sha = hashlib.sha256(data).hexdigest()
            entry["lfs"] = {"oid": sha, "size": len(data), "pointerSize": 134}
        return entry


@dataclass
class Faults:
    drop_after: dict[str, int] = field(
        default_factory=dict
    )  # file -> bytes sent before the connection drops (once)
    corrupt: set[str] = field(default_factory=set)  # files whose body is served with one byte flipped
    hang: bool = False  # every request waits (until the server stops) without answering
    hang_files: bool = False  # only file requests (HEAD/GET resolve) hang; the API answers
    stall_after: dict[str, int] = field(default_factory=dict)  # file -> bytes sent, then silence (once)
    create_repo_status: int | None = None  # force create_repo to fail with this status


class FakeHub:
    """`with FakeHub(repos) as hub:` -> `hub.url` is the endpoint; `hub.requests` logs what was asked."""

    def __init__(self, repos: dict[str, FakeRepo], token: str = "hf_good_token"):
        self.repos = repos
        self.token = token
        self.faults = Faults()
        self.requests: list[tuple[str, str, str | None]] = []
        self.created: list[dict] = []
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def gets(self, name: str) -> list[str | None]:
        """Range headers of the GETs of one file (None = whole file), over both hubs' file routes."""
        return [
            rng
            for method, path, rng in self.requests
            if method == "GET"
            and (("/resolve/" in path and path.endswith(f"/{name}")) or path.endswith(f"FilePath={name}"))
        ]


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def do_HEAD(self) -> None:
            self._route("HEAD")

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def _route(self, method: str) -> None:
            path = unquote(urlsplit(self.path).path)
            hub.requests.append((method, unquote(self.path), self.headers.get("Range")))
            # Read the body first: an unread body would be parsed as the next request on this connection.
            self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if hub.faults.hang or (hub.faults.hang_files and "/resolve/" in path):
                hub._release.wait(120)
                self.close_connection = True
                return
            if method == "POST" and path == "/api/repos/create":
                return self._create_repo()
            if method == "POST" and path == "/api/validate-yaml":
                return self._json({"errors": [], "warnings": []})
            if method == "POST" and (m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/([^/]+)", path)):
                return self._preupload(m[1])
            if method == "POST" and (m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/([^/]+)", path)):
                return self._commit(m[1])
            if m := re.fullmatch(r"/api/v1/models/([^/]+/[^/]+)/repo/files", path):
                return self._ms_files(m[1])
            if m := re.fullmatch(r"/api/v1/models/([^/]+/[^/]+)/repo", path):
                return self._ms_file(
                    method, m[1], parse_qs(urlsplit(self.path).query).get("FilePath", [""])[0]
                )
            if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path):
                return self._model_info(m[1], m[2] or "main")
            if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/.*)?", path):
                return self._tree(m[1], m[2])
            if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
                return self._resolve(method, m[1], m[2], m[3])
            self._error(404, "not a route of this fake hub")

        # --- helpers -------------------------------------------------------------------------
        def _authorized(self) -> bool:
            return self.headers.get("authorization") == f"Bearer {hub.token}"

        def _error(
            self, status: int, message: str, code: str | None = None, extra: dict | None = None
        ) -> None:
            body = json.dumps({"error": message}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Error-Message", message)
            if code:
                self.send_header("X-Error-Code", code)
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, payload) -> None:
            body = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _repo(self, repo_id: str, revision: str) -> FakeRepo | None:
            repo = hub.repos.get(repo_id)
            if repo is None or (repo.private and not self._authorized()):
                # The real hub answers 401 for private repos without a token, like a missing one.
                self._error(401 if repo else 404, "Repository not found", "RepoNotFound")
                return None
            if revision not in ("main", repo.commit):
                self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
                return None
            return repo

        # --- routes --------------------------------------------------------------------------
        def _model_info(self, repo_id: str, revision: str) -> None:
            if (repo := self._repo(repo_id, revision)) is None:
                return
            blobs = "blobs=" in (urlsplit(self.path).query or "")
            siblings = []
            for name in sorted(repo.files):
                sibling = {"rfilename": name}
                if blobs:
                    meta = repo.meta(name)
                    sibling.update(size=meta["size"], blobId=meta["oid"])
                    if "lfs" in meta:
                        sibling["lfs"] = {
                            "sha256": meta["lfs"]["oid"],
                            "size": meta["size"],
                            "pointerSize": 134,
                        }
                siblings.append(sibling)
            self._json(
                {
                    "_id": repo_id,
                    "id": repo_id,
                    "modelId": repo_id,
                    "sha": repo.commit,
                    "private": repo.private,
                    "gated": "manual" if repo.gated else False,
                    "disabled": False,
                    "siblings": siblings,
                }
            )

        # --- ModelScope's API ---------------------------------------------------------------
        def _ms_files(self, repo_id: str) -> None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                return self._ms_error(404, f"model {repo_id} not exists")
            files = [
                {
                    "Path": n,
                    "Name": n.rsplit("/", 1)[-1],
                    "Type": "blob",
                    "Size": len(d),
                    "Sha256": hashlib.sha256(d).hexdigest(),
                    "Revision": repo.commit,
                }
                for n, d in sorted(repo.files.items())
            ]
            self._json({"Code": 200, "Success": True, "Data": {"Files": files}})

        def _ms_file(self, method: str, repo_id: str, name: str) -> None:
            repo = hub.repos.get(repo_id)
            if repo is None or name not in repo.files:
                return self._ms_error(404, f"file {name} not exists in {repo_id}")
            self._send_file(method, name, repo.files[name], {"Content-Type": "application/octet-stream"})

        def _ms_error(self, status: int, message: str) -> None:
            body = json.dumps({"Code": status, "Success": False, "Message": message}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _tree(self, repo_id: str, revision: str) -> None:
            if (repo := self._repo(repo_id, revision)) is None:
                return
            self._json([{"type": "file", "path": name, **repo.meta(name)} for name in sorted(repo.files)])

        def _resolve(self, method: str, repo_id: str, revision: str, name: str) -> None:
            if (repo := self._repo(repo_id, revision)) is None:
                return
            if repo.gated and not self._authorized():
                status = 403 if self.headers.get("authorization") else 401
                self._error(status, f"Access to model {repo_id} is restricted.", "GatedRepo")
                return
            if name not in repo.files:
                self._error(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": repo.commit})
                return
            meta = repo.meta(name)
            headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{meta["oid"]}"'}
            if "lfs" in meta:
                headers.update(
                    {"X-Linked-Etag": f'"{meta["lfs"]["oid"]}"', "X-Linked-Size": str(meta["size"])}
                )
            self._send_file(method, name, repo.files[name], headers)

        def _send_file(self, method: str, name: str, data: bytes, headers: dict[str, str]) -> None:
            """A file body with Range support and the injected faults (corruption, a cut connection)."""
            if name in hub.faults.corrupt:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            start = 0
            if (rng := self.headers.get("Range")) and (m := re.fullmatch(r"bytes=(\d+)-", rng)):
                start = int(m[1])
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(data) - start))
            self.send_header("Accept-Ranges", "bytes")
            for key, value in headers.items():
                self.send_header(key, value)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if method == "HEAD":
                return
            if (stall := hub.faults.stall_after.pop(name, None)) is not None:
                self.wfile.write(data[start : start + stall])
                self.wfile.flush()
                hub._release.wait(120)
                self.close_connection = True
                return
            cut = hub.faults.drop_after.pop(name, None)
            if cut is not None:
                self.wfile.write(data[start : start + cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(data[start:])

        def _writable(self, repo_id: str) -> bool:
            if not self._authorized():
                self._error(401, "Invalid credentials in Authorization header")
                return False
            if repo_id not in hub.repos:
                self._error(404, "Repository not found", "RepoNotFound")
                return False
            return True

        def _preupload(self, repo_id: str) -> None:
            files = json.loads(self.body)["files"]
            if self._writable(repo_id):
                # This fake stores every file as a regular git blob (no LFS / Xet storage).
                self._json(
                    {
                        "files": [
                            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                        ]
                    }
                )

        def _commit(self, repo_id: str) -> None:
            lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
            if not self._writable(repo_id):
                return
            repo = hub.repos[repo_id]
            for item in lines:
                if item["key"] == "file":
                    repo.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                elif item["key"] != "header":
                    self._error(400, f"this fake hub does not support {item['key']} operations")
                    return
            repo.commit = hashlib.sha1(repr(sorted(repo.files.items())).encode()).hexdigest()
            self._json({"commitUrl": f"{hub.url}/{repo_id}/commit/{repo.commit}", "commitOid": repo.commit})

        def _create_repo(self) -> None:
            payload = json.loads(self.body or b"{}")
            if hub.faults.create_repo_status:
                self._error(
                    hub.faults.create_repo_status,
                    "You don't have the rights to create a model under this namespace",
                )
                return
            if not self._authorized():
                self._error(401, "Invalid credentials in Authorization header")
                return
            hub.created.append(payload)
            repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
            if repo_id in hub.repos:
                self._error(409, "You already created this model repo")
                return
            hub.repos[repo_id] = FakeRepo({}, commit="0" * 40, private=payload.get("visibility") == "private")
            self._json({"url": f"{hub.url}/{payload.get('organization') or 'user'}/{payload['name']}"})

    return Handler
