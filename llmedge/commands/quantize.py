"""`quantize`: make smaller GGUF versions of a stored model along llama.cpp's ladder."""

from __future__ import annotations

import argparse

from rich.table import Table

from llmedge.cli import import_extra
from llmedge.commands.models import RichReporter, human_bytes, table_console
from llmedge.quant_types import LADDER
from llmedge.settings import Settings
from llmedge.store import Store


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    quantize = subparsers.add_parser(
        "quantize",
        help="quantize a stored model (Q2_K … Q8_0) with llama.cpp",
        description=(
            "Quantize the F16 (or BF16/F32) version of MODEL to each --to type with llama.cpp, "
            "storing each result as MODEL:TYPE. With no float version stored, one is pulled "
            "first. --report measures perplexity against the float source on a text shipped "
            "with llmedge and keeps the figures in the manifest (`llmedge show`)."
        ),
    )
    quantize.add_argument("model", metavar="MODEL", help="stored model name (or NAME:f16)")
    targets = quantize.add_mutually_exclusive_group(required=True)
    targets.add_argument(
        "--to",
        dest="types",
        action="append",
        metavar="TYPE",
        choices=LADDER,
        help=f"type to produce, repeatable: {', '.join(LADDER)}",
    )
    targets.add_argument(
        "--all", dest="types", action="store_const", const=list(LADDER), help="the whole ladder"
    )
    quantize.add_argument("--report", action="store_true", help="measure perplexity per type")
    quantize.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: LLMEDGE_THREADS)"
    )
    quantize.set_defaults(handler=run_quantize)


def run_quantize(args: argparse.Namespace) -> None:
    gguf = import_extra("quantizers.gguf", "llama")
    store = Store(Settings().store_dir)
    with RichReporter() as reporter:
        made = gguf.quantize_model(
            store,
            args.model,
            args.types,
            report=args.report,
            threads=args.threads,
            reporter=reporter,
        )
    table = Table(box=None, header_style="bold")
    columns = ["MODEL", "SIZE", "BITS/WEIGHT", "SECONDS"]
    if args.report:
        columns += ["PERPLEXITY", "VS SOURCE"]
    for column in columns:
        table.add_column(column, justify="left" if column == "MODEL" else "right")
    for manifest in made:
        r = manifest.quant_report
        row = [manifest.ref, human_bytes(manifest.size_bytes), f"{r.bits_per_weight:.2f}"]
        row.append(f"{r.seconds:.2f}")
        if args.report:
            row += [f"{r.perplexity:.3f}", f"{r.perplexity_change:+.2%}"]
        table.add_row(*row)
    table_console().print(table)
    first = made[0].quant_report
    if args.report and first is not None:
        print(
            f"perplexity of {first.source}: {first.source_perplexity:.3f} "
            f"on {first.eval_tokens} tokens of {first.eval_text}"
        )
