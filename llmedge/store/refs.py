"""The manifest files of each reference: one folder per `name:tag` under `models/`, holding
`current.json` and the earlier versions as `<n>.json`.

Reading never raises for a damaged file: what cannot be read is added to a list of problems
and skipped, so one bad manifest never hides the others.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from llmedge.files import write_text_atomic
from llmedge.store.manifest import Manifest
from llmedge.store.names import ModelRef, name_key, ref_from_key

CURRENT = "current.json"
_DIGEST_IN_TEXT = re.compile(r"sha256[:-]([0-9a-f]{64})")


@dataclass(frozen=True)
class StoreProblem:
    """A file in the store that was skipped, and why."""

    path: Path
    reason: str


class Refs:
    """The `models/` folder of a store."""

    def __init__(self, models_dir: Path, tmp_dir: Path) -> None:
        self.models_dir = models_dir
        self.tmp_dir = tmp_dir

    def folder(self, ref: ModelRef) -> Path:
        return self.models_dir / ref.key

    def folders(self, name: str | None = None) -> list[Path]:
        """Every reference's folder, or those of one name's tags."""
        if not self.models_dir.is_dir():
            return []
        pattern = f"{name_key(name)}=*" if name is not None else "*"
        return sorted(
            p
            for p in self.models_dir.glob(pattern)
            if name is None or ((r := ref_from_key(p.name)) is not None and r.name == name)
        )

    def current(self, folder: Path, problems: list[StoreProblem]) -> Manifest | None:
        """The current version a folder holds, if it can be read and belongs there."""
        key_ref = ref_from_key(folder.name)
        if key_ref is None or not folder.is_dir():
            problems.append(StoreProblem(folder, "it is not the folder of a model name"))
            return None
        manifest = self.read(folder / CURRENT, problems)
        if manifest is not None and (manifest.name, manifest.tag) != (key_ref.name, key_ref.tag):
            problems.append(StoreProblem(folder / CURRENT, f"it describes {manifest.ref}"))
            return None
        return manifest

    def read(self, path: Path, problems: list[StoreProblem]) -> Manifest | None:
        try:
            return Manifest.from_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            problems.append(StoreProblem(path, "it is missing"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            problems.append(StoreProblem(path, f"{type(exc).__name__}: {exc}"[:200]))
        return None

    def numbered(self, folder: Path) -> list[tuple[int, Path]]:
        """The earlier versions' files in a reference's folder, oldest first."""
        if not folder.is_dir():
            return []
        return sorted((int(p.stem), p) for p in folder.glob("*.json") if p.stem.isdigit())

    def earlier(self, folder: Path, problems: list[StoreProblem]) -> list[tuple[int, Manifest]]:
        """The readable earlier versions, oldest first, with their numbers."""
        return [(n, m) for n, p in self.numbered(folder) if (m := self.read(p, problems))]

    def next_number(self, folder: Path) -> int:
        return max((n for n, _ in self.numbered(folder)), default=0) + 1

    def write(self, path: Path, text: str) -> None:
        write_text_atomic(path, text, self.tmp_dir)

    def delete(self, folder: Path) -> None:
        """Remove a reference's folder in one step (renamed away first, then deleted)."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        doomed = Path(tempfile.mkdtemp(prefix="removed-", dir=self.tmp_dir))
        folder.rename(doomed / "folder")
        shutil.rmtree(doomed, ignore_errors=True)


def digests_in(paths: list[Path]) -> set[str]:
    """Digests an unreadable manifest may still mean, found in its raw text."""
    found: set[str] = set()
    for path in paths:
        with contextlib.suppress(OSError):
            if path.is_file():
                found.update(_DIGEST_IN_TEXT.findall(path.read_text(errors="replace")))
    return found
