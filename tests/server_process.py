"""Starts `llmedge serve` as a real process on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

READY = re.compile(r"llmedge serving (\S+) at (http://\S+)/v1")
# A server whose test run is killed goes too, never left running (util-linux's setpriv).
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "TERM"] if shutil.which("setpriv") else []


@contextmanager
def running_server(
    home: Path, *args: str, timeout_s: float = 60, env: Mapping[str, str] | None = None
) -> Iterator[str]:
    """Yields the server's base URL (ending in /v1) once /health answers; `env` adds to the
    environment it starts with."""
    env = {**os.environ, **(env or {}), "LLMEDGE_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    command = [*DIE_WITH_PARENT, sys.executable, "-m", "llmedge.cli", "serve", "--port", "0", *args]
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + timeout_s
        lines = []
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                raise RuntimeError("server exited:\n" + "".join(lines))
            lines.append(line)
            if match := READY.search(line):
                url = match.group(2)
                break
        else:
            raise TimeoutError("server did not start:\n" + "".join(lines))
        while httpx.get(f"{url}/health").status_code != 200:
            time.sleep(0.05)
        yield f"{url}/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
