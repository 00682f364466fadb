"""A loopback HTTP server that stands in for the Hugging Face Hub in tests.

It speaks the subset of the Hub's HTTP API that the real ``huggingface_hub`` client uses to
download a snapshot (repo info, tree listing, HEAD/GET of ``resolve`` URLs, byte ranges) and to
push one (repo creation, preupload, NDJSON commit with base64 file contents). Repos live in
memory; each commit gets a fresh 40-hex sha. Point the client at it with ``HF_ENDPOINT``.

Fault injection for tests: ``fail_next_downloads`` (count of GETs cut off midway), and
``requests`` records every request line (to assert, e.g., that a token was sent or that nothing
was asked at all).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class HubState:
    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}  # repo_id -> {"commits": {sha: files}, "refs": {name: sha}}
        self.requests: list[tuple[str, str, dict]] = []
        self.fail_next_downloads = 0
        self.tampered: dict[str, bytes] = {}  # path -> bytes served instead of the advertised ones
        self.lock = threading.Lock()

    def commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        """Add a commit whose tree is the branch's tree updated with ``files``; returns its sha."""
        with self.lock:
            repo = self.repos.setdefault(repo_id, {"commits": {}, "refs": {}})
            parent = repo["commits"].get(repo["refs"].get(branch), {})
            tree = {**parent, **files}
            sha = hashlib.sha1(json.dumps(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in tree.items()))
                               .encode() + str(len(repo["commits"])).encode()).hexdigest()
            repo["commits"][sha] = tree
            repo["refs"][branch] = sha
            return sha

    def resolve(self, repo_id: str, revision: str) -> tuple[str, dict[str, bytes]] | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            return None
        sha = repo["refs"].get(revision, revision)
        tree = repo["commits"].get(sha)
        return None if tree is None else (sha, tree)


def _handler(state: HubState):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def _send(self, code: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))  # HEAD: the size a GET would send
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _json(self, code: int, data) -> None:
            self._send(code, json.dumps(data).encode(), {"Content-Type": "application/json"})

        def _not_found(self, what: str) -> None:
            self._send(404, json.dumps({"error": what}).encode(),
                       {"Content-Type": "application/json", "X-Error-Code": "RepoNotFound", "X-Error-Message": what})

        def _record(self) -> None:
            state.requests.append((self.command, self.path, dict(self.headers)))

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        # -- downloads ---------------------------------------------------------------------------
        def do_HEAD(self) -> None:
            self._record()
            self._serve_file(head=True)

        def do_GET(self) -> None:
            self._record()
            path = unquote(urlparse(self.path).path)
            m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(revision|tree)/([^/]+)(/.*)?", path)
            if m:
                repo_id, kind, revision = m.group(1), m.group(2), m.group(3)
                found = state.resolve(repo_id, revision)
                if found is None:
                    return self._not_found(f"{repo_id}@{revision}")
                sha, tree = found
                if kind == "revision":
                    return self._json(200, {"id": repo_id, "sha": sha, "private": False,
                                            "siblings": [{"rfilename": p} for p in sorted(tree)]})
                return self._json(200, [{"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                                        for p, b in sorted(tree.items())])
            self._serve_file(head=False)

        def _serve_file(self, head: bool) -> None:
            path = unquote(urlparse(self.path).path)
            m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            found = state.resolve(m.group(1), m.group(2)) if m else None
            if found is None or m.group(3) not in found[1]:
                return self._not_found(path)
            sha, tree = found
            data = tree[m.group(3)]
            etag = hashlib.sha256(data).hexdigest()
            data = state.tampered.get(m.group(3), data)
            headers = {"X-Repo-Commit": sha, "ETag": f'"{etag}"',
                       "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
            start = 0
            rng = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if rng and not head:
                start = int(rng.group(1))
            body = data[start:]
            if not head and state.fail_next_downloads > 0:
                state.fail_next_downloads -= 1
                # Promise the whole body, send half, then drop the connection.
                self.send_response(206 if start else 200)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            if start:
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            self._send(206 if start else 200, body, headers, head=head)

        # -- uploads -----------------------------------------------------------------------------
        def do_POST(self) -> None:
            self._record()
            path = unquote(urlparse(self.path).path)
            body = self._body()
            if path == "/api/repos/create":
                req = json.loads(body)
                repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
                if repo_id in state.repos:
                    return self._json(409, {"error": "You already created this model repo"})
                state.commit(repo_id, {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"})
                return self._json(200, {"url": f"http://{self.headers['Host']}/{repo_id}"})
            if path == "/api/validate-yaml":  # the Hub checks a model card's metadata before a commit
                return self._json(200, {"errors": [], "warnings": []})
            m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/([^/]+)", path)
            if m:
                files = json.loads(body)["files"]
                return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                  for f in files]})
            m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/([^/]+)", path)
            if m:
                files = {}
                for line in body.splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    elif item["key"] != "header":
                        return self._json(400, {"error": f"unsupported commit operation {item['key']}"})
                sha = state.commit(m.group(1), files, branch=m.group(2))
                return self._json(200, {"commitUrl": f"http://{self.headers['Host']}/{m.group(1)}/commit/{sha}",
                                        "commitOid": sha, "success": True})
            self._not_found(path)

    return Handler


class FakeHub:
    """Context manager: ``with FakeHub() as hub: hub.endpoint``, ``hub.state``."""

    def __init__(self) -> None:
        self.state = HubState()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
