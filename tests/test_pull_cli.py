"""`llmedge pull` as a user runs it: a subprocess against the loopback hub, killed mid-download."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_hub import FakeHub, Faults, cli_env, run_llmedge, start_llmedge, wait_for_size

from llmedge.store import ModelRef, Store
from quantizers.gguf import quantize_file

pytestmark = pytest.mark.e2e

REPO = "test/SmolLM2-135M-Instruct-GGUF"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
REF = "hf.co/test/smollm2-135m-instruct-gguf:q4_1"
SLOW_AFTER = 20 << 20


@pytest.fixture(scope="session")
def smollm2_q8(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Path:
    """A real Q8_0 SmolLM2, requantized from the shipped Q4_1 by llama.cpp."""
    path = tmp_path_factory.getbasetemp() / "SmolLM2-135M-Instruct-Q8_0.gguf"
    if not path.exists():
        quantize_file(smollm2_gguf, path, "q8_0", threads=2, allow_requantize=True)
    return path


@pytest.fixture
def hub(tmp_path: Path, smollm2_gguf: Path) -> Iterator[FakeHub]:
    with FakeHub() as server:
        server.push(REPO, {FILE: smollm2_gguf})
        yield server


@pytest.fixture
def env(llmedge_home: Path, hub: FakeHub, tmp_path: Path) -> dict[str, str]:
    return cli_env(hub, llmedge_home, tmp_path / "hf-home")


def digest(store: Store) -> str:
    return store.resolve(ModelRef.parse(REF)).digest


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_a_pull_stopped_midway_leaves_the_store_usable_and_resumes(
    env: dict[str, str],
    hub: FakeHub,
    store: Store,
    stop: signal.Signals,
    tmp_path: Path,
    smollm2_gguf: Path,
) -> None:
    first = run_llmedge(env, "pull", f"hf.co/{REPO}")
    assert first.returncode == 0, first.stderr
    assert f"pulled {REF}" in first.stdout
    old_digest = digest(store)

    renamed = tmp_path / FILE  # the same model with one metadata byte changed: a new revision
    renamed.write_bytes(smollm2_gguf.read_bytes().replace(b"SmolLM", b"SmolXM", 1))
    hub.push(REPO, {FILE: renamed})
    new = hub.file(REPO, FILE)
    hub.faults[new.sha256] = Faults(slow_after_bytes=SLOW_AFTER)
    partial = store.partial_path(f"sha256-{new.sha256}")
    # As when this suite runs as a background job: SIGINT ignored here must not reach the pull.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process = start_llmedge(env, "pull", f"hf.co/{REPO}")
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        wait_for_size(partial, SLOW_AFTER)
        process.send_signal(stop)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == (130 if stop == signal.SIGINT else -signal.SIGKILL), stderr
    stopped_at = partial.stat().st_size

    # the earlier version is still the current one, intact; the partial file waits
    assert digest(store) == old_digest
    verified = run_llmedge(env, "verify")
    assert verified.returncode == 0, verified.stdout
    assert "partial" in verified.stdout and "0 damaged" in verified.stdout

    hub.faults.clear()
    hub.requests.clear()
    resumed = run_llmedge(env, "pull", f"hf.co/{REPO}")
    assert resumed.returncode == 0, resumed.stderr
    assert hub.ranges() == [f"bytes={stopped_at}-"]
    assert f"`llmedge rollback {REF}` restores it" in resumed.stdout
    assert digest(store) == f"sha256:{new.sha256}"

    rolled = run_llmedge(env, "rollback", REF)
    assert rolled.returncode == 0, rolled.stderr
    assert digest(store) == old_digest


def test_pull_by_card_name_and_quant_flag(
    env: dict[str, str], hub: FakeHub, smollm2_q8: Path
) -> None:
    hub.push("bartowski/SmolLM2-135M-Instruct-GGUF", {smollm2_q8.name: smollm2_q8})
    pulled = run_llmedge(env, "pull", "smollm2-135m", "--q8_0")
    assert pulled.returncode == 0, pulled.stderr
    assert "pulled smollm2-135m:q8_0" in pulled.stdout
    shown = run_llmedge(env, "show", "smollm2-135m:q8_0")
    assert "Q8_0" in shown.stdout and "bartowski/SmolLM2-135M-Instruct-GGUF" in shown.stdout

    listed = run_llmedge(env, "pull", "smollm2-135m", "--list")
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert "bundled" in rows["q4_1"]
    assert "yes" in rows["q8_0"] and "SmolLM2-135M-Instruct-Q8_0.gguf" in rows["q8_0"]
    assert "convert and quantize locally" in rows["q2_k"]

    unknown = run_llmedge(env, "pull", "smollm2-135m:q7_k")
    assert unknown.returncode == 2
    assert "smollm2-135m has no q7_k quantization; available: q2_k" in unknown.stderr


def test_the_headline_pull_asks_for_the_june_phi3_weights(env: dict[str, str]) -> None:
    done = run_llmedge(env, "pull", "phi-3-mini", "--q4_k_m")
    assert done.returncode == 1
    assert "bartowski/Phi-3.1-mini-4k-instruct-GGUF" in done.stderr
    assert "no such repository" in done.stderr


def test_verify_reports_a_damaged_blob(env: dict[str, str], hub: FakeHub) -> None:
    assert run_llmedge(env, "pull", f"hf.co/{REPO}").returncode == 0
    manifest = json.loads(run_llmedge(env, "show", REF, "--json").stdout)
    blob = Path(env["LLMEDGE_HOME"]) / "store" / "blobs" / f"sha256-{manifest['digest'][7:]}"
    with blob.open("r+b") as handle:
        handle.seek(4096)
        handle.write(b"\0" * 16)
    done = run_llmedge(env, "verify")
    assert done.returncode == 1
    assert "corrupt" in done.stdout and f"llmedge rm {REF}" in done.stdout
