"""Downloads from the Hugging Face Hub, or any server speaking its API (`HF_ENDPOINT`).

huggingface_hub does the talking: `HfApi.model_info` lists a revision's files with their sizes and
LFS sha256, `get_hf_file_metadata` resolves one file (X-Repo-Commit, ETag, X-Linked-Size, the CDN
redirect), and `http_get` streams it with Range requests, resuming a dropped connection where it
stopped. `hf_hub_download` is not used because it deletes its partial file on failure: here the
partial file lives in the store's `downloads/` folder under the hash it must have, so the next pull,
even after Ctrl-C or `kill -9`, resumes it. A finished file is hashed and compared with the hash
the hub published before anything uses it. `HF_TOKEN` (or a saved login) is sent as usual.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import urlsplit

from llmedge.errors import (
    DownloadError,
    ExtraNotInstalledError,
    HashMismatchError,
    HubAccessError,
    HubUnreachableError,
    ModelNotFoundError,
)
from llmedge.progress import HubBar, Reporter
from llmedge.store import Store
from llmedge.store.blobs import disk_errors, locked

DEFAULT_ENDPOINT = "https://huggingface.co"
_HASH_CHUNK_BYTES = 4 << 20
# What a hub's answers must look like before any of it names a file here.
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_PATH_PART = re.compile(r"^[^\x00-\x1f/\\:*?\"<>|]+$")


@dataclass(frozen=True)
class HubFile:
    """One file of a repository revision, with the hash it must have."""

    path: str
    size_bytes: int | None
    sha256: str | None  # set for LFS files: the hub's LFS object id
    git_sha1: str | None  # the git blob id, the only hash a small (non-LFS) file has

    @property
    def key(self) -> str:
        """A name for the file's bytes that is unique to its content."""
        if self.sha256:
            return f"sha256-{self.sha256}"
        if self.git_sha1:
            return f"git-{self.git_sha1}"
        raise DownloadError(f"the hub published no hash for {self.path}; cannot verify it")


@dataclass(frozen=True)
class RepoSnapshot:
    """A repository at one commit: what `model_info(..., files_metadata=True)` says about it."""

    repo: str
    commit: str
    gated: bool
    files: tuple[HubFile, ...]
    revision: str = "main"  # what was asked for: a branch, a tag or a commit

    def file(self, path: str) -> HubFile:
        for item in self.files:
            if item.path == path:
                return item
        raise ModelNotFoundError(f"{self.repo}/{path}", f"{self.repo} has no file {path}")


def endpoint() -> str:
    """The hub to talk to, read at call time so `HF_ENDPOINT` can point at a mirror."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def unreachable(reason: str) -> HubUnreachableError:
    return HubUnreachableError(endpoint(), reason)


def access_denied(repo: str, status: int, *, gated: bool) -> HubAccessError:
    page = f"{endpoint()}/{repo}"
    return HubAccessError(
        repo, status, gated=gated, page=page, token_set=bool(os.environ.get("HF_TOKEN"))
    )


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def require_hub_client() -> None:
    """Fail with the extra to install when huggingface_hub is missing."""
    if importlib.util.find_spec("huggingface_hub") is None:
        raise ExtraNotInstalledError("hub", "huggingface-hub")


def fetch_snapshot(repo: str, revision: str | None = None) -> RepoSnapshot:
    """The files of `repo` at `revision` (default: its main branch), with sizes and hashes."""
    require_hub_client()
    from huggingface_hub import HfApi

    with translated_errors(repo):
        info = HfApi(endpoint=endpoint()).model_info(
            repo, revision=revision or "main", files_metadata=True
        )
    files = tuple(
        checked_file(
            repo,
            HubFile(
                path=s.rfilename,
                size_bytes=s.lfs.size if s.lfs else s.size,
                sha256=s.lfs.sha256 if s.lfs else None,
                git_sha1=s.blob_id,
            ),
        )
        for s in info.siblings or []
    )
    if not info.sha:
        raise DownloadError(f"{endpoint()} did not say which commit {repo} is at; is it a hub?")
    if not _SHA1.match(str(info.sha)):
        raise _hostile(repo, f"a commit id {str(info.sha)[:80]!r}")
    return RepoSnapshot(repo, info.sha, bool(info.gated), files, revision or "main")


def _hostile(repo: str, what: str) -> DownloadError:
    return DownloadError(
        f"{endpoint()} sent {what} for {repo}, which is not what a hub sends; nothing was "
        "downloaded (check HF_ENDPOINT)"
    )


def checked_file(repo: str, file: HubFile) -> HubFile:
    """`file` as the hub listed it, once its path and hashes are safe to name files by."""
    parts = file.path.split("/")
    if (
        not file.path
        or file.path.startswith("/")
        or any(p in ("", ".", "..") or not _PATH_PART.match(p) for p in parts)
    ):
        raise _hostile(repo, f"a file name {file.path[:80]!r}")
    if file.sha256 is not None and not _SHA256.match(file.sha256):
        raise _hostile(repo, f"an LFS hash {file.sha256[:80]!r} for {file.path}")
    if file.git_sha1 is not None and not _SHA1.match(file.git_sha1):
        raise _hostile(repo, f"a git blob id {file.git_sha1[:80]!r} for {file.path}")
    if file.size_bytes is not None and (
        isinstance(file.size_bytes, bool)
        or not isinstance(file.size_bytes, int)
        or file.size_bytes < 0
    ):
        raise _hostile(repo, f"a size {file.size_bytes!r} for {file.path}")
    return file


def download(store: Store, snapshot: RepoSnapshot, file: HubFile, reporter: Reporter) -> Path:
    """Fetch one file into the store's `downloads/` folder, resuming a partial copy; verify it.

    Returns the path of the complete, verified file: the caller moves it where it belongs. The
    partial file is locked while this process appends to it (no lock file is left behind).
    """
    require_hub_client()
    if is_offline():
        raise unreachable("HF_HUB_OFFLINE is set")
    partial = store.partial_path(file.key)
    with disk_errors(store.root, f"downloading {file.path}"), locked(partial) as out:
        try:
            expected = file.size_bytes
            if expected is None or out.tell() != expected:
                _fetch(store, snapshot, file, out, reporter)
            _check_hash(snapshot.repo, file, partial, reporter)
        except BaseException:
            if out.seek(0, os.SEEK_END) == 0:
                partial.unlink(missing_ok=True)  # nothing arrived: nothing to resume
            raise
    return partial


def _fetch(
    store: Store, snapshot: RepoSnapshot, file: HubFile, out: BinaryIO, reporter: Reporter
) -> None:
    """Append the rest of `file` to `out` (over HTTP with Range, or through Xet's chunks)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get, xet_get
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]
    from huggingface_hub.utils._runtime import is_xet_available

    url = hf_hub_url(snapshot.repo, file.path, revision=snapshot.commit, endpoint=endpoint())
    with translated_errors(snapshot.repo):
        meta = get_hf_file_metadata(url, endpoint=endpoint())
    expected = file.size_bytes if file.size_bytes is not None else meta.size
    if expected is not None and out.tell() > expected:
        out.truncate(0)  # longer than the file can be: not a prefix of it
        out.seek(0)
    done = out.tell()
    if expected is not None:
        store.check_free_space(expected - done)
    headers = build_hf_headers()
    bar = cast(Any, functools.partial(HubBar, reporter, file.path))
    try:
        if meta.xet_file_data is not None and is_xet_available():
            # Xet fetches only the chunks its local cache lacks: an update that changed part
            # of a file downloads that part. It writes the file whole, from its cache.
            with translated_errors(snapshot.repo):
                xet_get(
                    incomplete_path=Path(out.name),
                    xet_file_data=meta.xet_file_data,
                    headers=headers,
                    expected_size=expected,
                    displayed_filename=file.path,
                    tqdm_class=bar,
                )
            out.seek(0, os.SEEK_END)
            return
        if urlsplit(meta.location).netloc != urlsplit(url).netloc:
            headers.pop("authorization", None)  # a CDN gets a signed URL, never the token
        with translated_errors(snapshot.repo):
            http_get(
                meta.location,
                cast(Any, out),
                resume_size=done,
                headers=headers,
                expected_size=expected,
                displayed_filename=file.path,
                tqdm_class=bar,
            )
    except OSError as exc:
        if exc.errno is not None:
            raise  # the disk, not the network
        # http_get found fewer bytes than the file has, without a network error.
        raise DownloadError(
            f"the download of {file.path} stopped at {out.tell()} of {expected} bytes; "
            "pull again to resume it"
        ) from exc
    finally:
        out.flush()
        os.fsync(out.fileno())


def download_folder(
    store: Store, snapshot: RepoSnapshot, paths: Sequence[str], reporter: Reporter
) -> Path:
    """Gather these files of a revision into one folder under the store's `downloads/`, each
    verified as it arrives; files an earlier, interrupted pull left there are kept.

    The caller converts or packs the folder, then removes it. Room is checked for the files and
    a result of the same size beside them.
    """
    files = [snapshot.file(path) for path in paths]
    store.check_free_space(2 * sum(f.size_bytes or 0 for f in files))
    slug = re.sub(r"[^A-Za-z0-9._-]", "-", snapshot.repo)
    folder = store.downloads_dir / f"{slug}@{snapshot.commit[:12]}"
    for file in files:
        destination = folder / file.path  # the path was checked when the listing came in
        if not destination.is_file():
            downloaded = download(store, snapshot, file, reporter)
            with disk_errors(store.root, f"downloading {file.path}"):
                destination.parent.mkdir(parents=True, exist_ok=True)
                os.replace(downloaded, destination)
    return folder


def _check_hash(repo: str, file: HubFile, path: Path, reporter: Reporter) -> None:
    reporter.note(f"checking the hash of {file.path}")
    if file.sha256:
        digest = hashlib.sha256()
        expected = file.sha256
    else:
        # A small file's only published hash is its git blob id: sha1 over "blob <size>\0" + data.
        digest = hashlib.sha1(usedforsecurity=False)
        digest.update(f"blob {path.stat().st_size}\0".encode())
        expected = file.git_sha1 or ""
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    actual = digest.hexdigest()
    if actual != expected:
        path.unlink(missing_ok=True)
        raise HashMismatchError(repo, file.path, expected, actual)


@contextlib.contextmanager
def translated_errors(repo: str) -> Iterator[None]:
    """Turn huggingface_hub's and the HTTP client's errors into llmedge's, once, here."""
    import httpx2
    from huggingface_hub import errors

    try:
        yield
    except errors.GatedRepoError as exc:
        raise access_denied(repo, _status(exc), gated=True) from exc
    except errors.RevisionNotFoundError as exc:
        raise ModelNotFoundError(repo, "that revision does not exist there") from exc
    except errors.RepositoryNotFoundError as exc:
        raise ModelNotFoundError(
            repo, f"{endpoint()} has no such repository (or it is private: set HF_TOKEN)"
        ) from exc
    except errors.RemoteEntryNotFoundError as exc:
        raise ModelNotFoundError(repo, f"a file is missing from it: {exc}") from exc
    except errors.HfHubHTTPError as exc:
        status = _status(exc)
        if status in (401, 403):
            raise access_denied(repo, status, gated=False) from exc
        raise DownloadError(f"{endpoint()} answered HTTP {status} for {repo}; try later") from exc
    except errors.OfflineModeIsEnabled as exc:
        raise unreachable("HF_HUB_OFFLINE is set") from exc
    except httpx2.TransportError as exc:
        raise unreachable(f"{type(exc).__name__}: {exc}") from exc


def _status(exc: Any) -> int:
    response = getattr(exc, "response", None)
    return int(getattr(response, "status_code", 0) or 0)
