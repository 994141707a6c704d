"""The README's command reference is the CLI's own --help, regenerated, so it cannot drift."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO_ROOT


def test_readme_command_reference_is_current() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "gen_cli_reference.py"), "--check"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},  # this checkout's CLI, not an install
    )
    assert done.returncode == 0, done.stdout + done.stderr
