"""Getting models into the store: a local GGUF file, the embedded model, or the Hugging Face Hub.

From the hub, a pre-quantized GGUF file is downloaded as is; a safetensors repository is
downloaded, converted to GGUF (F16) and quantized locally with the `quantizers` package, which is
loaded only then (it needs the `convert` extra).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol, cast

from llmedge.cards import ModelCard, all_cards, embedded_file
from llmedge.errors import ExtraNotInstalledError, HubUnreachableError
from llmedge.gguf import facts_from_header, read_gguf_header
from llmedge.gguf.quant_types import DEFAULT_QUANT, FLOAT_TYPES
from llmedge.hub import hf
from llmedge.hub.parts import adopt_all, fetch_model_files, model_header
from llmedge.hub.plan import (
    Choice,
    Target,
    card_choices,
    card_default,
    choose,
    name_from_path,
    parse_target,
    repo_choices,
    source_files,
)
from llmedge.progress import CallbackReporter, Reporter
from llmedge.store import Manifest, ModelRef, QuantReport, Store, sha256_of
from llmedge.store.blobs import disk_errors

__all__ = ["embedded_file", "ensure_model", "import_gguf", "name_from_path", "pull"]

Progress = Callable[[int], None]


# The package that converts and quantizes GGUF files registers itself here (the `quantizers`
# package does, as `gguf`), so the core never imports a package above it.
LOCAL_TOOLS_GROUP = "llmedge.local_tools"


class LocalTools(Protocol):
    """What pulling a safetensors repository needs: converting it to GGUF, then quantizing."""

    def convert(self, source_dir: Path, out_path: Path, outtype: str) -> None: ...

    def quantize_stored(
        self, store: Store, source: Manifest, quant: str, reporter: Reporter
    ) -> Manifest: ...


def local_tools() -> LocalTools:
    """The registered GGUF converter and quantizer, loaded only when a pull needs them."""
    for point in entry_points(group=LOCAL_TOOLS_GROUP, name="gguf"):
        try:
            return cast(LocalTools, point.load())
        except ModuleNotFoundError as exc:
            raise ExtraNotInstalledError("convert", exc.name or point.module) from exc
    raise ExtraNotInstalledError("convert", "quantizers")


def import_gguf(
    store: Store,
    path: Path,
    ref: ModelRef,
    origin: dict[str, str],
    on_progress: Progress | None = None,
) -> Manifest:
    """Check a GGUF file's header, then store it as `ref` (default tag: its quantization)."""
    facts = facts_from_header(read_gguf_header(path))
    if ref.tag is None:
        ref = ModelRef(ref.name, facts.quantization.lower())
    return store.add_file(
        path, ref, format="gguf", origin=origin, facts=facts, on_progress=on_progress
    )


def store_built_file(
    store: Store,
    path: Path,
    ref: ModelRef,
    origin: dict[str, str],
    quant_report: QuantReport | None = None,
) -> Manifest:
    """Store a GGUF file written under the store's `tmp/` by moving it, not copying it."""
    facts = facts_from_header(read_gguf_header(path))
    sha256 = sha256_of(path)
    size = path.stat().st_size
    store.adopt_blob(path, sha256)
    return store.add_manifest(
        ref,
        format="gguf",
        digest=sha256,
        size=size,
        origin=origin,
        facts=facts,
        quant_report=quant_report,
    )


def choices_for(target: Target, revision: str | None = None) -> list[Choice]:
    """Every quantization the target offers (a hub repository is asked; a card is read)."""
    if target.card is not None:
        return card_choices(target.card, embedded_file(target.card) is not None)
    if target.repo is not None:
        snapshot = hf.fetch_snapshot(target.repo, revision)
        return repo_choices(target.repo, [f.path for f in snapshot.files])
    return []


def pull(
    store: Store,
    target: str,
    *,
    quant: str | None = None,
    name: str | None = None,
    on_progress: Progress | None = None,
    reporter: Reporter | None = None,
    revision: str | None = None,
    allow_files: bool = True,
    offline_fallback: bool = True,
) -> Manifest:
    """Store the model `target` names: a card name, `name:quant`, `hf.co/OWNER/REPO`, or a .gguf
    written as a path (only with `allow_files`).

    A hub pull checks `revision` (default: main) and stores a new version only when it differs;
    with `offline_fallback`, an unreachable hub leaves a stored version as it is.
    """
    report = reporter or CallbackReporter(on_progress)
    parsed = parse_target(target, quant, name, allow_files=allow_files)
    with disk_errors(store.root, f"pulling {target}"):
        return _pull(store, parsed, revision, report, on_progress, offline_fallback)


def _pull(
    store: Store,
    parsed: Target,
    revision: str | None,
    report: Reporter,
    on_progress: Progress | None,
    offline_fallback: bool,
) -> Manifest:
    if parsed.kind == "file":
        assert parsed.path is not None
        origin = {"kind": "file", "path": str(parsed.path.resolve())}
        ref = ModelRef(parsed.name, parsed.quant)
        return import_gguf(store, parsed.path, ref, origin, on_progress)
    choice: Choice | None = None
    if parsed.card is not None:
        available = card_choices(parsed.card, embedded_file(parsed.card) is not None)
        choice = choose(available, parsed.quant, card_default(parsed.card), parsed.card.name)
        if choice.how == "embedded":
            return _pull_embedded(store, parsed.card, on_progress)
    repo = choice.repo if choice else parsed.repo
    assert repo is not None
    stored = store.find(ModelRef(parsed.name, choice.quant if choice else parsed.quant))
    snapshot = _snapshot_or_stored(repo, revision, stored if offline_fallback else None, report)
    if isinstance(snapshot, Manifest):
        return snapshot
    if choice is None:
        available = repo_choices(repo, [f.path for f in snapshot.files])
        choice = choose(available, parsed.quant, DEFAULT_QUANT, f"hf.co/{repo}")
    if choice.how == "gguf":
        return _pull_gguf(store, snapshot, choice, parsed.name, report)
    return _pull_converted(store, snapshot, choice.quant, parsed.name, report)


def ensure_model(store: Store, target: str) -> Manifest:
    """The stored model `target` names; the embedded default is imported on first use (offline)."""
    ref = ModelRef.parse(target)
    manifest = store.find(ref)
    if manifest is not None:
        return manifest
    card = all_cards().get(ref.name)
    if (
        card is not None
        and card.embedded
        and embedded_file(card)
        and ref.tag in (None, card.embedded.quant)
    ):
        return pull(store, card.name)
    return store.resolve(ref)


def _pull_embedded(store: Store, card: ModelCard, on_progress: Progress | None) -> Manifest:
    assert card.embedded is not None
    source = embedded_file(card)
    assert source is not None
    origin = {"kind": "package", "package": card.embedded.package, "file": card.embedded.file}
    return import_gguf(store, source, ModelRef(card.name, card.embedded.quant), origin, on_progress)


def _snapshot_or_stored(
    repo: str, revision: str | None, stored: Manifest | None, reporter: Reporter
) -> hf.RepoSnapshot | Manifest:
    """The repository's current files; offline, the stored version instead (if there is one)."""
    try:
        return hf.fetch_snapshot(repo, revision)
    except HubUnreachableError as exc:
        if stored is None:
            raise
        reporter.note(f"{stored.ref} is stored; not checked for a newer revision ({exc.reason})")
        return stored


def _origin(snapshot: hf.RepoSnapshot, kind: str, **extra: str) -> dict[str, str]:
    return {
        "kind": kind,
        "repo": snapshot.repo,
        "revision": snapshot.commit,
        "ref": snapshot.revision,
        "endpoint": hf.endpoint(),
        **extra,
    }


def _pull_gguf(
    store: Store, snapshot: hf.RepoSnapshot, choice: Choice, name: str, reporter: Reporter
) -> Manifest:
    assert choice.file is not None
    files = [snapshot.file(path) for path in choice.parts or (choice.file,)]
    ref = ModelRef(name, choice.quant)
    current = store.find(ref)
    if current is not None and [p.sha256 for p in current.blobs] == [f.sha256 for f in files]:
        reporter.note(f"{ref} is up to date ({snapshot.repo}@{snapshot.commit[:12]})")
        return current
    fetched = fetch_model_files(store, snapshot, files, reporter)
    facts = facts_from_header(model_header(fetched))
    parts = adopt_all(store, fetched)
    origin = _origin(snapshot, "hub", file=files[0].path)
    if len(parts) > 1:
        return store.add_manifest(
            ref, format="gguf", digest="", size=0, origin=origin, facts=facts, parts=parts
        )
    return store.add_manifest(
        ref,
        format="gguf",
        digest=parts[0].digest,
        size=parts[0].size_bytes,
        origin=origin,
        facts=facts,
    )


def _pull_converted(
    store: Store, snapshot: hf.RepoSnapshot, quant: str, name: str, reporter: Reporter
) -> Manifest:
    tools = local_tools()
    float_type = quant if quant in FLOAT_TYPES else "f16"
    base_ref = ModelRef(name, float_type)
    base = store.find(base_ref)
    if base is None or base.source.get("revision") != snapshot.commit:
        base = _convert(store, snapshot, base_ref, reporter, tools)
    else:
        reporter.note(f"{base.ref} is up to date ({snapshot.repo}@{snapshot.commit[:12]})")
    if quant == float_type:
        return base
    current = store.find(ModelRef(name, quant))
    report = current.quant_report if current else None
    if current is not None and report is not None and report.source_sha256 == base.sha256:
        reporter.note(f"{current.ref} is up to date (quantized from {base.ref})")
        return current
    return tools.quantize_stored(store, base, quant, reporter)


def _convert(
    store: Store,
    snapshot: hf.RepoSnapshot,
    ref: ModelRef,
    reporter: Reporter,
    tools: LocalTools,
) -> Manifest:
    """Download a safetensors revision, convert it to GGUF and store the result as `ref`."""
    assert ref.tag is not None
    workdir = hf.download_folder(
        store, snapshot, source_files(f.path for f in snapshot.files), reporter
    )
    reporter.note(f"converting {snapshot.repo} to GGUF {ref.tag.upper()}")
    with store.temporary(".gguf") as out:
        tools.convert(workdir, out, ref.tag)
        manifest = store_built_file(store, out, ref, _origin(snapshot, "convert"))
    shutil.rmtree(workdir, ignore_errors=True)
    return manifest
