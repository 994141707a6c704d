"""`quantize`: make smaller versions of a stored model: the GGUF ladder, GPTQ, AWQ or NF4."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmedge.extras import import_extra
from llmedge.gguf.quant_types import LADDER
from llmedge.settings import Settings
from llmedge.store import Manifest, Store

if TYPE_CHECKING:
    from llmedge.cli.output import RichReporter

# The calibration and report defaults live in quantizers (calibration, perplexity); repeated
# here so --help needs no import.
_SAMPLES, _TOKENS, _PPL_TOKENS = 16, 256, 8192


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    quantize = subparsers.add_parser(
        "quantize",
        help="quantize a stored model (GGUF Q2_K … Q8_0, GPTQ, AWQ, NF4)",
        description=(
            "Quantize MODEL and store each result as MODEL:TYPE. --to makes GGUF types with "
            "llama.cpp from the F16 (or BF16/F32) version, pulling one first if none is stored. "
            "--gptq, --awq and --nf4 start from the unquantized safetensors version MODEL:hf "
            "(from --source DIR, downloaded from hf.co/OWNER/REPO, or from the model card's "
            "repository) and are served by the transformers backend. --report measures "
            "perplexity, with its standard error, against the unquantized source on a text "
            "shipped with llmedge and keeps the figures in the manifest (`llmedge show`). "
            "llama.cpp's and the quantizers' own output goes to the log under LLMEDGE_HOME "
            "unless --verbose."
        ),
    )
    quantize.add_argument(
        "model", metavar="MODEL", help="stored model name (or NAME:f16, NAME:hf, hf.co/OWNER/REPO)"
    )
    targets = quantize.add_mutually_exclusive_group(required=True)
    targets.add_argument(
        "--to",
        dest="types",
        action="append",
        metavar="TYPE",
        choices=LADDER,
        help=f"GGUF type to produce, repeatable: {', '.join(LADDER)}",
    )
    targets.add_argument(
        "--all", dest="types", action="store_const", const=list(LADDER), help="the whole ladder"
    )
    for method, text in (
        ("gptq", "GPTQ through GPTQModel (--bits, --group-size, calibration)"),
        (
            "awq",
            "AWQ, 4-bit, through GPTQModel (--group-size, calibration; on a CPU its search "
            "takes time in proportion to the calibration tokens)",
        ),
        ("nf4", "NF4 with double quantization, through bitsandbytes"),
    ):
        targets.add_argument(
            f"--{method}", dest="method", action="store_const", const=method, help=text
        )
    quantize.add_argument("--report", action="store_true", help="measure perplexity per type")
    quantize.add_argument(
        "--ppl-tokens",
        type=int,
        default=_PPL_TOKENS,
        metavar="N",
        help=f"tokens of the shipped text the report scores (default {_PPL_TOKENS})",
    )
    quantize.add_argument(
        "--verbose", action="store_true", help="show llama.cpp's and the quantizers' output"
    )
    quantize.add_argument(
        "--threads", type=int, default=None, help="CPU threads for GGUF (default: LLMEDGE_THREADS)"
    )
    hf = quantize.add_argument_group("GPTQ, AWQ and NF4")
    hf.add_argument("--bits", type=int, default=4, help="GPTQ bits per weight: 2, 3, 4 or 8")
    hf.add_argument(
        "--group-size", type=int, default=128, help="inputs sharing one scale (GPTQ -1: per column)"
    )
    hf.add_argument(
        "--no-double-quant",
        dest="double_quant",
        action="store_false",
        help="NF4 without quantizing the block scales again",
    )
    hf.add_argument(
        "--source", type=Path, metavar="DIR", help="unquantized Hugging Face folder to start from"
    )
    hf.add_argument(
        "--calibration", type=Path, metavar="FILE", help="calibration text (default: shipped)"
    )
    hf.add_argument(
        "--calibration-samples", type=int, default=_SAMPLES, metavar="N", help="windows of text"
    )
    hf.add_argument(
        "--calibration-tokens", type=int, default=_TOKENS, metavar="N", help="tokens per window"
    )
    hf.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where to quantize and measure (auto: CUDA when present)",
    )
    quantize.set_defaults(handler=run_quantize, method=None)


def _hf_method(args: argparse.Namespace) -> Any:
    if args.method == "gptq":
        return import_extra("quantizers.gptq", "quantize").Gptq(args.bits, args.group_size)
    if args.method == "awq":
        return import_extra("quantizers.awq", "quantize").Awq(args.bits, args.group_size)
    return import_extra("quantizers.nf4", "quantize").Nf4(args.double_quant)


def _quantize_hf(args: argparse.Namespace, store: Store, reporter: RichReporter) -> list[Manifest]:
    flow = import_extra("quantizers.hf_quantize", "quantize")
    calibration = import_extra("quantizers.calibration", "quantize").Calibration(
        args.calibration, args.calibration_samples, args.calibration_tokens
    )
    made: Manifest = flow.quantize_hf(
        store,
        args.model,
        _hf_method(args),
        source_dir=args.source,
        calibration=calibration,
        report=args.report,
        device=args.device,
        reporter=reporter,
        ppl_tokens=args.ppl_tokens,
    )
    return [made]


def run_quantize(args: argparse.Namespace) -> None:
    from llmedge.cli.logs import engine_log
    from llmedge.cli.output import RichReporter

    if args.ppl_tokens < 16:
        from llmedge.errors import InvalidRequestError

        raise InvalidRequestError("--ppl-tokens must be at least 16", param="ppl_tokens")
    settings = Settings()
    store = Store(settings.store_dir)
    with engine_log(settings.home, args.verbose, f"quantize {args.model}"), RichReporter() as r:
        if args.method is not None:
            made = _quantize_hf(args, store, r)
        else:
            made = import_extra("quantizers.gguf", "llama").quantize_model(
                store,
                args.model,
                args.types,
                report=args.report,
                threads=args.threads,
                reporter=r,
                ppl_tokens=args.ppl_tokens,
            )
    print_report(made, args.report)


def print_report(made: list[Manifest], with_perplexity: bool) -> None:
    from rich.table import Table

    from llmedge.cli.output import human_bytes, table_console

    """One row per produced model: size, bits per weight, seconds (and perplexity)."""
    table = Table(box=None, header_style="bold")
    columns = ["MODEL", "SIZE", "BITS/WEIGHT", "SECONDS"]
    if with_perplexity:
        columns += ["PERPLEXITY", "VS SOURCE"]
    for column in columns:
        table.add_column(column, justify="left" if column == "MODEL" else "right")
    for manifest in made:
        r = manifest.quant_report
        assert r is not None
        row = [manifest.ref, human_bytes(manifest.size_bytes), f"{r.bits_per_weight:.2f}"]
        row.append(f"{r.seconds:.2f}")
        if with_perplexity:
            row += [_plus_minus(r.perplexity, r.perplexity_error), f"{r.perplexity_change:+.2%}"]
        table.add_row(*row)
    table_console().print(table)
    first = made[0].quant_report
    if with_perplexity and first is not None:
        print(
            f"perplexity of {first.source}: "
            f"{_plus_minus(first.source_perplexity, first.source_perplexity_error)} "
            f"on {first.eval_tokens} tokens of {first.eval_text}"
        )


def _plus_minus(value: float | None, error: float | None) -> str:
    """A figure with its standard error: `12.345 ± 0.120`."""
    if value is None:
        return "?"
    return f"{value:.3f} ± {error:.3f}" if error is not None else f"{value:.3f}"
