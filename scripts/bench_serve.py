"""Serving benchmark: llmedge against llama-cpp-python in-process and, optionally, llama-server.

    python scripts/bench_serve.py [--llama-server PATH] [--parallel 8] [--tokens 64]

(a) one streaming client: time to first token and decode tokens/s, vs llama-cpp-python in-process;
(b) 1, 4 and 8 concurrent streaming clients: aggregate tokens/s and p50/p99 time to first token;
(c) a chat's turn 5 (about 1,800 tokens of history): time to first token with the prompt cache
    reused vs a cold prompt (the same history behind a different first token).
Each result is printed as a ratio against its baseline. Build a matching llama-server with
scripts/build_llama_server.sh. Both servers get the same model, slots, context and threads.
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
from contextlib import contextmanager
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


def in_process(path: Path, settings: Settings, ctx: int, tokens: int, runs: int) -> list[Stream]:
    import llama_cpp

    llama = llama_cpp.Llama(str(path), n_ctx=ctx, n_threads=settings.threads, verbose=False)
    results = []
    for run in range(runs):
        started = time.perf_counter()
        first = last = 0.0
        generated = 0
        for chunk in llama.create_chat_completion(
            question(1000 + run), max_tokens=tokens, temperature=0, stream=True
        ):
            if chunk["choices"][0]["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
                generated += 1
        results.append(
            Stream(first - started, (generated - 1) / (last - first), generated, last - started)
        )
    llama.close()
    return results


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
def llama_server(
    binary: str, model: Path, settings: Settings, parallel: int, ctx: int
) -> Iterator[str]:
    port = 18000 + (int(time.time()) % 1000)
    command = [
        binary, "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
        "-np", str(parallel), "-c", str(ctx * parallel), "-t", str(settings.threads),
        "--no-webui", "--no-kv-unified",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        yield f"{url}/v1"
    finally:
        process.terminate()
        process.wait(timeout=30)


def measure_server(url: str, model: str, args: argparse.Namespace) -> dict[str, object]:
    stream_chat(url, model, question(-1), 8)  # warm-up
    single = [stream_chat(url, model, question(i), args.tokens) for i in range(args.runs)]
    scaling = {}
    for n, clients in enumerate(args.clients):
        scaling[clients] = concurrent(url, model, clients, args.tokens, 100 * (n + 1))
    turn5 = [chat_turn_five(url, model, s) for s in range(2)]
    return {"single": single, "scaling": scaling, "turn5": turn5}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--llama-server", metavar="PATH", help="llama-server binary to compare")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--ctx", type=int, default=4096, help="context per slot")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--clients", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8]
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home))
        store = Store(settings.store_dir)
        manifest = ensure_model(store, args.model)
        path = store.verified_blob(manifest)
        flags = ("--parallel", str(args.parallel), "--ctx", str(args.ctx))
        with running_server(Path(home), *flags) as url:
            ours = measure_server(url, manifest.ref, args)
        theirs = None
        if args.llama_server:
            with llama_server(args.llama_server, path, settings, args.parallel, args.ctx) as url:
                theirs = measure_server(url, manifest.ref, args)
        local = in_process(path, settings, args.ctx, args.tokens, args.runs)

    def med(streams: list[Stream], field: str) -> float:
        return statistics.median(getattr(s, field) for s in streams)

    print(f"model {manifest.ref}; {args.parallel} slots of {args.ctx} tokens; "
          f"{args.tokens}-token greedy answers; {settings.threads} threads")  # fmt: skip
    print("\n(a) one client, median of", args.runs)
    print(f"{'':26}{'llmedge':>10}{'in-process':>12}{'ratio':>8}")
    for label, field in (
        ("time to first token (s)", "ttft_s"),
        ("decode tokens/s", "decode_tokens_per_s"),
    ):
        a, b = med(ours["single"], field), med(local, field)  # type: ignore[arg-type]
        print(f"{label:26}{a:10.3f}{b:12.3f}{a / b:8.2f}")
    if theirs:
        a = med(ours["single"], "decode_tokens_per_s")  # type: ignore[arg-type]
        b = med(theirs["single"], "decode_tokens_per_s")  # type: ignore[arg-type]
        print(f"{'vs llama-server tokens/s':26}{a:10.1f}{b:12.1f}{a / b:8.2f}")

    print("\n(b) concurrent streaming clients")
    header = f"{'clients':>8}{'llmedge tok/s':>15}{'p50 ttft':>10}{'p99 ttft':>10}"
    print(
        header
        + (
            f"{'llama-server tok/s':>20}{'p50 ttft':>10}{'p99 ttft':>10}{'ratio':>8}"
            if theirs
            else ""
        )
    )
    for clients, (speed, ttfts) in ours["scaling"].items():  # type: ignore[attr-defined]
        row = f"{clients:8d}{speed:15.1f}{pct(ttfts, 0.5):10.3f}{pct(ttfts, 0.99):10.3f}"
        if theirs:
            other, other_ttfts = theirs["scaling"][clients]  # type: ignore[index]
            p50, p99 = pct(other_ttfts, 0.5), pct(other_ttfts, 0.99)
            row += f"{other:20.1f}{p50:10.3f}{p99:10.3f}{speed / other:8.2f}"
        print(row)

    print("\n(c) chat turn 5, time to first token (s)")
    for name, result in (("llmedge", ours), ("llama-server", theirs)):
        if result:
            warm = statistics.median(w for w, _ in result["turn5"])  # type: ignore[attr-defined]
            cold = statistics.median(c for _, c in result["turn5"])  # type: ignore[attr-defined]
            print(f"{name:14} cache reused {warm:.3f}  cold {cold:.3f}  ratio {warm / cold:.3f}")


if __name__ == "__main__":
    main()
