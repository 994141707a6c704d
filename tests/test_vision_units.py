"""Fast checks of vision's parsing, data loading, error messages and lazy imports."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmedge.cli import main
from llmedge.errors import BackendUnavailableError, InvalidRequestError
from vision import TARGETS, bench, parse_targets
from vision.convert import convert_one
from vision.data import load_samples
from vision.job import ConvertJob
from vision.source import load_source, parse_shape


def test_import_stays_light() -> None:
    heavy = "{'torch', 'numpy', 'onnx', 'openvino'}"
    code = f"import sys, vision; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_parse_targets_keeps_order_and_drops_repeats() -> None:
    assert [t.name for t in parse_targets("tflite, onnx,tflite")] == ["tflite", "onnx"]
    assert [t.name for t in parse_targets("all")] == list(TARGETS)


def test_unknown_target_lists_the_valid_ones() -> None:
    with pytest.raises(InvalidRequestError, match=r"unknown target onxx; choose from: onnx, "):
        parse_targets("onxx")


def test_cli_reports_a_bad_target_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["vision", "convert", "model.pt2", "--to", "caffe"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmedge: error: unknown target caffe") and "tensorrt" in err


def test_parse_shape() -> None:
    assert parse_shape("1x3x224x224") == (1, 3, 224, 224)
    with pytest.raises(InvalidRequestError, match="NxCxHxW"):
        parse_shape("1x3xax224")


def test_samples_from_npz_and_folder(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "a.npz", x=x, y=np.arange(5))
    np.save(tmp_path / "b.npy", x[:2])
    only_npz = load_samples(tmp_path / "a.npz", (1, 1, 8, 8))
    assert len(only_npz) == 5 and only_npz.y is not None
    folder = load_samples(tmp_path, (1, 1, 8, 8))
    assert len(folder) == 7 and folder.y is None  # labels only when every file has them


def test_samples_with_the_wrong_shape_say_how_to_fix(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", x=np.zeros((2, 3, 4, 4), dtype=np.float32))
    with pytest.raises(InvalidRequestError, match=r"\(3, 4, 4\) but the model takes \(1, 8, 8\)"):
        load_samples(tmp_path / "a.npz", (1, 1, 8, 8))
    np.savez(tmp_path / "b.npz", inputs=np.zeros((2, 1, 8, 8)))
    with pytest.raises(InvalidRequestError, match="no array `x`"):
        load_samples(tmp_path / "b.npz", (1, 1, 8, 8))


def test_missing_model_and_bad_factory(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="cannot find model"):
        load_source(str(tmp_path / "nope.pt2"))
    with pytest.raises(InvalidRequestError, match="is the package installed"):
        load_source("no_such_package_xyz:build")


def test_bench_without_convert_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="run `llmedge vision convert MODEL -o"):
        bench(tmp_path)


def test_int8_without_calibration_is_refused(tmp_path: Path) -> None:
    source = load_source("vision.digits:make_cnn", (1, 1, 8, 8))
    result = convert_one(ConvertJob(source, tmp_path), TARGETS["ort-int8"])
    assert result.status == "failed" and "pass --calib" in result.message


@pytest.mark.skipif(sys.platform == "darwin", reason="Core ML predicts on macOS")
def test_coreml_prediction_off_macos_says_so(tmp_path: Path) -> None:
    from vision import coreml

    with pytest.raises(BackendUnavailableError, match="only on macOS"):
        coreml.load(tmp_path / "model.mlpackage", TARGETS["coreml"])


def test_tensorrt_without_a_gpu_says_so() -> None:
    import torch

    from vision import tensorrt

    if torch.cuda.is_available():
        pytest.skip("this host has an NVIDIA GPU")
    reason = tensorrt.unavailable_reason()
    assert reason is not None and "NVIDIA GPU" in reason


@pytest.mark.skipif(
    importlib.util.find_spec("litert_torch") is not None, reason="litert-torch is installed here"
)
def test_tflite_with_a_missing_litert_interpreter_says_how_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With neither, llmedge makes its own environment (tests/test_vision_litert_env.py).
    source = load_source("vision.digits:make_cnn", (1, 1, 8, 8))
    monkeypatch.setenv("LLMEDGE_LITERT_PYTHON", str(tmp_path / "gone" / "python"))
    result = convert_one(ConvertJob(source, tmp_path), TARGETS["tflite"])
    assert result.status == "failed" and "--litert-python" in result.message
    missing = ConvertJob(source, tmp_path, litert_python=tmp_path / "no-python")
    assert "does not exist" in convert_one(missing, TARGETS["tflite"]).message


def test_a_missing_runtime_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import now fails as if not installed
    source = load_source("vision.digits:make_cnn", (1, 1, 8, 8))
    result = convert_one(ConvertJob(source, tmp_path), TARGETS["openvino"])
    assert result.status == "failed"
    assert "pip install 'llmedge[vision]'" in result.message
