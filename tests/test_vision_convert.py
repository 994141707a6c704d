"""End to end on the digits CNN: train, convert to every target this host can make, bench.

Tolerances, on logits of magnitude ~10 over the 397 held-out digits:
- fp32 targets (onnx, openvino, tflite, coreml on macOS): max |Δ| ≤ 1e-3, top-1 agreement ≥ 99.5%;
- INT8 targets (ort-int8, openvino-int8, tflite-int8): accuracy at most 3 points below fp32,
  top-1 agreement with fp32 ≥ 95%;
- TensorRT (NVIDIA GPU only; TF32 may be used): max |Δ| ≤ 5e-2, accuracy within 1 point.

TFLite conversion needs litert-torch, either importable here or in the interpreter named by
LLMEDGE_LITERT_PYTHON (read at import, before the autouse fixture clears LLMEDGE_* variables).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from vision import TARGETS, BenchRow, TargetResult, VisionManifest, bench, convert
from vision.digits import DigitsModel, train_digits
from vision.tensorrt import unavailable_reason

LITERT_PYTHON = os.environ.get("LLMEDGE_LITERT_PYTHON")
HAS_LITERT = bool(LITERT_PYTHON) or importlib.util.find_spec("litert_torch") is not None
LITERT_SKIP = "litert-torch is not here; set LLMEDGE_LITERT_PYTHON to a venv that has it"
TENSORRT_MISSING = unavailable_reason()  # checked before the module's models are built

FP32_ATOL = 1e-3
FP32_AGREEMENT = 0.995
INT8_MAX_DROP = 0.03
INT8_AGREEMENT = 0.95


@dataclass(frozen=True)
class Run:
    model: DigitsModel
    out: Path
    manifest: VisionManifest
    rows: dict[str, BenchRow]

    @property
    def fp32(self) -> BenchRow:
        return self.rows["pytorch"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp = tmp_path_factory.mktemp("vision")
    model = train_digits(tmp / "digits")
    names = [n for n in TARGETS if HAS_LITERT or not n.startswith("tflite")]
    out = tmp / "converted"
    manifest = convert(
        str(model.program),
        [TARGETS[n] for n in names],
        out,
        calib=model.calib,
        litert_python=Path(LITERT_PYTHON) if LITERT_PYTHON else None,
    )
    rows = {row.target: row for row in bench(out, model.test)}
    return Run(model, out, manifest, rows)


def result(run: Run, name: str) -> TargetResult:
    got = run.manifest.results[name]
    assert got.status == "ok", got.message
    return got


def test_the_digits_model_learns(run: Run) -> None:
    assert run.model.accuracy > 0.85
    assert run.fp32.accuracy == pytest.approx(run.model.accuracy)


def test_manifest_and_reference_are_written(run: Run) -> None:
    again = VisionManifest.load(run.out)
    assert again == run.manifest
    assert (run.out / "reference.pt2").is_file() and (run.out / "probe.npz").is_file()
    assert again.input_shape == [1, 1, 8, 8]


@pytest.mark.parametrize("name", ["onnx", "openvino", "tflite"])
def test_fp32_targets_match_pytorch(run: Run, name: str) -> None:
    if name == "tflite" and not HAS_LITERT:
        pytest.skip(LITERT_SKIP)
    for file in result(run, name).files:
        assert (run.out / file).stat().st_size > 0
    row = run.rows[name]
    assert row.max_abs_diff is not None and row.max_abs_diff <= FP32_ATOL
    assert row.top1_agreement is not None and row.top1_agreement >= FP32_AGREEMENT
    assert row.p50_ms is not None and row.p50_ms > 0


@pytest.mark.parametrize("name", ["ort-int8", "openvino-int8", "tflite-int8"])
def test_int8_targets_keep_accuracy(run: Run, name: str) -> None:
    if name == "tflite-int8" and not HAS_LITERT:
        pytest.skip(LITERT_SKIP)
    result(run, name)
    row, fp32 = run.rows[name], run.fp32
    assert row.accuracy is not None and fp32.accuracy is not None
    assert fp32.accuracy - row.accuracy <= INT8_MAX_DROP
    assert row.top1_agreement is not None and row.top1_agreement >= INT8_AGREEMENT
    assert row.max_abs_diff is not None and row.max_abs_diff > 0  # it really is quantized


def test_int8_files_are_smaller_where_weights_dominate(run: Run) -> None:
    # OpenVINO's INT8 IR adds FakeQuantize nodes that outweigh 1,900 weights, so it is left out.
    pairs = [("ort-int8", "onnx")] + ([("tflite-int8", "tflite")] if HAS_LITERT else [])
    for int8, fp32 in pairs:
        assert (run.rows[int8].size_bytes or 0) < (run.rows[fp32].size_bytes or 0)


def test_coreml_converts_here_and_predicts_only_on_macos(run: Run) -> None:
    package = run.out / result(run, "coreml").files[0]
    assert (package / "Manifest.json").is_file()
    row = run.rows["coreml"]
    if sys.platform == "darwin":
        assert row.max_abs_diff is not None and row.max_abs_diff <= FP32_ATOL
    else:
        assert row.size_bytes and row.p50_ms is None and "only on macOS" in row.status


def test_tensorrt_row_is_honest_without_a_gpu(run: Run) -> None:
    got = run.manifest.results["tensorrt"]
    if got.status == "ok":
        pytest.skip("this host built a TensorRT engine; the gpu test checks it")
    assert got.status == "unavailable"
    assert "NVIDIA GPU" in got.message or "tensorrt" in got.message
    assert run.rows["tensorrt"].status.startswith("not converted")


@pytest.mark.gpu
@pytest.mark.skipif(TENSORRT_MISSING is not None, reason=TENSORRT_MISSING or "")
def test_tensorrt_matches_pytorch_on_a_gpu(run: Run) -> None:
    result(run, "tensorrt")
    row, fp32 = run.rows["tensorrt"], run.fp32
    assert row.max_abs_diff is not None and row.max_abs_diff <= 5e-2
    assert row.accuracy is not None and fp32.accuracy is not None
    assert abs(fp32.accuracy - row.accuracy) <= 0.01
