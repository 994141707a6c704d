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
from typing import IO, Any

import httpx

CHECKOUT = Path(__file__).resolve().parent.parent
READY = re.compile(r"llmedge serving (\S+) at (http://\S+)/v1")
# A server whose test run is killed goes too, never left running (util-linux's setpriv).
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "TERM"] if shutil.which("setpriv") else []


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


class ServerOutput:
    """What the server printed (its log), read as it comes."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()

    def read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def wait_for(self, text: str, timeout_s: float = 30) -> str:
        """The first line holding `text`, once the server has printed it."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: next((line for line in self.lines if text in line), None), timeout_s
            )
        if found is None:
            raise AssertionError(f"the server never printed {text!r}:\n{''.join(self.lines)}")
        return found


@contextmanager
def server_process(
    home: Path,
    *args: str,
    timeout_s: float = 60,
    env: Mapping[str, str] | None = None,
    output: ServerOutput | None = None,
    preexec_fn: object = None,
    cwd: Path | None = None,
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Yields the server process and its base URL (ending in /v1) once /health answers; `env`
    adds to the environment it starts with, `output` collects what it prints, `preexec_fn` runs
    in the child before it starts (e.g. to set resource limits), `cwd` is its working folder
    (this checkout stays first on its import path)."""
    share_preflight(home)
    env = {**os.environ, **(env or {}), "LLMEDGE_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    if cwd is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(CHECKOUT), env.get("PYTHONPATH", "")])
    command = [*DIE_WITH_PARENT, sys.executable, "-m", "llmedge.cli", "serve", "--port", "0", *args]
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=preexec_fn,  # type: ignore[arg-type]
        cwd=cwd,
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
        sink = output or ServerOutput()  # read on, so a chatty server never blocks on its pipe
        sink.lines.extend(lines)
        threading.Thread(target=sink.read, args=(process.stdout,), daemon=True).start()
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
def running_server(home: Path, *args: str, **options: Any) -> Iterator[str]:
    """`server_process`, yielding only the base URL."""
    with server_process(home, *args, **options) as (_, url):
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
