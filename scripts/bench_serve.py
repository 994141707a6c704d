"""Serving benchmark: `llmedge serve` against llama-server, both up at once, runs interleaved.

    scripts/build_llama_server.sh            # once: llama-server from the same llama.cpp
    python scripts/bench_serve.py --llama-server build/llama-server/cmake-build/bin/llama-server

Both servers run with their default flags (llmedge: `--parallel auto`, here 8 slots of 4096
tokens; llama-server: its automatic 4 slots over one unified cache of the model's trained
context), on the same model and threads. Each round runs every scenario on each server in
turn, the order alternating between rounds (A/B, B/A, …), and the figures are medians over the
rounds, since these machines drift by a quarter between back-to-back runs. Scenarios:

(a) one streaming client: time to first token and decode tokens/s;
(b) 1, 4 and 8 concurrent streaming clients: aggregate tokens/s, p50 and p99 time to first token;
(c) a chat's turn 5 (about 1,800 tokens of history): time to first token with the cache reused,
    and cold (the same history behind a different first token).

`--also FLAGS` adds another llama-server with those flags (`--no-kv-unified`: one cache per
slot, as llmedge has; `-np 8`: as many slots as llmedge), so the effect of each choice shows
separately. Ratios are llmedge / llama-server.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from server_process import running_server

from llmedge import Settings, Store, ensure_model

TOPICS = ["the sea", "a forest", "a city at night", "a mountain", "a desert", "a river", "snow"]


def question(i: int) -> list[dict[str, str]]:
    # A distinct first token per request, so no answer starts from a cached prompt.
    return [
        {"role": "system", "content": f"Request {i}."},
        {"role": "user", "content": f"Write a long poem about {TOPICS[i % len(TOPICS)]}."},
    ]


@dataclass
class Stream:
    ttft_s: float
    decode_tokens_per_s: float
    tokens: int
    wall_s: float


def stream_chat(url: str, model: str, messages: list[dict[str, str]], tokens: int) -> Stream:
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = last = 0.0
    generated = 0
    with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            event = json.loads(line[5:])
            if event.get("usage"):
                generated = event["usage"]["completion_tokens"]
            for choice in event.get("choices", []):
                if choice.get("delta", {}).get("content"):
                    last = time.perf_counter()
                    first = first or last
    speed = (generated - 1) / (last - first) if generated > 1 and last > first else 0.0
    return Stream(first - started, speed, generated, time.perf_counter() - started)


def concurrent(
    url: str, model: str, clients: int, tokens: int, offset: int
) -> tuple[float, list[float]]:
    """Aggregate tokens/s and every client's time to first token."""
    results: list[Stream] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        result = stream_chat(url, model, question(offset + i), tokens)
        with lock:
            results.append(result)

    started = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return sum(r.tokens for r in results) / wall, [r.ttft_s for r in results]


def chat_turn_five(url: str, model: str, session: int) -> tuple[float, float]:
    """Time to first token of turn 5 after turns 1-4 ran (cache warm), and of the same
    history behind a different first token (cold)."""
    filler = " ".join(f"Fact {n}: the number {n} squared is {n * n}." for n in range(30))
    history: list[dict[str, str]] = [{"role": "system", "content": f"Session {session}."}]
    for turn in range(1, 5):
        history.append({"role": "user", "content": f"Turn {turn}. Remember these: {filler}"})
        stream_chat(url, model, history, 8)
        history.append({"role": "assistant", "content": f"Noted, turn {turn}."})
    history.append({"role": "user", "content": "Turn 5. What is 7 squared?"})
    warm = stream_chat(url, model, history, 4).ttft_s
    cold_history = [{"role": "system", "content": f"Cold session {session}."}, *history[1:]]
    cold = stream_chat(url, model, cold_history, 4).ttft_s
    return warm, cold


@contextmanager
def llama_server(binary: str, model: Path, port: int, extra: tuple[str, ...]) -> Iterator[str]:
    """llama-server with its default flags (plus `extra`), once /health answers."""
    command = [binary, "-m", str(model), "--host", "127.0.0.1", "--port", str(port), *extra]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"{binary} exited with {process.returncode}")
            time.sleep(0.1)
        yield f"{url}/v1"
    finally:
        process.terminate()
        process.wait(timeout=30)


@dataclass
class Round:
    single: Stream
    scaling: dict[int, tuple[float, list[float]]]
    turn5: tuple[float, float]


def one_round(url: str, model: str, args: argparse.Namespace, n: int) -> Round:
    single = stream_chat(url, model, question(10_000 * n), args.tokens)
    scaling = {
        clients: concurrent(url, model, clients, args.tokens, 10_000 * n + 100 * clients)
        for clients in args.clients
    }
    return Round(single, scaling, chat_turn_five(url, model, 10_000 * n))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def med(values: list[float]) -> float:
    return statistics.median(values)


def report(names: list[str], rounds: dict[str, list[Round]], args: argparse.Namespace) -> None:
    ours, base = names[0], names[1]
    width = max(14, *(len(name) + 2 for name in names))

    def cols(values: dict[str, float], fmt: str) -> str:
        row = "".join(f"{format(values[name], fmt):>{width}}" for name in names)
        return row + f"{values[ours] / values[base]:>9.2f}"

    print(f"{'':28}" + "".join(f"{name:>{width}}" for name in names) + f"{'ratio':>9}")
    print("(a) one client")
    single = {n: med([r.single.ttft_s for r in rounds[n]]) for n in names}
    print(f"{'  time to first token (s)':28}{cols(single, '.3f')}")
    speed = {n: med([r.single.decode_tokens_per_s for r in rounds[n]]) for n in names}
    print(f"{'  decode tokens/s':28}{cols(speed, '.1f')}")
    print("(b) concurrent streaming clients")
    for clients in args.clients:
        agg = {n: med([r.scaling[clients][0] for r in rounds[n]]) for n in names}
        p50 = {n: med([pct(r.scaling[clients][1], 0.5) for r in rounds[n]]) for n in names}
        p99 = {n: med([pct(r.scaling[clients][1], 0.99) for r in rounds[n]]) for n in names}
        print(f"{f'  {clients} clients: tokens/s':28}{cols(agg, '.1f')}")
        print(f"{f'  {clients} clients: p50 ttft (s)':28}{cols(p50, '.3f')}")
        print(f"{f'  {clients} clients: p99 ttft (s)':28}{cols(p99, '.3f')}")
    print("(c) chat turn 5, time to first token (s)")
    warm = {n: med([r.turn5[0] for r in rounds[n]]) for n in names}
    cold = {n: med([r.turn5[1] for r in rounds[n]]) for n in names}
    print(f"{'  cache reused':28}{cols(warm, '.3f')}")
    print(f"{'  cold':28}{cols(cold, '.3f')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--llama-server", metavar="PATH", required=True)
    parser.add_argument(
        "--also",
        metavar="FLAGS",
        action="append",
        default=[],
        help="another llama-server with these flags besides its defaults (repeatable), "
        "e.g. --also=--no-kv-unified --also='-np 8'",
    )
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--clients", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8]
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as home, ExitStack() as stack:
        settings = Settings(home=Path(home))
        store = Store(settings.store_dir)
        manifest = ensure_model(store, args.model)
        path = store.verified_blob(manifest)
        urls = {"llmedge": stack.enter_context(running_server(Path(home), timeout_s=120))}
        port = 18000 + (int(time.time()) % 1000)
        urls["llama-server"] = stack.enter_context(llama_server(args.llama_server, path, port, ()))
        for i, flags in enumerate(args.also, start=1):
            extra = tuple(flags.split())
            urls[flags] = stack.enter_context(
                llama_server(args.llama_server, path, port + i, extra)
            )
        names = list(urls)
        for url in urls.values():  # warm-up: the first answer of a process is slower
            stream_chat(url, manifest.ref, question(-1), 8)
        rounds: dict[str, list[Round]] = {name: [] for name in names}
        for n in range(args.rounds):
            order = names if n % 2 == 0 else names[::-1]
            for name in order:
                rounds[name].append(one_round(urls[name], manifest.ref, args, n))
            print(f"round {n + 1} of {args.rounds} done", file=sys.stderr)

    print(
        f"model {manifest.ref}; {args.tokens}-token greedy answers; {settings.threads} threads; "
        f"both servers with default flags; medians of {args.rounds} interleaved rounds"
    )
    report(names, rounds, args)


if __name__ == "__main__":
    main()
