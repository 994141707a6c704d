"""`pull`, `list`, `show`, `rm`: the model store from the command line."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from llmedge.settings import Settings
from llmedge.store import Manifest, ModelRef, Store

# The llama.cpp quantization ladder, offered as `--q4_k_m`-style flags.
QUANT_FLAGS = (
    "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_0", "q4_1", "q4_k_s", "q4_k_m",
    "q5_0", "q5_1", "q5_k_s", "q5_k_m", "q6_k", "q8_0", "f16", "bf16", "f32",
)  # fmt: skip


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pull = subparsers.add_parser("pull", help="put a model in the store", description=(
        "Put a model in the store: a model card name (`smollm2-135m`, `NAME:q4_k_m`) "
        "or a local GGUF file (`./model.gguf --name X`)."
    ))  # fmt: skip
    pull.add_argument(
        "target", metavar="MODEL", help="model card name, NAME:QUANT, or a .gguf path"
    )
    pull.add_argument("--name", help="store name for a local file (default: the file's name)")
    quant = pull.add_mutually_exclusive_group()
    quant.add_argument("--quant", dest="quant", metavar="TYPE", help="quantization, e.g. q4_k_m")
    for flag in QUANT_FLAGS:
        quant.add_argument(
            f"--{flag}", dest="quant", action="store_const", const=flag, help=argparse.SUPPRESS
        )
    pull.set_defaults(handler=run_pull)

    listing = subparsers.add_parser("list", aliases=["ls"], help="list stored models")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=run_list)

    show = subparsers.add_parser("show", help="show a stored model's facts")
    show.add_argument(
        "model", metavar="MODEL", nargs="?", help="stored model (default: the default model)"
    )
    show.add_argument("--json", action="store_true", help="print the manifest as JSON")
    show.add_argument("--template", action="store_true", help="print the whole chat template")
    show.set_defaults(handler=run_show)

    remove = subparsers.add_parser("rm", help="remove a model (every tag, or NAME:TAG)")
    remove.add_argument("models", metavar="MODEL", nargs="+")
    remove.set_defaults(handler=run_rm)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


@contextmanager
def byte_progress(total: int, description: str) -> Iterator[Any]:
    """A progress bar over `total` bytes (on stderr); yields the advance callback."""
    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def run_pull(args: argparse.Namespace) -> None:
    from pathlib import Path

    from llmedge.pull import pull

    store = Store(Settings().store_dir)
    path = Path(args.target).expanduser()
    total = path.stat().st_size if path.is_file() else 0
    with byte_progress(total, "importing") as advance:
        manifest = pull(store, args.target, quant=args.quant, name=args.name, on_progress=advance)
    print(
        f"pulled {manifest.ref} ({human_bytes(manifest.size_bytes)}, sha256 {manifest.sha256[:12]})"
    )


def run_list(args: argparse.Namespace) -> None:
    manifests = Store(Settings().store_dir).manifests()
    if args.json:
        print(json.dumps([json.loads(m.to_json()) for m in manifests], indent=2))
        return
    if not manifests:
        print("no models stored yet; run `llmedge pull smollm2-135m` (offline, bundled)")
        return
    table = Table(box=None, header_style="bold")
    for column in ("NAME", "ID", "SIZE", "PARAMS", "FORMAT", "MODIFIED"):
        table.add_column(column)
    for m in manifests:
        params = human_count(m.facts.parameters) if m.facts else "?"
        table.add_row(
            m.ref, m.sha256[:12], human_bytes(m.size_bytes), params, m.format, m.created_at
        )
    Console().print(table)


def _facts_rows(m: Manifest) -> list[tuple[str, str]]:
    rows = [
        ("model", m.ref),
        ("format", m.format),
        ("size", human_bytes(m.size_bytes)),
        ("sha256", m.sha256),
    ]
    if m.facts:
        f = m.facts
        rows += [
            ("architecture", f.architecture),
            ("parameters", f"{human_count(f.parameters)} ({f.parameters:,})"),
            ("quantization", f.quantization),
            ("context length", str(f.ctx_train_tokens or "?")),
            ("layers", str(f.n_layers or "?")),
            ("embedding", str(f.n_embd or "?")),
            ("heads / kv heads", f"{f.n_heads or '?'} / {f.n_kv_heads or '?'}"),
            ("vocabulary", str(f.vocab_size or "?")),
        ]
    rows += [
        ("source", ", ".join(f"{k}={v}" for k, v in sorted(m.source.items()))),
        ("pulled", m.created_at),
    ]
    return rows


def run_show(args: argparse.Namespace) -> None:
    settings = Settings()
    manifest = Store(settings.store_dir).resolve(
        ModelRef.parse(args.model or settings.default_model)
    )
    template = (manifest.facts.chat_template if manifest.facts else None) or ""
    if args.json:
        print(manifest.to_json())
        return
    if args.template:
        print(template)
        return
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in _facts_rows(manifest):
        table.add_row(key, value)
    first_line = template.strip().splitlines()[0] if template.strip() else "(none: ChatML is used)"
    table.add_row("chat template", first_line[:100] + (" …" if len(template) > 100 else ""))
    Console().print(table)


def run_rm(args: argparse.Namespace) -> None:
    store = Store(Settings().store_dir)
    for name in args.models:
        for manifest in store.remove(ModelRef.parse(name)):
            print(f"removed {manifest.ref}")
