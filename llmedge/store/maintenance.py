"""Looking after a store: collecting the blobs nothing needs any more, and re-checking all of it.

Both work from every version's manifest, current and earlier; a blob that an unreadable
manifest (or one moved to `damaged/`) might still mean is kept, so damage in one manifest never
costs another model its files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from llmedge.store.blobs import BlobCheck, Blobs
from llmedge.store.manifest import BlobPart, Manifest
from llmedge.store.refs import StoreProblem, digests_in


def collect_garbage(
    files: Blobs, damaged_dir: Path, versions: list[Manifest], problems: list[StoreProblem]
) -> list[Path]:
    """Delete the blobs and split folders no version points to; returns them."""
    used = {m.sha256 for m in versions} | {p.sha256 for m in versions for p in m.blobs}
    damaged = list(damaged_dir.rglob("*")) if damaged_dir.is_dir() else []
    used |= digests_in([p.path for p in problems] + damaged)
    deleted = []
    for path in files.blobs_dir.glob("sha256-*"):
        if path.name.removeprefix("sha256-").removesuffix(".verified") not in used:
            path.unlink(missing_ok=True)
            deleted.append(path)
    if files.splits_dir.is_dir():
        for path in files.splits_dir.iterdir():
            if path.name.partition(".tmp-")[0] not in used:
                shutil.rmtree(path, ignore_errors=True)
                deleted.append(path)
    return deleted


def verify(files: Blobs, versions: list[Manifest], problems: list[StoreProblem]) -> list[BlobCheck]:
    """Re-hash every blob a version needs; list orphans, partial downloads, unreadable files."""
    refs: dict[BlobPart, set[str]] = {}
    for manifest in versions:
        for part in manifest.blobs:
            refs.setdefault(BlobPart(part.digest, part.size_bytes), set()).add(manifest.ref)
    checks = [files.check(p, tuple(sorted(r))) for p, r in sorted(refs.items(), key=str)]
    known = {p.sha256 for p in refs}
    for path in sorted(files.blobs_dir.glob("sha256-*")):
        if not path.name.endswith(".verified") and path.name[7:] not in known:
            checks.append(BlobCheck(path, "orphan", detail="no manifest points to it"))
    for path in sorted(files.downloads_dir.glob("*.part")):
        size = path.stat().st_size
        checks.append(BlobCheck(path, "partial", detail=f"{size} bytes, resumed by a pull"))
    for path in sorted(p for p in files.downloads_dir.glob("*@*") if p.is_dir()):
        checks.append(BlobCheck(path, "partial", detail="weights waiting to be converted"))
    for problem in problems:
        checks.append(BlobCheck(problem.path, "unreadable", detail=problem.reason))
    return checks
