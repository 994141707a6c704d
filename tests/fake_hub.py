"""A Hugging-Face-compatible hub on loopback, serving files the tests make or ship.

It speaks the parts of the hub protocol huggingface_hub uses to download: `GET /api/models/{repo}
[/revision/{rev}]` (with `blobs=true`: sizes, git blob ids, LFS sha256), `HEAD|GET
/{repo}/resolve/{rev}/{file}` (X-Repo-Commit, ETag, X-Linked-Etag, X-Linked-Size, a 302 to a
"CDN" for LFS files) and Range requests on the CDN. Gated repositories answer 401/403 with
`X-Error-Code: GatedRepo`. Faults can be injected per file: a connection dropped after N bytes,
a corrupted byte, a slow stream.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".gguf", ".safetensors", ".model", ".bin")
_CHUNK = 256 << 10
# Hashes of files on disk, by (path, size, mtime): the same big file is served by many tests.
_HASHES: dict[tuple[str, int, int], tuple[str, str]] = {}


@dataclass
class HubFile:
    path: str
    source: Path | bytes

    def __post_init__(self) -> None:
        if isinstance(self.source, bytes):
            self.size = len(self.source)
            self.sha256, self.git_sha1 = _hashes(self.source)
            return
        stat = self.source.stat()
        key = (str(self.source), stat.st_size, stat.st_mtime_ns)
        if key not in _HASHES:
            _HASHES[key] = _hashes(self.source.read_bytes())
        self.size = stat.st_size
        self.sha256, self.git_sha1 = _HASHES[key]

    @property
    def lfs(self) -> bool:
        return self.path.endswith(LFS_SUFFIXES)

    def read(self, start: int, end: int | None) -> bytes:
        if isinstance(self.source, bytes):
            return self.source[start:end]
        with self.source.open("rb") as handle:
            handle.seek(start)
            return handle.read(-1 if end is None else end - start)


def _hashes(data: bytes) -> tuple[str, str]:
    git = hashlib.sha1(f"blob {len(data)}\0".encode() + data, usedforsecurity=False)
    return hashlib.sha256(data).hexdigest(), git.hexdigest()


@dataclass
class Repo:
    gated: bool = False
    token: str | None = None
    commits: list[tuple[str, dict[str, HubFile]]] = field(default_factory=list)

    def at(self, revision: str) -> tuple[str, dict[str, HubFile]] | None:
        if revision == "main" and self.commits:
            return self.commits[-1]
        return next((c for c in self.commits if c[0] == revision), None)


@dataclass
class Faults:
    """Misbehaviour for one LFS object, applied on the CDN side."""

    drop_after_bytes: int | None = None  # cut the connection once, after this many bytes
    corrupt: bool = False  # flip one byte (the size stays right, the hash does not)
    slow_after_bytes: int | None = None  # from here on, crawl
    slow_delay_s: float = 0.2


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    authorization: str | None


class FakeHub:
    """Start with `with FakeHub() as hub:`; `hub.url` goes into HF_ENDPOINT."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.faults: dict[str, Faults] = {}  # by sha256
        self.requests: list[Request] = []
        self.served_bytes = 0  # file bytes the CDN sent, for tests that count a download
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # Another host name for the same server: huggingface_hub treats it as a CDN.
        self.cdn_url = f"http://localhost:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def push(
        self,
        repo_id: str,
        files: dict[str, Path | bytes],
        *,
        gated: bool = False,
        token: str | None = None,
    ) -> str:
        """Add a commit holding exactly these files; `main` moves to it. Returns its sha."""
        repo = self.repos.setdefault(repo_id, Repo(gated=gated, token=token))
        commit = hashlib.sha1(f"{repo_id}:{len(repo.commits)}:{sorted(files)}".encode()).hexdigest()
        repo.commits.append((commit, {p: HubFile(p, s) for p, s in files.items()}))
        return commit

    def file(self, repo_id: str, path: str) -> HubFile:
        return self.repos[repo_id].at("main")[1][path]  # type: ignore[index]

    def ranges(self) -> list[str]:
        return [r.range for r in self.requests if r.range]

    def objects(self) -> Iterator[HubFile]:
        for repo in self.repos.values():
            for _, files in repo.commits:
                yield from files.values()


def cli_env(hub: FakeHub, llmedge_home: Path, hf_home: Path) -> dict[str, str]:
    """The environment a user pointing llmedge at this hub would have (no token, online)."""
    base = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE")}
    return {
        **base,
        "LLMEDGE_HOME": str(llmedge_home),
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(hf_home),  # no saved login is used
        "COLUMNS": "200",
    }


def run_llmedge(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`llmedge ARGS` as a subprocess, output captured."""
    command = [sys.executable, "-m", "llmedge.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def start_llmedge(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """`llmedge ARGS` started in the background (to be stopped midway), output captured.

    Ctrl-C reaches it as it reaches a command typed in a terminal, even when this test run was
    itself started with SIGINT ignored (a background job of a shell without job control, as
    `cmd &` in a script): an ignored signal stays ignored across exec, a handled one does not.
    """
    command = [sys.executable, "-m", "llmedge.cli", *args]
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def wait_for_size(path: Path, size: int, timeout_s: float = 60) -> None:
    """Until a download's partial file has reached `size` bytes."""
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and path.stat().st_size >= size):
        assert time.monotonic() < deadline, f"{path} never reached {size} bytes"
        time.sleep(0.05)


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            hub.requests.append(
                Request(
                    self.command,
                    self.path,
                    self.headers.get("Range"),
                    self.headers.get("Authorization"),
                )
            )
            path = unquote(urlsplit(self.path).path)
            if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path):
                return self._model_info(m.group(1), m.group(2) or "main")
            if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
                return self._resolve(m.group(1), m.group(2), m.group(3), body)
            if m := re.fullmatch(r"/lfs/([0-9a-f]{64})", path):
                return self._cdn(m.group(1), body)
            self._error(404, "RepoNotFound", "not found")

        def _error(self, status: int, code: str, message: str, commit: str | None = None) -> None:
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Type", "application/json")
            data = json.dumps({"error": message}).encode()
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _lookup(self, repo_id: str, revision: str) -> tuple[str, dict[str, HubFile]] | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(401, "RepoNotFound", "Repository not found")
                return None
            found = repo.at(revision)
            if found is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return found

        def _model_info(self, repo_id: str, revision: str) -> None:
            found = self._lookup(repo_id, revision)
            if found is None:
                return
            commit, files = found
            siblings = []
            for f in files.values():
                entry: dict[str, object] = {"rfilename": f.path, "size": f.size}
                entry["blobId"] = f.git_sha1
                if f.lfs:
                    entry["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": 134}
                siblings.append(entry)
            gated = "manual" if hub.repos[repo_id].gated else False
            info = {"id": repo_id, "sha": commit, "private": False, "gated": gated}
            data = json.dumps({**info, "siblings": siblings}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _resolve(self, repo_id: str, revision: str, name: str, body: bool) -> None:
            found = self._lookup(repo_id, revision)
            if found is None:
                return
            commit, files = found
            repo = hub.repos[repo_id]
            if repo.gated:
                auth = self.headers.get("Authorization")
                if auth is None:
                    message = f"Access to model {repo_id} is restricted. Please log in."
                    return self._error(401, "GatedRepo", message, commit)
                if auth != f"Bearer {repo.token}":
                    message = f"Access to model {repo_id} is restricted; you are not in the list."
                    return self._error(403, "GatedRepo", message, commit)
            file = files.get(name)
            if file is None:
                return self._error(404, "EntryNotFound", f"{name} does not exist", commit)
            if file.lfs:
                self.send_response(302)
                self.send_header("Location", f"{hub.cdn_url}/lfs/{file.sha256}")
                self.send_header("X-Linked-Etag", f'"{file.sha256}"')
                self.send_header("X-Linked-Size", str(file.size))
                self.send_header("ETag", f'"{file.git_sha1}"')
                self.send_header("X-Repo-Commit", commit)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            data = file.read(0, None)
            self.send_response(200)
            self.send_header("ETag", f'"{file.git_sha1}"')
            self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)
            return None

        def _cdn(self, sha256: str, body: bool) -> None:
            file = next((f for f in hub.objects() if f.sha256 == sha256), None)
            if file is None:
                return self._error(404, "EntryNotFound", "no such object")
            start = 0
            if m := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or ""):
                start = int(m.group(1))
            self.send_response(206 if start else 200)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", f'"{sha256}"')
            self.send_header("Content-Length", str(file.size - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{file.size - 1}/{file.size}")
            self.end_headers()
            if body:
                self._stream(file, start)
            return None

        def _stream(self, file: HubFile, start: int) -> None:
            faults = hub.faults.get(file.sha256, Faults())
            position = start
            data = file.read(0, None)
            while position < file.size:
                chunk = bytearray(data[position : position + _CHUNK])
                if faults.corrupt and position <= file.size // 2 < position + len(chunk):
                    chunk[file.size // 2 - position] ^= 0xFF
                if faults.drop_after_bytes is not None and position >= faults.drop_after_bytes:
                    faults.drop_after_bytes = None  # once
                    self.close_connection = True
                    return
                if faults.slow_after_bytes is not None and position >= faults.slow_after_bytes:
                    time.sleep(faults.slow_delay_s)
                try:
                    self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    return
                hub.served_bytes += len(chunk)
                position += len(chunk)

    return Handler
