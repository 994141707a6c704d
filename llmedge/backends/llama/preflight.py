"""The first load of each model file happens in a child process, where an abort cannot kill us.

llama.cpp answers many malformed files with a failed assertion (SIGABRT) or a crash instead of
an error, and that would take the server, its other models and every open stream with it. So
before a file is loaded here for the first time, a child process
(`python -m llmedge.backends.llama.probe`) loads it with the same GPU offload, creates a small
context, tokenizes a short prompt and generates a token, then exits. Only a clean exit lets the
real load go ahead. The verdict is kept under LLMEDGE_HOME (`preflight/<sha256>-<load>.json`,
keyed by the file's digest, the GPU offload and the llama.cpp version), so each file pays for
this once. A crash is kept as a refusal; what says nothing about the file (the
child killed for memory, a timeout, a file that changed under it) is not kept and is tried
again next time.

Why this design rather than serving every model from a child process: nearly every abort a file
can cause happens in loading, context creation or the first decode, which the pre-flight covers,
while a child per model would put a process hop in every token's path and duplicate the
engine's streaming. `llmedge.gguf.sanity` refuses the known bad headers before even this runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

from llmedge.backends.base import LoadOptions
from llmedge.errors import InvalidModelFileError, LlmedgeError
from llmedge.files import write_text_atomic

PREFLIGHT_TIMEOUT_S = 600.0
PROBE_CTX_TOKENS = 256
_PROBE = "llmedge.backends.llama.probe"
_BLOB_NAME = re.compile(r"^sha256-([0-9a-f]{64})$")
# Signals that mean llama.cpp itself gave up on the file: kept as a refusal.
_FILE_FAULTS = {signal.SIGABRT, signal.SIGSEGV, signal.SIGILL, signal.SIGFPE}
_REFUSED_EXIT = 3  # the probe's exit code when llama.cpp refused the file with an error


def _key(path: Path, options: LoadOptions, version: str) -> str | None:
    match = _BLOB_NAME.match(path.name)
    if match is None:
        return None  # not a store blob: no digest to keep a verdict under
    shape = json.dumps([version, options.gpu_layers])
    return f"{match.group(1)}-{hashlib.sha256(shape.encode()).hexdigest()[:12]}"


def _reason(stderr: str) -> str:
    """The line of llama.cpp's output that says why (its failed assertion, without the source
    path), else its last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if "GGML_ASSERT" in line:
            return line[line.index("GGML_ASSERT") :][:300]
        if "error" in line.lower():
            return line[-300:]
    return lines[-1][-300:] if lines else "no output"


def _kept_verdict(path: Path) -> dict[str, object] | None:
    try:
        verdict = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # none kept, or unreadable: test again
    return verdict if isinstance(verdict, dict) else None


def preflight(path: Path, options: LoadOptions, version: str) -> None:
    """Load `path` once in a child process unless a verdict for it is kept in
    `options.preflight_dir`; `InvalidModelFileError` when llama.cpp aborts or refuses it."""
    key = _key(path, options, version)
    verdicts = options.preflight_dir
    kept = verdicts / f"{key}.json" if verdicts is not None and key is not None else None
    verdict = _kept_verdict(kept) if kept is not None else None
    if verdict is not None:
        if verdict.get("ok"):
            return
        raise InvalidModelFileError(str(path), str(verdict.get("reason")))
    ok, reason, final = _run_child(path, options)
    if kept is not None and final:
        with contextlib.suppress(OSError):  # a full disk costs the cache, not the load
            kept.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(kept, json.dumps({"ok": ok, "reason": reason}), kept.parent)
    if not ok:
        if final:
            raise InvalidModelFileError(str(path), reason)
        raise LlmedgeError(f"could not test-load {path}: {reason}")


def _run_child(path: Path, options: LoadOptions) -> tuple[bool, str, bool]:
    """(loaded cleanly, why not, whether the outcome says something about the file)."""
    # What breaks a file breaks it in any context: the test load keeps the cost of one small one.
    small = replace(
        options,
        ctx_tokens=min(options.ctx_tokens, PROBE_CTX_TOKENS),
        parallel=1,
        speculative="off",
        draft_path=None,
        preflight_dir=None,
    )
    shape = asdict(small)
    command = [sys.executable, "-m", _PROBE, str(path), json.dumps(shape)]
    # This llmedge, wherever the child starts; and an abort need not start a debugger.
    root = str(Path(__file__).resolve().parents[2])
    python_path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": python_path, "GGML_NO_BACKTRACE": "1"}
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, errors="replace", env=env,
            timeout=PREFLIGHT_TIMEOUT_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return False, f"llama.cpp took more than {PREFLIGHT_TIMEOUT_S:g} s to load it", False
    if done.returncode == 0:
        return True, "", True
    if done.returncode == _REFUSED_EXIT:
        return False, done.stdout.strip()[-500:] or _reason(done.stderr), True
    if done.returncode < 0:
        sig = signal.Signals(-done.returncode)
        cause = _reason(done.stderr)
        if sig in _FILE_FAULTS:
            return False, f"llama.cpp crashed loading it ({sig.name}: {cause})", True
        if sig == signal.SIGKILL:
            return False, "the test load was killed (out of memory?)", False
        return False, f"the test load ended with {sig.name} ({cause})", False
    return False, f"the test load failed ({_reason(done.stderr)})", False
