"""`vision convert` and `vision bench`: vision models to ONNX, OpenVINO, TFLite, Core ML, TRT."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from vision.targets import TARGETS


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    vision = subparsers.add_parser(
        "vision",
        help="convert and benchmark vision models",
        description="Convert a vision model to edge runtimes and measure each against PyTorch.",
    )
    commands = vision.add_subparsers(dest="vision_command", metavar="COMMAND", required=True)

    convert = commands.add_parser("convert", help="convert a model to targets", description=(
        "Convert MODEL (a torch.export .pt2, a TorchScript file, an .onnx file, or "
        "module:factory such as torchvision.models:mobilenet_v3_small) to each target. "
        "Core ML converts on any OS but predicts only on macOS; TensorRT needs an NVIDIA GPU."
    ))  # fmt: skip
    convert.add_argument("model", metavar="MODEL")
    convert.add_argument(
        "--to", required=True, metavar="TARGETS",
        help=f"comma-separated: {','.join(TARGETS)}, or all",
    )  # fmt: skip
    convert.add_argument(
        "--calib", type=Path, metavar="PATH",
        help="calibration set for INT8 targets: .npz (x, optional y) or a folder of .npy",
    )  # fmt: skip
    convert.add_argument(
        "--input-shape", metavar="NxCxHxW",
        help="input shape for module:factory or dynamic ONNX (default 1x3x224x224)",
    )  # fmt: skip
    convert.add_argument(
        "-o", "--output", type=Path, default=Path("vision-out"), metavar="OUTDIR",
        help="folder to write (default: ./vision-out)",
    )  # fmt: skip
    convert.add_argument(
        "--litert-python", type=Path, metavar="PYTHON",
        default=os.environ.get("LLMEDGE_LITERT_PYTHON") or None,
        help="interpreter with litert-torch (default: the one llmedge makes under LLMEDGE_HOME "
        "on the first TFLite conversion) [env LLMEDGE_LITERT_PYTHON]",
    )  # fmt: skip
    convert.set_defaults(handler=run_convert)

    bench = commands.add_parser("bench", help="measure converted targets against the reference")
    bench.add_argument("outdir", metavar="OUTDIR", type=Path)
    bench.add_argument(
        "--data", type=Path, metavar="PATH",
        help="samples to run: .npz (x, and y for accuracy); default: OUTDIR/probe.npz",
    )  # fmt: skip
    bench.add_argument("--max-rows", type=int, default=1000, help="use at most this many samples")
    bench.add_argument(
        "--threads", type=int, metavar="N",
        help="CPU threads per runtime (default: each runtime's own choice)",
    )  # fmt: skip
    bench.add_argument("--json", action="store_true", help="print JSON")
    bench.set_defaults(handler=run_bench)


def run_convert(args: argparse.Namespace) -> int:
    from vision.convert import convert
    from vision.report import result_line
    from vision.source import parse_shape
    from vision.targets import parse_targets

    targets = parse_targets(args.to)
    shape = parse_shape(args.input_shape) if args.input_shape else None
    manifest = convert(
        args.model,
        targets,
        args.output,
        calib=args.calib,
        input_shape=shape,
        litert_python=args.litert_python,
        on_result=lambda result: print(result_line(result), flush=True),
    )
    missing = [r for r in manifest.results.values() if r.status != "ok"]
    if missing:
        print(f"{len(missing)} of {len(targets)} targets not converted; the lines above say why")
        return 1
    print(f"wrote {args.output}; measure it with `llmedge vision bench {args.output}`")
    return 0


def run_bench(args: argparse.Namespace) -> None:
    from rich.console import Console

    from vision.bench import bench
    from vision.report import bench_json, bench_table

    rows = bench(args.outdir, args.data, max_rows=args.max_rows, threads=args.threads)
    if args.json:
        print(json.dumps(bench_json(rows), indent=2))
    else:
        Console(width=200).print(bench_table(rows))
