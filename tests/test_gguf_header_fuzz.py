"""Fuzzing the GGUF header reader: whatever the bytes, a header or `InvalidModelFileError`.

A small valid file is built here byte by byte, then truncated, bit-flipped, given huge counts and
lengths or bad tensor offsets. The reader (and the fit shape built on it) must never crash, hang
or allocate what the file cannot hold.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmedge.errors import InvalidModelFileError
from llmedge.fit import shape_from_header
from llmedge.gguf import read_gguf_header

FUZZ = settings(
    max_examples=80, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
U32, U64, F32, STRING, ARRAY = 4, 10, 6, 8, 9


@dataclass
class Built:
    """A GGUF file and where its interesting fields sit."""

    data: bytearray = field(default_factory=bytearray)
    positions: dict[str, int] = field(default_factory=dict)

    def mark(self, name: str) -> None:
        self.positions[name] = len(self.data)

    def u32(self, v: int) -> None:
        self.data += struct.pack("<I", v)

    def u64(self, v: int) -> None:
        self.data += struct.pack("<Q", v)

    def string(self, text: str, mark: str = "") -> None:
        if mark:
            self.mark(mark)
        raw = text.encode()
        self.u64(len(raw))
        self.data += raw


def build_gguf() -> Built:
    """A 2-layer llama-shaped GGUF with a tied embedding and a 300-token vocabulary."""
    b = Built()
    b.data += b"GGUF"
    b.u32(3)
    tensors = [("token_embd.weight", (64, 300), 0)]
    for il in range(2):
        tensors += [
            (f"blk.{il}.attn_q.weight", (64, 64), 1),
            (f"blk.{il}.attn_k.weight", (64, 32), 1),
        ]
        tensors += [
            (f"blk.{il}.ffn_up.weight", (64, 128), 0),
            (f"blk.{il}.attn_norm.weight", (64,), 0),
        ]
    b.mark("n_tensors")
    b.u64(len(tensors))
    scalars = [
        ("general.architecture", STRING, "llama"),
        ("llama.block_count", U32, 2),
        ("llama.embedding_length", U32, 64),
        ("llama.feed_forward_length", U32, 128),
        ("llama.attention.head_count", U32, 4),
        ("llama.attention.head_count_kv", U32, 2),
        ("llama.context_length", U32, 2048),
        ("general.alignment", U32, 32),
    ]
    b.mark("n_kv")
    b.u64(len(scalars) + 1)
    for key, kind, value in scalars:
        b.string(key, mark=f"key:{key}")
        b.u32(kind)
        if kind == STRING:
            b.string(str(value))
        else:
            b.mark(f"value:{key}")
            b.u32(int(value))
    b.string("tokenizer.ggml.tokens")
    b.u32(ARRAY)
    b.u32(STRING)
    b.mark("array_length")
    b.u64(300)
    for i in range(300):
        b.string(f"t{i}")
    offset = 0
    for index, (name, shape, type_id) in enumerate(tensors):
        b.string(name)
        b.u32(len(shape))
        for dim in shape:
            b.u64(dim)
        b.u32(type_id)
        b.mark(f"offset:{index}")
        b.u64(offset)
        n = 1
        for dim in shape:
            n *= dim
        offset += -(-(n * (4 if type_id == 0 else 2)) // 32) * 32
    b.data += b"\0" * (-len(b.data) % 32)
    b.data += b"\0" * offset
    return b


BUILT = build_gguf()


def read_or_reject(path: Path, data: bytes) -> None:
    """The property: parse cleanly (and shape the result) or raise InvalidModelFileError."""
    path.write_bytes(data)
    try:
        header = read_gguf_header(path, keep_arrays=("tokenizer.ggml.tokens",))
        shape_from_header(header)
    except InvalidModelFileError:
        pass


def test_the_built_file_is_valid_and_shaped_as_written(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(BUILT.data)
    header = read_gguf_header(path)
    shape = shape_from_header(header)
    assert header.array_length("tokenizer.ggml.tokens") == 300
    assert (shape.n_layers, shape.n_heads, shape.n_kv_heads) == (2, 4, (2, 2))
    assert shape.tied_embeddings and shape.weight_bytes == sum(t.nbytes for t in header.tensors)


@FUZZ
@given(cut=st.integers(min_value=0, max_value=len(BUILT.data) - 1))
def test_any_truncation_is_rejected(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(BUILT.data[:cut])
    with pytest.raises(InvalidModelFileError):
        read_gguf_header(path)


@FUZZ
@given(flips=st.lists(st.integers(0, len(BUILT.data) * 8 - 1), min_size=1, max_size=8))
def test_bit_flips_parse_or_are_rejected(tmp_path: Path, flips: list[int]) -> None:
    data = bytearray(BUILT.data)
    for bit in flips:
        data[bit // 8] ^= 1 << (bit % 8)
    read_or_reject(tmp_path / "m.gguf", bytes(data))


HUGE = st.one_of(st.integers(2**31, 2**64 - 1), st.sampled_from([2**64 - 1, 2**63, 2**32 - 1]))


@FUZZ
@given(
    field_name=st.sampled_from(["n_tensors", "n_kv", "array_length", "key:llama.block_count"]),
    value=HUGE,
)
def test_huge_counts_and_lengths_are_rejected(tmp_path: Path, field_name: str, value: int) -> None:
    data = bytearray(BUILT.data)
    struct.pack_into("<Q", data, BUILT.positions[field_name], value)
    path = tmp_path / "m.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidModelFileError):
        read_gguf_header(path, keep_arrays=("tokenizer.ggml.tokens",))


@FUZZ
@given(index=st.integers(0, 8), offset=st.integers(0, 2**64 - 1))
def test_bad_tensor_offsets_are_rejected(tmp_path: Path, index: int, offset: int) -> None:
    data = bytearray(BUILT.data)
    position = BUILT.positions[f"offset:{index}"]
    original = struct.unpack_from("<Q", data, position)[0]
    struct.pack_into("<Q", data, position, offset)
    path = tmp_path / "m.gguf"
    path.write_bytes(bytes(data))
    if offset % 32 or offset > len(data):
        with pytest.raises(InvalidModelFileError):
            read_gguf_header(path)
    else:  # an aligned offset inside the file may be valid, or overrun the end
        read_or_reject(path, bytes(data))
    assert original % 32 == 0


@FUZZ
@given(
    key=st.sampled_from(
        [
            "llama.block_count",
            "llama.attention.head_count",
            "llama.attention.head_count_kv",
            "llama.embedding_length",
        ]
    ),
    value=st.integers(0, 2**32 - 1),
)
def test_hostile_shape_numbers_never_blow_up(tmp_path: Path, key: str, value: int) -> None:
    data = bytearray(BUILT.data)
    struct.pack_into("<I", data, BUILT.positions[f"value:{key}"], value)
    read_or_reject(tmp_path / "m.gguf", bytes(data))


@functools.cache
def real_header_bytes(path: Path) -> bytes:
    """The real model's metadata and tensor table, and a little of its data."""
    with path.open("rb") as handle:
        return handle.read(read_gguf_header(path).data_offset + 4096)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(fraction=st.floats(0, 1, exclude_max=True))
def test_the_real_model_truncated_anywhere_in_its_header_is_rejected(
    tmp_path: Path, smollm2_gguf: Path, fraction: float
) -> None:
    head = real_header_bytes(smollm2_gguf)
    path = tmp_path / "cut.gguf"
    path.write_bytes(head[: int(len(head) * fraction)])
    with pytest.raises(InvalidModelFileError):
        read_gguf_header(path)


def test_unreadable_paths_are_rejected(tmp_path: Path) -> None:
    for path in (tmp_path / "missing.gguf", tmp_path):
        with pytest.raises(InvalidModelFileError):
            read_gguf_header(path)
