"""Several real clients at once: independent answers, a bounded queue, 503 when it is full."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from server_process import running_server

pytestmark = pytest.mark.e2e

QUESTIONS = [
    "What is the capital of France?",
    "Count from one to five.",
    "Name a fruit that is yellow.",
    "What colour is the sky?",
    "Say hello in Spanish.",
    "What is 3 plus 4?",
    "Name an animal that barks.",
    "What do bees make?",
]


def ask(client: openai.OpenAI, question: str) -> str:
    stream = client.chat.completions.create(
        model="smollm2-135m",
        messages=[{"role": "user", "content": question}],
        temperature=0,
        max_tokens=24,
        stream=True,
    )
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_eight_streaming_clients_get_their_own_answers(tmp_path: Path, smollm2_gguf: Path) -> None:
    with running_server(tmp_path / "home", "--parallel", "4") as url:
        client = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
        alone = [ask(client, q) for q in QUESTIONS]
        with ThreadPoolExecutor(len(QUESTIONS)) as pool:
            together = list(pool.map(lambda q: ask(client, q), QUESTIONS))
    assert len(set(alone)) == len(QUESTIONS)  # the questions really have different answers
    # Greedy decoding in a batch gives each sequence the answer it gets alone: no cross-talk.
    assert together == alone


def test_a_full_queue_answers_503_with_retry_after(tmp_path: Path, smollm2_gguf: Path) -> None:
    body = {
        "model": "smollm2-135m",
        "messages": [
            {"role": "user", "content": "Write a very long essay about the history of Rome."}
        ],
        "max_tokens": 300,
        "temperature": 0,  # greedy: this answer is known to run to the 300-token limit
        "stream": True,
    }
    with running_server(tmp_path / "home", "--parallel", "1", "--max-queue", "1") as url:
        done = threading.Event()

        def hold(accepted: threading.Event) -> None:
            with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=60) as r:
                assert r.status_code == 200
                lines = r.iter_lines()  # kept: a dropped iterator closes the response
                next(lines)  # the role chunk: this request has its place
                accepted.set()
                done.wait(timeout=60)

        holders = []
        for _ in range(2):  # one request decodes, then one waits: the queue is full
            accepted = threading.Event()
            holders.append(threading.Thread(target=hold, args=(accepted,)))
            holders[-1].start()
            assert accepted.wait(timeout=60)
        busy = httpx.post(f"{url}/chat/completions", json=body, timeout=60)
        done.set()
        for thread in holders:
            thread.join()
    assert busy.status_code == 503
    assert int(busy.headers["retry-after"]) > 0
    assert busy.json()["error"]["code"] == "server_busy"
