"""The unquantized safetensors version of a model that GPTQ, AWQ and NF4 start from.

It is stored like any other version, as `NAME:hf` with format `safetensors` (one packed blob,
see `llmedge.store.folders`), so it is hashed, verified, versioned and served like the rest. It
comes from a folder the user names (`--source DIR`), from a repository named as
`hf.co/OWNER/REPO`, or else from the model card's safetensors repository on the Hugging Face Hub.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from llmedge.cards import all_cards
from llmedge.errors import InvalidRequestError, ModelNotFoundError
from llmedge.hub import hf
from llmedge.hub.plan import HF_PREFIXES, parse_target, source_files
from llmedge.progress import Reporter
from llmedge.store import Manifest, ModelRef, Store
from llmedge.store.folders import store_dir
from quantizers.hf_folder import facts_from_folder, read_config, tensor_stats

SOURCE_TAG = "hf"
SOURCE_FORMAT = "safetensors"


def import_folder(store: Store, folder: Path, name: str, origin: dict[str, str]) -> Manifest:
    """Store an unquantized Hugging Face folder as `name:hf`."""
    config = read_config(folder)
    if config.get("quantization_config"):
        raise InvalidRequestError(
            f"{folder} is already quantized; GPTQ, AWQ and NF4 start from unquantized weights",
            param="source",
        )
    stats = tensor_stats(folder)
    facts = facts_from_folder(folder, SOURCE_FORMAT.upper(), stats.n_elements)
    ref = ModelRef(name, SOURCE_TAG)
    return store_dir(store, folder, ref, format=SOURCE_FORMAT, origin=origin, facts=facts)


def source_model(
    store: Store, name: str, reporter: Reporter, *, source_dir: Path | None = None
) -> Manifest:
    """`name`'s stored safetensors version, imported from `source_dir` or the hub if needed:
    `name` is a model card (its source repository) or `hf.co/OWNER/REPO` (that repository)."""
    repo = None
    if name.lower().startswith(HF_PREFIXES) and source_dir is None:
        target = parse_target(name)
        repo, name = target.repo, target.name
    ref = ModelRef.parse(name)
    if source_dir is not None:
        if ref.tag not in (None, SOURCE_TAG):
            raise InvalidRequestError(
                f"--source stores a folder as {ref.name}:{SOURCE_TAG}; name {ref.name}, not {ref}",
                param="model",
            )
        reporter.note(f"storing {source_dir} as {ref.name}:{SOURCE_TAG}")
        origin = {"kind": "import", "path": str(source_dir.resolve())}
        return import_folder(store, source_dir, ref.name, origin)
    if ref.tag is not None:
        manifest = store.resolve(ref)
        if manifest.format != SOURCE_FORMAT:
            raise InvalidRequestError(
                f"{manifest.ref} is a {manifest.format} model; GPTQ, AWQ and NF4 start from "
                f"unquantized safetensors: name {ref.name}:{SOURCE_TAG} or give --source DIR",
                param="model",
            )
        return manifest
    stored = store.find(ModelRef(ref.name, SOURCE_TAG))
    if stored is not None:
        return stored
    if repo is not None:
        return _download(store, repo, ref.name, reporter)
    card = all_cards().get(ref.name)
    if card is None or card.source_repo is None:
        raise ModelNotFoundError(
            f"{ref.name}:{SOURCE_TAG}",
            "give its unquantized Hugging Face folder with --source DIR, or name its "
            "repository: hf.co/OWNER/REPO",
        )
    return _download(store, card.source_repo, ref.name, reporter)


def _download(store: Store, repo: str, name: str, reporter: Reporter) -> Manifest:
    """Fetch a safetensors repository's top-level files and store them as `name:hf`."""
    snapshot = hf.fetch_snapshot(repo)
    files = [snapshot.file(p) for p in source_files(f.path for f in snapshot.files)]
    if not any(f.path.endswith(".safetensors") for f in files):
        raise ModelNotFoundError(f"{repo} (safetensors)", f"{repo} has no .safetensors weights")
    workdir = hf.download_folder(store, snapshot, [f.path for f in files], reporter)
    origin = {"kind": "hub", "repo": repo, "revision": snapshot.commit, "endpoint": hf.endpoint()}
    manifest = import_folder(store, workdir, name, origin)
    shutil.rmtree(workdir, ignore_errors=True)
    return manifest
