"""Train a small CNN on scikit-learn's digits, convert it to every target, print the bench table.

    python scripts/vision_demo.py [--out DIR] [--litert-python PATH] [--to TARGETS]

About a minute on two CPU cores. Core ML converts here but predicts only on macOS, and
TensorRT needs an NVIDIA GPU: their rows say so instead of showing numbers. TFLite conversion
needs litert-torch, here or in its own venv (`--litert-python`, see vision/litert.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from vision import bench, convert, parse_targets
from vision.digits import train_digits
from vision.report import bench_table, result_line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder to keep (default: a temporary one)")
    parser.add_argument("--to", default="all", help="targets (default: all)")
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads per runtime for latency (default: 1)"
    )
    parser.add_argument(
        "--litert-python",
        type=Path,
        default=os.environ.get("LLMEDGE_LITERT_PYTHON") or None,
        help="interpreter with litert-torch, if not this one (env: LLMEDGE_LITERT_PYTHON)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        started = time.perf_counter()
        model = train_digits(out / "digits")
        print(
            f"trained the digits CNN in {model.train_s:.1f} s: "
            f"{model.accuracy * 100:.1f}% on the {model.test.name} hold-out set"
        )
        manifest = convert(
            str(model.program),
            parse_targets(args.to),
            out / "converted",
            calib=model.calib,
            litert_python=args.litert_python,
            on_result=lambda r: print(result_line(r), flush=True),
        )
        rows = bench(out / "converted", model.test, threads=args.threads)
        print()
        Console(width=200).print(bench_table(rows))
        print(
            f"\ndone in {time.perf_counter() - started:.0f} s; ACC is on 397 held-out digits; "
            f"latency at batch 1 with {args.threads} thread(s) per runtime on this host"
        )
        failed = [r for r in manifest.results.values() if r.status == "failed"]
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
