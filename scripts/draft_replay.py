"""Draft-policy replay: how fast n-gram guesses decode the speculation benchmark's answers when
every step costs what a table says, the host's noise taken out.

    python scripts/draft_replay.py [--model NAME|FILE.gguf] [--steps 1:8.1,2:16.2,4:25,...]

Every prompt of scripts/bench_speculative.py (both groups) goes through the engine in-process,
without speculation and with n-gram guesses. Each decode step is timed by the table (rows: ms;
measured here when not given, as the benchmark measures it) instead of the clock, and the
scheduler learns its step costs from those figures too, so its choices repeat from run to run.
Greedy answers are the same either way; what differs is the rows each step carries, so the
ratios printed are the draft policy's alone (llmedge/backends/llama/draft_plan.py, drafts.py):
judge a change to it here first, then with the benchmark on real servers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent)]
from bench_speculative import PROMPTS, WRITES_ANEW, step_seconds, stored, verify_times  # noqa: E402

from llmedge import ChatMessage, Engine, SamplingParams, Settings, Store  # noqa: E402
from llmedge.backends.llama import draft_plan, scheduler  # noqa: E402


def parse_steps(text: str) -> dict[int, float]:
    """`1:8.1,2:16.2` as {rows: seconds}."""
    pairs = (item.split(":") for item in text.split(","))
    return {int(rows): float(ms) / 1000 for rows, ms in pairs}


def replay(
    home: Path, ref: str, mode: str, steps: dict[int, float], tokens: int
) -> dict[str, tuple[int, float]]:
    """Each prompt's (answer tokens, table seconds from its first token to its last)."""
    rows_of_steps: list[int] = []
    decode = scheduler.BatchScheduler._decode
    record = draft_plan.StepCost.record

    def counted(self: Any, batch: Any, slots: Any) -> bool:
        rows_of_steps.append(batch.n_tokens)
        return decode(self, batch, slots)

    def from_table(self: Any, rows: int, seconds: float) -> None:
        record(self, rows, step_seconds(steps, rows))

    scheduler.BatchScheduler._decode = counted  # type: ignore[method-assign]
    draft_plan.StepCost.record = from_table  # type: ignore[method-assign]
    settings = Settings(home=home).with_overrides(speculative=mode)
    engine = Engine(settings, Store(settings.store_dir))
    try:
        results = {}
        for label, prompt in {**PROMPTS, **WRITES_ANEW}.items():
            rows_of_steps.clear()
            params = SamplingParams(temperature=0, max_tokens=tokens)
            prepared = engine.prepare_chat(ref, [ChatMessage(role="user", content=prompt)], params)
            answer = sum(len(chunk.token_ids) for chunk in engine.stream_sync(prepared))
            # The first step evaluates the prompt; the answer's speed counts from its first token.
            results[label] = (answer, sum(step_seconds(steps, r) for r in rows_of_steps[1:]))
        return results
    finally:
        engine.close()
        scheduler.BatchScheduler._decode = decode  # type: ignore[method-assign]
        draft_plan.StepCost.record = record  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="a model name or a GGUF file")
    parser.add_argument("--steps", help="rows:ms,... (default: measured here)")
    parser.add_argument("--tokens", type=int, default=160)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as home:
        store = Store(Settings(home=Path(home)).store_dir)
        manifest = stored(store, args.model)
        steps = (
            parse_steps(args.steps)
            if args.steps
            else verify_times(store.verified_blob(manifest), Settings().threads)
        )
        off = replay(Path(home), manifest.ref, "off", steps, args.tokens)
        ngram = replay(Path(home), manifest.ref, "ngram", steps, args.tokens)

    table = ",".join(f"{rows}:{seconds * 1000:.1f}" for rows, seconds in steps.items())
    print(f"model {manifest.ref}; steps (rows:ms) {table}; decode tokens/s by that table")
    print(f"{'':10}{'tokens':>8}{'off':>9}{'ngram':>9}{'ratio':>8}")
    ratios: dict[str, float] = {}
    for label, (answer, off_s) in off.items():
        ngram_tokens, ngram_s = ngram[label]
        assert ngram_tokens == answer, f"{label}: the guesses changed the answer"
        rate_off, rate_ngram = (answer - 1) / off_s, (answer - 1) / ngram_s
        ratios[label] = rate_ngram / rate_off
        print(f"{label:10}{answer:>8}{rate_off:>9.1f}{rate_ngram:>9.1f}{ratios[label]:>8.2f}")
    for name, group in (("copying", PROMPTS), ("writing anew", WRITES_ANEW)):
        print(f"median ngram / off, {name}: {statistics.median(ratios[p] for p in group):.2f}")


if __name__ == "__main__":
    main()
