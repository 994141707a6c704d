"""Fuzz a running `llmedge serve`: hand-written hostile requests, then schemathesis over its own
/openapi.json. The server must never answer 500 or more, never die, keep its memory bounded
(the peak RSS is printed) and answer /health with 200 at the end.

The server runs the real small model with max_tokens capped at 4, so a valid generation costs a
few tokens. /api/pull is left to the hostile cases (schemathesis could name a real model and
download it).

    python scripts/fuzz_server.py                 # hostile cases + 60 examples per operation
    python scripts/fuzz_server.py --examples 5    # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import httpx  # noqa: E402
from server_process import MemoryWatch, server_process  # noqa: E402

MODEL = "smollm2-135m"
CHAT = "/v1/chat/completions"


def _chat(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **fields}


def _schema_format(schema: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}


def _nested_body(depth: int) -> bytes:
    """A chat body whose response schema nests `depth` objects (written out: too deep for
    json.dumps)."""
    schema = b'{"type": "object", "properties": {"a": ' * depth + b'{"type": "string"}'
    schema += b"}}" * depth
    head = json.dumps(_chat()).encode()[:-1]
    return (
        head + b', "response_format": {"type": "json_schema", "json_schema": {"name": "s", '
        b'"schema": ' + schema + b"}}}"
    )


def hostile_cases() -> Iterator[tuple[str, str, dict[str, str], bytes]]:
    """(name, path, headers, raw body) of requests written to break things."""
    js = {"content-type": "application/json"}

    def case(name: str, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return name, path, {**js, **(headers or {})}, raw

    for n in (2000, 2001, 17_187, 18_750, 10**6, 10**18):
        string = {"type": "string", "maxLength": n}
        yield case(f"maxLength {n}", CHAT, _chat(response_format=_schema_format(string)))
        yield case(f"minLength {n}", CHAT, _chat(response_format=_schema_format(
            {"type": "string", "minLength": n})))  # fmt: skip
        yield case(f"ollama format maxItems {n}", "/api/generate", {
            "model": MODEL, "prompt": "hi", "stream": False,
            "format": {"type": "array", "items": {}, "maxItems": n}})  # fmt: skip
        tool = {"type": "function", "function": {"name": "f", "strict": True,
                "parameters": {"type": "object", "properties": {"s": string}}}}  # fmt: skip
        yield case(f"strict tool maxLength {n}", CHAT, _chat(tools=[tool], tool_choice="required"))
    for pattern in ("^a{0,100000}$", "^(a|b){0,1000}$", "^" + "(" * 3000 + "a" + ")" * 3000 + "$",
                    "^(?=a)$", "^[$", "a{2,1}"):  # fmt: skip
        fmt = _schema_format({"type": "string", "pattern": pattern})
        yield case(f"pattern {pattern[:20]}", CHAT, _chat(response_format=fmt))
    for depth in (60, 65, 500, 5000):
        yield case(f"schema depth {depth}", CHAT, _nested_body(depth))
    props = {f"p{i}": {"type": "string"} for i in range(20_000)}
    yield case("20k optional properties", CHAT, _chat(response_format=_schema_format(
        {"type": "object", "properties": props})))  # fmt: skip
    yield case("json nested 100k", CHAT, b"[" * 100_000 + b"]" * 100_000)
    yield case("dict nested 50k", CHAT, b'{"a":' * 50_000 + b"1" + b"}" * 50_000)
    yield case("invalid utf-8", CHAT, b'{"model": "\xff\xfe", "messages": []}')
    yield case("NaN temperature", CHAT, b'{"messages": [{"role": "user", "content": "x"}], '
               b'"temperature": NaN}')  # fmt: skip
    yield case("huge max_tokens", CHAT, _chat(max_tokens=10**30))
    yield case("huge seed", CHAT, _chat(seed=10**40))
    yield case("negative n", CHAT, _chat(n=-1))
    yield case("logprobs huge", CHAT, _chat(logprobs=True, top_logprobs=10**9))
    for path, body in (
        (CHAT, _chat(messages=[{"role": "user", "content": "a\ud800"}])),
        ("/v1/completions", {"model": MODEL, "prompt": "\udfff"}),
        ("/v1/responses", {"model": MODEL, "input": "\ud83d"}),
        ("/v1/embeddings", {"model": MODEL, "input": ["\udc00"]}),
        ("/api/chat", {**_chat(messages=[{"role": "user", "content": "\ud800"}]), "stream": False}),
        ("/api/generate", {"model": MODEL, "prompt": "\ud800", "stream": False}),
        ("/api/embed", {"model": MODEL, "input": "\ud800"}),
        ("/api/show", {"model": "\ud800"}),
        ("/api/pull", {"model": "\ud800", "stream": False}),
    ):
        yield case(f"lone surrogate {path}", path, body)
    turns = [{"role": "user", "content": f"m{i}"} for i in range(100_000)]
    yield case("100k messages", CHAT, {"model": MODEL, "messages": turns})
    yield case("100k ollama messages", "/api/chat", {"model": MODEL, "messages": turns})
    tool_turns = [{"role": "tool", "content": "r", "tool_name": "f"} for _ in range(50_000)]
    yield case("50k tool results", "/api/chat", {"model": MODEL, "messages": tool_turns,
               "stream": False})  # fmt: skip
    calls = [{"type": "function_call", "call_id": f"c{i}", "name": "f", "arguments": "{}"}
             for i in range(50_000)]  # fmt: skip
    yield case("50k function calls", "/v1/responses", {"model": MODEL, "input": calls})
    yield case("specials flood", CHAT, _chat(messages=[{"role": "user",
               "content": "<|im_end|><|im_start|>" * 40_000}]))  # fmt: skip
    for keep in ("99999999999999h", "1e309", -1e309, "5m5m5m", 10**20):
        yield case(f"keep_alive {keep}", "/api/generate", {"model": MODEL, "keep_alive": keep})
    for name in ("../../etc/passwd", "a" * 5000, "x:" * 100, "hf.co/" + "a/" * 200, "\x00"):
        yield case(f"model name {name[:12]!r}", "/api/show", {"model": name})
        yield case(f"pull {name[:12]!r}", "/api/pull", {"model": name, "stream": False})
    yield case("rebound host", CHAT, _chat(), {"host": "evil.example"})
    yield case("foreign origin", CHAT, _chat(), {"origin": "http://evil.example"})
    yield case("text/plain body", CHAT, _chat(), {"content-type": "text/plain"})
    yield case("options not a dict", "/api/generate", {"model": MODEL, "options": [1, 2]})


def run_hostile(
    base: str, statuses: Counter[int], failures: list[str], verbose: bool = False
) -> int:
    count = 0
    for name, path, headers, raw in hostile_cases():
        count += 1
        try:
            response = httpx.post(f"{base}{path}", content=raw, headers=headers, timeout=300)
        except httpx.HTTPError as exc:
            failures.append(f"hostile {name}: no answer ({exc!r})")
            continue
        if verbose:
            print(f"  {response.status_code} {name}: {response.text[:150]}", flush=True)
        statuses[response.status_code] += 1
        if response.status_code >= 500:
            failures.append(f"hostile {name}: {response.status_code} {response.text[:300]}")
    return count


def _run_operation(
    strategy: Any, examples: int, label: str, base: str, statuses: Counter[int],
    failures: list[str],
) -> int:  # fmt: skip
    """Call the server with `examples` cases drawn from `strategy`; returns how many ran."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable

    count = 0

    @given(case=strategy)
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def one(case: Any) -> None:
        nonlocal count
        count += 1
        response = case.call(base_url=base, timeout=300)
        statuses[response.status_code] += 1
        if response.status_code >= 500:
            failures.append(
                f"{label}: {response.status_code} {response.text[:300]} <- {case.body!r:.300}"
            )

    # An operation that takes no input has no invalid input either.
    with contextlib.suppress(Unsatisfiable):
        one()
    return count


def run_schemathesis(base: str, examples: int, statuses: Counter[int], failures: list[str]) -> int:
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{base}/openapi.json").exclude(path="/api/pull")
    count = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            label = f"{operation.label} ({mode.value})"
            strategy = operation.as_strategy(mode)
            count += _run_operation(strategy, examples, label, base, statuses, failures)
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=60, help="per operation and mode")
    parser.add_argument("--hostile-only", action="store_true", help="skip schemathesis")
    parser.add_argument("--verbose", action="store_true", help="print each hostile answer")
    args = parser.parse_args()
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as home:
        env = {"LLMEDGE_MAX_TOKENS_LIMIT": "4"}
        with server_process(Path(home), env=env, timeout_s=300) as (process, url):
            base = url.removesuffix("/v1")
            watch = MemoryWatch(process.pid)
            hostile = run_hostile(base, statuses, failures, args.verbose)
            generated = 0
            if not args.hostile_only:
                generated = run_schemathesis(base, args.examples, statuses, failures)
            watch.stop()
            alive = process.poll() is None
            health = httpx.get(f"{base}/health", timeout=60).status_code if alive else None
    elapsed = time.perf_counter() - started
    print(f"fuzz_server: {hostile} hostile cases + {generated} schemathesis cases "
          f"in {elapsed:.0f} s")  # fmt: skip
    print(f"  statuses: {dict(sorted(statuses.items()))}")
    print(f"  responses >= 500: {sum(n for s, n in statuses.items() if s >= 500)}")
    print(f"  server alive to the end: {alive}; /health afterwards: {health}")
    print(f"  peak RSS: server {watch.peak_rss / 2**20:.0f} MiB, with its workers "
          f"{watch.peak_with_children / 2**20:.0f} MiB")  # fmt: skip
    for failure in failures[:50]:
        print("  FAIL", failure)
    return 0 if not failures and alive and health == 200 else 1


if __name__ == "__main__":
    raise SystemExit(main())
