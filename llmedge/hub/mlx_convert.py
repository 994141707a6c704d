"""`llmedge pull NAME --mlx`: a Hugging Face model converted to MLX 4-bit with mlx-lm.

The source is a local folder of safetensors weights, a model card's source repository or
`hf.co/OWNER/REPO`. The converted folder is stored as one packed blob with format "mlx" and the
tag `mlx-q4` (see `llmedge.store.folders`), beside any GGUF versions of the same name.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

from llmedge.errors import ConversionError, InvalidRequestError
from llmedge.extras import import_mlx
from llmedge.gguf import ModelFacts
from llmedge.hub import hf
from llmedge.hub.plan import (
    is_convertible,
    looks_like_path,
    name_from_path,
    parse_target,
    source_files,
)
from llmedge.progress import Reporter
from llmedge.store import Manifest, ModelRef, Store
from llmedge.store.folders import store_dir

MLX_TAG = "mlx-q4"
Q_BITS = 4
# mlx-lm's default group is 64 weights; 32 costs ~0.2 bits per weight and keeps small models
# coherent (SmolLM2-135M answers sensibly at 32, and not at 64).
Q_GROUP_SIZE = 32

__all__ = ["MLX_TAG", "convert_to_mlx", "facts_from_config", "pull_mlx"]


def convert_to_mlx(source: Path, out: Path) -> None:
    """Convert the Hugging Face folder `source` into an MLX 4-bit folder `out` (must not exist)."""
    _, mlx_lm = import_mlx()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # mlx-lm reports its steps on stdout
            mlx_lm.convert(
                str(source), str(out), quantize=True, q_bits=Q_BITS, q_group_size=Q_GROUP_SIZE
            )
    except (ValueError, KeyError, OSError) as exc:
        raise ConversionError("mlx", f"mlx-lm could not convert {source}: {exc}") from exc


def safetensors_parameters(folder: Path) -> int:
    """Values in the folder's safetensors files, read from their headers."""
    total = 0
    for path in folder.glob("*.safetensors"):
        with path.open("rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header: dict[str, Any] = json.loads(handle.read(size))
        for name, entry in header.items():
            if name != "__metadata__":
                count = 1
                for dim in entry["shape"]:
                    count *= dim
                total += count
    return total


def facts_from_config(folder: Path, parameters: int) -> ModelFacts:
    """The facts llmedge shows and routes by, from a model folder's config and tokenizer."""
    config: dict[str, Any] = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    template = None
    if (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    elif (folder / "tokenizer_config.json").is_file():
        tokenizer = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        found = tokenizer.get("chat_template")
        template = found if isinstance(found, str) else None

    def number(key: str) -> int | None:
        value = config.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return ModelFacts(
        architecture=str(config.get("model_type", "unknown")),
        name=folder.name,
        parameters=parameters,
        quantization=MLX_TAG,
        ctx_train_tokens=number("max_position_embeddings"),
        n_layers=number("num_hidden_layers"),
        n_embd=number("hidden_size"),
        n_heads=number("num_attention_heads"),
        n_kv_heads=number("num_key_value_heads"),
        vocab_size=number("vocab_size"),
        chat_template=template,
    )


def _convert_and_store(
    store: Store, source: Path, ref: ModelRef, origin: dict[str, str], reporter: Reporter
) -> Manifest:
    store.tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=store.tmp_dir) as tmp:
        out = Path(tmp) / "mlx"
        reporter.note(f"converting {source.name} to MLX {Q_BITS}-bit (groups of {Q_GROUP_SIZE})")
        convert_to_mlx(source, out)
        facts = facts_from_config(out, safetensors_parameters(source))
        return store_dir(store, out, ref, format="mlx", origin=origin, facts=facts)


def pull_mlx(
    store: Store,
    target: str,
    *,
    name: str | None = None,
    revision: str | None = None,
    reporter: Reporter,
) -> Manifest:
    """Store `target` converted to MLX 4-bit as `NAME:mlx-q4`."""
    folder = Path(target).expanduser()
    if looks_like_path(target):
        if not folder.is_dir() or not is_convertible(p.name for p in folder.iterdir()):
            raise InvalidRequestError(
                f"{folder} is not a Hugging Face model folder (config.json and *.safetensors)",
                param="model",
            )
        ref = ModelRef(ModelRef.parse(name or name_from_path(folder)).name, MLX_TAG)
        origin = {"kind": "folder", "path": str(folder.resolve()), "converter": "mlx-lm"}
        return _convert_and_store(store, folder, ref, origin, reporter)
    parsed = parse_target(target, None, name)
    repo = parsed.repo or (parsed.card.source_repo if parsed.card else None)
    if repo is None:
        raise InvalidRequestError(
            f"{target} names no safetensors repository to convert; pass hf.co/OWNER/REPO or "
            "a local model folder",
            param="model",
        )
    snapshot = hf.fetch_snapshot(repo, revision)
    ref = ModelRef(parsed.name, MLX_TAG)
    current = store.find(ref)
    if current is not None and current.source.get("revision") == snapshot.commit:
        reporter.note(f"{current.ref} is up to date ({repo}@{snapshot.commit[:12]})")
        return current
    names = [f.path for f in snapshot.files]
    if not is_convertible(names):
        raise InvalidRequestError(f"hf.co/{repo} has no config.json and safetensors weights")
    workdir = hf.download_folder(store, snapshot, source_files(names), reporter)
    origin = {
        "kind": "convert",
        "repo": repo,
        "revision": snapshot.commit,
        "ref": snapshot.revision,
        "endpoint": hf.endpoint(),
        "converter": "mlx-lm",
    }
    manifest = _convert_and_store(store, workdir, ref, origin, reporter)
    shutil.rmtree(workdir, ignore_errors=True)
    return manifest
