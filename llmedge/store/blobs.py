"""The store's files: content-addressed blobs, their hash stamps, partial downloads, temporary
writes, and the folders of links that lay a split model out for llama.cpp.

Only a checked sha256 (64 hex digits) ever becomes part of a path here, so no name or digest a
hub or a damaged manifest sends can point outside the store. Every disk error comes out as one
`StoreError` line saying what to free or fix.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from llmedge.errors import CorruptModelError, DownloadError, StoreError
from llmedge.files import write_text_atomic
from llmedge.store.manifest import BlobPart

_CHUNK_BYTES = 4 << 20
# Room left free on the disk after a write, so that a pull never fills it to the last byte.
DISK_RESERVE_BYTES = 256 << 20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# A partial download is named after the hash its bytes must have: `sha256-<hex>` or `git-<sha1>`.
_PARTIAL_KEY = re.compile(r"^(sha256-[0-9a-f]{64}|git-[0-9a-f]{40})$")
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
SPLIT_NAME = "model-{:05d}-of-{:05d}.gguf"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def hex_digest(digest: str) -> str:
    """The 64 hex digits of `sha256:<hex>` or `<hex>`; StoreError for anything else."""
    value = digest.removeprefix("sha256:")
    if not _HEX64.match(value):
        raise StoreError(
            f"{digest[:80]!r} is not a sha256 digest; `llmedge verify` checks the store"
        )
    return value


@dataclass(frozen=True)
class BlobCheck:
    """The outcome of re-hashing one blob (or finding a file that should not be there)."""

    path: Path
    status: Literal["ok", "missing", "truncated", "corrupt", "orphan", "partial", "unreadable"]
    refs: tuple[str, ...] = ()
    detail: str = ""

    @property
    def damaged(self) -> bool:
        return self.status in ("missing", "truncated", "corrupt")


@contextlib.contextmanager
def disk_errors(root: Path, action: str) -> Iterator[None]:
    """Turn an OSError from the disk into one StoreError line: what failed and what to free."""
    try:
        yield
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        if exc.errno in _DISK_FULL:
            raise StoreError(
                f"the disk is full while {action}{where}: free space on the disk of {root} "
                "(`llmedge rm` unused models; `llmedge verify` lists partial downloads); "
                "stored models are unharmed and a pull resumes where it stopped"
            ) from exc
        raise StoreError(
            f"{action} failed: {exc.strerror or exc}{where}; check the disk and the "
            f"permissions of {root}"
        ) from exc


class Blobs:
    """The files of one store folder, below its manifests."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs_dir = root / "blobs"
        self.splits_dir = root / "splits"
        self.downloads_dir = root / "downloads"
        self.tmp_dir = root / "tmp"

    def path(self, digest: str) -> Path:
        return self.blobs_dir / f"sha256-{hex_digest(digest)}"

    def has(self, sha256: str, size_bytes: int) -> bool:
        path = self.path(sha256)
        return path.is_file() and path.stat().st_size == size_bytes

    def verified(self, part: BlobPart, ref: str) -> Path:
        """The blob's path, after checking its size and (when it may have changed) its hash.

        Only reads are needed: a stamp that cannot be written (a full disk) costs a re-hash on
        the next load, never the load itself.
        """
        path = self.path(part.digest)
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise CorruptModelError(ref, str(path), "its file is missing") from None
        if stat.st_size != part.size_bytes:
            raise CorruptModelError(
                ref,
                str(path),
                f"{stat.st_size} bytes on disk, {part.size_bytes} expected: truncated",
            )
        stamp_path = path.with_name(path.name + ".verified")
        stamp = f"{stat.st_size} {stat.st_mtime_ns}"
        with contextlib.suppress(OSError):
            if stamp_path.read_text() == stamp:
                return path
        actual = sha256_of(path)
        if actual != part.sha256:
            raise CorruptModelError(
                ref, str(path), f"sha256 is {actual[:12]}…, {part.sha256[:12]}… expected"
            )
        self._stamp(path)
        return path

    def check(self, part: BlobPart, refs: tuple[str, ...]) -> BlobCheck:
        """Re-hash one blob whatever its stamp says (`llmedge verify`)."""
        path = self.path(part.digest)
        stamp = path.with_name(path.name + ".verified")
        if not path.is_file():
            return BlobCheck(path, "missing", refs, "the file is gone")
        size = path.stat().st_size
        if size != part.size_bytes:
            with contextlib.suppress(OSError):
                stamp.unlink(missing_ok=True)
            return BlobCheck(path, "truncated", refs, f"{size} bytes, {part.size_bytes} expected")
        actual = sha256_of(path)
        if actual != part.sha256:
            with contextlib.suppress(OSError):
                stamp.unlink(missing_ok=True)
            return BlobCheck(path, "corrupt", refs, f"sha256 is {actual[:12]}…")
        self._stamp(path)
        return BlobCheck(path, "ok", refs)

    def _stamp(self, path: Path) -> None:
        """Record that `path` hashed right at its current size and mtime, if the disk lets us."""
        with contextlib.suppress(OSError):
            stat = path.stat()
            write_text_atomic(
                path.with_name(path.name + ".verified"),
                f"{stat.st_size} {stat.st_mtime_ns}",
                self.tmp_dir,
            )

    def adopt(self, path: Path, sha256: str) -> Path:
        """Move a fully written, already hashed file into place as a blob."""
        target = self.path(sha256)
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        if target.exists() and target.stat().st_size == path.stat().st_size:
            path.unlink()
        else:
            os.replace(path, target)
        self._stamp(target)
        return target

    def add(
        self,
        handle: BinaryIO,
        size: int,
        expected_sha256: str | None,
        on_progress: Callable[[int], None] | None,
    ) -> str:
        """Copy a stream into a new blob, hashing it on the way; returns its sha256."""
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
            self.adopt(tmp, actual)
        return actual

    # --- split models --------------------------------------------------------------------

    def split_dir(self, digest: str) -> Path:
        return self.splits_dir / hex_digest(digest)

    def split_first(self, digest: str, parts: Sequence[BlobPart]) -> Path:
        """The first part of a split model, in its folder of links named as llama.cpp's split
        loader expects (`…-00001-of-0000N.gguf`, the others found beside it by name)."""
        return self.split_dir(digest) / SPLIT_NAME.format(1, len(parts))

    def lay_out_split(self, digest: str, parts: Sequence[BlobPart]) -> Path:
        """Make (or check) the folder of links for a split model; returns its first part."""
        folder = self.split_dir(digest)
        if self._links_ok(folder, parts):
            return self.split_first(digest, parts)
        self.splits_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{folder.name}.tmp-", dir=self.splits_dir))
        try:
            for i, part in enumerate(parts, 1):
                link = staging / SPLIT_NAME.format(i, len(parts))
                blob = self.path(part.digest)
                try:
                    link.symlink_to(Path("..", "..", "blobs", blob.name))
                except OSError:
                    os.link(blob, link)  # where symbolic links are not allowed
            shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):  # another process may have made it meanwhile
                os.replace(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if not self._links_ok(folder, parts):
            raise StoreError(f"could not lay out the parts of a split model in {folder}")
        return self.split_first(digest, parts)

    def _links_ok(self, folder: Path, parts: Sequence[BlobPart]) -> bool:
        for i, part in enumerate(parts, 1):
            link = folder / SPLIT_NAME.format(i, len(parts))
            try:
                if not os.path.samefile(link, self.path(part.digest)):
                    return False
            except OSError:
                return False
        return len(list(folder.iterdir())) == len(parts)

    # --- partial downloads and temporary files -------------------------------------------

    def partial_path(self, key: str) -> Path:
        """Where an interrupted download of the file with this hash (`sha256-…`) waits."""
        if not _PARTIAL_KEY.match(key):
            raise DownloadError(f"{key[:80]!r} is not a hash a download can be named after")
        self.downloads_dir.mkdir(parents=True, exist_ok=True)
        return self.downloads_dir / f"{key}.part"

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


@contextlib.contextmanager
def locked(path: Path) -> Iterator[BinaryIO]:
    """`path` opened for appending, locked against other processes for as long as it is open.

    The lock is on the file itself, so no lock file is left behind; it ends with the process
    however that ends. Where the OS has no `flock`, the file is opened without a lock.
    """
    with path.open("ab") as handle:
        try:
            import fcntl
        except ImportError:  # Windows
            yield handle
            return
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DownloadError(
                f"another llmedge process is downloading into {path.name} right now; let it finish"
            ) from None
        yield handle
