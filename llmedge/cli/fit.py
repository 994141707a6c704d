"""`fit`: which quantization x context fits this machine, how fast it runs, and which to choose."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from pydantic import ByteSize, TypeAdapter, ValidationError

from llmedge.errors import InvalidRequestError

if TYPE_CHECKING:
    from llmedge.fit import FitOptions, FitReport, FitRow
    from llmedge.settings import Settings

_BYTES = TypeAdapter(ByteSize)
# The serve process where it cannot be measured: about what a Linux install measures.
UNMEASURED_PROCESS_BYTES = 80 << 20


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fit = subparsers.add_parser(
        "fit",
        help="which quantization x context fits this machine",
        description="Estimate the memory `llmedge serve` needs at each quantization and context "
        "(exactly from the GGUF header when the file is at hand, else from its model card) and "
        "how fast it decodes here, and recommend the best quality that fits at a usable speed.",
    )
    fit.add_argument("model", metavar="MODEL", help="NAME[:QUANT], a .gguf file or a card .toml")
    fit.add_argument("--ctx", type=int, nargs="+", metavar="N", help="contexts (default: 2k..)")
    fit.add_argument("--budget", metavar="SIZE", help="memory to fit in, e.g. 6GiB (default: free)")
    fit.add_argument(
        "--kv-type",
        metavar="TYPE",
        help="KV cache type, as `serve --kv-type`: f16, q8_0, q4_0 or K,V [env LLMEDGE_KV_TYPE]",
    )
    fit.add_argument(
        "--flash-attn",
        choices=("auto", "on", "off"),
        help="flash attention, as `serve --flash-attn` [env LLMEDGE_FLASH_ATTN]",
    )
    fit.add_argument(
        "--parallel",
        type=int,
        metavar="N",
        help="sequences decoded together (default: serve's, or 1 for its auto, which adds "
        "slots only where half the spare memory holds them)",
    )
    fit.add_argument("--threads", type=int, metavar="N", help="decoding threads (as serve's)")
    fit.add_argument("--gpu-layers", type=int, metavar="N", help="layers on the GPU (default: fit)")
    fit.add_argument("--batch", type=int, default=512, metavar="N", help="tokens per decode step")
    fit.add_argument(
        "--min-speed",
        type=float,
        default=10.0,
        metavar="TOKENS_PER_S",
        help="least decode speed of one stream for the recommendation (default: 10)",
    )
    fit.add_argument(
        "--no-process",
        dest="process",
        action="store_false",
        help="leave out the serve process's own memory (a model added to a running server)",
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


def run_fit(args: argparse.Namespace) -> None:
    from llmedge.cli.hw import measured_host, serve_process
    from llmedge.fit import advise, shapes_for
    from llmedge.settings import Settings
    from llmedge.store import Store

    settings = Settings().with_overrides(
        kv_type=args.kv_type, flash_attn=args.flash_attn, parallel=args.parallel
    )
    budget = parse_bytes(args.budget) if args.budget else settings.memory_budget_bytes
    if args.ctx and min(args.ctx) < 1:
        raise InvalidRequestError("--ctx values must be positive", param="ctx")
    if args.min_speed < 0:
        raise InvalidRequestError("--min-speed cannot be negative", param="min_speed")
    shapes = shapes_for(args.model, Store(settings.store_dir))
    host = measured_host(settings)
    process_bytes = 0
    if args.process:
        process = serve_process(settings)
        process_bytes = process.resident_bytes if process else UNMEASURED_PROCESS_BYTES
        if process is None:
            print(
                "llmedge: note: the serve process could not be measured here (is the server "
                f"extra installed?); counting {UNMEASURED_PROCESS_BYTES >> 20} MiB for it",
                file=sys.stderr,
            )
    options = fit_options(settings, args, process_bytes)
    report = advise(
        shapes,
        host,
        options,
        contexts=args.ctx or (),
        budget_bytes=None if budget is None else int(budget),
        offload=host.gpu_offload and options.gpu_layers != 0,
        min_speed_tokens_per_s=args.min_speed,
    )
    if args.json:
        print(json.dumps(report_to_dict(report), indent=2))
    else:
        _print_report(report, show_gpu=host.gpu_offload, threads_given=args.threads is not None)


def fit_options(settings: Settings, args: argparse.Namespace, process_bytes: int) -> FitOptions:
    """The options `serve` would run with (settings, then these flags), for the advisor."""
    from llmedge.fit import options_for

    try:
        return options_for(
            settings,
            batch_tokens=args.batch,
            gpu_layers=-1 if args.gpu_layers is None else args.gpu_layers,
            process_bytes=process_bytes,
            threads=args.threads or settings.threads,
        )
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from None


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
            "process_bytes": e.process_bytes,
            "total_bytes": e.total_bytes,
            "ram_bytes": e.ram_bytes,
            "vram_bytes": e.vram_bytes,
            "gpu_layers": e.gpu_layers,
            "kv_cells": e.kv_cells,
            "fits": r.fits,
            "headroom_bytes": r.headroom_bytes,
            "speed": asdict(r.speed) if r.speed else None,
        }

    return {
        "model": report.model,
        "budget_bytes": report.budget_bytes,
        "budget_source": report.budget_source,
        "options": asdict(report.options),
        "rows": [row(r) for r in report.rows],
        "recommendation": row(report.recommendation) if report.recommendation else None,
        "min_speed_tokens_per_s": report.min_speed_tokens_per_s,
        "reasons": list(report.reasons),
    }


def _size(n: int) -> str:
    """A compact size for the table: 92M, 1.7G."""
    if abs(n) >= 1 << 30:
        return f"{n / (1 << 30):.1f}G"
    return f"{n / (1 << 20):.0f}M" if abs(n) >= 1 << 20 else f"{n / 1024:.0f}K"


def _rate(tokens_per_s: float) -> str:
    return f"{tokens_per_s:.0f}" if tokens_per_s >= 10 else f"{tokens_per_s:.1f}"


def serve_command(report: FitReport, best: FitRow, threads_given: bool = False) -> str:
    """The `llmedge serve` line that runs the recommendation with the options it was fitted for."""
    options = report.options
    words = [f"llmedge serve {report.model}:{best.quantization} --ctx {best.ctx_tokens}"]
    words.append(f"--parallel {options.parallel}")
    if threads_given:
        words.append(f"--threads {options.threads}")
    if options.kv_type != "f16":
        words.append(f"--kv-type {options.kv_type}")
    if not options.flash_attn:
        words.append("--flash-attn off")
    return " ".join(words)


def _print_report(report: FitReport, show_gpu: bool, threads_given: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    from llmedge.cli.output import human_bytes

    console = Console(width=max(Console().width, 140))
    options = report.options
    console.print(
        f"[bold]{report.model}[/bold]: KV {options.kv_type}, batch {options.batch_tokens}, "
        f"flash attention {'on' if options.flash_attn else 'off'}, {options.parallel} parallel; "
        f"budget {human_bytes(report.budget_bytes)} ({report.budget_source})"
    )
    table = Table(box=None, header_style="bold")
    columns = ["QUANT", "CTX", "WEIGHTS", "KV", "COMPUTE", "OUTPUT", "OVERHEAD", "PROCESS"]
    columns += ["TOTAL", "FITS", "HEADROOM", "DECODE/S", "AT CTX/S", "PROMPT/S"]
    together = options.parallel > 1
    columns += [f"x{options.parallel} ALL/S"] if together else []
    columns += ["GPU LAYERS"] if show_gpu else []
    for column in columns:
        table.add_column(column, justify="left" if column in ("QUANT", "FITS") else "right")
    for r in report.rows:
        e = r.estimate
        mark = "" if r.exact else "~"
        sizes = (e.weights_bytes, e.kv_bytes, e.compute_bytes, e.output_bytes, e.overhead_bytes)
        speed = r.speed
        rates = ["?"] * (4 if together else 3)
        if speed:
            slow = speed.decode_full_tokens_per_s < report.min_speed_tokens_per_s
            at_ctx = _rate(speed.decode_full_tokens_per_s)
            rates = [
                _rate(speed.decode_tokens_per_s),
                f"[red]{at_ctx}[/red]" if slow else at_ctx,
                _rate(speed.prompt_tokens_per_s),
            ] + ([_rate(speed.parallel_tokens_per_s)] if together else [])
        cells = [
            r.quantization + mark,
            str(r.ctx_tokens),
            *(_size(n) for n in sizes),
            _size(e.process_bytes) if e.process_bytes else "-",
            _size(e.ram_bytes),
            "[green]yes[/green]" if r.fits else "[red]no[/red]",
            _size(r.headroom_bytes),
            *rates,
        ] + ([str(e.gpu_layers)] if show_gpu else [])
        table.add_row(*cells)
    console.print(table)
    exact = [r.exact for r in report.rows]
    if any(exact) and not all(exact):
        console.print("  ~ estimated from the model card; the others are exact, from the GGUF file")
    elif not any(exact):
        console.print("  ~ estimated from the model card; pull the model for exact figures")
    console.print(
        "  PROCESS: the serve process; DECODE/S: one stream's tokens/s at the start of the "
        "context, AT CTX/S at its end; PROMPT/S: prompt tokens/s"
        + ("; ALL/S: every sequence decoding at once" if together else "")
    )
    best = report.recommendation
    if best:
        line = serve_command(report, best, threads_given)
        console.print(f"[bold]recommended:[/bold] {line}", highlight=False)
    else:
        console.print("[bold red]nothing fits[/bold red]")
    for reason in report.reasons:
        console.print(f"  - {reason}", highlight=False)
