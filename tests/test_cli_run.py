"""The CLI as a user runs it: a subprocess, on the real embedded model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def llmedge(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLMEDGE_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "llmedge.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_run_streams_an_answer_from_the_default_model(
    llmedge_home: Path, smollm2_gguf: Path
) -> None:
    done = llmedge(
        llmedge_home, "run", "--temperature", "0", "--max-tokens", "12", "--verbose", "Hi!"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert re.search(r"answer \d+ tokens at [\d.]+ tokens/s", done.stderr)
    listed = llmedge(llmedge_home, "list")
    assert "smollm2-135m:q4_1" in listed.stdout  # the embedded default was imported on first use


def test_run_names_a_model_first_and_reads_stdin(llmedge_home: Path, smollm2_gguf: Path) -> None:
    args = ("run", "smollm2-135m", "--temperature", "0", "--max-tokens", "8")
    from_stdin = llmedge(llmedge_home, *args, stdin="What is 2+2?")
    from_args = llmedge(llmedge_home, *args, "What is 2+2?")
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert from_stdin.stdout == from_args.stdout and from_stdin.stdout.strip()


def test_run_with_an_unknown_model_fails_with_one_clear_line(llmedge_home: Path) -> None:
    done = llmedge(llmedge_home, "run", "-m", "ghost-model", "hello")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "llmedge: error: model 'ghost-model' is not in the store; run `llmedge pull ghost-model`"
    ]


def test_pull_show_and_rm_a_local_file(llmedge_home: Path, smollm2_gguf: Path) -> None:
    pulled = llmedge(llmedge_home, "pull", str(smollm2_gguf), "--name", "mine")
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.startswith("pulled mine:q4_1")
    shown = llmedge(llmedge_home, "show", "mine")
    for expected in ("llama", "134.5M", "Q4_1", "8192", "<|im_start|>", "sha256"):
        assert expected in shown.stdout
    assert llmedge(llmedge_home, "show", "mine", "--template").stdout.startswith("{% for message")
    assert llmedge(llmedge_home, "rm", "mine").stdout.strip() == "removed mine:q4_1"
    assert llmedge(llmedge_home, "show", "mine").returncode == 1
    assert not list((llmedge_home / "store" / "blobs").glob("sha256-*"))


def test_pull_refuses_a_file_that_is_not_gguf(llmedge_home: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "notes.gguf"
    bogus.write_text("hello, not a model")
    done = llmedge(llmedge_home, "pull", str(bogus))
    assert done.returncode == 2
    assert "not a readable GGUF model" in done.stderr
    assert llmedge(llmedge_home, "list").stdout.startswith("no models stored yet")


def test_pull_of_an_unknown_quantization_lists_the_real_ones(llmedge_home: Path) -> None:
    done = llmedge(llmedge_home, "pull", "smollm2-135m:q9_x")
    assert done.returncode == 2
    assert "no q9_x quantization" in done.stderr and "q4_1" in done.stderr
