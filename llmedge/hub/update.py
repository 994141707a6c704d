"""Updates: is a newer revision of a pulled model out, and pulling it.

A model pulled from a hub remembers its repository, the revision it followed (`ref`, main unless
`--revision` said otherwise) and the commit it got. Checking asks the hub where that revision is
now and makes the same choice a pull would; a model is outdated when the files of that choice
differ from the stored ones (a new commit that leaves them alone changes nothing). Updating is
that pull: content addressing downloads only the blobs the store lacks, every file is verified
before the manifest switches, and the version it replaces stays for `llmedge rollback`. A failed
or interrupted update changes nothing: the current version goes on serving.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from llmedge.errors import InvalidRequestError, ModelNotFoundError
from llmedge.hub import hf
from llmedge.hub.plan import choose, repo_choices
from llmedge.hub.pull import pull
from llmedge.progress import CallbackReporter, Reporter
from llmedge.store import Manifest, ModelRef, Store

Status = Literal["current", "outdated", "local"]
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class UpdateCheck:
    """Where one stored version stands against its hub."""

    manifest: Manifest
    status: Status
    detail: str


def local_reason(manifest: Manifest) -> str | None:
    """Why this version has nothing to update from (None: it came from a hub and can)."""
    source = manifest.source
    kind = source.get("kind", "")
    if kind in ("copy", "create"):
        return f"made from {source.get('from', '?')}: update that, then make it again"
    if kind == "package":
        return "bundled with llmedge: it changes with the package"
    if kind in ("file", "import", "folder"):
        return f"imported from {source.get('path', 'a local file')}"
    if "repo" not in source:
        return f"made locally ({kind or 'unknown origin'})"
    if manifest.format == "safetensors":
        return "the unquantized source of GPTQ/AWQ/NF4: `llmedge rm` it and quantize again"
    if _COMMIT.match(source.get("ref", "")):
        return f"pinned to commit {source['ref'][:12]}"
    return None


def check(manifest: Manifest, snapshots: dict[str, hf.RepoSnapshot] | None = None) -> UpdateCheck:
    """Ask the hub whether `manifest` is outdated (`snapshots` caches answers per repository)."""
    reason = local_reason(manifest)
    if reason is not None:
        return UpdateCheck(manifest, "local", reason)
    source = manifest.source
    repo, ref = source["repo"], source.get("ref", "main")
    cache = snapshots if snapshots is not None else {}
    key = f"{repo}@{ref}"
    if key not in cache:
        cache[key] = hf.fetch_snapshot(repo, ref)
    snapshot = cache[key]
    at = f"{repo}@{snapshot.commit[:12]}"
    if source.get("kind") == "hub":
        choices = repo_choices(repo, [f.path for f in snapshot.files])
        choice = choose(choices, manifest.tag, manifest.tag, f"hf.co/{repo}")
        if choice.how == "gguf":
            wanted = [snapshot.file(p).sha256 for p in choice.parts or (choice.file or "",)]
            if wanted == [p.sha256 for p in manifest.blobs]:
                return UpdateCheck(manifest, "current", f"{at} has the same files")
            return UpdateCheck(manifest, "outdated", f"{at} has new files ({ref})")
    if snapshot.commit == source.get("revision"):
        return UpdateCheck(manifest, "current", f"{at} is the commit it was made from")
    made = source.get("revision", "?")[:12]
    return UpdateCheck(manifest, "outdated", f"{ref} moved from {made} to {snapshot.commit[:12]}")


def update(store: Store, manifest: Manifest, reporter: Reporter | None = None) -> Manifest:
    """Pull the newest revision of what `manifest` was pulled from, as `manifest.ref`; returns
    the current version afterwards (the same one when nothing changed)."""
    reporter = reporter or CallbackReporter()
    reason = local_reason(manifest)
    if reason is not None:
        reporter.note(f"{manifest.ref}: nothing to update ({reason})")
        return manifest
    source = manifest.source
    ref = source.get("ref", "main")
    if source.get("converter") == "mlx-lm":
        from llmedge.hub.mlx_convert import pull_mlx

        target = f"hf.co/{source['repo']}"
        return pull_mlx(store, target, name=manifest.name, revision=ref, reporter=reporter)
    return pull(
        store,
        f"hf.co/{source['repo']}",
        quant=manifest.tag,
        name=manifest.name,
        reporter=reporter,
        revision=ref,
        offline_fallback=False,
    )


def stored_versions(store: Store, names: Iterable[str]) -> list[Manifest]:
    """The current versions `names` name (each tag of a name without one); all with none."""
    manifests = store.manifests()
    wanted = list(names)
    if not wanted:
        return manifests
    found: list[Manifest] = []
    for text in wanted:
        ref = store.canonical(ModelRef.parse(text))
        matches = [m for m in manifests if m.name == ref.name and ref.tag in (None, m.tag)]
        if not matches:
            raise ModelNotFoundError(str(ref), "`llmedge list` shows what is stored")
        found += [m for m in matches if m not in found]
    return found


def pull_or_update(store: Store, target: str, reporter: Reporter | None = None) -> Manifest:
    """What a remote client's pull means: a stored name is updated from where it came from (a
    model made locally is left as it is); any other name is pulled. Never reads a local file."""
    try:
        stored = store.find(ModelRef.parse(target))
    except InvalidRequestError:  # not a name the store could hold (https://…): pull it
        stored = None
    if stored is not None:
        return update(store, stored, reporter)
    return pull(store, target, reporter=reporter, allow_files=False)
