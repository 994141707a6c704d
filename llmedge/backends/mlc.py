"""MLC LLM: compiled models run by `mlc_llm serve`, driven through its OpenAI-style API.

mlc-llm is not on PyPI (its wheels are on MLC's own package index), so it is found at run time:
the `mlc_llm` command on PATH, or the `mlc_llm` Python package. Loading a model starts
`mlc_llm serve FOLDER` on a free loopback port and waits until it answers; each generation is a
streamed `/v1/completions` call whose prompt is token ids, tokenized here with the folder's own
tokenizer, so context, stop strings and usage are counted exactly as for llama.cpp. Closing the
model stops the process. What it runs on (CUDA, Metal, Vulkan, CPU) is MLC's `--device auto`.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from llmedge.backends.base import Availability, GenerationSink, LoadOptions, close_at_exit
from llmedge.backends.serial import SerialQueue, refuse_unservable
from llmedge.backends.templated import TemplatedChat
from llmedge.errors import (
    BackendUnavailableError,
    InvalidRequestError,
    LlmedgeError,
)
from llmedge.generation import FinishReason, GenerationChunk, SamplingParams
from llmedge.prompting import ChatTemplate, StopMatcher
from llmedge.store.folders import unpacked_dir

INSTALL_HINT = (
    "mlc_llm is not installed; it is not on PyPI: install it from MLC's own index, e.g. "
    "`pip install --pre -f https://mlc.ai/wheels mlc-llm-nightly-cpu mlc-ai-nightly-cpu` "
    "(choose the CUDA or Metal wheels for a GPU)"
)
READY_TIMEOUT_S = 600.0  # a first start may compile the model library
READ_TIMEOUT_S = 300.0  # longest silence between two streamed chunks
LIBRARY_SUFFIXES = (".so", ".dylib", ".dll")

__all__ = ["MlcBackend", "MlcModel", "find_mlc", "serve_command"]


def find_mlc() -> list[str] | None:
    """The command that runs mlc_llm here, or None when it is not installed."""
    command = shutil.which("mlc_llm")
    if command:
        return [command]
    if importlib.util.find_spec("mlc_llm") is not None:
        return [sys.executable, "-m", "mlc_llm"]
    return None


def model_library(folder: Path) -> Path | None:
    """A compiled model library shipped in the folder (else mlc_llm compiles one)."""
    found = sorted(p for p in folder.iterdir() if p.suffix in LIBRARY_SUFFIXES)
    return found[0] if found else None


def serve_command(mlc: Sequence[str], folder: Path, options: LoadOptions, port: int) -> list[str]:
    """The `mlc_llm serve` command line for one model on a loopback port."""
    overrides = f"context_window_size={options.ctx_tokens};max_num_sequence={options.parallel}"
    command = [*mlc, "serve", str(folder), "--device", "auto", "--mode", "local"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--overrides", overrides]
    library = model_library(folder)
    return [*command, "--model-lib", str(library)] if library else command


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class MlcBackend:
    """Runs MLC-compiled model folders through `mlc_llm serve`."""

    name = "mlc"
    formats = ("mlc",)

    def probe(self) -> Availability:
        command = find_mlc()
        if command is None:
            return Availability(False, INSTALL_HINT)
        return Availability(True, f"mlc_llm ({' '.join(command)})")

    def load(self, path: Path, options: LoadOptions) -> MlcModel:
        command = find_mlc()
        if command is None:
            raise BackendUnavailableError(INSTALL_HINT)
        return MlcModel(command, path if path.is_dir() else unpacked_dir(path), options)


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _token_text(value: object) -> str:
    if isinstance(value, dict):  # {"content": "<s>", ...} in older tokenizer configs
        value = value.get("content")
    return value if isinstance(value, str) else ""


class MlcModel(TemplatedChat):
    """One `mlc_llm serve` process and the tokenizer of its model folder."""

    def __init__(self, mlc: Sequence[str], folder: Path, options: LoadOptions) -> None:
        tokenizers = importlib.import_module("tokenizers")
        if not (folder / "tokenizer.json").is_file():
            raise InvalidRequestError(f"{folder} has no tokenizer.json; is it an MLC model folder?")
        self._tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        config = _json(folder / "tokenizer_config.json")
        self._bos = _token_text(config.get("bos_token"))
        template = config.get("chat_template")
        self._template = ChatTemplate(
            template if isinstance(template, str) else None,
            self._bos,
            _token_text(config.get("eos_token")),
        )
        trained = _json(folder / "mlc-chat-config.json").get("context_window_size")
        ctx = options.ctx_tokens
        if isinstance(trained, int) and trained > 0:
            ctx = min(ctx, trained)
        self._ctx = ctx
        self._parallel = options.parallel
        port = _free_port()
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.command = serve_command(mlc, folder, replace(options, ctx_tokens=ctx), port)
        # The server's output, for the error message should it fail; closed with the model.
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self._process = subprocess.Popen(
            self.command, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self._closed = False
        # MLC's server batches the requests it gets: one worker per sequence it decodes.
        self._queue = SerialQueue(self._generate, "mlc", workers=self._parallel)
        close_at_exit(self)
        try:
            self.model_id = self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _log_tail(self) -> str:
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-2000:].strip()

    def _wait_ready(self) -> str:
        """The served model's id, once the server answers /v1/models."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise LlmedgeError(
                    f"`{' '.join(self.command)}` exited with {self._process.returncode}: "
                    f"{self._log_tail() or 'no output'}"
                )
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=5) as response:
                    models = json.load(response).get("data") or [{}]
                    return str(models[0].get("id", ""))
            except (OSError, ValueError):
                time.sleep(0.2)
        raise LlmedgeError(
            f"mlc_llm serve did not answer within {READY_TIMEOUT_S:.0f} s: {self._log_tail()}"
        )

    @property
    def ctx_tokens(self) -> int:
        return self._ctx

    @property
    def parallel(self) -> int:
        return self._parallel

    def tokenize(self, text: str) -> list[int]:
        special = not (self._bos and text.startswith(self._bos))
        return list(self._tokenizer.encode(text, add_special_tokens=special).ids)

    def counters(self) -> Mapping[str, float]:
        return {}

    def submit(self, job: GenerationSink) -> None:
        refuse_unservable(job, self._ctx, "MLC", logprobs=False)
        self._queue.submit(job)

    def _generate(
        self, prompt_tokens: Sequence[int], params: SamplingParams, cancel: threading.Event
    ) -> Iterator[GenerationChunk]:
        room = self._ctx - len(prompt_tokens)
        body: dict[str, Any] = {
            "model": self.model_id,
            "prompt": list(prompt_tokens),
            "max_tokens": min(params.max_tokens or room, room),
            "temperature": params.temperature,
            "top_p": params.top_p,
            "frequency_penalty": params.frequency_penalty,
            "presence_penalty": params.presence_penalty,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.logit_bias:
            body["logit_bias"] = {str(token): bias for token, bias in params.logit_bias}
        return self._stream(body, len(prompt_tokens), StopMatcher(params.stop), cancel)

    def _open(self, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            f"{self.base_url}/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            return urllib.request.urlopen(request, timeout=READ_TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:500]
            raise LlmedgeError(f"mlc_llm serve answered {exc.code}: {detail}") from exc
        except OSError as exc:
            raise LlmedgeError(f"mlc_llm serve is not answering ({exc}); reload the model") from exc

    def _stream(
        self, body: dict[str, Any], n_prompt: int, stops: StopMatcher, cancel: threading.Event
    ) -> Iterator[GenerationChunk]:
        started = time.perf_counter()
        first_at: float | None = None
        finish: FinishReason = "length"
        generated = 0
        hit_stop = False
        with self._open(body) as response:
            for raw in response:
                line = raw.decode("utf-8").strip()
                if not line.startswith("data:") or line == "data: [DONE]":
                    continue
                event = json.loads(line[5:])
                usage = event.get("usage") or {}
                generated = int(usage.get("completion_tokens", generated))
                for choice in event.get("choices") or ():
                    first_at = first_at or time.perf_counter()
                    if not usage:
                        generated += 1
                    text, hit_stop = stops.feed(choice.get("text") or "")
                    if text:
                        yield GenerationChunk(
                            text, (), prompt_tokens=n_prompt, generated_tokens=generated
                        )
                    if choice.get("finish_reason") in ("stop", "length"):
                        finish = "stop" if hit_stop else choice["finish_reason"]
                if cancel.is_set():
                    return  # leaving the block closes the connection, which stops MLC
                if hit_stop:
                    finish = "stop"
                    break
        tail = stops.flush() if not hit_stop else ""
        elapsed = time.perf_counter() - (first_at or started)
        yield GenerationChunk(
            tail,
            finish_reason=finish,
            prompt_tokens=n_prompt,
            generated_tokens=generated,
            time_to_first_token_s=first_at - started if first_at else None,
            tokens_per_s=generated / elapsed if generated > 1 and elapsed > 0 else None,
        )

    def embed(self, texts: Sequence[str | Sequence[int]]) -> tuple[list[list[float]], int]:
        raise InvalidRequestError(
            "the MLC backend does not make embeddings; use a GGUF model on llama.cpp"
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.close()
        self._process.terminate()
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()
