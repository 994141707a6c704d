"""Prometheus metrics for /metrics: requests, tokens, speed, queue depth and memory.

Counters live on the app (no module globals); the text format is Prometheus' exposition format
0.0.4, written here because it is a few lines of text.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable

import psutil

from llmedge import GenerationChunk, ModelRunner

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# What each engine counter means (llmedge_engine_<name>, per loaded model).
ENGINE_HELP = {
    "decode_steps_total": "Batched decode steps run.",
    "decode_rows_total": "Tokens decoded in batched steps (prompts, next tokens and guesses).",
    "decode_seconds_total": "Seconds spent in batched decode steps.",
    "step_seconds_total": "Seconds of whole steps: decoding, sampling and handing tokens out.",
    "decode_step_seconds_max": "Longest batched decode step.",
    "cancel_free_seconds_max": "Longest a cancelled generation kept its slot (one step at most).",
    "draft_tokens_total": "Tokens guessed ahead (speculative decoding).",
    "draft_tokens_accepted_total": "Guessed tokens the model agreed with.",
}


def single(value: float) -> list[tuple[str, float]]:
    """The samples of a metric without labels."""
    return [("", value)]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """What the server has done since it started; safe to update from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.generated_tokens = 0
        self.generations = 0
        self.decode_seconds = 0.0
        self.first_token_seconds = 0.0
        self.in_flight = 0

    def count_request(self, method: str, route: str, status: int) -> None:
        with self._lock:
            self.requests[(method, route, status)] += 1

    def generation_started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def generation_finished(self, last: GenerationChunk | None) -> None:
        with self._lock:
            self.in_flight -= 1
            if last is None:
                return
            self.generations += 1
            self.prompt_tokens += last.prompt_tokens
            self.cached_tokens += last.cached_tokens
            self.generated_tokens += last.generated_tokens
            if last.tokens_per_s and last.generated_tokens > 1:
                self.decode_seconds += (last.generated_tokens - 1) / last.tokens_per_s
            if last.time_to_first_token_s:
                self.first_token_seconds += last.time_to_first_token_s

    def render(self, loaded: Iterable[ModelRunner], loading: int) -> str:
        """The exposition text."""
        entries = list(loaded)
        slots = sum(max(1, e.model.parallel) for e in entries)
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: Iterable[tuple[str, float]]) -> None:
            lines.append(f"# HELP llmedge_{name} {help_}")
            lines.append(f"# TYPE llmedge_{name} {kind}")
            lines.extend(f"llmedge_{name}{labels} {value:g}" for labels, value in samples)

        with self._lock:
            requests = sorted(self.requests.items())
            in_flight = self.in_flight
            metric(
                "requests_total",
                "counter",
                "HTTP requests answered, by method, route and status.",
                [
                    (f'{{method="{m}",route="{_escape(r)}",status="{s}"}}', n)
                    for (m, r, s), n in requests
                ],
            )
            metric(
                "generations_total", "counter", "Generations finished.", single(self.generations)
            )
            metric(
                "prompt_tokens_total",
                "counter",
                "Prompt tokens processed or reused.",
                single(self.prompt_tokens),
            )
            metric(
                "prompt_cached_tokens_total",
                "counter",
                "Prompt tokens reused from the cache.",
                single(self.cached_tokens),
            )
            metric(
                "generated_tokens_total",
                "counter",
                "Tokens generated.",
                single(self.generated_tokens),
            )
            metric(
                "decode_seconds_total",
                "counter",
                "Seconds spent generating after the first token.",
                single(self.decode_seconds),
            )
            metric(
                "time_to_first_token_seconds_total",
                "counter",
                "Sum of times to first token.",
                single(self.first_token_seconds),
            )
            tokens_per_s = (
                self.generated_tokens / self.decode_seconds if self.decode_seconds else 0.0
            )
        metric(
            "tokens_per_second",
            "gauge",
            "Generated tokens per second of decoding, overall.",
            single(tokens_per_s),
        )
        metric("requests_in_flight", "gauge", "Generations running or waiting.", single(in_flight))
        metric(
            "queue_depth",
            "gauge",
            "Generations waiting for a free slot.",
            single(max(0, in_flight - slots)),
        )
        metric("slots", "gauge", "Generations the loaded models can run at once.", single(slots))
        metric("models_loaded", "gauge", "Models in memory.", single(len(entries)))
        metric("models_loading", "gauge", "Models being loaded now.", single(loading))
        by_name: dict[str, list[tuple[str, float]]] = {}
        for entry in entries:
            label = f'{{model="{_escape(entry.manifest.ref)}"}}'
            for name, value in sorted(entry.model.counters().items()):
                by_name.setdefault(name, []).append((label, value))
        for name, samples in by_name.items():
            kind = "counter" if name.endswith("_total") else "gauge"
            help_ = ENGINE_HELP.get(name, "Reported by the model's engine.")
            metric(f"engine_{name}", kind, help_, samples)
        rss = psutil.Process().memory_info().rss
        metric(
            "resident_memory_bytes", "gauge", "Resident memory of the server process.", single(rss)
        )
        return "\n".join(lines) + "\n"
