"""KV cache types and flash attention: the settings, the flags of serve/run/chat, the refusals
before loading, and what reaches llama.cpp (the real model: the serve process's memory falls,
`/api/show` and `llmedge show` report it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ollama
import openai
import pytest
from pydantic import ValidationError

from llmedge.cli.main import build_parser
from llmedge.fit import FitOptions, estimate_memory, shape_of_file
from llmedge.settings import Settings, parse_kv_type

READY = re.compile(r"llmedge serving (\S+) at (http://\S+)/v1")
MIB = 1 << 20


def test_kv_types_parse_one_for_both_or_k_and_v() -> None:
    assert parse_kv_type("q8_0") == ("q8_0", "q8_0")
    assert parse_kv_type(" Q8_0 , f16") == ("q8_0", "f16")
    for bad in ("q5_1", "q8_0,q8_0,f16", "", "f16,"):
        with pytest.raises(ValueError, match="K,V"):
            parse_kv_type(bad)


def test_settings_normalise_and_refuse_what_llama_cpp_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().kv_types == ("f16", "f16") and Settings().flash_attn == "auto"
    assert Settings(kv_type="q8_0,q8_0").kv_type == "q8_0"
    assert Settings(kv_type="q8_0,f16", flash_attn="off").kv_types == ("q8_0", "f16")
    with pytest.raises(ValidationError, match="needs flash attention"):
        Settings(kv_type="q4_0", flash_attn="off")
    with pytest.raises(ValidationError, match="flash_attn"):
        Settings(flash_attn="sometimes")  # type: ignore[arg-type]
    monkeypatch.setenv("LLMEDGE_KV_TYPE", "f16,q4_0")
    monkeypatch.setenv("LLMEDGE_FLASH_ATTN", "on")
    assert Settings().kv_types == ("f16", "q4_0") and Settings().flash_attn == "on"


@pytest.mark.parametrize("command", ["serve", "run", "chat"])
def test_serve_run_and_chat_take_the_flags(command: str) -> None:
    parser = build_parser()
    args = parser.parse_args([command, "--kv-type", "q8_0", "--flash-attn", "on"])
    assert args.kv_type == "q8_0" and args.flash_attn == "on"
    with pytest.raises(SystemExit):
        parser.parse_args([command, "--flash-attn", "maybe"])


def llmedge(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmedge.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "COLUMNS": "200", **env},
    )


def test_a_refused_combination_is_one_line_before_loading() -> None:
    done = llmedge("run", "--kv-type", "q8_0", "--flash-attn", "off", "Hi")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "--flash-attn auto" in done.stderr
    env = llmedge("run", "Hi", LLMEDGE_KV_TYPE="q9")
    assert env.returncode == 2 and "--kv-type / LLMEDGE_KV_TYPE" in env.stderr


@pytest.mark.e2e
def test_run_answers_with_a_quantized_cache_and_flash_attention() -> None:
    done = llmedge(
        "run", "--kv-type", "q8_0,q4_0", "--flash-attn", "on", "--temperature", "0",
        "--max-tokens", "8", "--verbose", "Name a colour.",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() and "answer" in done.stderr


def _peak_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))


@contextmanager
def serving(home: Path, *args: str) -> Iterator[tuple[str, int]]:
    """`llmedge serve` as a process: its URL (without /v1) and its pid, once it is ready."""
    command = [sys.executable, "-m", "llmedge.cli", "serve", "--port", "0", *args]
    env = {**os.environ, "LLMEDGE_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert process.stdout is not None
        lines = []
        while not (match := READY.search(line := process.stdout.readline())):
            lines.append(line)
            if not line and process.poll() is not None:
                raise RuntimeError("server exited:\n" + "".join(lines))
        yield match.group(2), process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.e2e
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status")
def test_a_q8_0_cache_shrinks_the_serve_process_and_show_reports_it(
    tmp_path: Path, smollm2_gguf: Path
) -> None:
    ctx = 8192
    peaks = {}
    for kind in ("f16", "q8_0"):
        flags = ("--ctx", str(ctx), "--parallel", "1", "--kv-type", kind)
        with serving(tmp_path / kind, *flags) as (url, pid):
            peaks[kind] = _peak_bytes(pid)  # llama.cpp clears its whole KV buffer at load
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
            answer = client.chat.completions.create(
                model="smollm2-135m",
                messages=[{"role": "user", "content": "Hi"}],
                max_tokens=4,
                temperature=0,
            )
            assert answer.choices[0].message.content is not None
            info = ollama.Client(host=url).show("smollm2-135m").modelinfo or {}
            assert info["llmedge.kv_cache_type_k"] == info["llmedge.kv_cache_type_v"] == kind
            assert info["llmedge.flash_attention"] == "auto" and info["llmedge.loaded"] is True
    f16_kv = estimate_memory(shape_of_file(smollm2_gguf), FitOptions(ctx_tokens=ctx)).kv_bytes
    assert f16_kv == 180 * MIB
    saved = peaks["f16"] - peaks["q8_0"]
    assert saved >= 0.4 * f16_kv, f"q8_0 saved {saved / MIB:.1f} MiB of {f16_kv / MIB:.0f} MiB"


def test_show_reports_the_cache_the_settings_give(llmedge_home: Path) -> None:
    assert llmedge("pull", "smollm2-135m").returncode == 0
    shown = llmedge("show", "smollm2-135m", LLMEDGE_KV_TYPE="q8_0", LLMEDGE_PARALLEL="1")
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if line.strip().startswith("kv cache"))
    # 30 layers x 4096 cells x (K + V) x 192 values, in 34-byte blocks of 32 values
    assert f"q8_0 K, q8_0 V: {30 * 4096 * 2 * 6 * 34 / MIB:.1f} MiB for 1 x 4096 tokens" in row
    assert "flash attention   auto" in shown.stdout
