"""Moving a store from the earlier layout into the current one, in place.

The earlier layout kept `manifests/<name>/<tag>.json` and `history/<name>/<tag>/<n>.json`, so
`a:b` and `a/b:…` shared `history/a/b/`, and a model named `foo.json` made a folder every scan
read as a manifest. Each file says which reference it describes, so the move reads that, never
the path: it writes the manifest to its reference's folder (an atomic write of the same text),
then deletes the old file. A crash, or a second process doing the same at once, leaves every
manifest in the old place, the new one, or both with the same text; running again finishes the
job. A file that cannot be read, or names a reference the store now refuses, is moved to
`damaged/` (its blobs are kept while it is there) and the move goes on.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from llmedge.files import write_text_atomic
from llmedge.store.manifest import Manifest
from llmedge.store.names import ModelRef

_OLD = ("manifests", "history")


def migrate_old_layout(root: Path, models_dir: Path, damaged_dir: Path, tmp_dir: Path) -> int:
    """Move every manifest of the earlier layout under `root` into `models_dir`; returns how
    many files moved. Nothing happens when there is no earlier layout (but the lock files
    earlier downloads left behind are removed)."""
    moved = 0
    # Lock files the earlier downloads left beside their partial files; nothing takes them now.
    for stale in (root / "downloads").glob("*.part.lock"):
        with contextlib.suppress(OSError):
            stale.unlink()
    for old in _OLD:
        base = root / old
        if not base.is_dir():
            continue
        for path in sorted(p for p in base.rglob("*.json") if p.is_file()):
            moved += _move_one(path, base, old == "history", models_dir, damaged_dir, tmp_dir)
        _remove_empty(base)
    return moved


def _move_one(
    path: Path, base: Path, earlier: bool, models_dir: Path, damaged_dir: Path, tmp_dir: Path
) -> int:
    try:
        text = path.read_text(encoding="utf-8")
        manifest = Manifest.from_json(text)
    except FileNotFoundError:
        return 0  # another process moved it first
    except (OSError, UnicodeDecodeError, ValueError):
        relative = path.relative_to(base.parent).as_posix().replace("/", "+")
        damaged_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.replace(path, damaged_dir / relative)
        return 0
    folder = models_dir / ModelRef(manifest.name, manifest.tag).key
    target = _free_number(folder, path.stem, text) if earlier else folder / "current.json"
    if target is not None and _text(target) != text:
        if target.exists() and not earlier:
            target = _free_number(folder, "", text)  # the newer current one stays
        if target is not None:
            write_text_atomic(target, text, tmp_dir)
    path.unlink(missing_ok=True)
    return 1


def _free_number(folder: Path, wanted: str, text: str) -> Path | None:
    """Where an earlier version goes: its own number when free (or holding the same text),
    else the next free one; None when the same text is there already."""
    numbers = [int(p.stem) for p in folder.glob("*.json") if p.stem.isdigit()]
    if wanted.isdigit():
        candidate = folder / f"{int(wanted)}.json"
        if not candidate.exists() or _text(candidate) == text:
            return candidate
    if any(_text(folder / f"{n}.json") == text for n in numbers):
        return None
    return folder / f"{max(numbers, default=0) + 1}.json"


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _remove_empty(base: Path) -> None:
    """Remove the folders the move emptied, deepest first; keep any that still hold files."""
    for folder in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            folder.rmdir()
    with contextlib.suppress(OSError):
        base.rmdir()
