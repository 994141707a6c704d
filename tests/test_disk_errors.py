"""A disk that says no (full, read-only, not a folder) is one line that says what to free or fix,
from the CLI and from the server, never a traceback or a bare 500."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fake_backend import ScriptedBackend, ScriptedModel
from scripted_server import serving

from llmedge import Engine, Settings, Store, pull
from llmedge.cli import main
from llmedge.files import file_error


def test_a_full_disk_names_what_to_free() -> None:
    error = file_error(OSError(errno.ENOSPC, "No space left on device", "/home/u/x.part"))
    assert error is not None and error.http_status == 507
    assert "/home/u/x.part" in str(error) and "llmedge rm" in str(error)
    assert file_error(ConnectionRefusedError(errno.ECONNREFUSED, "refused")) is None


def test_the_cli_turns_a_disk_error_into_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/data/store/tmp/x")

    monkeypatch.setattr("llmedge.cli.models.run_list", full)
    assert main(["list"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("llmedge: error: no disk space left to write") and "\n" not in err


def test_a_home_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = subprocess.run(
        [sys.executable, "-m", "llmedge.cli", "run", "hi"],
        capture_output=True,
        text=True,
        env={"LLMEDGE_HOME": str(blocker / "home"), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("llmedge: error: ") and "a-file" in line


class FullDiskModel(ScriptedModel):
    def render_chat(self, messages: object, tools: object = None, template: object = None) -> str:
        raise OSError(errno.ENOSPC, "No space left on device", "/data/llmedge/cache")


def test_the_server_answers_a_full_disk_with_507(store: Store, smollm2_gguf: Path) -> None:
    pull(store, "smollm2-135m")
    engine = Engine(Settings(), store, backend=ScriptedBackend(FullDiskModel(4096)))
    with serving(engine) as url:
        body = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}]}
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        assert response.status_code == 507
        assert response.json()["error"]["code"] == "insufficient_storage"
        ollama = httpx.post(f"{url}/api/chat", json={**body, "stream": False}, timeout=60)
        assert ollama.status_code == 507 and "free some space" in ollama.json()["error"]
