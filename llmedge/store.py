"""The model store: content-addressed blobs plus one small manifest per model version.

Layout under `Settings.store_dir`::

    blobs/sha256-<hex>              model files, immutable, named by their sha256
    blobs/sha256-<hex>.verified     size and mtime of the blob when its hash last checked out
    manifests/<name>/<tag>.json     what a model reference points to (blob, facts, provenance)
    tmp/                            partial writes; never read, removed on failure

A write goes to a unique file in `tmp/`, is hashed as it is written, then renamed into place, so a
crash at any point leaves every earlier model usable. A blob's hash is checked again before its
first use and whenever its size or mtime changes, so a damaged file is reported, never loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from llmedge.errors import CorruptModelError, InvalidRequestError, ModelNotFoundError, StoreError
from llmedge.model_facts import ModelFacts

_CHUNK_BYTES = 4 << 20
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}(/[a-z0-9][a-z0-9._-]{0,127}){0,3}$")
_TAG = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# Room left free on the disk after a write, so that a pull never fills it to the last byte.
DISK_RESERVE_BYTES = 256 << 20


@dataclass(frozen=True)
class ModelRef:
    """A model reference, `name[:tag]`, checked so it cannot leave the store."""

    name: str
    tag: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        name, _, tag = text.strip().lower().partition(":")
        if not _NAME.match(name) or ".." in name:
            raise InvalidRequestError(
                f"{text!r} is not a valid model name (letters, digits, '.', '_', '-')",
                param="model",
            )
        if tag and not _TAG.match(tag):
            raise InvalidRequestError(f"{tag!r} is not a valid tag", param="model")
        return cls(name, tag or None)

    def __str__(self) -> str:
        return f"{self.name}:{self.tag}" if self.tag else self.name


@dataclass(frozen=True)
class Manifest:
    """One stored model version."""

    name: str
    tag: str
    format: str
    digest: str
    size_bytes: int
    created_at: str
    source: dict[str, str] = field(default_factory=dict)
    facts: ModelFacts | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}"

    @property
    def sha256(self) -> str:
        return self.digest.removeprefix("sha256:")

    def to_json(self) -> str:
        data: dict[str, Any] = {k: v for k, v in self.__dict__.items() if k != "facts"}
        data["facts"] = self.facts.to_dict() if self.facts else None
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        facts = data.pop("facts", None)
        return cls(**data, facts=ModelFacts.from_dict(facts) if facts else None)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


class Store:
    """Blobs and manifests under one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs_dir = root / "blobs"
        self.manifests_dir = root / "manifests"
        self.tmp_dir = root / "tmp"

    # --- reading -------------------------------------------------------------------------

    def manifests(self) -> list[Manifest]:
        if not self.manifests_dir.is_dir():
            return []
        found = [
            Manifest.from_json(path.read_text(encoding="utf-8"))
            for path in self.manifests_dir.rglob("*.json")
        ]
        return sorted(found, key=lambda m: (m.name, m.tag))

    def find(self, ref: ModelRef) -> Manifest | None:
        """The manifest `ref` names; with no tag, the newest version of that name."""
        folder = self.manifests_dir / ref.name
        if ref.tag:
            path = folder / f"{ref.tag}.json"
            return Manifest.from_json(path.read_text(encoding="utf-8")) if path.is_file() else None
        versions = [m for m in self.manifests() if m.name == ref.name]
        return max(versions, key=lambda m: m.created_at, default=None)

    def resolve(self, ref: ModelRef) -> Manifest:
        manifest = self.find(ref)
        if manifest is None:
            raise ModelNotFoundError(str(ref), f"run `llmedge pull {ref}`")
        return manifest

    def blob_path(self, digest: str) -> Path:
        return self.blobs_dir / f"sha256-{digest.removeprefix('sha256:')}"

    def verified_blob(self, manifest: Manifest) -> Path:
        """The blob's path, after checking its size and (when it may have changed) its hash."""
        path = self.blob_path(manifest.digest)
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise CorruptModelError(manifest.ref, str(path), "its file is missing") from None
        if stat.st_size != manifest.size_bytes:
            raise CorruptModelError(
                manifest.ref,
                str(path),
                f"{stat.st_size} bytes on disk, {manifest.size_bytes} expected: truncated",
            )
        stamp_path = path.with_name(path.name + ".verified")
        stamp = f"{stat.st_size} {stat.st_mtime_ns}"
        with contextlib.suppress(OSError):
            if stamp_path.read_text() == stamp:
                return path
        actual = sha256_of(path)
        if actual != manifest.sha256:
            raise CorruptModelError(
                manifest.ref,
                str(path),
                f"sha256 is {actual[:12]}…, {manifest.sha256[:12]}… expected",
            )
        self._write_atomic(stamp_path, stamp)
        return path

    # --- writing -------------------------------------------------------------------------

    def add_file(
        self,
        source: Path,
        ref: ModelRef,
        *,
        format: str,
        origin: dict[str, str],
        facts: ModelFacts | None = None,
        expected_sha256: str | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> Manifest:
        """Copy a file into the store (hashing it on the way) and point `ref` at it."""
        size = source.stat().st_size
        with source.open("rb") as handle:
            digest = self._add_blob(handle, size, expected_sha256, on_progress)
        return self.add_manifest(
            ref, format=format, digest=digest, size=size, origin=origin, facts=facts
        )

    def add_manifest(
        self,
        ref: ModelRef,
        *,
        format: str,
        digest: str,
        size: int,
        origin: dict[str, str],
        facts: ModelFacts | None,
    ) -> Manifest:
        if ref.tag is None:
            raise InvalidRequestError(f"{ref} needs a tag to be stored")
        manifest = Manifest(
            name=ref.name,
            tag=ref.tag,
            format=format,
            digest=f"sha256:{digest}",
            size_bytes=size,
            created_at=_now(),
            source=origin,
            facts=facts,
        )
        self._write_atomic(self.manifests_dir / ref.name / f"{ref.tag}.json", manifest.to_json())
        return manifest

    def remove(self, ref: ModelRef) -> list[Manifest]:
        """Delete the manifests `ref` names (every tag when it has none), then unused blobs."""
        if ref.tag:
            removed = [m for m in [self.find(ref)] if m]
        else:
            removed = [m for m in self.manifests() if m.name == ref.name]
        if not removed:
            raise ModelNotFoundError(str(ref), "`llmedge list` shows what is stored")
        for manifest in removed:
            (self.manifests_dir / manifest.name / f"{manifest.tag}.json").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            (self.manifests_dir / ref.name).rmdir()
        self.collect_garbage()
        return removed

    def collect_garbage(self) -> list[Path]:
        """Delete blobs no manifest points to; returns what was deleted."""
        used = {self.blob_path(m.digest).name for m in self.manifests()}
        deleted = []
        for path in self.blobs_dir.glob("sha256-*"):
            if path.name.removesuffix(".verified") not in used:
                path.unlink(missing_ok=True)
                deleted.append(path)
        return deleted

    # --- helpers -------------------------------------------------------------------------

    def _add_blob(
        self,
        handle: BinaryIO,
        size: int,
        expected_sha256: str | None,
        on_progress: Callable[[int], None] | None,
    ) -> str:
        self._check_free_space(size)
        digest = hashlib.sha256()
        with self._temporary() as tmp:
            with tmp.open("wb") as out:
                while chunk := handle.read(_CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)
                    if on_progress:
                        on_progress(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            actual = digest.hexdigest()
            if expected_sha256 and actual != expected_sha256:
                raise CorruptModelError(
                    "(new download)", str(tmp), f"sha256 {actual}, {expected_sha256} expected"
                )
            self.adopt_blob(tmp, actual)
        return actual

    def adopt_blob(self, path: Path, sha256: str) -> Path:
        """Move a fully written, already hashed file into place as a blob."""
        target = self.blob_path(sha256)
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        if target.exists() and target.stat().st_size == path.stat().st_size:
            path.unlink()
        else:
            os.replace(path, target)
        stat = target.stat()
        self._write_atomic(
            target.with_name(target.name + ".verified"), f"{stat.st_size} {stat.st_mtime_ns}"
        )
        return target

    @contextlib.contextmanager
    def _temporary(self, suffix: str = ".part") -> Iterator[Path]:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, suffix=suffix)
        os.close(fd)
        path = Path(name)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    def _write_atomic(self, path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._temporary(".json") as tmp:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)

    def _check_free_space(self, size: int) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.root).free
        if free < size + DISK_RESERVE_BYTES:
            raise StoreError(
                f"not enough disk space in {self.root}: {size / 2**30:.2f} GiB needed, "
                f"{free / 2**30:.2f} GiB free; free some space or remove models with `llmedge rm`"
            )
