"""PyTorch → LiteRT (.tflite) with litert-torch; also runs as a script in another interpreter.

litert-torch pins typing-extensions<4.13 (through xdsl 0.28), which pydantic ≥2.12 and current
openai/anyio releases cannot share an environment with, so it often lives in a venv of its own.
This file therefore imports nothing from llmedge: `python litert_worker.py --program m.pt2 ...`.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any


def convert_module(
    module: Any, input_shape: tuple[int, ...], out: Path, calib: Any | None = None
) -> None:
    """Write `out`: fp32 when `calib` is None, else full INT8 calibrated on `calib` (Nxinput)."""
    import torch

    litert_torch = importlib.import_module("litert_torch")
    sample = (torch.zeros(input_shape),)
    module = _eval_mode(module)
    if calib is None:
        litert_torch.convert(module, sample).export(str(out))
        return
    pt2e = importlib.import_module("litert_torch.quantize.pt2e_quantizer")
    quant_config = importlib.import_module("litert_torch.quantize.quant_config")
    # litert-torch ≥0.9 takes PT2E from torchao, where torch 2.9+ moved it.
    quantize_pt2e = importlib.import_module("torchao.quantization.pt2e.quantize_pt2e")
    quantizer = pt2e.PT2EQuantizer().set_global(
        pt2e.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    )
    graph = torch.export.export(module, sample).module()
    prepared = quantize_pt2e.prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for batch in calib:
            prepared(torch.as_tensor(batch))
    quantized = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    config = quant_config.QuantConfig(pt2e_quantizer=quantizer)
    litert_torch.convert(quantized, sample, quant_config=config).export(str(out))


def _eval_mode(module: Any) -> Any:
    try:
        return module.eval()
    except NotImplementedError:  # a torch.export graph module has no train/eval switch
        return module


def main(argv: list[str] | None = None) -> None:
    import numpy as np
    import torch

    parser = argparse.ArgumentParser(description="Convert a torch.export program to .tflite.")
    parser.add_argument("--program", type=Path, required=True, help="torch.export .pt2 file")
    parser.add_argument("--out", type=Path, help="fp32 .tflite file to write")
    parser.add_argument("--int8-out", type=Path, help="INT8 .tflite file to write (needs --calib)")
    parser.add_argument("--calib", type=Path, help=".npy of calibration batches (BxNx...)")
    args = parser.parse_args(argv)
    if args.int8_out and not args.calib:
        parser.error("--int8-out needs --calib")
    program = torch.export.load(str(args.program))
    shape = next(
        tuple(int(d) for d in node.meta["val"].shape)
        for node in program.graph.nodes
        if node.op == "placeholder" and node.name in program.graph_signature.user_inputs
    )
    if args.out:
        convert_module(program.module(), shape, args.out)
    if args.int8_out:
        convert_module(program.module(), shape, args.int8_out, np.load(args.calib))


if __name__ == "__main__":
    main()
