"""`pull`, `list`, `show`, `rm`: the model store from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from llmedge.gguf.quant_types import ALL_TYPES
from llmedge.settings import AUTO_PARALLEL_MAX, Settings
from llmedge.store import Manifest, ModelRef, Store

if TYPE_CHECKING:
    from llmedge.hub.plan import Target

# The llama.cpp quantization ladder (and the float types), offered as `--q4_k_m`-style flags.
QUANT_FLAGS = ALL_TYPES


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pull = subparsers.add_parser("pull", help="put a model in the store", description=(
        "Put a model in the store: a model card name (`phi-3-mini`, `phi-3-mini:q4_k_m`, "
        "`phi-3-mini --q4_k_m`), a Hugging Face repository (`hf.co/OWNER/REPO[:QUANT]`) or a "
        "local GGUF file (`./model.gguf --name X`). A pre-quantized GGUF file is downloaded when "
        "one exists; otherwise the safetensors weights are converted and quantized locally. "
        "An interrupted pull resumes. HF_TOKEN is sent for gated repositories; HF_ENDPOINT "
        "names a mirror."
    ))  # fmt: skip
    pull.add_argument(
        "target",
        metavar="MODEL",
        help="card name, NAME:QUANT, hf.co/OWNER/REPO[:QUANT], or a .gguf",
    )
    pull.add_argument("--name", help="store name (default: the card, repository or file name)")
    pull.add_argument("--revision", help="hub branch, tag or commit (default: main)")
    pull.add_argument("--list", action="store_true", help="show the quantizations on offer")
    pull.add_argument("--verbose", action="store_true", help="show the converters' output")
    quant = pull.add_mutually_exclusive_group()
    quant.add_argument(
        "--quant", dest="quant", metavar="TYPE", help=f"quantization: {', '.join(QUANT_FLAGS)}"
    )
    for flag in QUANT_FLAGS:
        quant.add_argument(
            f"--{flag}", dest="quant", action="store_const", const=flag, help=argparse.SUPPRESS
        )
    quant.add_argument(
        "--mlx", action="store_true", help="convert to MLX 4-bit with mlx-lm (llmedge[mlx])"
    )
    pull.set_defaults(handler=run_pull)

    listing = subparsers.add_parser(
        "list",
        aliases=["ls"],
        help="list stored models",
        description="List stored models. --outdated asks the hub about each pulled one and "
        "exits 0 when all are current, 1 when some are outdated, 2 when some could not be asked.",
    )
    listing.add_argument("models", metavar="MODEL", nargs="*", help="only these (with --outdated)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.add_argument(
        "--outdated", action="store_true", help="show which have a newer revision on the hub"
    )
    listing.set_defaults(handler=run_list)

    show = subparsers.add_parser("show", help="show a stored model's facts")
    show.add_argument(
        "model", metavar="MODEL", nargs="?", help="stored model (default: the default model)"
    )
    show.add_argument("--json", action="store_true", help="print the manifest as JSON")
    show.add_argument("--template", action="store_true", help="print the whole chat template")
    show.set_defaults(handler=run_show)

    remove = subparsers.add_parser(
        "rm",
        help="remove a model (every tag, NAME:TAG, or NAME:TAG@N)",
        description="Remove every tag of NAME, one NAME:TAG, or one earlier version NAME:TAG@N "
        "(`llmedge show NAME:TAG` numbers them); files nothing else uses are deleted.",
    )
    remove.add_argument("models", metavar="MODEL", nargs="+")
    remove.set_defaults(handler=run_rm)


def run_pull(args: argparse.Namespace) -> None:
    from llmedge.cli.logs import engine_log
    from llmedge.hub.plan import parse_target

    settings = Settings()
    store = Store(settings.store_dir)
    if args.list:
        return _print_choices(store, parse_target(args.target, args.quant, args.name), args)
    with engine_log(settings.home, args.verbose, f"pull {args.target}"):
        _pull(store, args)


def _pull(store: Store, args: argparse.Namespace) -> None:
    from pathlib import Path

    from llmedge.cli.output import RichReporter, byte_progress, human_bytes
    from llmedge.hub import pull
    from llmedge.hub.plan import looks_like_path

    path = Path(args.target).expanduser()
    before = {m.ref: m.digest for m in store.manifests()}
    if args.mlx:
        from llmedge.hub.mlx_convert import pull_mlx

        with RichReporter() as reporter:
            manifest = pull_mlx(
                store, args.target, name=args.name, revision=args.revision, reporter=reporter
            )
    elif looks_like_path(args.target) and path.is_file():
        with byte_progress(path.stat().st_size, "importing") as advance:
            manifest = pull(
                store, args.target, quant=args.quant, name=args.name, on_progress=advance
            )
    else:
        _warn_if_too_big(store, args.target, args.quant)
        with RichReporter() as reporter:
            manifest = pull(
                store,
                args.target,
                quant=args.quant,
                name=args.name,
                reporter=reporter,
                revision=args.revision,
            )
    if before.get(manifest.ref, manifest.digest) != manifest.digest:
        print(f"kept the earlier {manifest.ref}: `llmedge rollback {manifest.ref}` restores it")
    print(
        f"pulled {manifest.ref} ({human_bytes(manifest.size_bytes)}, sha256 {manifest.sha256[:12]})"
    )


def _warn_if_too_big(store: Store, target: str, quant: str | None) -> None:
    """Before a download: say so when the model will not fit this machine (pulling goes on)."""
    from llmedge.errors import InsufficientMemoryError, LlmedgeError
    from llmedge.fit import check_fits, options_for, shapes_for
    from llmedge.hardware import probe_host

    settings = Settings()
    wanted = f"{target}:{quant}" if quant and ":" not in target else target
    try:
        shapes = shapes_for(wanted, store)
    except LlmedgeError:
        return  # no card to estimate from (a hf.co/ repo): the load-time check still applies
    budget = settings.memory_budget_bytes or probe_host().available_ram_bytes
    options = options_for(settings)
    for shape in shapes[:1]:
        try:
            check_fits(shape, options, budget)
        except InsufficientMemoryError as exc:
            print(f"llmedge: warning: {wanted} will not fit this machine: {exc}", file=sys.stderr)


def _print_choices(store: Store, target: Target, args: argparse.Namespace) -> None:
    from rich.table import Table

    from llmedge.cli.output import table_console
    from llmedge.hub.pull import choices_for

    choices = choices_for(target, args.revision)
    if not choices:
        print(f"{args.target} is a local file: `llmedge pull {args.target}` imports it")
        return
    table = Table(box=None, header_style="bold")
    for column in ("QUANT", "STORED", "SOURCE"):
        table.add_column(column)
    for choice in choices:
        stored = store.find(ModelRef(target.name, choice.quant))
        table.add_row(choice.quant, "yes" if stored else "", choice.describe())
    table_console().print(table)


def run_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from llmedge.cli.output import human_bytes, human_count, table_console

    store = Store(Settings().store_dir)
    if args.outdated:
        from llmedge.cli.update import run_outdated

        return run_outdated(store, args.models)
    manifests, problems = store.scan()
    for problem in problems:
        print(f"llmedge: warning: skipped {problem.path}: {problem.reason}", file=sys.stderr)
    if args.json:
        print(json.dumps([json.loads(m.to_json()) for m in manifests], indent=2))
        return 0
    if not manifests:
        print("no models stored yet; run `llmedge pull smollm2-135m` (offline, bundled)")
        return 0
    table = Table(box=None, header_style="bold")
    for column in ("NAME", "ID", "SIZE", "PARAMS", "FORMAT", "MODIFIED"):
        table.add_column(column)
    for m in manifests:
        params = human_count(m.facts.parameters) if m.facts else "?"
        kind = f"{m.format} ({len(m.parts)} parts)" if m.parts else m.format
        table.add_row(m.ref, m.sha256[:12], human_bytes(m.size_bytes), params, kind, m.created_at)
    table_console().print(table)
    return 0


def _facts_rows(m: Manifest, versions: list[int] | None = None) -> list[tuple[str, str]]:
    from llmedge.cli.output import human_bytes, human_count

    rows = [
        ("model", m.ref),
        ("format", m.format),
        ("size", human_bytes(m.size_bytes)),
        ("sha256", m.sha256),
    ]
    for i, part in enumerate(m.parts, 1):
        rows.append(
            (f"part {i} of {len(m.parts)}", f"{part.file} ({human_bytes(part.size_bytes)})")
        )
    rows += _defaults_rows(m)
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
    rows += _report_rows(m)
    rows += [
        ("source", ", ".join(f"{k}={v}" for k, v in sorted(m.source.items()))),
        ("pulled", m.created_at),
    ]
    if versions and len(versions) > 1:
        numbers = ", ".join(f"{n} (current)" if i == 0 else str(n) for i, n in enumerate(versions))
        rows.append((
            "versions",
            f"{numbers}; `llmedge rollback {m.ref}` or `llmedge rm {m.ref}@{versions[1]}`",
        ))  # fmt: skip
    return rows


def _defaults_rows(m: Manifest) -> list[tuple[str, str]]:
    d = m.defaults
    if d is None:
        return []
    rows = [("system prompt", d.system)] if d.system else []
    if d.parameters:
        rows.append(("sampling", ", ".join(f"{k}={v}" for k, v in d.parameters.items())))
    if d.template:
        rows.append(("template", "its own (`llmedge show --template` prints it)"))
    return rows


def _report_rows(m: Manifest) -> list[tuple[str, str]]:
    r = m.quant_report
    if r is None:
        return []
    rows = [
        ("quantized from", f"{r.source} (sha256 {r.source_sha256[:12]}) in {r.seconds:.2f} s"),
        ("bits per weight", f"{r.bits_per_weight:.2f}"),
    ]
    if r.perplexity is not None and r.source_perplexity is not None:
        change = r.perplexity_change or 0.0
        err = f" ± {r.perplexity_error:.3f}" if r.perplexity_error is not None else ""
        rows.append((
            "perplexity",
            f"{r.perplexity:.3f}{err} ({change:+.2%} vs {r.source_perplexity:.3f} for "
            f"{r.source}; {r.eval_tokens} tokens of {r.eval_text})",
        ))  # fmt: skip
    return rows


def _runtime_rows(settings: Settings, store: Store, m: Manifest) -> list[tuple[str, str]]:
    """How `serve` and `run` would run the model with these settings: its KV cache and attention."""
    from llmedge.cli.output import human_bytes
    from llmedge.errors import LlmedgeError
    from llmedge.fit import estimate_memory, options_for, shape_of_file

    kv_k, kv_v = settings.kv_types
    kv = f"{kv_k} K, {kv_v} V"
    if m.format == "gguf":
        try:
            shape = shape_of_file(store.blob_path(m.digest), m.name)
        except (LlmedgeError, OSError):
            shape = None
        if shape is not None:
            ctx = min(settings.ctx_tokens, shape.ctx_train_tokens or settings.ctx_tokens)
            kv_bytes = estimate_memory(shape, options_for(settings, ctx_tokens=ctx)).kv_bytes
            size = human_bytes(kv_bytes)
            if settings.parallel == "auto":
                per = f"per {ctx}-token sequence, up to {AUTO_PARALLEL_MAX} (--parallel auto)"
            else:
                per = f"for {settings.parallel} x {ctx} tokens"
            kv += f": {size} {per}"
    return [
        ("kv cache", f"{kv} [--kv-type, LLMEDGE_KV_TYPE]"),
        ("flash attention", f"{settings.flash_attn} [--flash-attn, LLMEDGE_FLASH_ATTN]"),
    ]


def run_show(args: argparse.Namespace) -> None:
    from rich.table import Table

    from llmedge.cli.output import table_console

    settings = Settings()
    store = Store(settings.store_dir)
    manifest = store.resolve(ModelRef.parse(args.model or settings.default_model))
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
    versions = [n for n, _ in store.versions(manifest.name, manifest.tag)]
    for key, value in _facts_rows(manifest, versions):
        table.add_row(key, value)
    for key, value in _runtime_rows(settings, store, manifest):
        table.add_row(key, value)
    first_line = template.strip().splitlines()[0] if template.strip() else "(none: ChatML is used)"
    table.add_row("chat template", first_line[:100] + (" …" if len(template) > 100 else ""))
    table_console().print(table)


def run_rm(args: argparse.Namespace) -> None:
    store = Store(Settings().store_dir)
    for name in args.models:
        for ref in store.remove(ModelRef.parse(name)):
            print(f"removed {ref}")
