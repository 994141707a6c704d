"""The advisor against peak memory measured on real models (tests/data/fit_measurements.csv).

`scripts/fit_accuracy.py` measured each point in a fresh process with mmap off; here the current
advisor predicts the same points from the committed model shapes, so a change to the estimate
that drifts from reality fails CI. Targets: median |error| <= 3 %, p95 <= 8 %, and no
under-estimate beyond max(2 %, 16 MiB).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from llmedge.fit import ModelShape, shape_of_file

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "fit_accuracy", REPO / "scripts" / "fit_accuracy.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def test_predictions_meet_the_accuracy_targets(script: ModuleType) -> None:
    compared = script.compare(script.load_measurements())
    models = {c.label.split()[0] for c in compared}
    assert {"smollm2-135m-q4_1", "gemma3-270m-q4_k_m"} <= models and len(compared) >= 15
    result = script.accuracy(compared)
    assert result.median <= 0.03, f"median |error| {result.median:.1%}"
    assert result.p95 <= 0.08, f"p95 |error| {result.p95:.1%}"
    under = [c.label for c in compared if not c.within_underestimate_limit]
    assert not under, f"under-estimated beyond max(2%, 16 MiB): {under}"


def test_the_grid_spans_contexts_batches_and_attention_kinds(script: ModuleType) -> None:
    points = [p for p, _ in script.load_measurements()]
    assert min(p.ctx for p in points) <= 512 and max(p.ctx for p in points) >= 32768
    assert {p.kv_type for p in points} == {"f16", "q8_0", "q4_0"}
    assert {p.flash_attn for p in points} == {True, False}
    assert {p.swa_full for p in points} == {True, False} and max(p.parallel for p in points) > 1
    assert len({p.ubatch for p in points}) >= 4


def test_committed_shapes_are_what_the_header_reader_sees(
    script: ModuleType, smollm2_gguf: Path
) -> None:
    shapes = json.loads(script.SHAPES.read_text())
    stored = ModelShape.from_dict(shapes["smollm2-135m-q4_1"])
    assert shape_of_file(smollm2_gguf, "smollm2-135m-q4_1") == stored
