"""A model that is a folder (Hugging Face safetensors, MLX) kept in the store as one blob.

The folder is packed into an uncompressed tar with fixed metadata (sorted names, zero mtimes,
no owners), so the same files always give the same sha256 and the store stays content-addressed.
A backend unpacks the blob once, on first load, into a cache keyed by that hash::

    <home>/unpacked/<sha256>/          the folder, as it was packed
    <home>/unpacked/<sha256>.tmp-*     an unpacking in progress (removed on failure)

Unpacking goes to a temporary folder that is renamed into place, so a crash never leaves a
half-written model behind; folders whose blob is gone from the store are pruned on the way.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

from llmedge.errors import PackedModelError
from llmedge.gguf import ModelFacts
from llmedge.settings import Settings
from llmedge.store.manifest import Manifest, ModelRef, QuantReport
from llmedge.store.store import Store, sha256_of

__all__ = ["dir_size_bytes", "pack_dir", "store_dir", "unpacked_dir"]

_BLOB_NAME = re.compile(r"^sha256-([0-9a-f]{64})$")
_STALE_PARTIAL_S = 3600


def dir_size_bytes(folder: Path) -> int:
    """Bytes of the regular files under `folder`."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _reset(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def pack_dir(folder: Path, out: Path) -> None:
    """Write `folder`'s regular files (recursively, sorted) into the tar file `out`."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    if not files:
        raise PackedModelError(f"{folder} has no files to store; is it the model's folder?")
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in files:
            tar.add(path, arcname=path.relative_to(folder).as_posix(), filter=_reset)


def store_dir(
    store: Store,
    folder: Path,
    ref: ModelRef,
    *,
    format: str,
    origin: dict[str, str],
    facts: ModelFacts | None = None,
    quant_report: QuantReport | None = None,
) -> Manifest:
    """Pack `folder` into one blob and point `ref` (with a tag) at it, with `format`."""
    store.check_free_space(dir_size_bytes(folder))
    with store.temporary(".tar") as tmp:
        pack_dir(folder, tmp)
        sha256 = sha256_of(tmp)
        size = tmp.stat().st_size
        store.adopt_blob(tmp, sha256)
    return store.add_manifest(
        ref,
        format=format,
        digest=sha256,
        size=size,
        origin=origin,
        facts=facts,
        quant_report=quant_report,
    )


def unpacked_dir(blob: Path, cache_root: Path | None = None) -> Path:
    """The folder a packed blob holds, unpacked under `cache_root` on first use."""
    settings = Settings()
    cache_root = cache_root or settings.home / "unpacked"
    match = _BLOB_NAME.match(blob.name)
    sha256 = match.group(1) if match else sha256_of(blob)
    target = cache_root / sha256
    if target.is_dir():
        return target
    if not tarfile.is_tarfile(blob):
        raise PackedModelError(
            f"{blob} is not a packed model folder (tar); `llmedge verify` checks the store"
        )
    cache_root.mkdir(parents=True, exist_ok=True)
    blobs_dir = settings.store_dir / "blobs"
    if match and blob.parent.resolve() == blobs_dir.resolve():
        _prune(cache_root, blobs_dir)
    staging = Path(tempfile.mkdtemp(prefix=f"{sha256}.tmp-", dir=cache_root))
    try:
        with tarfile.open(blob) as tar:
            # The "data" filter refuses absolute paths, `..`, links out and device files.
            tar.extractall(staging, filter="data")
        os.replace(staging, target)
    except tarfile.TarError as exc:
        raise PackedModelError(
            f"{blob} does not unpack ({exc}); remove the model with `llmedge rm` and make it again"
        ) from exc
    except OSError:
        if not target.is_dir():  # unless another process unpacked it first
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _prune(cache_root: Path, blobs_dir: Path) -> None:
    """Remove unpacked folders whose blob left the store, and partial ones a crash left."""
    now = time.time()
    for path in cache_root.iterdir():
        sha256, partial, _ = path.name.partition(".tmp-")
        gone = not (blobs_dir / f"sha256-{sha256}").is_file()
        # Another process may be unpacking right now: only old partial folders are stale.
        stale = bool(partial) and now - path.stat().st_mtime > _STALE_PARTIAL_S
        if gone or stale:
            with contextlib.suppress(OSError):
                shutil.rmtree(path)
