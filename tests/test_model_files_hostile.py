"""Model files that pass the structural header checks but would abort or exhaust llama.cpp.

The bounds in `llmedge.gguf.sanity` refuse the known ones at import and load; the pre-flight
load in a child process (`llmedge.backends.llama.preflight`) turns any other abort into an
error, kept by digest.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from gguf_mutants import many_tensors_gguf, patch_value, rewrite_gguf

from llmedge import InvalidModelFileError
from llmedge.backends import LoadOptions
from llmedge.backends.llama.preflight import preflight
from llmedge.gguf import read_gguf_header
from llmedge.gguf.sanity import MAX_TENSORS
from llmedge.store import sha256_of

pytestmark = pytest.mark.e2e
OPTIONS = LoadOptions(ctx_tokens=256, threads=2, parallel=1)


@pytest.fixture(scope="module")
def mutants(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("mutants")
    made = {
        name: patch_value(tiny_gguf, folder / f"{name}.gguf", key, value)
        for name, key, value in (
            ("no-layers", "llama.block_count", 0),
            ("1000-layers", "llama.block_count", 1000),
            ("context-1", "llama.context_length", 1),
        )
    }
    # Within every bound, but llama.cpp asserts the experts add up, and aborts.
    made["experts-no-tensors"] = rewrite_gguf(
        tiny_gguf, folder / "experts.gguf", {"llama.expert_count": 8}
    )
    made["100k-tensors"] = many_tensors_gguf(folder / "many.gguf", 100_000)
    return made


def _as_blob(path: Path, folder: Path) -> Path:
    """`path` under the name the store gives blobs (the pre-flight keeps verdicts by digest)."""
    blob = folder / f"sha256-{sha256_of(path)}"
    blob.write_bytes(path.read_bytes())
    return blob


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("no-layers", "block_count is 0, outside 1..512"),
        ("1000-layers", "block_count is 1000"),
        ("context-1", "context_length is 1"),
        ("100k-tensors", f"100000 tensors, more than the {MAX_TENSORS}"),
    ],
)
def test_facts_llama_cpp_cannot_survive_are_refused_by_the_header_check(
    mutants: dict[str, Path], name: str, reason: str
) -> None:
    with pytest.raises(InvalidModelFileError, match=reason):
        read_gguf_header(mutants[name])


def test_an_abort_in_llama_cpp_becomes_an_error_kept_by_digest(
    mutants: dict[str, Path], tmp_path: Path
) -> None:
    blob = _as_blob(mutants["experts-no-tensors"], tmp_path)
    options = LoadOptions(**{**OPTIONS.__dict__, "preflight_dir": tmp_path / "verdicts"})
    with pytest.raises(InvalidModelFileError, match="SIGABRT: GGML_ASSERT"):
        preflight(blob, options, "test")
    (kept,) = (tmp_path / "verdicts").glob(f"{blob.name[7:]}-*.json")
    assert json.loads(kept.read_text())["ok"] is False
    # The next load answers from the kept verdict, without a child: a marked reason shows it.
    kept.write_text(json.dumps({"ok": False, "reason": "kept verdict"}))
    with pytest.raises(InvalidModelFileError, match="kept verdict"):
        preflight(blob, options, "test")


def test_a_healthy_file_passes_and_its_verdict_is_kept(tiny_gguf: Path, tmp_path: Path) -> None:
    blob = _as_blob(tiny_gguf, tmp_path)
    options = LoadOptions(**{**OPTIONS.__dict__, "preflight_dir": tmp_path / "verdicts"})
    preflight(blob, options, "test")
    (kept,) = (tmp_path / "verdicts").glob("*.json")
    assert json.loads(kept.read_text())["ok"] is True


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"LLMEDGE_HOME": str(home), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "llmedge.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_the_cli_refuses_bad_files_in_one_line(mutants: dict[str, Path], tmp_path: Path) -> None:
    home = tmp_path / "home"
    refused = _cli(home, "pull", str(mutants["no-layers"]), "--name", "broken")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].startswith("llmedge: error: ")
    assert "block_count is 0" in refused.stderr and "Traceback" not in refused.stderr
    stored = _cli(home, "pull", str(mutants["experts-no-tensors"]), "--name", "aborts")
    assert stored.returncode == 0, stored.stderr
    run = _cli(home, "run", "aborts", "--max-tokens", "2", "hi")
    assert run.returncode == 2, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("llmedge: error: ") and "llama.cpp crashed loading it" in last
    assert "Traceback" not in run.stderr
