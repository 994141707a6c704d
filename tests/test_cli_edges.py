"""The CLI's edges: text that is not UTF-8 is refused in one line, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_a_prompt_that_is_not_utf8_is_one_line(tmp_path: Path, smollm2_gguf: Path) -> None:
    env = {"LLMEDGE_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [os.fsencode(sys.executable), b"-m", b"llmedge.cli", b"run", b"caf\xe9 au lait"],
        capture_output=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 2
    (line,) = done.stderr.decode().strip().splitlines()
    assert line == "llmedge: error: the prompt is not UTF-8 text (at character 3); send it as UTF-8"
