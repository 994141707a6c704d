"""Starts `llmedge serve` as a real process on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import httpx

READY = re.compile(r"llmedge serving (\S+) at (http://\S+)/v1")


@cache
def _verdicts() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="llmedge-preflight-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def share_preflight(home: Path) -> None:
    """Point `home`'s pre-flight verdicts at one folder for this test run: each test's home is
    fresh, but a file's verdict (kept by its digest) is the same in all of them."""
    home.mkdir(parents=True, exist_ok=True)
    link = home / "preflight"
    if not link.exists():
        link.symlink_to(_verdicts(), target_is_directory=True)


@contextmanager
def server_process(
    home: Path, *args: str, timeout_s: float = 60, env: Mapping[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Yields the server process and its base URL (ending in /v1) once /health answers; `env`
    adds to the environment it starts with. Its output is read on (so a chatty server never
    blocks on a full pipe) and kept in `output` on the process."""
    share_preflight(home)
    env = {**os.environ, **(env or {}), "LLMEDGE_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "llmedge.cli", "serve", "--port", "0", *args]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
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
        output: list[str] = lines
        threading.Thread(target=lambda: output.extend(process.stdout or ()), daemon=True).start()
        process.output = output  # type: ignore[attr-defined]
        while httpx.get(f"{url}/health").status_code != 200:
            time.sleep(0.05)
        yield process, f"{url}/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@contextmanager
def running_server(
    home: Path, *args: str, timeout_s: float = 60, env: Mapping[str, str] | None = None
) -> Iterator[str]:
    """Yields the server's base URL (ending in /v1) once /health answers; `env` adds to the
    environment it starts with."""
    with server_process(home, *args, timeout_s=timeout_s, env=env) as (_, url):
        yield url


class MemoryWatch:
    """Polls a process's resident memory, and its children's, until `stop`: the peaks in bytes."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.error = psutil.Error
        self.peak_rss = 0
        self.peak_with_children = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            try:
                own = self.process.memory_info().rss
                children = sum(c.memory_info().rss for c in self.process.children(recursive=True))
            except self.error:
                continue
            self.peak_rss = max(self.peak_rss, own)
            self.peak_with_children = max(self.peak_with_children, own + children)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
