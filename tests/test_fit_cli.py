"""`llmedge fit` run as a subprocess, on the real embedded model and on card files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmedge.fit import FitOptions, estimate_memory, shape_of_file

GIB = 1 << 30
PHI_3_MINI = """
name = "phi-3-mini"
summary = "Phi-3 mini 4k instruct"
license = "mit"
parameters = 3_821_079_552
chat = true
default_quant = "q4_k_m"

[architecture]
family = "phi3"
layers = 32
hidden_size = 3072
attention_heads = 32
kv_heads = 32
head_dim = 96
vocab_size = 32064
context_length = 4096
tied_embeddings = false

[[gguf]]
repo = "test/Phi-3-mini-4k-instruct-gguf"
files = { q4_k_m = "phi-3-mini-q4.gguf", q8_0 = "phi-3-mini-q8.gguf", f16 = "phi-3-mini-f16.gguf" }
"""


def llmedge(home: Path, *args: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m llmedge.cli ARGS` with its own home and any extra environment."""
    env = {**os.environ, "LLMEDGE_HOME": str(home), "COLUMNS": "160", **env_vars}
    return subprocess.run(
        [sys.executable, "-m", "llmedge.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_fit_smollm2_prints_a_table_and_a_recommendation(llmedge_home: Path) -> None:
    done = llmedge(llmedge_home, "fit", "smollm2-135m")
    assert done.returncode == 0, done.stderr
    for text in ("QUANT", "WEIGHTS", "KV", "COMPUTE", "PROCESS", "HEADROOM", "q4_1"):
        assert text in done.stdout
    for text in ("DECODE/S", "AT CTX/S", "PROMPT/S", "recommended: llmedge serve smollm2-135m:"):
        assert text in done.stdout
    assert "available RAM" in done.stdout


def test_fit_json_matches_the_advisor_on_the_real_header(
    llmedge_home: Path, smollm2_gguf: Path
) -> None:
    done = llmedge(
        llmedge_home,
        "fit",
        "smollm2-135m:q4_1",
        "--json",
        "--ctx",
        "2048",
        "8192",
        "--parallel",
        "1",
        "--kv-type",
        "q8_0",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    rows = {(r["quantization"], r["ctx_tokens"]): r for r in report["rows"]}
    assert set(rows) == {("q4_1", 2048), ("q4_1", 8192)}
    process = report["options"]["process_bytes"]
    assert 20 << 20 < process < 1 << 30  # the serve process, measured on this install
    options = FitOptions(
        ctx_tokens=8192, parallel=1, kv_type_k="q8_0", kv_type_v="q8_0", process_bytes=process
    )
    expected = estimate_memory(shape_of_file(smollm2_gguf), options)
    row = rows[("q4_1", 8192)]
    assert row["exact"] and row["total_bytes"] == expected.total_bytes
    # The process as measured, and what serving this model adds to it.
    assert row["process_bytes"] == expected.process_bytes > process
    assert row["kv_bytes"] == 30 * 8192 * 2 * 6 * 34  # q8_0 rows: 34 bytes per 32 values
    assert row["fits"] and row["headroom_bytes"] == report["budget_bytes"] - row["ram_bytes"]
    assert report["recommendation"]["ctx_tokens"] == 8192


def test_fit_a_card_file_before_download_with_a_budget(llmedge_home: Path, tmp_path: Path) -> None:
    card = tmp_path / "phi-3-mini.toml"
    card.write_text(PHI_3_MINI)
    done = llmedge(llmedge_home, "fit", str(card), "--budget", "4GiB", "--parallel", "1")
    assert done.returncode == 0, done.stderr
    assert "phi-3-mini" in done.stdout and "4.0 GiB (--budget)" in done.stdout
    assert "recommended: llmedge serve phi-3-mini:q4_k_m --ctx 4096 --parallel 1" in done.stdout
    report = json.loads(
        llmedge(llmedge_home, "fit", str(card), "--budget", "4GiB", "--json").stdout
    )
    assert report["budget_bytes"] == 4 * GIB and report["budget_source"] == "--budget"
    assert not any(r["exact"] for r in report["rows"])  # estimated from the card
    f16 = [r for r in report["rows"] if r["quantization"] == "f16"]
    assert f16 and not any(r["fits"] for r in f16)  # 7.6 GB of weights cannot fit in 4 GiB


def test_fit_phi3_mini_by_name_when_its_card_ships(llmedge_home: Path) -> None:
    from llmedge.cards import all_cards

    if "phi-3-mini" not in all_cards():
        pytest.skip("no phi-3-mini model card ships yet")
    done = llmedge(llmedge_home, "fit", "phi-3-mini", "--budget", "4GiB")
    assert done.returncode == 0, done.stderr
    assert "phi-3-mini" in done.stdout and "(--budget)" in done.stdout


def test_fit_a_gguf_path(llmedge_home: Path, smollm2_gguf: Path) -> None:
    done = llmedge(llmedge_home, "fit", str(smollm2_gguf), "--json", "--ctx", "512")
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)["rows"]
    assert row["exact"] and row["weights_bytes"] == shape_of_file(smollm2_gguf).weight_bytes


def test_fit_errors_say_what_to_do(llmedge_home: Path) -> None:
    bad_budget = llmedge(llmedge_home, "fit", "smollm2-135m", "--budget", "lots")
    assert bad_budget.returncode == 2 and "6GiB" in bad_budget.stderr
    unknown = llmedge(llmedge_home, "fit", "no-such-model")
    assert unknown.returncode == 1 and "smollm2-135m" in unknown.stderr
    nothing = llmedge(llmedge_home, "fit", "smollm2-135m", "--budget", "10MiB")
    assert nothing.returncode == 0 and "nothing fits" in nothing.stdout


def test_fit_takes_the_serve_flags_and_the_environment(llmedge_home: Path) -> None:
    def rows(*args: str, **env: str) -> dict[str, object]:
        done = llmedge(
            llmedge_home, "fit", "smollm2-135m:q4_1", "--json", "--ctx", "4096", *args, **env
        )
        assert done.returncode == 0, done.stderr
        report: dict[str, object] = json.loads(done.stdout)
        return report

    f16 = rows("--parallel", "1")
    mixed = rows("--parallel", "1", "--kv-type", "q8_0,f16")
    env = rows("--parallel", "1", LLMEDGE_KV_TYPE="q8_0")
    (f16_row,), (mixed_row,), (env_row,) = (r["rows"] for r in (f16, mixed, env))  # type: ignore[misc]
    assert mixed["options"]["kv_type_k"] == "q8_0" and mixed["options"]["kv_type_v"] == "f16"  # type: ignore[index]
    assert f16_row["kv_bytes"] > mixed_row["kv_bytes"] > env_row["kv_bytes"]
    assert env_row["kv_bytes"] == 30 * 4096 * 2 * 6 * 34
    bare = rows("--parallel", "1", "--no-process")
    assert bare["rows"][0]["process_bytes"] == 0  # type: ignore[index]
    assert bare["rows"][0]["total_bytes"] == f16_row["total_bytes"] - f16_row["process_bytes"]  # type: ignore[index]


def test_fit_refuses_what_llama_cpp_refuses(llmedge_home: Path) -> None:
    done = llmedge(llmedge_home, "fit", "smollm2-135m", "--kv-type", "q4_0", "--flash-attn", "off")
    assert done.returncode == 2 and "needs flash attention" in done.stderr
    assert "--flash-attn auto" in done.stderr and "Traceback" not in done.stderr
    bad = llmedge(llmedge_home, "fit", "smollm2-135m", "--kv-type", "q5_1")
    assert bad.returncode == 2 and "--kv-type" in bad.stderr and "q8_0,f16" in bad.stderr


def test_fit_predicts_speed_and_holds_the_recommendation_to_min_speed(
    llmedge_home: Path,
) -> None:
    done = llmedge(llmedge_home, "fit", "smollm2-135m:q4_1", "--json", "--parallel", "1")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    speeds = [r["speed"] for r in report["rows"]]
    assert all(s and s["decode_tokens_per_s"] >= s["decode_full_tokens_per_s"] > 0 for s in speeds)
    assert report["min_speed_tokens_per_s"] == 10.0
    fastest = max(s["decode_tokens_per_s"] for s in speeds)
    # Asking for more than anything here reaches: the fastest is offered, and the reasons say so.
    slow = llmedge(
        llmedge_home, "fit", "smollm2-135m:q4_1", "--json", "--min-speed", str(fastest * 10)
    )
    assert slow.returncode == 0, slow.stderr
    reasons = json.loads(slow.stdout)["reasons"]
    assert any("nothing that fits reaches" in reason for reason in reasons)
