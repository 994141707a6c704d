"""Downloading the files of one GGUF model: a single file, or every part of a split one.

Parts are fetched in parallel (each resumable and hash-checked on its own, shown as one bar),
and kept in `downloads/` until all of them are there and the merged header reads as a model;
only then do they become blobs, so an interrupted pull never leaves half a model in the store.
A part whose blob is already stored (an unchanged part of an updated model) is not downloaded.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from llmedge.errors import InvalidModelFileError
from llmedge.gguf import GgufHeader, merge_split, read_gguf_header
from llmedge.hub import hf
from llmedge.progress import Reporter
from llmedge.store import BlobPart, Store, sha256_of

PARALLEL_DOWNLOADS = 4


@dataclass(frozen=True)
class Fetched:
    """One file of the model, on disk: a stored blob, or a verified download not yet adopted."""

    file: hf.HubFile
    path: Path
    stored: bool


class _OneBar:
    """Several downloads shown as one byte count, whichever thread reports."""

    def __init__(self, reporter: Reporter) -> None:
        self._reporter = reporter
        self._lock = threading.Lock()

    def begin(self, label: str, total: int | None, done: int = 0, unit: str = "bytes") -> None:
        self.advance(done)

    def advance(self, n: int) -> None:
        with self._lock:
            self._reporter.advance(n)

    def end(self) -> None:
        pass

    def note(self, text: str) -> None:
        with self._lock:
            self._reporter.note(text)


def fetch_model_files(
    store: Store, snapshot: hf.RepoSnapshot, files: Sequence[hf.HubFile], reporter: Reporter
) -> list[Fetched]:
    """Every file of the model on disk, verified; downloads only what the store lacks."""
    fetched: dict[str, Fetched] = {}
    missing = []
    for file in files:
        if (
            file.sha256
            and file.size_bytes is not None
            and store.has_blob(file.sha256, file.size_bytes)
        ):
            fetched[file.path] = Fetched(file, store.blob_path(file.sha256), stored=True)
        else:
            missing.append(file)
    if len(missing) == 1:
        only = missing[0]
        fetched[only.path] = Fetched(only, hf.download(store, snapshot, only, reporter), False)
    elif missing:
        label = f"{len(missing)} parts of {Path(files[0].path).name}"
        reporter.begin(label, sum(f.size_bytes or 0 for f in missing))
        bar = _OneBar(reporter)
        workers = min(PARALLEL_DOWNLOADS, len(missing))
        try:
            with ThreadPoolExecutor(workers, thread_name_prefix="llmedge-part") as pool:
                paths = list(pool.map(lambda f: hf.download(store, snapshot, f, bar), missing))
        finally:
            reporter.end()
        for file, path in zip(missing, paths, strict=True):
            fetched[file.path] = Fetched(file, path, stored=False)
    return [fetched[f.path] for f in files]


def model_header(fetched: Sequence[Fetched]) -> GgufHeader:
    """The model's header, all parts merged; a file that is not a model is deleted first."""
    try:
        headers = [read_gguf_header(f.path) for f in fetched]
        if len(headers) == 1:
            return headers[0]
        return merge_split(headers, [f.file.path for f in fetched])
    except InvalidModelFileError:
        for item in fetched:
            if not item.stored:
                item.path.unlink(missing_ok=True)  # what is not a model never enters the store
        raise


def adopt_all(store: Store, fetched: Sequence[Fetched]) -> tuple[BlobPart, ...]:
    """Move the downloads into place as blobs; the model's parts, in order."""
    parts = []
    for item in fetched:
        sha256 = item.file.sha256 or sha256_of(item.path)
        if not item.stored:
            store.adopt_blob(item.path, sha256)
        size = store.blob_path(sha256).stat().st_size
        parts.append(BlobPart(f"sha256:{sha256}", size, item.file.path))
    return tuple(parts)
