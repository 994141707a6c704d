"""The model store: content-addressed blobs plus one small manifest per model version.

Layout under `Settings.store_dir`::

    blobs/sha256-<hex>              model files, immutable, named by their sha256
    blobs/sha256-<hex>.verified     size and mtime of the blob when its hash last checked out
    manifests/<name>/<tag>.json     current version of a reference (blob, facts, provenance)
    history/<name>/<tag>/<n>.json   earlier versions of that reference, highest n newest (rollback)
    downloads/<hash>.part           interrupted downloads, named by the hash they must have
    downloads/<hash>.part.lock      held while a process appends to that partial file
    downloads/<repo>@<commit>/      a safetensors revision being gathered for conversion
    tmp/                            partial writes; never read, removed on failure

A write goes to a unique file in `tmp/`, is hashed as it is written, then renamed into place, so a
crash at any point leaves every earlier model usable. A blob's hash is checked again before its
first use and whenever its size or mtime changes, so a damaged file is reported, never loaded.
Replacing a version moves the old manifest to `history/`, so its blob stays until it is pruned.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Literal

from llmedge.errors import CorruptModelError, InvalidRequestError, ModelNotFoundError, StoreError
from llmedge.files import write_text_atomic
from llmedge.gguf import ModelFacts
from llmedge.store.manifest import Manifest, ModelRef, QuantReport

__all__ = ["BlobCheck", "Manifest", "ModelRef", "QuantReport", "Store", "sha256_of"]

_CHUNK_BYTES = 4 << 20
# Room left free on the disk after a write, so that a pull never fills it to the last byte.
DISK_RESERVE_BYTES = 256 << 20
# Earlier versions kept per name:tag for `llmedge rollback`; older ones are pruned.
KEPT_VERSIONS = 2


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class BlobCheck:
    """The outcome of re-hashing one blob (or finding a file that should not be there)."""

    path: Path
    status: Literal["ok", "missing", "truncated", "corrupt", "orphan", "partial"]
    refs: tuple[str, ...] = ()
    detail: str = ""

    @property
    def damaged(self) -> bool:
        return self.status in ("missing", "truncated", "corrupt")


class Store:
    """Blobs and manifests under one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs_dir = root / "blobs"
        self.manifests_dir = root / "manifests"
        self.history_dir = root / "history"
        self.downloads_dir = root / "downloads"
        self.tmp_dir = root / "tmp"

    # --- reading -------------------------------------------------------------------------

    def manifests(self) -> list[Manifest]:
        """The current version of every stored reference, sorted by name and tag."""
        return sorted(self._read_all(self.manifests_dir), key=lambda m: (m.name, m.tag))

    def find(self, ref: ModelRef) -> Manifest | None:
        """The manifest `ref` names; with no tag, the newest version of that name."""
        if ref.tag:
            path = self._manifest_path(ref.name, ref.tag)
            return Manifest.from_json(path.read_text(encoding="utf-8")) if path.is_file() else None
        versions = [m for m in self.manifests() if m.name == ref.name]
        return max(versions, key=lambda m: m.created_at, default=None)

    def resolve(self, ref: ModelRef) -> Manifest:
        manifest = self.find(ref)
        if manifest is None:
            raise ModelNotFoundError(str(ref), f"run `llmedge pull {ref}`")
        return manifest

    def history(self, name: str, tag: str) -> list[Manifest]:
        """Earlier versions of `name:tag`, newest first."""
        return [
            Manifest.from_json(path.read_text(encoding="utf-8"))
            for path in reversed(self._history_paths(name, tag))
        ]

    def blob_path(self, digest: str) -> Path:
        return self.blobs_dir / f"sha256-{digest.removeprefix('sha256:')}"

    def has_blob(self, sha256: str, size_bytes: int) -> bool:
        path = self.blob_path(sha256)
        return path.is_file() and path.stat().st_size == size_bytes

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

    def partial_path(self, key: str) -> Path:
        """Where an interrupted download of the file with this hash (`sha256-…`) waits to resume."""
        self.downloads_dir.mkdir(parents=True, exist_ok=True)
        return self.downloads_dir / f"{key}.part"

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
        quant_report: QuantReport | None = None,
    ) -> Manifest:
        """Copy a file into the store (hashing it on the way) and point `ref` at it."""
        size = source.stat().st_size
        with source.open("rb") as handle:
            digest = self._add_blob(handle, size, expected_sha256, on_progress)
        return self.add_manifest(
            ref,
            format=format,
            digest=digest,
            size=size,
            origin=origin,
            facts=facts,
            quant_report=quant_report,
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
        quant_report: QuantReport | None = None,
    ) -> Manifest:
        """Point `ref` at a stored blob; a different blob already there becomes history."""
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
            quant_report=quant_report,
        )
        current = self.find(ref)
        if current is not None and current.digest != manifest.digest:
            self._archive(current)
        self._write_atomic(self._manifest_path(ref.name, ref.tag), manifest.to_json())
        if current is not None and current.digest != manifest.digest:
            self._prune_history(ref.name, ref.tag)
        return manifest

    def rollback(self, ref: ModelRef) -> tuple[Manifest, Manifest]:
        """Make the previous version of `ref` current again; returns (restored, dropped)."""
        current = self.resolve(ref)
        paths = self._history_paths(current.name, current.tag)
        if not paths:
            raise ModelNotFoundError(
                f"{current.ref} (earlier version)",
                "it has no earlier version to roll back to; `llmedge show` lists what is stored",
            )
        restored = Manifest.from_json(paths[-1].read_text(encoding="utf-8"))
        self._write_atomic(self._manifest_path(current.name, current.tag), restored.to_json())
        paths[-1].unlink()
        self.collect_garbage()
        return restored, current

    def remove(self, ref: ModelRef) -> list[Manifest]:
        """Delete the manifests `ref` names (every tag when it has none), then unused blobs."""
        if ref.tag:
            removed = [m for m in [self.find(ref)] if m]
        else:
            removed = [m for m in self.manifests() if m.name == ref.name]
        if not removed:
            raise ModelNotFoundError(str(ref), "`llmedge list` shows what is stored")
        for manifest in removed:
            self._manifest_path(manifest.name, manifest.tag).unlink(missing_ok=True)
            shutil.rmtree(self.history_dir / manifest.name / manifest.tag, ignore_errors=True)
        for base in (self.manifests_dir, self.history_dir):
            with contextlib.suppress(OSError):
                (base / ref.name).rmdir()
        self.collect_garbage()
        return removed

    def collect_garbage(self) -> list[Path]:
        """Delete blobs no manifest (current or earlier version) points to; returns them."""
        used = {self.blob_path(m.digest).name for m in self._all_versions()}
        deleted = []
        for path in self.blobs_dir.glob("sha256-*"):
            if path.name.removesuffix(".verified") not in used:
                path.unlink(missing_ok=True)
                deleted.append(path)
        return deleted

    def verify(self) -> list[BlobCheck]:
        """Re-hash every blob a version points to; report damage, orphans and partial downloads."""
        refs: dict[str, list[Manifest]] = {}
        for manifest in self._all_versions():
            refs.setdefault(manifest.sha256, []).append(manifest)
        checks = [self._check_blob(sha, versions) for sha, versions in sorted(refs.items())]
        for path in sorted(self.blobs_dir.glob("sha256-*")):
            if not path.name.endswith(".verified") and path.name[7:] not in refs:
                checks.append(BlobCheck(path, "orphan", detail="no manifest points to it"))
        for path in sorted(self.downloads_dir.glob("*.part")):
            size = path.stat().st_size
            checks.append(BlobCheck(path, "partial", detail=f"{size} bytes, resumed by a pull"))
        for path in sorted(p for p in self.downloads_dir.glob("*@*") if p.is_dir()):
            checks.append(BlobCheck(path, "partial", detail="weights waiting to be converted"))
        return checks

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

    def check_free_space(self, size: int) -> None:
        """Refuse a write of `size` bytes that would leave less than the reserve free."""
        self.root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.root).free
        if free < size + DISK_RESERVE_BYTES:
            raise StoreError(
                f"not enough disk space in {self.root}: {size / 2**30:.2f} GiB needed, "
                f"{free / 2**30:.2f} GiB free; free some space or remove models with `llmedge rm`"
            )

    @contextlib.contextmanager
    def temporary(self, suffix: str = ".part") -> Iterator[Path]:
        """A unique path under `tmp/`, deleted on the way out unless it was moved away."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, suffix=suffix)
        os.close(fd)
        path = Path(name)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    # --- helpers -------------------------------------------------------------------------

    def _manifest_path(self, name: str, tag: str) -> Path:
        return self.manifests_dir / name / f"{tag}.json"

    def _history_paths(self, name: str, tag: str) -> list[Path]:
        folder = self.history_dir / name / tag
        paths = [p for p in folder.glob("*.json") if p.stem.isdigit()] if folder.is_dir() else []
        return sorted(paths, key=lambda p: int(p.stem))

    def _read_all(self, base: Path) -> list[Manifest]:
        if not base.is_dir():
            return []
        return [Manifest.from_json(p.read_text(encoding="utf-8")) for p in base.rglob("*.json")]

    def _all_versions(self) -> list[Manifest]:
        return self._read_all(self.manifests_dir) + self._read_all(self.history_dir)

    def _archive(self, manifest: Manifest) -> None:
        paths = self._history_paths(manifest.name, manifest.tag)
        number = int(paths[-1].stem) + 1 if paths else 1
        folder = self.history_dir / manifest.name / manifest.tag
        self._write_atomic(folder / f"{number}.json", manifest.to_json())

    def _prune_history(self, name: str, tag: str) -> None:
        paths = self._history_paths(name, tag)
        for path in paths[: max(0, len(paths) - KEPT_VERSIONS)]:
            path.unlink()
        self.collect_garbage()

    def _check_blob(self, sha256: str, versions: list[Manifest]) -> BlobCheck:
        path = self.blob_path(sha256)
        refs = tuple(sorted({m.ref for m in versions}))
        expected = versions[0].size_bytes
        stamp = path.with_name(path.name + ".verified")
        if not path.is_file():
            return BlobCheck(path, "missing", refs, "the file is gone")
        size = path.stat().st_size
        if size != expected:
            stamp.unlink(missing_ok=True)
            return BlobCheck(path, "truncated", refs, f"{size} bytes, {expected} expected")
        actual = sha256_of(path)
        if actual != sha256:
            stamp.unlink(missing_ok=True)
            return BlobCheck(path, "corrupt", refs, f"sha256 is {actual[:12]}…")
        stat = path.stat()
        self._write_atomic(stamp, f"{stat.st_size} {stat.st_mtime_ns}")
        return BlobCheck(path, "ok", refs)

    def _add_blob(
        self,
        handle: BinaryIO,
        size: int,
        expected_sha256: str | None,
        on_progress: Callable[[int], None] | None,
    ) -> str:
        self.check_free_space(size)
        digest = hashlib.sha256()
        with self.temporary() as tmp:
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

    def _write_atomic(self, path: Path, text: str) -> None:
        write_text_atomic(path, text, self.tmp_dir)
