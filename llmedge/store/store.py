"""The model store: content-addressed blobs plus one small manifest per model version.

Layout under `Settings.store_dir`::

    blobs/sha256-<hex>              model files, immutable, named by their sha256
    blobs/sha256-<hex>.verified     size and mtime of the blob when its hash last checked out
    models/<key>/current.json       the current version of `name:tag` (blobs, facts, provenance)
    models/<key>/<n>.json           earlier versions, highest n newest (`rollback`, `rm …@n`)
    splits/<digest>/model-0000i-of-0000N.gguf
                                    links to the blobs of a split model, named for llama.cpp
    downloads/<hash>.part           interrupted downloads, named by the hash they must have
    downloads/<repo>@<commit>/      a safetensors revision being gathered for conversion
    damaged/                        manifests that could not be read when the layout changed
    tmp/                            partial writes; never read, removed on failure

`<key>` is `name:tag` as one folder name (`llmedge.store.names`), so no two references share a
folder. A write goes to a unique file in `tmp/`, is hashed as it is written, then renamed into
place, so a crash at any point leaves every earlier model usable. A blob's hash is checked again
before its first use and whenever its size or mtime changes, so a damaged file is reported,
never loaded. Replacing a version keeps the old manifest as `<n>.json`, so its blob stays until
it is pruned. A manifest that cannot be read is reported and skipped; it never stops the others.
A store written in the earlier layout (`manifests/<name>/<tag>.json`, `history/<name>/<tag>/`)
is moved into this one the first time it is opened (`llmedge.store.migrate`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from llmedge.errors import CorruptModelError, InvalidRequestError, ModelNotFoundError, StoreError
from llmedge.gguf import ModelFacts
from llmedge.store.blobs import BlobCheck, Blobs, disk_errors, sha256_of
from llmedge.store.maintenance import collect_garbage, verify
from llmedge.store.manifest import BlobPart, Manifest, ModelDefaults, QuantReport, split_digest
from llmedge.store.migrate import migrate_old_layout
from llmedge.store.names import LATEST, ModelRef, ref_from_key
from llmedge.store.refs import CURRENT, Refs, StoreProblem

__all__ = ["BlobCheck", "Store", "StoreProblem", "sha256_of"]

# Earlier versions kept per name:tag for `llmedge rollback`; older ones are pruned.
KEPT_VERSIONS = 2


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Store:
    """Blobs and manifests under one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files = Blobs(root)
        self.blobs_dir = self.files.blobs_dir
        self.downloads_dir = self.files.downloads_dir
        self.tmp_dir = self.files.tmp_dir
        self.models_dir = root / "models"
        self._refs = Refs(self.models_dir, self.tmp_dir)
        self.damaged_dir = root / "damaged"
        self._migrated = False

    @property
    def refs(self) -> Refs:
        """The manifest files, once a store of the earlier layout has been moved into place."""
        if not self._migrated:
            migrate_old_layout(self.root, self.models_dir, self.damaged_dir, self.tmp_dir)
            self._migrated = True
        return self._refs

    # --- reading -------------------------------------------------------------------------

    def scan(self) -> tuple[list[Manifest], list[StoreProblem]]:
        """The current version of every readable reference (by name and tag), and what was
        skipped."""
        found: list[Manifest] = []
        problems: list[StoreProblem] = []
        for folder in self.refs.folders():
            manifest = self.refs.current(folder, problems)
            if manifest is not None:
                found.append(manifest)
        return sorted(found, key=lambda m: (m.name, m.tag)), problems

    def manifests(self) -> list[Manifest]:
        """The current version of every readable reference, sorted by name and tag."""
        return self.scan()[0]

    def problems(self) -> list[StoreProblem]:
        """Files the store skips: unreadable manifests, folders that name no model."""
        return self.scan()[1]

    def canonical(self, ref: ModelRef) -> ModelRef:
        """`ref`, except that `NAME:latest` means the newest version of NAME when no tag
        `latest` is stored (Ollama clients add it to every name)."""
        if ref.tag == LATEST and not (self.refs.folder(ref) / CURRENT).exists():
            return ModelRef(ref.name)
        return ref

    def find(self, ref: ModelRef) -> Manifest | None:
        """The manifest `ref` names; with no tag, the newest version of that name; with `@n`,
        that version of name:tag."""
        ref = self.canonical(ref)
        if ref.version is not None and ref.tag is not None:
            return dict(self.versions(ref.name, ref.tag)).get(ref.version)
        if ref.tag is not None:
            return self.refs.current(self.refs.folder(ref), [])
        versions = [m for f in self.refs.folders(ref.name) if (m := self.refs.current(f, []))]
        return max(versions, key=lambda m: m.created_at, default=None)

    def resolve(self, ref: ModelRef) -> Manifest:
        manifest = self.find(ref)
        if manifest is not None:
            return manifest
        ref = self.canonical(ref)
        problems: list[StoreProblem] = []
        if ref.tag is not None and (self.refs.folder(ref)).is_dir():
            self.refs.current(self.refs.folder(ref), problems)
        if problems:
            raise CorruptModelError(
                str(ref),
                str(problems[0].path),
                f"its manifest cannot be read: {problems[0].reason}",
            )
        raise ModelNotFoundError(str(ref), f"run `llmedge pull {ref}`")

    def versions(self, name: str, tag: str) -> list[tuple[int, Manifest]]:
        """Every readable version of `name:tag`, numbered, newest (the current one) first."""
        folder = self.refs.folder(ModelRef(name, tag))
        current = self.refs.current(folder, [])
        newest_first = self.refs.earlier(folder, [])[::-1]
        if current is None:
            return newest_first
        return [(current.version or self.refs.next_number(folder), current), *newest_first]

    def history(self, name: str, tag: str) -> list[Manifest]:
        """Earlier versions of `name:tag`, newest first."""
        return [m for _, m in self.refs.earlier(self.refs.folder(ModelRef(name, tag)), [])[::-1]]

    def blob_path(self, digest: str) -> Path:
        return self.files.path(digest)

    def has_blob(self, sha256: str, size_bytes: int) -> bool:
        return self.files.has(sha256, size_bytes)

    def model_file(self, manifest: Manifest) -> Path:
        """The file a backend opens for this version (a split model's first part), unchecked."""
        if manifest.parts:
            return self.files.split_first(manifest.digest, manifest.parts)
        return self.files.path(manifest.digest)

    def verified_blob(self, manifest: Manifest) -> Path:
        """`model_file`, after checking the size and (when it may have changed) the hash of
        every blob it needs."""
        for part in manifest.blobs:
            self.files.verified(part, manifest.ref)
        if manifest.parts:
            with disk_errors(self.root, f"laying out the parts of {manifest.ref}"):
                return self.files.lay_out_split(manifest.digest, manifest.parts)
        return self.files.path(manifest.digest)

    def partial_path(self, key: str) -> Path:
        """Where an interrupted download of the file with this hash (`sha256-…`) waits to resume."""
        return self.files.partial_path(key)

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
        with disk_errors(self.root, f"storing {source}"):
            size = source.stat().st_size
            with source.open("rb") as handle:
                digest = self.files.add(handle, size, expected_sha256, on_progress)
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
        parts: tuple[BlobPart, ...] = (),
    ) -> Manifest:
        """Point `ref` at stored blobs (one, or the parts of a split model, whose `digest` and
        `size` are then computed); a different version already there becomes history."""
        if ref.tag is None:
            raise InvalidRequestError(f"{ref} needs a tag to be stored", param="model")
        if parts:
            digest, size = split_digest([p.digest for p in parts]), sum(p.size_bytes for p in parts)
        manifest = Manifest(
            name=ref.name,
            tag=ref.tag,
            format=format,
            digest=f"sha256:{digest.removeprefix('sha256:')}",
            size_bytes=size,
            created_at=_now(),
            source=origin,
            facts=facts,
            quant_report=quant_report,
            parts=parts,
        )
        return self.put(manifest)

    def put(self, manifest: Manifest) -> Manifest:
        """Make `manifest` the current version of its reference; keep the one it replaces."""
        folder = self.refs.folder(ModelRef(manifest.name, manifest.tag))
        with disk_errors(self.root, f"writing the manifest of {manifest.ref}"):
            if manifest.parts:
                self.files.lay_out_split(manifest.digest, manifest.parts)
            current = self.refs.current(folder, [])
            replaced = current is not None and not current.same_content(manifest)
            if current is not None and not replaced:
                manifest = replace(manifest, version=current.version)
            else:
                number = self.refs.next_number(folder)
                if current is not None:
                    number = max(number, current.version + 1)
                    archived = replace(current, version=current.version or number)
                    self.refs.write(folder / f"{archived.version}.json", archived.to_json())
                    number = max(number, archived.version + 1)
                manifest = replace(manifest, version=number)
            self.refs.write(folder / CURRENT, manifest.to_json())
            if replaced:
                self._prune_history(folder)
        return manifest

    def copy(
        self, source: ModelRef, target: ModelRef, defaults: ModelDefaults | None = None
    ) -> Manifest:
        """Store `target` (tag default: latest) over the blobs `source` names; with `defaults`
        (a created model), those on top of the source's own."""
        found = self.resolve(source)
        tag = target.tag or LATEST
        origin = {"kind": "create" if defaults else "copy", "from": found.ref}
        merged, facts = found.defaults, found.facts
        if defaults is not None:
            merged = (found.defaults or ModelDefaults()).merged(defaults)
            if merged.template is not None and facts is not None:
                facts = replace(facts, chat_template=merged.template)
        made = replace(
            found,
            name=target.name,
            tag=tag,
            created_at=_now(),
            source=origin,
            facts=facts,
            defaults=merged,
        )
        return self.put(made)

    def rollback(self, ref: ModelRef) -> tuple[Manifest, Manifest]:
        """Make the previous version of `ref` current again; returns (restored, dropped)."""
        current = self.resolve(ref)
        folder = self.refs.folder(ModelRef(current.name, current.tag))
        readable = self.refs.earlier(folder, [])
        if not readable:
            raise ModelNotFoundError(
                f"{current.ref} (earlier version)",
                "it has no earlier version to roll back to; `llmedge show` lists what is stored",
            )
        number, restored = readable[-1]
        with disk_errors(self.root, f"rolling back {current.ref}"):
            self.refs.write(folder / CURRENT, restored.to_json())
            (folder / f"{number}.json").unlink()
            self.collect_garbage()
        return restored, current

    def remove(self, ref: ModelRef) -> list[str]:
        """Delete what `ref` names: one earlier version (`@n`), one tag, or every tag of a name
        (readable or not); then the blobs nothing points to. Returns the references removed."""
        if ref.version is not None:
            return [self._remove_version(ref)]
        ref = self.canonical(ref)
        if ref.tag is None:
            folders = self.refs.folders(ref.name)
        else:
            folders = [f for f in [self.refs.folder(ref)] if f.is_dir()]
        if not folders:
            raise ModelNotFoundError(str(ref), "`llmedge list` shows what is stored")
        removed = []
        with disk_errors(self.root, f"removing {ref}"):
            for folder in folders:
                found = ref_from_key(folder.name)
                removed.append(str(found))
                self.refs.delete(folder)
            self.collect_garbage()
        return removed

    def _remove_version(self, ref: ModelRef) -> str:
        versions = dict(self.versions(ref.name, ref.tag or ""))
        if ref.version not in versions:
            raise ModelNotFoundError(
                str(ref), f"`llmedge show {ref.name}:{ref.tag}` lists its versions"
            )
        if ref.version == max(versions):
            raise StoreError(
                f"{ref} is the current version; `llmedge rollback {ref.name}:{ref.tag}` makes the "
                f"one before it current, `llmedge rm {ref.name}:{ref.tag}` removes them all"
            )
        folder = self.refs.folder(ModelRef(ref.name, ref.tag))
        with disk_errors(self.root, f"removing {ref}"):
            (folder / f"{ref.version}.json").unlink()
            self.collect_garbage()
        return str(ref)

    def collect_garbage(self) -> list[Path]:
        """Delete blobs and split folders no version points to (nor an unreadable manifest
        might); returns them."""
        return collect_garbage(self.files, self.damaged_dir, *self.all_versions())

    def verify(self) -> list[BlobCheck]:
        """Re-hash every blob a version points to; report damage, orphans, partial downloads
        and manifests that cannot be read."""
        with disk_errors(self.root, "verifying the store"):
            return verify(self.files, *self.all_versions())

    def adopt_blob(self, path: Path, sha256: str) -> Path:
        """Move a fully written, already hashed file into place as a blob."""
        with disk_errors(self.root, "storing a downloaded file"):
            return self.files.adopt(path, sha256)

    def check_free_space(self, size: int) -> None:
        self.files.check_free_space(size)

    @contextlib.contextmanager
    def temporary(self, suffix: str = ".part") -> Iterator[Path]:
        with self.files.temporary(suffix) as path:
            yield path

    # --- helpers -------------------------------------------------------------------------

    def all_versions(self) -> tuple[list[Manifest], list[StoreProblem]]:
        """Every readable version, current and earlier, and the files that could not be read."""
        manifests, problems = self.scan()
        for folder in self.refs.folders():
            manifests += [m for _, m in self.refs.earlier(folder, problems)]
        return manifests, problems

    def _prune_history(self, folder: Path) -> None:
        numbered = self.refs.numbered(folder)
        for _, path in numbered[: max(0, len(numbered) - KEPT_VERSIONS)]:
            path.unlink()
        self.collect_garbage()
