"""Each kind of MODEL `vision convert` takes, and the CLI run as a subprocess.

Untrained digits CNNs are enough here: the point is that every source kind converts and
matches its own reference (max |Δ| ≤ 1e-3, as for the fp32 targets in test_vision_convert).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vision import TARGETS, bench, convert
from vision.digits import load_digits_samples, make_cnn

SHAPE = (1, 1, 8, 8)
FACTORY = "vision.digits:make_cnn"


def fp32_rows_match(out: Path, names: list[str]) -> None:
    rows = {row.target: row for row in bench(out)}
    for name in names:
        row = rows[name]
        assert row.status == "ok", row.status
        assert row.max_abs_diff is not None and row.max_abs_diff <= 1e-3


def test_factory_source(tmp_path: Path) -> None:
    manifest = convert(FACTORY, [TARGETS["onnx"]], tmp_path, input_shape=SHAPE)
    assert manifest.source_kind == "torch-export" and manifest.reference == "reference.pt2"
    fp32_rows_match(tmp_path, ["onnx"])


def test_torchscript_source(tmp_path: Path) -> None:
    torch.manual_seed(1)
    traced = torch.jit.trace(make_cnn().eval(), torch.zeros(SHAPE))  # type: ignore[no-untyped-call]
    path = tmp_path / "cnn.ts"
    traced.save(str(path))
    targets = [TARGETS["onnx"], TARGETS["coreml"], TARGETS["tflite"]]
    manifest = convert(str(path), targets, tmp_path / "out", input_shape=SHAPE)
    assert manifest.reference == "reference.ts"
    assert manifest.results["coreml"].status == "ok", manifest.results["coreml"].message
    # litert-torch needs torch.export, which TorchScript cannot give; the message says what to do.
    assert "give a .pt2 file or a module:factory" in manifest.results["tflite"].message
    fp32_rows_match(tmp_path / "out", ["onnx"])


def test_onnx_source(tmp_path: Path) -> None:
    convert(FACTORY, [TARGETS["onnx"]], tmp_path / "first", input_shape=SHAPE)
    train, _ = load_digits_samples()
    train.head(64).save(tmp_path / "calib.npz")
    onnx_file = str(tmp_path / "first" / "model.onnx")
    targets = [TARGETS["openvino"], TARGETS["ort-int8"], TARGETS["coreml"]]
    manifest = convert(onnx_file, targets, tmp_path / "out", calib=tmp_path / "calib.npz")
    assert manifest.source_kind == "onnx" and manifest.input_shape == list(SHAPE)
    assert manifest.results["ort-int8"].status == "ok", manifest.results["ort-int8"].message
    assert "no ONNX front end" in manifest.results["coreml"].message
    fp32_rows_match(tmp_path / "out", ["openvino"])


@pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is None, reason="torchvision is not installed here"
)
def test_torchvision_factory(tmp_path: Path) -> None:
    spec = "torchvision.models:mobilenet_v3_small"
    convert(spec, [TARGETS["onnx"]], tmp_path, input_shape=(1, 3, 224, 224))
    fp32_rows_match(tmp_path, ["onnx"])


def test_cli_convert_then_bench(tmp_path: Path) -> None:
    _, test = load_digits_samples()
    test.save(tmp_path / "test.npz")
    cli = [sys.executable, "-m", "llmedge.cli", "vision"]
    out = str(tmp_path / "out")
    converted = subprocess.run(
        [*cli, "convert", FACTORY, "--input-shape", "1x1x8x8", "--to", "onnx,tensorrt", "-o", out],
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = converted.stdout.splitlines()
    assert lines[0].split()[:2] == ["onnx", "ok"], converted.stdout + converted.stderr
    if not torch.cuda.is_available():
        assert converted.returncode == 1
        assert lines[1].split()[:2] == ["tensorrt", "unavailable"] and "NVIDIA GPU" in lines[1]
    benched = subprocess.run(
        [*cli, "bench", str(tmp_path / "out"), "--data", str(tmp_path / "test.npz"), "--json"],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    rows = {row["target"]: row for row in json.loads(benched.stdout)}
    assert rows["onnx"]["max_abs_diff"] <= 1e-3
    assert 0 <= rows["onnx"]["accuracy"] == rows["pytorch"]["accuracy"] <= 1
    assert np.isclose(rows["onnx"]["top1_agreement"], 1.0)
