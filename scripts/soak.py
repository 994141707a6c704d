"""Soak test: many streaming clients over two models for minutes, with the traffic that once lost
work: clients that leave mid-answer, clients that ask for keep_alive 0, and requests for a third
model that force evictions. On a server it starts on loopback.

    python scripts/soak.py [--clients 16] [--minutes 10] [--interval 30] [--seed 1]

Half the requests use the OpenAI API (SSE), half the Ollama API (NDJSON). A quarter of them are
abandoned at a random token; one client in ten sends keep_alive 0 every time; every few seconds a
request for a third model needs room (at most two models stay loaded). It checks that every answer
that completed has a finish reason that matches its token count, that the only errors are the
documented 503s (busy, or a model being unloaded; each with Retry-After), that a cancelled request
frees its slot within one decode step (the engine's own counters), that nothing is left running at
the end, and that the server's RSS drifts by at most --max-drift after warm-up. Exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from server_process import running_server
from tiny_gguf import build_tiny_gguf

from llmedge import Settings, Store, ensure_model, pull

TOPICS = ["the sea", "a forest", "a city at night", "a mountain", "a desert", "a river", "snow"]
ABANDON_SHARE = 0.25


@dataclass
class Tally:
    requests: int = 0
    completed: int = 0
    abandoned: int = 0
    tokens: int = 0
    busy: int = 0  # documented 503s
    errors: list[str] = field(default_factory=list)
    finishes: Counter[str] = field(default_factory=Counter)


class Soak:
    """The clients, their shared tally and the server they talk to."""

    def __init__(self, base: str, models: tuple[str, str, str], args: argparse.Namespace) -> None:
        self.base = base  # no /v1
        self.models = models
        self.args = args
        self.tally = Tally()
        self.lock = threading.Lock()
        self.deadline = time.monotonic() + args.minutes * 60

    def error(self, text: str) -> None:
        with self.lock:
            self.tally.errors.append(text)
        print(f"error: {text}", file=sys.stderr)

    def client(self, i: int) -> None:
        rng = random.Random(self.args.seed * 1000 + i)
        model = self.models[i % 2]
        keep_alive_zero = i % 10 == 0
        n = 0
        while time.monotonic() < self.deadline:
            ollama = keep_alive_zero or rng.random() < 0.5
            abandon_at = (
                rng.randint(1, self.args.tokens // 2) if rng.random() < ABANDON_SHARE else 0
            )
            messages = [
                {"role": "system", "content": f"Client {i}, request {n}."},
                {"role": "user", "content": f"Write a long poem about {rng.choice(TOPICS)}."},
            ]
            try:
                if ollama:
                    self.ollama(model, messages, abandon_at, keep_alive_zero)
                else:
                    self.openai(model, messages, abandon_at)
            except httpx.HTTPError as exc:
                self.error(f"client {i}: {type(exc).__name__}: {exc}")
            n += 1

    def evictor(self) -> None:
        """Now and then ask for the third model, which needs one of the two to go."""
        while time.monotonic() < self.deadline - self.args.evict_every_s:
            time.sleep(self.args.evict_every_s)
            body = {"model": self.models[2], "messages": [{"role": "user", "content": "hi"}]}
            response = httpx.post(
                f"{self.base}/v1/chat/completions", json={**body, "max_tokens": 4}, timeout=120
            )
            self.counted(response, "evictor")

    def counted(self, response: httpx.Response, who: str) -> bool:
        """True for a 200; a documented 503 is counted as busy; anything else is an error."""
        with self.lock:
            self.tally.requests += 1
        if response.status_code == 200:
            return True
        if response.status_code == 503 and int(response.headers.get("retry-after", "0")) > 0:
            with self.lock:
                self.tally.busy += 1
            time.sleep(0.5)
            return False
        self.error(f"{who}: HTTP {response.status_code}: {response.text[:200]}")
        return False

    def finished(self, finish: str | None, tokens: int, who: str) -> None:
        limit = self.args.tokens
        honest = (finish == "length" and tokens == limit) or (finish == "stop" and tokens <= limit)
        with self.lock:
            self.tally.completed += 1
            self.tally.tokens += tokens
            self.tally.finishes[str(finish)] += 1
        if not honest:
            self.error(f"{who}: finish {finish!r} with {tokens} of {limit} tokens")

    def openai(self, model: str, messages: list[dict[str, str]], abandon_at: int) -> None:
        body = {
            "model": model,
            "messages": messages,
            "max_tokens": self.args.tokens,
            "temperature": 0.7,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with httpx.stream(
            "POST", f"{self.base}/v1/chat/completions", json=body, timeout=300
        ) as response:
            if response.status_code != 200:
                response.read()
                self.counted(response, "openai")
                return
            self.counted(response, "openai")
            seen, finish, tokens = 0, None, None
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if "error" in event:
                    self.error(f"openai stream: {event['error']}")
                    return
                if event.get("usage"):
                    tokens = int(event["usage"]["completion_tokens"])
                for choice in event.get("choices") or ():
                    finish = choice.get("finish_reason") or finish
                    if choice.get("delta", {}).get("content"):
                        seen += 1
                if abandon_at and seen >= abandon_at and finish is None:
                    with self.lock:
                        self.tally.abandoned += 1
                    return
            if finish is None or tokens is None:
                self.error("openai stream ended without a finish or usage")
                return
            self.finished(finish, tokens, "openai")

    def ollama(
        self, model: str, messages: list[dict[str, str]], abandon_at: int, keep_alive_zero: bool
    ) -> None:
        body: dict[str, object] = {
            "model": model,
            "messages": messages,
            "stream": True,
            "options": {"num_predict": self.args.tokens, "temperature": 0.7},
        }
        if keep_alive_zero:
            body["keep_alive"] = 0
        with httpx.stream("POST", f"{self.base}/api/chat", json=body, timeout=300) as response:
            if response.status_code != 200:
                response.read()
                self.counted(response, "ollama")
                return
            self.counted(response, "ollama")
            seen = 0
            for line in response.iter_lines():
                if not line:
                    continue
                event = json.loads(line)
                if "error" in event:
                    self.error(f"ollama stream: {event['error']}")
                    return
                if event.get("done"):
                    self.finished(
                        event.get("done_reason"), int(event.get("eval_count", 0)), "ollama"
                    )
                    return
                seen += 1
                if abandon_at and seen >= abandon_at:
                    with self.lock:
                        self.tally.abandoned += 1
                    return  # leaving the block closes the connection mid-answer
            self.error("ollama stream ended without done")


_METRIC = re.compile(r"^llmedge_(\w+)(?:\{([^}]*)\})? (\S+)$")


def scrape(base: str) -> dict[str, float]:
    """The server's /metrics as {name: value}, the per-model engine gauges reduced to maxima."""
    values: dict[str, float] = {}
    for line in httpx.get(f"{base}/metrics", timeout=30).text.splitlines():
        match = _METRIC.match(line)
        if match:
            name, value = match.group(1), float(match.group(3))
            values[name] = max(values.get(name, value), value)
    return values


def prepare_models(home: Path) -> tuple[str, str, str]:
    """Two real models (the same weights in two blobs) and a tiny third one."""
    settings = Settings(home=home)
    store = Store(settings.store_dir)
    first = ensure_model(store, settings.default_model)
    other = home / "other.gguf"
    shutil.copyfile(store.verified_blob(first), other)
    with other.open("ab") as handle:
        handle.write(b"\0")
    second = pull(store, str(other), name="smollm2-twin")
    third = pull(
        store, str(build_tiny_gguf(store.verified_blob(first), home / "tiny.gguf")), name="tiny"
    )
    return first.ref, second.ref, third.ref


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--interval", type=float, default=30, help="seconds per report line")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--parallel", default="auto", help="serve's --parallel (its default)")
    parser.add_argument("--evict-every-s", type=float, default=15)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-drift", type=float, default=0.05, help="allowed RSS drift")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="llmedge-soak-"))
    models = prepare_models(home)
    flags = ("--parallel", args.parallel, "--max-loaded-models", "2", models[0])
    with running_server(home, *flags, timeout_s=120) as url:
        base = url.removesuffix("/v1")
        server = next(
            p for p in psutil.Process().children(recursive=True) if "serve" in p.cmdline()
        )
        soak = Soak(base, models, args)
        threads = [threading.Thread(target=soak.client, args=(i,)) for i in range(args.clients)]
        threads.append(threading.Thread(target=soak.evictor))
        for thread in threads:
            thread.start()
        print(f"{'t (s)':>7}{'requests':>10}{'done':>7}{'left':>6}{'503':>6}{'errors':>8}"
              f"{'tokens/s':>10}{'peak RSS MiB':>14}")  # fmt: skip
        started = last_at = time.monotonic()
        last_tokens, baseline, peak = 0, 0, 0
        worst: dict[str, float] = {}
        while any(thread.is_alive() for thread in threads):
            # The interval's peak RSS (models come and go with evictions and keep_alive 0).
            peak = 0
            while time.monotonic() < last_at + args.interval and any(
                thread.is_alive() for thread in threads
            ):
                peak = max(peak, server.memory_info().rss)
                time.sleep(0.5)
            for name, value in scrape(base).items():
                worst[name] = max(worst.get(name, value), value)
            baseline = baseline or peak
            now = time.monotonic()
            with soak.lock:
                t = soak.tally
                speed = (t.tokens - last_tokens) / (now - last_at)
                last_tokens, last_at = t.tokens, now
                counts = f"{t.requests:10d}{t.completed:7d}{t.abandoned:6d}{t.busy:6d}"
                print(f"{now - started:7.0f}{counts}{len(t.errors):8d}{speed:10.1f}"
                      f"{peak / 2**20:14.1f}")  # fmt: skip
        time.sleep(1)  # the last abandoned answers end within a step
        final = scrape(base)
    t = soak.tally
    drift = (peak - baseline) / baseline if baseline else 0.0
    step_max = worst.get("engine_decode_step_seconds_max", 0.0)
    cancel_max = worst.get("engine_cancel_free_seconds_max", 0.0)
    leaked = final.get("requests_in_flight", 0.0)
    print(
        f"total: {t.requests} requests, {t.completed} completed ({dict(t.finishes)}), "
        f"{t.abandoned} abandoned mid-answer, {t.busy} documented 503s, {len(t.errors)} errors, "
        f"{t.tokens / (args.minutes * 60):.1f} tokens/s"
    )
    print(
        f"slots: a cancelled request held its slot {cancel_max * 1000:.1f} ms at most; "
        f"the longest decode step took {step_max * 1000:.1f} ms; "
        f"{leaked:g} still in flight at the end"
    )
    print(
        f"memory: peak RSS {baseline / 2**20:.1f} MiB in the first interval, "
        f"{peak / 2**20:.1f} MiB in the last: drift {drift:+.1%} after warm-up"
    )
    shutil.rmtree(home, ignore_errors=True)
    ok = not t.errors and abs(drift) <= args.max_drift and leaked == 0
    ok = ok and cancel_max <= step_max + 0.01
    print("soak: " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
