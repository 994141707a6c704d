"""`llmedge quantize` as a user sees it: llama.cpp's own lines go to the log unless --verbose, and
--report measures perplexity on thousands of tokens with a standard error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmedge.cli.logs import log_path

pytestmark = pytest.mark.e2e

# What llama.cpp prints for the tiny model's 64-wide rows: K-quants need rows of 256.
LLAMA_CPP_LINE = "not divisible by 256"


def llmedge(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLMEDGE_HOME": str(home), "COLUMNS": "200"}
    command = [sys.executable, "-m", "llmedge.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_quantize_prints_no_llama_cpp_line_unless_verbose(
    llmedge_home: Path, tiny_gguf: Path
) -> None:
    assert llmedge(llmedge_home, "pull", str(tiny_gguf), "--name", "tiny").returncode == 0
    quiet = llmedge(llmedge_home, "quantize", "tiny", "--to", "q4_k_m")
    assert quiet.returncode == 0, quiet.stderr
    assert LLAMA_CPP_LINE not in quiet.stderr + quiet.stdout
    assert "quantizing tiny:f16 to Q4_K_M" in quiet.stderr and "tiny:q4_k_m" in quiet.stdout
    assert LLAMA_CPP_LINE in log_path(llmedge_home).read_text()

    loud = llmedge(llmedge_home, "quantize", "tiny", "--to", "q4_k_m", "--verbose")
    assert loud.returncode == 0 and LLAMA_CPP_LINE in loud.stderr


def test_the_report_gives_each_perplexity_with_its_error(
    llmedge_home: Path, tiny_gguf: Path
) -> None:
    assert llmedge(llmedge_home, "pull", str(tiny_gguf), "--name", "tiny").returncode == 0
    done = llmedge(
        llmedge_home, "quantize", "tiny", "--to", "q8_0", "--report", "--ppl-tokens", "1024"
    )
    assert done.returncode == 0, done.stderr
    assert "on 1024 tokens of perplexity.txt" in done.stdout
    row = next(line.split() for line in done.stdout.splitlines() if "tiny:q8_0" in line)
    value, plus_minus, error = row[row.index("±") - 1 : row.index("±") + 2]
    assert plus_minus == "±" and 0 < float(error) < float(value)
    shown = llmedge(llmedge_home, "show", "tiny:q8_0")
    assert "±" in shown.stdout and "1024 tokens of perplexity.txt" in shown.stdout

    too_many = llmedge(
        llmedge_home, "quantize", "tiny", "--to", "q8_0", "--report", "--ppl-tokens", "99999"
    )
    errors = [line for line in too_many.stderr.splitlines() if line.startswith("llmedge:")]
    assert too_many.returncode == 1 and "Traceback" not in too_many.stderr
    assert "ask for at most" in errors[0] and "--ppl-tokens" in errors[0]
    assert len(errors) == 1  # refused before any engine ran: no pointer to its log
