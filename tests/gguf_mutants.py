"""Malformed GGUF files made from a good one: metadata changed, tensors added, bytes flipped.

For tests and scripts/fuzz_models.py: each mutant is a real file the header reader, the store
and llama.cpp see as they would a downloaded one.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

Value = int | float | str | None  # None: drop the key


def rewrite_gguf(
    source: Path, out: Path, overrides: dict[str, Value], extra_tensors: int = 0
) -> Path:
    """A copy of `source` with metadata keys replaced, added or dropped (None), and
    `extra_tensors` one-float tensors appended to its tensor table."""
    import gguf

    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(out, str(reader.fields["general.architecture"].contents()))

    def put(key: str, value: Any) -> None:
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, list):
            writer.add_array(key, value)
        else:
            writer.add_uint32(key, int(value))

    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        if key in overrides:
            if overrides[key] is not None:
                put(key, overrides[key])
            continue
        kind = field.types[0]
        contents = field.contents()
        if kind == gguf.GGUFValueType.FLOAT32:
            writer.add_float32(key, float(contents))
        else:
            put(key, list(contents) if kind == gguf.GGUFValueType.ARRAY else contents)
    for key, value in overrides.items():
        if key not in reader.fields and value is not None:
            put(key, value)
    for tensor in reader.tensors:
        shape = [int(d) for d in reversed(tensor.shape)]
        writer.add_tensor(
            tensor.name, np.asarray(tensor.data), raw_shape=shape, raw_dtype=tensor.tensor_type
        )
    for i in range(extra_tensors):
        writer.add_tensor(f"extra.{i}", np.zeros(1, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


_SCALAR_FORMATS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    10: "<Q",
    11: "<q",
}


def patch_value(source: Path, out: Path, key: str, value: float) -> Path:
    """A copy of `source` with the numeric metadata `key` set to `value` in place (its type and
    size unchanged): instant, where `rewrite_gguf` re-encodes the whole file."""
    data = bytearray(source.read_bytes())
    name = key.encode()
    at = data.find(struct.pack("<Q", len(name)) + name)
    if at < 0:
        raise KeyError(key)
    type_at = at + 8 + len(name)
    (type_id,) = struct.unpack_from("<I", data, type_at)
    struct.pack_into(_SCALAR_FORMATS[type_id], data, type_at + 4, value)
    out.write_bytes(bytes(data))
    return out


def flip_bytes(source: Path, out: Path, offsets: list[int], value: int = 0xFF) -> Path:
    """A copy of `source` with the bytes at `offsets` set to `value`."""
    data = bytearray(source.read_bytes())
    for offset in offsets:
        if offset < len(data):
            data[offset] = value
    out.write_bytes(bytes(data))
    return out


def header_length(path: Path) -> int:
    """Where the first tensor's data starts (everything before it is metadata and table)."""
    from llmedge.gguf import read_gguf_header

    return read_gguf_header(path).data_offset


def many_tensors_gguf(out: Path, n_tensors: int) -> Path:
    """A structurally valid GGUF holding `n_tensors` one-float tensors and nothing else."""
    alignment = 32
    table = bytearray()
    for i in range(n_tensors):
        name = f"t.{i}".encode()
        table += struct.pack("<Q", len(name)) + name
        table += struct.pack("<IQIQ", 1, 1, 0, i * alignment)  # 1 dim of 1, F32, offset
    arch_key, arch = b"general.architecture", b"llama"
    head = b"GGUF" + struct.pack("<IQQ", 3, n_tensors, 1)
    head += struct.pack("<Q", len(arch_key)) + arch_key + struct.pack("<IQ", 8, len(arch)) + arch
    body = head + table
    body += b"\0" * (-len(body) % alignment)
    body += b"\0" * (alignment * n_tensors)
    out.write_bytes(body)
    return out
