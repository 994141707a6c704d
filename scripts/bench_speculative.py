"""Speculative decoding benchmark: input-grounded prompts through llmedge and llama-server.

    scripts/build_llama_server.sh            # once: llama-server from the same llama.cpp
    python scripts/bench_speculative.py --llama-server PATH/TO/llama-server [--model NAME|FILE.gguf]

Every server is up at once: llmedge with `--speculative off` and `ngram` (its default), and
llama-server with `--spec-type none` and each of its n-gram types, otherwise with default flags.
The prompts ask for answers that repeat their input (a rename in code, a verbatim copy, a quote
and a sentence, a corrected paragraph), the work n-gram guesses speed up; four more, grounded
in their input too, mostly write anew (few guesses hold) and go to llmedge alone, with and
without speculation, which must not slow them. Each round sends every prompt to every server,
the server order alternating between rounds, one client and then four at once; figures are
medians over the rounds (these machines drift by a quarter between runs).
Answers are greedy, so every server should give the same text with or without guesses.

It also measures what a step that verifies guesses costs here by its rows, and from that the
most any speculation could gain on these very answers: a perfect guesser, every guess right and
every step the best size. On a CPU that bound is the host's, set by how a kernel's cost grows
with rows (it differs by quantization type), not by the guesser.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

sys.path[:0] = [
    str(Path(__file__).resolve().parent),
    str(Path(__file__).resolve().parent.parent / "tests"),
]
from bench_serve import Stream, llama_server, stream_chat  # noqa: E402
from server_process import running_server  # noqa: E402

from llmedge import Manifest, Settings, Store, ensure_model, pull  # noqa: E402

CODE = """def total_price(items, tax_rate):
    subtotal = 0
    for item in items:
        subtotal += item.price * item.quantity
    tax = subtotal * tax_rate
    return subtotal + tax


def cheapest(items):
    best = None
    for item in items:
        if best is None or item.price < best.price:
            best = item
    return best
"""
PARAGRAPH = (
    "The lighthouse stood at the end of the pier for a hundred years. Every night its keeper "
    "climbed the ninety steps, trimmed the wick and wound the clockwork that turned the lens. "
    "Ships far out at sea saw the beam sweep the water and knew where the rocks were."
)
PROMPTS = {
    "rename": f"Rename the variable `items` to `products` everywhere in this code. Reply with "
    f"the whole code only.\n\n{CODE}",
    "copy": f"Copy this text exactly, word for word:\n\n{PARAGRAPH}",
    "quote": f"Quote this paragraph in full, then add one sentence about it:\n\n{PARAGRAPH}",
    "fix": "Correct the spelling in this paragraph and reply with the corrected paragraph only:"
    "\n\n" + PARAGRAPH.replace("lighthouse", "lighthuose").replace("night", "nigth"),
}
# Answers grounded in their input that mostly write anew (a format change, comments added, an
# answer in the notes' words): few guesses hold, and speculation must not slow them.
NOTES = (
    "Meeting notes, 3 March. Present: Ana, Ben, Chloe. Ana will send the budget by Friday. Ben "
    "reported that the server migration finished on Tuesday without downtime. Chloe asked for "
    "two more testers for the mobile app. Next meeting: 10 March at 9:00."
)
WRITES_ANEW = {
    "json": "Turn this list into a JSON array of objects with name and age:\n\n"
    "Alice, 31\nBob, 27\nCarol, 45\nDave, 38\nEve, 29",
    "comment": "Add a one-line comment above each function in this code and reply with the "
    f"whole code:\n\n{CODE}",
    "answer": f"{NOTES}\n\nWho will send the budget, and when? Answer in the notes' words.",
    "extract": "From these notes, copy the sentence about the server migration, word for word:"
    f"\n\n{NOTES}",
}
LLAMA_SPEC_TYPES = ("none", "ngram-simple", "ngram-map-k", "ngram-mod", "ngram-cache")
VERIFY_ROWS = (1, 2, 4, 8, 16, 32, 64)


def stored(store: Store, model: str) -> Manifest:
    """The model to measure: a name, or a GGUF file, imported into the store."""
    if Path(model).is_file():
        return pull(store, model, name=Path(model).stem.lower().replace(".", "-"))
    return ensure_model(store, model)


def step_seconds(verify: dict[int, float], rows: int) -> float:
    """A step's seconds for `rows` rows, on the straight line between the counts measured."""
    counts = sorted(verify)
    below = max(c for c in counts if c <= rows)
    above = min((c for c in counts if c >= rows), default=below)
    if above == below:
        return verify[below]
    share = (rows - below) / (above - below)
    return verify[below] + share * (verify[above] - verify[below])


def perfect_gain(verify: dict[int, float], tokens: int) -> float:
    """How much faster than a token a step an answer's `tokens` tokens after its first decode
    if every guess is right and every step has the best number of rows (at most the largest
    count measured): the shortest sum of step times that adds up to `tokens` rows."""
    most = max(verify)
    best = [0.0] * (tokens + 1)
    for n in range(1, tokens + 1):
        best[n] = min(best[n - k] + step_seconds(verify, k) for k in range(1, min(n, most) + 1))
    return tokens * verify[1] / best[tokens] if tokens else 1.0


def verify_times(path: Path, threads: int, repeats: int = 15) -> dict[int, float]:
    """Seconds of a decode step that verifies a draft on this host, by rows: one sequence,
    `rows` tokens at once after a 128-token context, the median of `repeats` steps. Guesses are
    free only while a row costs little against the step: when rows cost much, even drafts that
    are always accepted gain at most rows x time(1 row) / time(rows)."""
    import llama_cpp as lib

    model = lib.llama_model_load_from_file(str(path).encode(), lib.llama_model_default_params())
    params = lib.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch = 1024, 512, 512
    params.n_threads = params.n_threads_batch = threads
    ctx = lib.llama_init_from_model(model, params)
    memory = lib.llama_get_memory(ctx)
    batch = lib.llama_batch_init(512, 0, 1)

    def decode(start: int, rows: int) -> float:
        batch.n_tokens = rows
        for i in range(rows):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = 100 + i, start + i, 1
            batch.seq_id[i][0], batch.logits[i] = 0, True
        began = time.perf_counter()
        if lib.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")
        return time.perf_counter() - began

    decode(0, 128)
    times = {}
    for rows in VERIFY_ROWS:
        steps = []
        for _ in range(repeats):
            steps.append(decode(128, rows))
            lib.llama_memory_seq_rm(memory, 0, 128, -1)
        times[rows] = statistics.median(steps)
    lib.llama_batch_free(batch)
    lib.llama_free(ctx)
    lib.llama_model_free(model)
    return times


def ask(url: str, model: str, prompt: str, tokens: int) -> Stream:
    return stream_chat(url, model, [{"role": "user", "content": prompt}], tokens)


def together(url: str, model: str, prompts: list[str], tokens: int) -> float:
    """Aggregate decode tokens/s of these prompts sent at once."""
    results: list[Stream] = []
    lock = threading.Lock()

    def one(prompt: str) -> None:
        result = ask(url, model, prompt, tokens)
        with lock:
            results.append(result)

    started = time.perf_counter()
    threads = [threading.Thread(target=one, args=(p,)) for p in prompts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(r.tokens for r in results) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="a model name or a GGUF file")
    parser.add_argument("--llama-server", metavar="PATH", required=True)
    parser.add_argument("--tokens", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with ExitStack() as stack:
        urls: dict[str, str] = {}
        for mode in ("off", "ngram"):
            home = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            store = Store(Settings(home=home).store_dir)
            manifest = stored(store, args.model)
            server = running_server(home, "--speculative", mode, timeout_s=120)
            urls[f"llmedge {mode}"] = stack.enter_context(server)
        path = store.verified_blob(manifest)
        port = 18100 + (int(time.time()) % 800)
        for i, kind in enumerate(LLAMA_SPEC_TYPES):
            server = llama_server(args.llama_server, path, port + i, ("--spec-type", kind))
            urls[f"llama-server {kind}"] = stack.enter_context(server)
        names = list(urls)
        for url in urls.values():  # warm-up: the first answer of a process is slower
            ask(url, manifest.ref, "Hello", 8)

        single: dict[str, dict[str, list[float]]] = {n: {p: [] for p in PROMPTS} for n in names}
        four: dict[str, list[float]] = {n: [] for n in names}
        texts: dict[str, dict[str, int]] = {n: {} for n in names}
        anew: dict[str, dict[str, list[float]]] = {
            n: {p: [] for p in WRITES_ANEW} for n in ("llmedge off", "llmedge ngram")
        }
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                for label, prompt in PROMPTS.items():
                    result = ask(urls[name], manifest.ref, prompt, args.tokens)
                    single[name][label].append(result.decode_tokens_per_s)
                    texts[name][label] = result.tokens
                for label, prompt in WRITES_ANEW.items() if name in anew else ():
                    result = ask(urls[name], manifest.ref, prompt, args.tokens)
                    anew[name][label].append(result.decode_tokens_per_s)
                four[name].append(
                    together(urls[name], manifest.ref, list(PROMPTS.values()), args.tokens)
                )
            print(f"round {r + 1} of {args.rounds} done", file=sys.stderr)
        verify = verify_times(path, Settings().threads)  # the servers are idle now

    settings = Settings()
    print(
        f"model {manifest.ref}; {args.tokens}-token greedy answers; {settings.threads} threads; "
        f"medians of {args.rounds} interleaved rounds; decode tokens/s"
    )
    base = "llmedge off"
    best_llama = max(
        (n for n in names if n.startswith("llama-server") and not n.endswith("none")),
        key=lambda n: statistics.median(statistics.median(v) for v in single[n].values()),
    )
    header = f"{'':28}" + "".join(f"{label:>9}" for label in PROMPTS)
    print(header + f"{'median':>9}{'4 clients':>11}{'tokens':>8}")
    medians: dict[str, float] = {}
    for name in names:
        rates = [statistics.median(single[name][label]) for label in PROMPTS]
        medians[name] = statistics.median(rates)
        cells = "".join(f"{rate:>9.1f}" for rate in rates)
        tokens = sum(texts[name].values())
        print(
            f"{name:28}{cells}{medians[name]:>9.1f}{statistics.median(four[name]):>11.1f}{tokens:>8}"
        )
    ours = "llmedge ngram"
    print(
        f"llmedge ngram / llmedge off (single stream):          {medians[ours] / medians[base]:.2f}"
    )
    print(
        f"llmedge ngram / best llama-server ({best_llama.split()[1]}): "
        f"{medians[ours] / medians[best_llama]:.2f}"
    )
    steps = ", ".join(f"{rows} {seconds * 1000:.1f}" for rows, seconds in verify.items())
    print(f"a verifying step here, rows and ms: {steps}")
    answers = {label: texts[base][label] - 1 for label in PROMPTS}  # tokens after the first
    bounds = {label: perfect_gain(verify, n) for label, n in answers.items()}
    cells = ", ".join(f"{label} {gain:.2f}" for label, gain in bounds.items())
    print(
        f"a perfect guesser on these answers (every guess right, the best step sizes) would "
        f"gain {cells}: median {statistics.median(bounds.values()):.2f}x over no speculation"
    )
    ratios = {
        label: statistics.median(anew[ours][label]) / statistics.median(anew[base][label])
        for label in WRITES_ANEW
    }
    cells = ", ".join(f"{label} {ratio:.2f}" for label, ratio in ratios.items())
    print(
        f"answers that mostly write anew, llmedge ngram / llmedge off: {cells}: "
        f"median {statistics.median(ratios.values()):.2f}"
    )
    four_ours = statistics.median(four[ours])
    four_off = statistics.median(four[base])
    print(f"4 clients, llmedge ngram / llmedge off:               {four_ours / four_off:.2f}")
    print(
        f"4 clients, llmedge ngram / {best_llama}: "
        f"{four_ours / statistics.median(four[best_llama]):.2f}"
    )


if __name__ == "__main__":
    main()
