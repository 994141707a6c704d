"""A draft model for speculative decoding: a small model with the served model's vocabulary that
guesses each slot's next tokens, greedily, in a llama.cpp context of its own (one sequence per
slot of the served model, so each slot's guesses continue from its own cached context).

Before drafting, each slot's draft cache catches up with the slot's context (the tokens the
served model accepted since, and none of the guesses it rejected); then every slot that wants
drafts decodes one token a step, all slots in one batch.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llmedge.backends.base import LoadOptions
from llmedge.backends.llama.slots import Rows, common_prefix
from llmedge.errors import DecodeError, InvalidModelFileError, InvalidRequestError

N_BATCH = 512


class DraftModel:
    """The draft model, loaded beside the served one (`target_vocab`, checked equal at load)."""

    def __init__(self, lib: Any, path: Path, options: LoadOptions, target_vocab: Any) -> None:
        self._lib = lib
        model_params = lib.llama_model_default_params()
        model_params.n_gpu_layers = options.gpu_layers
        model_params.use_mmap = False  # a blob truncated while loaded must not crash us
        self._model = lib.llama_model_load_from_file(str(path).encode(), model_params)
        if not self._model:
            raise InvalidModelFileError(str(path), "llama.cpp could not load the draft model")
        self._vocab = lib.llama_model_get_vocab(self._model)
        try:
            _check_same_vocab(lib, self._vocab, target_vocab, path)
            params = lib.llama_context_default_params()
            params.n_ctx = options.ctx_tokens * options.parallel
            params.n_batch = params.n_ubatch = N_BATCH
            params.n_seq_max = options.parallel
            params.kv_unified = False
            params.n_threads = params.n_threads_batch = options.threads
            self._ctx = lib.llama_init_from_model(self._model, params)
            if not self._ctx:
                raise DecodeError("llama.cpp could not create the draft model's context")
        except BaseException:
            lib.llama_model_free(self._model)
            raise
        self._memory = lib.llama_get_memory(self._ctx)
        self._n_vocab = lib.llama_vocab_n_tokens(self._vocab)
        self._rows = Rows(lib, N_BATCH)
        self._kv: dict[int, list[int]] = {}  # per sequence: the tokens its cache holds

    def propose(self, wanted: Mapping[int, tuple[Sequence[int], int]]) -> dict[int, list[int]]:
        """For each sequence id: its context and how many tokens to guess; returns the guesses."""
        rows = self._catch_up(wanted)
        drafts: dict[int, list[int]] = {seq: [] for seq in wanted}
        while rows:
            self._rows.clear()
            next_rows: dict[int, int] = {}
            for seq, row in rows.items():
                token = self._argmax(row)
                drafts[seq].append(token)
                if len(drafts[seq]) < wanted[seq][1]:
                    next_rows[seq] = self._add(seq, token, logits=True)
            rows = next_rows
            if rows and self._lib.llama_decode(self._ctx, self._rows.batch) != 0:
                break  # the guesses so far stand; the next step starts over from the context
        return drafts

    def close(self) -> None:
        self._rows.free()
        self._lib.llama_free(self._ctx)
        self._lib.llama_model_free(self._model)

    def _catch_up(self, wanted: Mapping[int, tuple[Sequence[int], int]]) -> dict[int, int]:
        """Bring each sequence's cache to its context; the batch rows holding their logits."""
        pending: dict[int, list[int]] = {}
        for seq, (context, _) in wanted.items():
            kv = self._kv.setdefault(seq, [])
            keep = min(common_prefix(kv, context), len(context) - 1)  # one to decode, for logits
            if keep < len(kv) and not self._lib.llama_memory_seq_rm(self._memory, seq, keep, -1):
                self._lib.llama_memory_seq_rm(self._memory, seq, -1, -1)
                keep = 0
            del kv[keep:]
            pending[seq] = list(context[keep:])
        rows: dict[int, int] = {}
        while any(pending.values()):
            self._rows.clear()
            for seq, tokens in pending.items():
                room = N_BATCH - len(self._rows)
                take, pending[seq] = tokens[:room], tokens[room:]
                for j, token in enumerate(take):
                    last = j == len(take) - 1 and not pending[seq]
                    row = self._add(seq, token, logits=last)
                    if last:
                        rows[seq] = row
            if self._lib.llama_decode(self._ctx, self._rows.batch) != 0:
                for seq in wanted:  # start these sequences over next time
                    self._lib.llama_memory_seq_rm(self._memory, seq, -1, -1)
                    self._kv[seq] = []
                return {}
        return rows

    def _add(self, seq: int, token: int, logits: bool) -> int:
        kv = self._kv[seq]
        row = self._rows.add(seq, token, len(kv), logits)
        kv.append(token)
        return row

    def _argmax(self, row: int) -> int:
        logits = self._lib.llama_get_logits_ith(self._ctx, row)
        array = np.ctypeslib.as_array(
            ctypes.cast(logits, ctypes.POINTER(ctypes.c_float)), shape=(self._n_vocab,)
        )
        return int(array.argmax())


def _check_same_vocab(lib: Any, draft: Any, target: Any, path: Path) -> None:
    """A draft model must tokenize as the served model does, or its guesses mean nothing."""
    n_draft, n_target = lib.llama_vocab_n_tokens(draft), lib.llama_vocab_n_tokens(target)
    if n_draft != n_target:
        raise InvalidRequestError(
            f"the draft model {path.name} has a vocabulary of {n_draft} tokens but the served "
            f"model has {n_target}; a draft model must share the served model's tokenizer",
            param="draft",
        )
    for token in range(n_target):
        if lib.llama_vocab_get_text(draft, token) != lib.llama_vocab_get_text(target, token):
            raise InvalidRequestError(
                f"the draft model {path.name} calls token {token} something else than the "
                "served model does; a draft model must share the served model's tokenizer",
                param="draft",
            )
