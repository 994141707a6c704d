"""Updates against the loopback hub: `list --outdated`, `update` downloading only the changed
blob, a corrupt update that leaves the old version serving, `/api/pull` on a stored name, and
`rollback` back to the version before."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fake_hub import FakeHub, Faults, cli_env, run_llmedge
from server_process import running_server
from split_gguf import split_gguf

from llmedge.store import ModelRef, Store

pytestmark = pytest.mark.e2e

REPO = "test/SmolLM2-Split-GGUF"
REF = "hf.co/test/smollm2-split-gguf:q4_1"


@pytest.fixture(scope="session")
def versions(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> list[list[Path]]:
    """Three revisions of the split SmolLM2; each later one changes only the second part."""
    made = []
    for nudge in (0, 1, 2):
        folder = tmp_path_factory.mktemp(f"revision-{nudge}")
        made.append(split_gguf(smollm2_gguf, folder / "SmolLM2-Q4_1.gguf", 200, nudge=nudge))
    return made


@pytest.fixture
def hub(versions: list[list[Path]]) -> Iterator[FakeHub]:
    with FakeHub() as server:
        server.push(REPO, {p.name: p for p in versions[0]})
        yield server


@pytest.fixture
def env(hub: FakeHub, llmedge_home: Path, tmp_path: Path) -> dict[str, str]:
    return cli_env(hub, llmedge_home, tmp_path / "hf-home")


def digest(store: Store) -> str:
    return store.resolve(ModelRef.parse(REF)).digest


def push(hub: FakeHub, parts: list[Path]) -> None:
    hub.push(REPO, {p.name: p for p in parts} | {"README.md": b"# a new commit\n"})


def test_update_fetches_only_the_changed_part(
    env: dict[str, str], hub: FakeHub, store: Store, versions: list[list[Path]], tmp_path: Path
) -> None:
    assert run_llmedge(env, "pull", f"hf.co/{REPO}").returncode == 0
    first = digest(store)
    hub.push(REPO, {p.name: p for p in versions[0]} | {"README.md": b"# docs only\n"})
    current = run_llmedge(env, "list", "--outdated")
    assert current.returncode == 0 and "current" in current.stdout, current.stdout

    push(hub, versions[1])
    outdated = run_llmedge(env, "list", "--outdated")
    assert outdated.returncode == 1 and "outdated" in outdated.stdout, outdated.stdout

    hub.served_bytes = 0
    updated = run_llmedge(env, "update", REF)
    assert updated.returncode == 0, updated.stderr
    assert f"`llmedge rollback {REF}` restores sha256 {first[7:19]}" in updated.stdout
    assert hub.served_bytes == versions[1][1].stat().st_size  # the changed part, nothing more
    assert run_llmedge(env, "list", "--outdated").returncode == 0
    shown = run_llmedge(env, "show", REF)
    assert "2 (current), 1" in shown.stdout

    again = run_llmedge(env, "update", "--all")
    assert again.returncode == 0 and f"{REF}: up to date" in again.stdout


def ndjson(response: httpx.Response) -> list[dict[str, object]]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def test_a_corrupt_update_leaves_the_old_version_serving_and_rollback_returns(
    env: dict[str, str],
    hub: FakeHub,
    store: Store,
    versions: list[list[Path]],
    llmedge_home: Path,
) -> None:
    assert run_llmedge(env, "pull", f"hf.co/{REPO}").returncode == 0
    push(hub, versions[1])
    assert run_llmedge(env, "update", REF).returncode == 0
    second = digest(store)

    push(hub, versions[2])
    changed = hub.file(REPO, versions[2][1].name)
    hub.faults[changed.sha256] = Faults(corrupt=True)
    failed = run_llmedge(env, "update", REF)
    assert failed.returncode == 1 and "arrived damaged" in failed.stderr
    assert "Traceback" not in failed.stderr and digest(store) == second

    with running_server(llmedge_home, REF, env=env) as url:
        base = url.removesuffix("/v1")
        pulled = ndjson(httpx.post(f"{base}/api/pull", json={"model": REF}, timeout=120))
        assert "arrived damaged" in str(pulled[-1].get("error")), pulled[-1]
        assert all(line.get("status") != "success" for line in pulled)
        tags = httpx.get(f"{base}/api/tags", timeout=60).json()["models"]
        assert [m["digest"] for m in tags if m["name"] == REF] == [second[7:]]
        chat = {"model": REF, "messages": [{"role": "user", "content": "Hi"}], "stream": False}
        answered = httpx.post(
            f"{base}/api/chat", json={**chat, "options": {"num_predict": 3}}, timeout=120
        )
        assert answered.status_code == 200 and answered.json()["done"]

        hub.faults.clear()
        pulled = ndjson(httpx.post(f"{base}/api/pull", json={"model": REF}, timeout=120))
        assert pulled[-1] == {"status": "success"}
        third = digest(store)
        assert third not in (second,)
        tags = httpx.get(f"{base}/api/tags", timeout=60).json()["models"]
        assert [m["digest"] for m in tags if m["name"] == REF] == [third[7:]]

    rolled = run_llmedge(env, "rollback", REF)
    assert rolled.returncode == 0, rolled.stderr
    assert digest(store) == second
