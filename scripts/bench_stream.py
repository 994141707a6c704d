"""Streaming speed through `llmedge serve` against llama-cpp-python called in-process.

Both run the same model and prompt, a 128-token greedy answer, several times; the medians of
time to first token and decode tokens/s are printed, with llmedge / in-process as a ratio.

    python scripts/bench_stream.py [--model smollm2-135m] [--tokens 128] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from server_process import running_server

from llmedge import Settings, Store, ensure_model

QUESTION = "Write a long story about a lighthouse keeper and a storm."


def prompt(run: int) -> list[dict[str, str]]:
    """A conversation whose first tokens differ per run, so neither side answers from a cache."""
    return [{"role": "system", "content": f"Run {run}."}, {"role": "user", "content": QUESTION}]


def measure_server(url: str, model: str, tokens: int, run: int) -> tuple[float, float, int]:
    client = openai.OpenAI(base_url=url, api_key="bench", max_retries=0)
    started = time.perf_counter()
    first = last = 0.0
    pieces = 0
    stream = client.chat.completions.create(
        model=model, messages=prompt(run), max_tokens=tokens, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    generated = 0
    for chunk in stream:
        if chunk.usage:
            generated = chunk.usage.completion_tokens
        if chunk.choices and chunk.choices[0].delta.content:
            last = time.perf_counter()
            first = first or last
            pieces += 1
    return first - started, (generated - 1) / (last - first), generated


def measure_in_process(path: Path, tokens: int, ctx: int, threads: int) -> tuple[float, float, int]:
    import llama_cpp

    llama = llama_cpp.Llama(str(path), n_ctx=ctx, n_threads=threads, verbose=False)
    results = []
    for run in range(RUNS):
        started = time.perf_counter()
        first = last = 0.0
        generated = 0
        for chunk in llama.create_chat_completion(
            prompt(run), max_tokens=tokens, temperature=0, stream=True
        ):
            if chunk["choices"][0]["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
                generated += 1
        results.append((first - started, (generated - 1) / (last - first), generated))
    llama.close()
    return _medians(results)


def _medians(rows: list[tuple[float, float, int]]) -> tuple[float, float, int]:
    return (
        statistics.median(r[0] for r in rows),
        statistics.median(r[1] for r in rows),
        int(statistics.median(r[2] for r in rows)),
    )


RUNS = 5


def main() -> None:
    global RUNS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=RUNS)
    args = parser.parse_args()
    RUNS = args.runs

    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home))
        store = Store(settings.store_dir)
        manifest = ensure_model(store, args.model)
        path = store.verified_blob(manifest)
        spawned = time.perf_counter()
        with running_server(Path(home)) as url:
            asked = time.perf_counter()
            cold_start = asked - spawned + measure_server(url, manifest.ref, 8, -1)[0]

            runs = range(RUNS)
            server = _medians([measure_server(url, manifest.ref, args.tokens, r) for r in runs])
        ctx = min(settings.ctx_tokens, manifest.facts.ctx_train_tokens or settings.ctx_tokens)
        local = measure_in_process(path, args.tokens, ctx, settings.threads)

    print(f"model {manifest.ref}, {args.tokens}-token greedy stream, median of {RUNS} runs")
    print(f"{'':28}{'llmedge serve':>16}{'in-process':>14}{'ratio':>8}")
    ttft, speed = (server[0], local[0]), (server[1], local[1])
    print(f"{'time to first token (s)':28}{ttft[0]:16.3f}{ttft[1]:14.3f}{ttft[0] / ttft[1]:8.2f}")
    print(f"{'decode tokens/s':28}{speed[0]:16.1f}{speed[1]:14.1f}{speed[0] / speed[1]:8.2f}")
    print(f"{'serve start to 1st token (s)':28}{cold_start:16.3f}")
    print(f"{'tokens generated':28}{server[2]:16d}{local[2]:14d}")


if __name__ == "__main__":
    main()
