"""Starting and stopping `llmedge serve`: a taken port is one line and an exit code; SIGTERM lets
every open stream end with its last event ([DONE] over SSE, a final line over NDJSON)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_process import server_process

pytestmark = pytest.mark.e2e
TIMEOUT = 120
# A string of at least this many characters: the model cannot end its answer early.
LONG = {"type": "string", "minLength": 1500}


def test_a_second_server_on_a_taken_port_says_so_in_one_line(
    tmp_path: Path, smollm2_gguf: Path
) -> None:
    with server_process(tmp_path / "home") as (_, url):
        port = url.rsplit(":", 1)[1].removesuffix("/v1")
        second = subprocess.run(
            [sys.executable, "-m", "llmedge.cli", "serve", "--port", port],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env={"LLMEDGE_HOME": str(tmp_path / "other"), "PATH": "/usr/bin:/bin"},
        )
    assert second.returncode == 1
    assert "Traceback" not in second.stderr
    last = second.stderr.strip().splitlines()[-1]
    assert last.startswith(f"llmedge: error: cannot listen on 127.0.0.1:{port}: the port is taken")


def _read(response: httpx.Response, lines: list[str], started: threading.Event) -> None:
    for line in response.iter_lines():
        if line:
            lines.append(line)
            started.set()


def test_sigterm_ends_open_streams_with_their_last_event(
    tmp_path: Path, smollm2_gguf: Path
) -> None:
    sse_lines: list[str] = []
    ndjson_lines: list[str] = []
    events = [threading.Event(), threading.Event()]
    with server_process(tmp_path / "home") as (process, url):
        base = url.removesuffix("/v1")
        fmt = {"type": "json_schema", "json_schema": {"name": "long", "schema": LONG}}
        chat: dict[str, Any] = {
            "messages": [{"role": "user", "content": "Write a long story."}],
            "stream": True,
            "max_tokens": 3000,
            "response_format": fmt,
        }
        generate = {"model": "smollm2-135m", "prompt": "Tell a story.", "format": LONG}
        with (
            httpx.Client(timeout=TIMEOUT) as client,
            client.stream("POST", f"{url}/chat/completions", json=chat) as sse,
            client.stream("POST", f"{base}/api/generate", json=generate) as ndjson,
        ):
            readers = [
                threading.Thread(target=_read, args=(sse, sse_lines, events[0])),
                threading.Thread(target=_read, args=(ndjson, ndjson_lines, events[1])),
            ]
            for reader in readers:
                reader.start()
            for started in events:
                assert started.wait(TIMEOUT), "no stream started"
            process.send_signal(signal.SIGTERM)
            for reader in readers:
                reader.join(TIMEOUT)
        # Uvicorn ends by raising the signal again once it has drained: a SIGTERM exit.
        assert process.wait(TIMEOUT) in (0, -signal.SIGTERM)
    assert sse_lines[-1] == "data: [DONE]"
    last_event = json.loads(sse_lines[-2].removeprefix("data: "))
    # The engine ends each open generation with an error (a retryable 503): its event comes
    # last; until then a cancelled generation ends with its finish reason.
    assert "error" in last_event or last_event["choices"][0]["finish_reason"] is not None
    final = json.loads(ndjson_lines[-1])
    assert "error" in final or final["done"] is True
