"""Hugging Face transformers (PyTorch): safetensors models, plain or quantized (GPTQ, AWQ, NF4).

A model arrives as a packed folder from the store (see `llmedge.store.folders`) or as a folder.
What it holds is read from its `config.json`: GPTQ and AWQ checkpoints load through GPTQModel
(its torch kernels on CPU, its Triton kernels on CUDA), NF4 through bitsandbytes, and plain weights
through transformers alone. Generation is a token-by-token loop over the KV cache, so every
token streams as soon as it is sampled and a cancelled request stops at the next one.
"""

from __future__ import annotations

import gc
import importlib
import inspect
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from llmedge.backends.base import Availability, GenerationSink, LoadOptions
from llmedge.backends.serial import SerialQueue, refuse_unservable
from llmedge.backends.templated import TemplatedChat
from llmedge.backends.transformers.sampling import new_generator, sample_token, token_logprob
from llmedge.errors import (
    BackendUnavailableError,
    ContextLengthExceededError,
    InvalidRequestError,
)
from llmedge.generation import (
    FinishReason,
    GenerationChunk,
    SamplingParams,
    TokenLogprob,
)
from llmedge.hardware import peak_rss_bytes
from llmedge.prompting import ChatTemplate, StopMatcher
from llmedge.store.folders import unpacked_dir

INSTALL_HINT = "install it with `pip install 'llmedge[quantize]'`"
# The formats a stored folder may have; the folder's own config says which one it is.
FORMATS = ("safetensors", "gptq", "awq", "nf4")

__all__ = ["FORMATS", "TransformersBackend", "TransformersModel", "load_causal_lm", "quant_method"]


# Libraries GPTQModel and bitsandbytes bring warn on import about optional kernels (CUDA builds
# of torchao, hub-downloaded CPU kernels) that llmedge does not use; their fallbacks are fine.
_QUIET_LOGGERS = ("torchao", "torch.utils._pytree", "bitsandbytes")


def _import_torch() -> Any:
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailableError(f"torch and transformers are needed; {INSTALL_HINT}") from exc
    return torch


def import_gptqmodel() -> Any:
    """GPTQModel, which loads and makes GPTQ and AWQ checkpoints."""
    # GPTQModel sizes a worker pool from the CPU count and will not start with one worker.
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, (os.cpu_count() or 2) // 2)))
    try:
        return importlib.import_module("gptqmodel")
    except ImportError as exc:
        raise BackendUnavailableError(
            f"GPTQ and AWQ models need GPTQModel; {INSTALL_HINT}"
        ) from exc


def quant_method(folder: Path) -> str:
    """The folder's format: `gptq`, `awq`, `nf4` or `safetensors` (unquantized)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidRequestError(
            f"{folder} has no readable config.json ({exc}); is it a Hugging Face model folder?"
        ) from exc
    method = str((config.get("quantization_config") or {}).get("quant_method", "")).lower()
    if method == "bitsandbytes":
        return "nf4"
    if method in ("", "none"):
        return "safetensors"
    if method not in FORMATS:
        raise InvalidRequestError(
            f"{folder} is quantized with {method}, which llmedge does not run; "
            f"it runs {', '.join(FORMATS)}"
        )
    return method


def pick_device(gpu_layers: int = -1) -> str:
    """`cuda` when a GPU is there and not refused (`gpu_layers` 0), else `cpu`."""
    torch = _import_torch()
    return "cuda" if gpu_layers != 0 and torch.cuda.is_available() else "cpu"


def gptqmodel_kernel(method: str, device: str, bits: int = 4) -> Any:
    """The GPTQModel kernel for a method on a device.

    CPU: the portable torch kernels (the fused ones need particular CPU features). CUDA: the
    Triton kernels for GPTQ, which compile in seconds; AUTO would pick Marlin or Machete, whose
    CUDA extensions GPTQModel builds with nvcc on first use, for minutes. AWQ stays on the torch
    kernel everywhere: GPTQModel 7.6's AWQ Triton kernel cannot pack the GEMM format (seen on an
    H200). 3-bit GPTQ has no Triton kernel and stays on torch.
    """
    backend = import_gptqmodel().BACKEND
    if device == "cuda" and method == "gptq" and bits in (2, 4, 8):
        return backend.GPTQ_TRITON
    return backend.AWQ_TORCH if method == "awq" else backend.GPTQ_TORCH


def load_causal_lm(folder: Path, device: str) -> tuple[Any, Any]:
    """The model in `folder` (any of FORMATS) on `device`, in eval mode, and its tokenizer."""
    torch = _import_torch()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    method = quant_method(folder)
    if method in ("gptq", "awq"):
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        kernel = gptqmodel_kernel(method, device, int(config["quantization_config"]["bits"]))
        loaded = import_gptqmodel().GPTQModel.load(str(folder), device=device, backend=kernel)
        model = loaded.model
    elif method == "nf4":
        model = AutoModelForCausalLM.from_pretrained(folder, device_map=device)
    else:  # CPUs are fastest in float32; GPUs get the checkpoint's own half precision
        dtype = torch.float32 if device == "cpu" else "auto"
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, device_map=device)
    model.eval()
    return model, AutoTokenizer.from_pretrained(folder)


class TransformersBackend:
    """Runs Hugging Face safetensors folders (plain, GPTQ, AWQ, NF4) with PyTorch."""

    name = "transformers"
    formats = FORMATS

    def probe(self) -> Availability:
        try:
            torch = _import_torch()
        except BackendUnavailableError as exc:
            return Availability(False, str(exc))
        import transformers

        where = f"CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "CPU"
        return Availability(
            True, f"transformers {transformers.__version__}, torch {torch.__version__} ({where})"
        )

    def load(self, path: Path, options: LoadOptions) -> TransformersModel:
        folder = path if path.is_dir() else unpacked_dir(path)
        return TransformersModel(folder, options)


class TransformersModel(TemplatedChat):
    """One model on one device, generating one sequence at a time."""

    def __init__(self, folder: Path, options: LoadOptions) -> None:
        self._torch = torch = _import_torch()
        if options.threads > 0:
            torch.set_num_threads(options.threads)
        self._device = pick_device(options.gpu_layers)
        self._model, self._tokenizer = load_causal_lm(folder, self._device)
        tok = self._tokenizer
        trained = getattr(self._model.config, "max_position_embeddings", None)
        self._ctx_tokens = min(options.ctx_tokens, trained or options.ctx_tokens)
        self._eos = self._stop_ids()
        prepended = tok("", add_special_tokens=True).input_ids[:1]
        self._bos = prepended if prepended == [tok.bos_token_id] else []  # added by the tokenizer
        self._template = ChatTemplate(
            tok.chat_template, bos_token=tok.bos_token or "", eos_token=tok.eos_token or ""
        )
        self._pieces: dict[int, bytes] = {}
        self._lock = threading.Lock()
        # transformers renamed `past_key_values` to `cache` (5.2x); accept either release.
        forward = inspect.signature(self._model.forward).parameters
        self._cache_arg = "cache" if "cache" in forward else "past_key_values"
        self._queue = SerialQueue(self._run, "transformers")

    def _stop_ids(self) -> set[int]:
        ids: set[int] = set()
        generation = getattr(self._model, "generation_config", None)
        for value in (self._tokenizer.eos_token_id, getattr(generation, "eos_token_id", None)):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list):
                ids.update(int(v) for v in value)
        return ids

    @property
    def ctx_tokens(self) -> int:
        return self._ctx_tokens

    @property
    def parallel(self) -> int:
        return 1

    def tokenize(self, text: str) -> list[int]:
        ids: list[int] = self._tokenizer(text, add_special_tokens=False).input_ids
        if self._bos and (not ids or ids[0] != self._bos[0]):
            ids = [*self._bos, *ids]
        return ids

    def piece(self, token: int) -> bytes:
        """The text one token stands for, as bytes (for logprobs)."""
        found = self._pieces.get(token)
        if found is None:
            found = self._pieces[token] = self._tokenizer.decode([token]).encode("utf-8")
        return found

    def counters(self) -> Mapping[str, float]:
        return {}

    def submit(self, job: GenerationSink) -> None:
        refuse_unservable(job, self._ctx_tokens, "transformers")
        self._queue.submit(job)

    def _run(
        self, prompt_tokens: Sequence[int], params: SamplingParams, cancel: threading.Event
    ) -> Iterator[GenerationChunk]:
        room = self._ctx_tokens - len(prompt_tokens)
        max_tokens = min(params.max_tokens or room, room)
        with self._lock:
            yield from self._generate(list(prompt_tokens), params, cancel, max_tokens)

    def _generate(
        self, prompt: list[int], params: SamplingParams, cancel: threading.Event, max_tokens: int
    ) -> Iterator[GenerationChunk]:
        torch = self._torch
        started = time.perf_counter()
        first_at: float | None = None
        generated: list[int] = []
        stops = StopMatcher(params.stop)
        decoder = _Detokenizer(self._tokenizer)
        generator = new_generator(params, self._device)

        def chunk(text: str, finish: FinishReason | None = None, **extra: Any) -> GenerationChunk:
            now = time.perf_counter()
            ttft = first_at - started if first_at else None
            decode_s = now - first_at if first_at else 0.0
            n = len(generated)
            return GenerationChunk(
                text=text,
                finish_reason=finish,
                prompt_tokens=len(prompt),
                generated_tokens=n,
                time_to_first_token_s=ttft,
                tokens_per_s=(n - 1) / decode_s if n > 1 and decode_s > 0 else None,
                prompt_tokens_per_s=len(prompt) / ttft if ttft else None,
                **extra,
            )

        finish: FinishReason = "length"
        hit_stop = False
        with torch.inference_mode():
            inputs = torch.tensor([prompt], device=self._device)
            past = None
            while len(generated) < max_tokens:
                if cancel.is_set():
                    return
                out = self._model(input_ids=inputs, use_cache=True, **{self._cache_arg: past})
                past, logits = getattr(out, self._cache_arg), out.logits[0, -1]
                token = sample_token(logits, params, generated, generator)
                first_at = first_at or time.perf_counter()
                if token in self._eos:
                    finish = "stop"
                    break
                generated.append(token)
                text, hit_stop = stops.feed(decoder.add(token))
                logprobs: tuple[TokenLogprob, ...] = ()
                if params.logprobs:
                    logprobs = (token_logprob(logits, token, params.top_logprobs, self.piece),)
                if text or logprobs:
                    yield chunk(text, token_ids=(token,), logprobs=logprobs)
                if hit_stop:
                    finish = "stop"
                    break
                inputs = torch.tensor([[token]], device=self._device)
        # Text held back as a possible stop string belongs to the answer unless one ended it.
        tail = "" if hit_stop else stops.flush() + decoder.flush()
        yield chunk(tail, finish, peak_memory_bytes=self._peak_memory())

    def _peak_memory(self) -> int:
        if self._device == "cuda":
            return int(self._torch.cuda.max_memory_allocated())
        return peak_rss_bytes()

    def embed(self, texts: Sequence[str | Sequence[int]]) -> tuple[list[list[float]], int]:
        """Mean-pooled, L2-normalised last hidden states, one text at a time."""
        torch = self._torch
        vectors, total = [], 0
        with self._lock, torch.inference_mode():
            for text in texts:
                tokens = self.tokenize(text) if isinstance(text, str) else list(text)
                if len(tokens) > self._ctx_tokens:
                    raise ContextLengthExceededError(len(tokens), self._ctx_tokens)
                total += len(tokens)
                out = self._model(
                    input_ids=torch.tensor([tokens], device=self._device),
                    output_hidden_states=True,
                )
                mean = out.hidden_states[-1][0].float().mean(dim=0)
                vectors.append(torch.nn.functional.normalize(mean, dim=0).tolist())
        return vectors, total

    def close(self) -> None:
        self._queue.close()
        with self._lock:
            self._model = None
            gc.collect()
            if self._device == "cuda":
                self._torch.cuda.empty_cache()


class _Detokenizer:
    """Turns a growing list of token ids into text pieces, never splitting a character.

    Decoding token by token would break words whose pieces merge (and multi-byte characters),
    so each step decodes a short window and emits what it adds to the text already emitted.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # start of the window decoded for context
        self._read = 0  # end of what has been emitted

    def _decode(self, ids: list[int]) -> str:
        text: str = self._tokenizer.decode(ids, skip_special_tokens=True)
        return text

    def add(self, token: int) -> str:
        self._ids.append(token)
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""  # half a character so far: wait for the rest
        self._prefix, self._read = self._read, len(self._ids)
        return after[len(before) :]

    def flush(self) -> str:
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return after[len(before) :]
