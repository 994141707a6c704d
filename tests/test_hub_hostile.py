"""What a hostile mirror, a remote client naming local files, or a full disk can do to the store:
nothing outside LLMEDGE_HOME, no file read from the server's folder, one-line errors, data safe."""

from __future__ import annotations

import errno
import resource
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fake_hub import FakeHub, cli_env, run_llmedge
from server_process import running_server

from llmedge.cli import main
from llmedge.errors import DownloadError, StoreError
from llmedge.hub import hf, pull
from llmedge.store import ModelRef, Store

REPO = "test/SmolLM2-135M-Instruct-GGUF"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture
def hub(smollm2_gguf: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    with FakeHub() as server:
        server.push(REPO, {FILE: smollm2_gguf, "README.md": b"# model\n"})
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        for name in ("HF_TOKEN", "HF_HUB_OFFLINE"):
            monkeypatch.delenv(name, raising=False)
        yield server


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sha256", "../../x"),
        ("sha256", "A" * 64),
        ("git_sha1", "../../../etc/x"),
        ("path", "../x.gguf"),
    ],
)
def test_a_hostile_listing_is_refused_before_anything_is_written(
    store: Store, hub: FakeHub, llmedge_home: Path, tmp_path: Path, field: str, value: str
) -> None:
    setattr(hub.file(REPO, FILE), field, value)
    if field == "path":  # the listing names the file by a path that climbs out
        files = hub.repos[REPO].commits[-1][1]
        files[value] = files.pop(FILE)
    outside = files_under(tmp_path) - files_under(llmedge_home)
    with pytest.raises(DownloadError, match="not what a hub sends"):
        pull(store, f"hf.co/{REPO}")
    assert hub.served_bytes == 0 and store.manifests() == []
    assert files_under(tmp_path) - files_under(llmedge_home) == outside  # nothing new outside
    assert not store.downloads_dir.exists() or not any(store.downloads_dir.iterdir())


def test_a_hostile_commit_id_is_refused(hub: FakeHub) -> None:
    repo = hub.repos[REPO]
    repo.commits[-1] = ("../../commit", repo.commits[-1][1])
    with pytest.raises(DownloadError, match="a commit id"):
        hf.fetch_snapshot(REPO)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.e2e
def test_api_pull_never_reads_the_servers_folder(
    tmp_path: Path, smollm2_gguf: Path, llmedge_home: Path
) -> None:
    folder = tmp_path / "served-from"
    folder.mkdir()
    (folder / "model.gguf").write_bytes(smollm2_gguf.read_bytes()[:4096])
    (folder / "smollm2-1.7b").write_bytes(b"GGUF")  # a file named like a model card
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}", "HF_HUB_OFFLINE": ""}
    with running_server(llmedge_home, env=env, cwd=folder) as url:
        base = url.removesuffix("/v1")

        def pull_error(name: str) -> tuple[int, str]:
            answer = httpx.post(f"{base}/api/pull", json={"model": name, "stream": False})
            return answer.status_code, str(answer.json().get("error"))

        for present, absent in (
            ("model.gguf", "absent.gguf"),
            ("./model.gguf", "./absent.gguf"),
            (str(folder / "model.gguf"), str(folder / "absent.gguf")),
        ):
            status, said = pull_error(present)
            assert status == 400 and (status, said.replace(present, absent)) == pull_error(absent)
        status, said = pull_error("smollm2-1.7b")
        assert status == 503 or "cannot reach" in said
        names = [m["name"] for m in httpx.get(f"{base}/api/tags").json()["models"]]
    assert names == ["smollm2-135m:q4_1"]  # nothing was imported from the folder


def limit_file_size(size_bytes: int) -> object:
    """A preexec_fn: regular files of the child cannot grow past `size_bytes` (a full disk)."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size_bytes, size_bytes))

    return apply


@pytest.mark.e2e
def test_a_pull_that_fills_the_disk_ends_in_one_line_and_resumes(
    hub: FakeHub, llmedge_home: Path, tmp_path: Path, store: Store
) -> None:
    import subprocess
    import sys

    env = cli_env(hub, llmedge_home, tmp_path / "hf-home")
    done = subprocess.run(
        [sys.executable, "-m", "llmedge.cli", "pull", f"hf.co/{REPO}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit_file_size(30 << 20),  # type: ignore[arg-type]
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("llmedge: error")]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert len(errors) == 1 and "the disk is full while downloading" in errors[0]
    assert "`llmedge rm` unused models" in errors[0]
    assert store.manifests() == []
    resumed = run_llmedge(env, "pull", f"hf.co/{REPO}")
    assert resumed.returncode == 0, resumed.stderr
    assert hub.ranges()[-1].startswith("bytes=")  # it went on from what the first pull kept


@pytest.mark.e2e
def test_a_full_disk_serves_stored_models_and_fails_pulls_honestly(
    hub: FakeHub, llmedge_home: Path, tmp_path: Path, store: Store, smollm2_gguf: Path
) -> None:
    stored = pull(store, str(smollm2_gguf), name="stored")
    for stamp in store.blobs_dir.glob("*.verified"):
        stamp.unlink()  # the load must hash the blob, and cannot record that it did
    env = cli_env(hub, llmedge_home, tmp_path / "hf-home")
    with running_server(llmedge_home, stored.ref, env=env, preexec_fn=limit_file_size(0)) as url:
        base = url.removesuffix("/v1")
        chat = {"model": stored.ref, "messages": [{"role": "user", "content": "Hi"}]}
        answer = httpx.post(f"{base}/api/chat", json={**chat, "stream": False}, timeout=60)
        assert answer.status_code == 200 and answer.json()["done"]
        lines = httpx.post(f"{base}/api/pull", json={"model": f"hf.co/{REPO}"}, timeout=60)
        last = lines.text.strip().splitlines()[-1]
        assert '"error"' in last and "disk is full" in last and "success" not in lines.text
        answer = httpx.post(f"{base}/api/pull", json={"model": f"hf.co/{REPO}", "stream": False})
        assert answer.status_code >= 400 and "disk is full" in answer.json()["error"]
    assert [m.ref for m in store.manifests()] == [stored.ref]


def test_verify_on_a_full_disk_still_checks_everything(
    store: Store,
    smollm2_gguf: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pull(store, str(smollm2_gguf), name="stored")

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("llmedge.store.blobs.write_text_atomic", full)
    assert main(["verify"]) == 0
    assert "checked 1 blobs: 1 ok, 0 damaged" in capsys.readouterr().out
    manifest = store.resolve(ModelRef.parse("stored"))
    for stamp in store.blobs_dir.glob("*.verified"):
        stamp.unlink()
    assert store.verified_blob(manifest).is_file()  # a load needs no stamp written

    def unreadable(*args: object, **kwargs: object) -> str:
        raise OSError(errno.EIO, "Input/output error", str(store.blob_path(manifest.digest)))

    monkeypatch.setattr("llmedge.store.blobs.sha256_of", unreadable)
    assert main(["verify"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("llmedge: error: verifying the store failed")
    with pytest.raises(StoreError):
        store.verify()
