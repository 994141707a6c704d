"""`hw` and `fit`: what this machine offers, and which quantization x context fits in it."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from pydantic import ByteSize, TypeAdapter, ValidationError

from llmedge.errors import InvalidRequestError

if TYPE_CHECKING:
    from llmedge.fit import FitReport, FitRow

_BYTES = TypeAdapter(ByteSize)
KV_TYPES = ("f16", "q8_0", "q4_0")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hw = subparsers.add_parser("hw", help="show this machine: CPU, memory, GPUs, backends")
    hw.add_argument("--json", action="store_true", help="print JSON (every size in bytes)")
    hw.set_defaults(handler=run_hw)

    fit = subparsers.add_parser(
        "fit",
        help="which quantization x context fits this machine",
        description="Estimate the memory a model needs at each quantization and context, "
        "exactly from the GGUF header when the file is at hand, else from its model card, "
        "and recommend one.",
    )
    fit.add_argument("model", metavar="MODEL", help="NAME[:QUANT], a .gguf file or a card .toml")
    fit.add_argument("--ctx", type=int, nargs="+", metavar="N", help="contexts (default: 2k..)")
    fit.add_argument("--budget", metavar="SIZE", help="memory to fit in, e.g. 6GiB (default: free)")
    fit.add_argument("--kv-type", choices=KV_TYPES, default="f16", help="KV cache type")
    fit.add_argument("--parallel", type=int, metavar="N", help="sequences decoded together")
    fit.add_argument("--gpu-layers", type=int, metavar="N", help="layers on the GPU (default: fit)")
    fit.add_argument("--batch", type=int, default=512, metavar="N", help="tokens per decode step")
    fit.add_argument(
        "--no-flash-attn",
        dest="flash_attn",
        action="store_false",
        help="for builds without flash attention (needs --kv-type f16)",
    )
    fit.add_argument("--json", action="store_true", help="print JSON (every figure in bytes)")
    fit.set_defaults(handler=run_fit)


def parse_bytes(text: str) -> int:
    """`6GiB`, `4GB`, `512MiB` or plain bytes."""
    try:
        return int(_BYTES.validate_python(text.strip()))
    except ValidationError:
        raise InvalidRequestError(
            f"--budget {text!r} is not a size; write it like 6GiB, 4GB or 512MiB", param="budget"
        ) from None


def _gib(n: float) -> str:
    from llmedge.cli.output import human_bytes

    return human_bytes(n)


def run_hw(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    from llmedge.hardware import probe_host
    from llmedge.routing import with_backends

    host = with_backends(probe_host())
    if args.json:
        print(json.dumps(host.to_dict(), indent=2))
        return
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("os", f"{host.os_name} {host.os_version} ({host.machine})")
    table.add_row("cpu", host.cpu_model)
    cores = f"{host.physical_cores} physical, {host.logical_cores} logical"
    table.add_row("cores", f"{cores}, {host.usable_cores} usable")
    table.add_row("simd", " ".join(host.simd) or "none detected")
    memory = f"{_gib(host.available_ram_bytes)} available of {_gib(host.total_ram_bytes)}"
    table.add_row("memory", memory)
    for gpu in host.gpus:
        vram = f"{_gib(gpu.vram_free_bytes)} free of {_gib(gpu.vram_total_bytes)}"
        table.add_row(
            "gpu", f"{gpu.name}: {vram}" + (f", driver {gpu.driver}" if gpu.driver else "")
        )
    if not host.gpus:
        table.add_row("gpu", "none detected")
    if host.apple:
        apple = host.apple
        table.add_row(
            "apple silicon",
            f"{apple.chip}: {_gib(apple.unified_memory_bytes)} unified, "
            f"{_gib(apple.recommended_working_set_bytes)} GPU working set",
        )
    for backend in host.backends:
        state = "usable" if backend.available else "unavailable"
        features = f" [{' '.join(backend.features)}]" if backend.features else ""
        table.add_row(f"backend {backend.name}", f"{state}: {backend.reason}{features}")
    for note in host.notes:
        table.add_row("note", note)
    Console().print(table)


def run_fit(args: argparse.Namespace) -> None:
    from llmedge.fit import FitOptions, advise, shapes_for
    from llmedge.hardware import probe_host
    from llmedge.routing import with_backends
    from llmedge.settings import Settings
    from llmedge.store import Store

    settings = Settings()
    budget = parse_bytes(args.budget) if args.budget else settings.memory_budget_bytes
    if args.parallel is not None and args.parallel < 1:
        raise InvalidRequestError("--parallel must be at least 1", param="parallel")
    parallel = args.parallel or getattr(settings, "parallel", 1)
    try:
        options = FitOptions(
            batch_tokens=args.batch,
            kv_type=args.kv_type,
            parallel=parallel,
            gpu_layers=-1 if args.gpu_layers is None else args.gpu_layers,
            flash_attn=args.flash_attn,
        )
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from None
    if args.ctx and min(args.ctx) < 1:
        raise InvalidRequestError("--ctx values must be positive", param="ctx")
    shapes = shapes_for(args.model, Store(settings.store_dir))
    host = with_backends(probe_host())
    report = advise(
        shapes,
        host,
        options,
        contexts=args.ctx or (),
        budget_bytes=None if budget is None else int(budget),
        offload=host.gpu_offload and options.gpu_layers != 0,
    )
    if args.json:
        print(json.dumps(report_to_dict(report), indent=2))
    else:
        _print_report(report, show_gpu=host.gpu_offload)


def report_to_dict(report: FitReport) -> dict[str, Any]:
    """The report as JSON-ready data; every figure in bytes."""

    def row(r: FitRow) -> dict[str, Any]:
        e = r.estimate
        return {
            "quantization": r.quantization,
            "ctx_tokens": r.ctx_tokens,
            "exact": r.exact,
            "weights_bytes": e.weights_bytes,
            "kv_bytes": e.kv_bytes,
            "compute_bytes": e.compute_bytes,
            "output_bytes": e.output_bytes,
            "overhead_bytes": e.overhead_bytes,
            "total_bytes": e.total_bytes,
            "ram_bytes": e.ram_bytes,
            "vram_bytes": e.vram_bytes,
            "gpu_layers": e.gpu_layers,
            "kv_cells": e.kv_cells,
            "fits": r.fits,
            "headroom_bytes": r.headroom_bytes,
        }

    return {
        "model": report.model,
        "budget_bytes": report.budget_bytes,
        "budget_source": report.budget_source,
        "options": asdict(report.options),
        "rows": [row(r) for r in report.rows],
        "recommendation": row(report.recommendation) if report.recommendation else None,
        "reasons": list(report.reasons),
    }


def _size(n: int) -> str:
    """A compact size for the table: 92M, 1.7G."""
    if abs(n) >= 1 << 30:
        return f"{n / (1 << 30):.1f}G"
    return f"{n / (1 << 20):.0f}M" if abs(n) >= 1 << 20 else f"{n / 1024:.0f}K"


def _print_report(report: FitReport, show_gpu: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 100))
    options = report.options
    console.print(
        f"[bold]{report.model}[/bold]: KV {options.kv_type}, batch {options.batch_tokens}, "
        f"flash attention {'on' if options.flash_attn else 'off'}, "
        f"{options.parallel} parallel; budget {_gib(report.budget_bytes)} ({report.budget_source})"
    )
    table = Table(box=None, header_style="bold")
    columns = ["QUANT", "CTX", "WEIGHTS", "KV", "COMPUTE", "OUTPUT", "OVERHEAD", "TOTAL", "FITS"]
    columns += ["HEADROOM"] + (["GPU LAYERS"] if show_gpu else [])
    for column in columns:
        table.add_column(column, justify="left" if column in ("QUANT", "FITS") else "right")
    for r in report.rows:
        e = r.estimate
        mark = "" if r.exact else "~"
        sizes = (e.weights_bytes, e.kv_bytes, e.compute_bytes, e.output_bytes, e.overhead_bytes)
        cells = [
            r.quantization + mark,
            str(r.ctx_tokens),
            *(_size(n) for n in sizes),
            _size(e.ram_bytes),
            "[green]yes[/green]" if r.fits else "[red]no[/red]",
            _size(r.headroom_bytes),
        ] + ([str(e.gpu_layers)] if show_gpu else [])
        table.add_row(*cells)
    console.print(table)
    exact = [r.exact for r in report.rows]
    if any(exact) and not all(exact):
        console.print("  ~ estimated from the model card; the others are exact, from the GGUF file")
    elif not any(exact):
        console.print("  ~ estimated from the model card; pull the model for exact figures")
    best = report.recommendation
    if best:
        choice = f"{report.model}:{best.quantization} with --ctx {best.ctx_tokens}"
        console.print(f"[bold]recommended:[/bold] {choice}")
    else:
        console.print("[bold red]nothing fits[/bold red]")
    for reason in report.reasons:
        console.print(f"  - {reason}")
