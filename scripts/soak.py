"""Soak test: N streaming clients for M minutes against an llmedge server on loopback.

    python scripts/soak.py [--clients 8] [--minutes 10] [--interval 30]
    python scripts/soak.py --url http://127.0.0.1:8000/v1 --pid PID   # a server already running

Prints, per interval, requests, errors, tokens/s and the server's RSS; at the end the totals and
the RSS drift against its value after the first interval (warm-up). Exits 1 on any error or when
the drift exceeds --max-drift.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bench_serve import question, stream_chat
from server_process import running_server


@dataclass
class Tally:
    requests: int = 0
    errors: int = 0
    tokens: int = 0


@contextmanager
def own_server(home: Path, clients: int) -> Iterator[tuple[str, int]]:
    with running_server(home, "--parallel", str(clients)) as url:
        server = next(
            p for p in psutil.Process().children(recursive=True) if "serve" in p.cmdline()
        )
        yield url, server.pid


def join_all(threads: list[threading.Thread], timeout_s: float) -> bool:
    """Wait up to `timeout_s` for every thread; True when all have ended."""
    end = time.monotonic() + timeout_s
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    return not any(thread.is_alive() for thread in threads)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server's /v1 URL (default: start one)")
    parser.add_argument("--pid", type=int, help="that server's process id, for its RSS")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--interval", type=float, default=30, help="seconds per report line")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--max-drift", type=float, default=0.05, help="allowed RSS drift")
    args = parser.parse_args()

    home = tempfile.TemporaryDirectory()
    given = (
        nullcontext((args.url, args.pid)) if args.url else own_server(Path(home.name), args.clients)
    )
    with given as (url, pid):
        server = psutil.Process(pid) if pid else None
        deadline = time.monotonic() + args.minutes * 60
        tally, lock = Tally(), threading.Lock()

        def client(i: int) -> None:
            n = 0
            while time.monotonic() < deadline:
                try:
                    result = stream_chat(url, args.model, question(i * 100_000 + n), args.tokens)
                    with lock:
                        tally.requests += 1
                        tally.tokens += result.tokens
                except Exception as exc:  # counted and reported, the soak goes on
                    with lock:
                        tally.errors += 1
                    print(f"client {i}: {exc}", file=sys.stderr)
                n += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for thread in threads:
            thread.start()
        print(f"{'t (s)':>7}{'requests':>10}{'errors':>8}{'tokens/s':>10}{'RSS MiB':>10}")
        started = last_at = time.monotonic()
        last_tokens, baseline, rss, finished = 0, None, 0, False
        while not finished:
            finished = join_all(threads, args.interval)
            with lock:
                tokens, requests, errors = tally.tokens, tally.requests, tally.errors
            rss = server.memory_info().rss if server else 0
            baseline = baseline or rss
            now = time.monotonic()
            elapsed, speed = now - started, (tokens - last_tokens) / (now - last_at)
            last_tokens, last_at = tokens, now
            print(f"{elapsed:7.0f}{requests:10d}{errors:8d}{speed:10.1f}{rss / 2**20:10.1f}")
    drift = (rss - baseline) / baseline if baseline else 0.0
    print(
        f"total: {tally.requests} requests, {tally.errors} errors, "
        f"{tally.tokens / (args.minutes * 60):.1f} tokens/s, RSS drift {drift:+.1%} after warm-up"
    )
    home.cleanup()
    return 1 if tally.errors or abs(drift) > args.max_drift else 0


if __name__ == "__main__":
    sys.exit(main())
