"""A bounded reader for GGUF headers: metadata and tensor table, never the weights.

Every count and length is checked against the bytes left in the file before anything is
allocated, so a truncated, malformed or hostile file raises `InvalidModelFileError` instead of
crashing, hanging or exhausting memory. Large arrays (the vocabulary) are skipped, keeping only
their length, unless their key is asked for.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from llmedge.errors import InvalidModelFileError
from llmedge.gguf.ggml_types import GGML_TYPES, tensor_nbytes
from llmedge.gguf.sanity import check_model_header

GGUF_MAGIC = b"GGUF"
MAX_TENSOR_DIMS = 8
MAX_KEY_BYTES = 1 << 16
# Arrays longer than this are skipped (their length kept) unless asked for by key.
MAX_KEPT_ARRAY_ITEMS = 1024

_SCALARS: dict[int, struct.Struct] = {
    0: struct.Struct("<B"),
    1: struct.Struct("<b"),
    2: struct.Struct("<H"),
    3: struct.Struct("<h"),
    4: struct.Struct("<I"),
    5: struct.Struct("<i"),
    6: struct.Struct("<f"),
    7: struct.Struct("<?"),
    10: struct.Struct("<Q"),
    11: struct.Struct("<q"),
    12: struct.Struct("<d"),
}
_STRING, _ARRAY = 8, 9
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")

MetadataValue = int | float | bool | str | list["MetadataValue"]


@dataclass(frozen=True)
class SkippedArray:
    """An array left unread: its element type and length."""

    item_type: int
    length: int


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    type_id: int
    offset: int

    @property
    def n_elements(self) -> int:
        n = 1
        for dim in self.shape:
            n *= dim
        return n

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.type_id, self.n_elements)


@dataclass(frozen=True)
class GgufHeader:
    """What a GGUF file says about itself."""

    version: int
    metadata: dict[str, MetadataValue | SkippedArray]
    tensors: tuple[TensorInfo, ...]
    data_offset: int
    file_size: int
    alignment: int = field(default=32)

    def get(self, key: str, default: MetadataValue | None = None) -> MetadataValue | None:
        value = self.metadata.get(key, default)
        return default if isinstance(value, SkippedArray) else value

    def array_length(self, key: str) -> int | None:
        value = self.metadata.get(key)
        if isinstance(value, SkippedArray):
            return value.length
        return len(value) if isinstance(value, list) else None


class _Reader:
    def __init__(self, handle: BinaryIO, size: int, path: str) -> None:
        self.handle = handle
        self.size = size
        self.path = path

    @property
    def left(self) -> int:
        return self.size - self.handle.tell()

    def fail(self, reason: str) -> InvalidModelFileError:
        return InvalidModelFileError(self.path, f"{reason} (at byte {self.handle.tell()})")

    def read(self, n: int) -> bytes:
        if n < 0 or n > self.left:
            raise self.fail(f"wants {n} bytes but only {self.left} are left: truncated or corrupt")
        return self.handle.read(n)

    def skip(self, n: int) -> None:
        if n < 0 or n > self.left:
            raise self.fail(f"wants {n} bytes but only {self.left} are left: truncated or corrupt")
        self.handle.seek(n, os.SEEK_CUR)

    def scalar(self, kind: struct.Struct) -> int | float | bool:
        value: int | float | bool = kind.unpack(self.read(kind.size))[0]
        return value

    def u32(self) -> int:
        return int(self.scalar(_U32))

    def u64(self) -> int:
        return int(self.scalar(_U64))

    def string(self, limit: int | None = None) -> str:
        length = self.u64()
        if limit is not None and length > limit:
            raise self.fail(f"a key of {length} bytes is longer than {limit}")
        return self.read(length).decode("utf-8", errors="replace")

    def value(self, type_id: int, keep_arrays: bool) -> MetadataValue | SkippedArray:
        if type_id in _SCALARS:
            return self.scalar(_SCALARS[type_id])
        if type_id == _STRING:
            return self.string()
        if type_id == _ARRAY:
            return self.array(keep_arrays)
        raise self.fail(f"unknown metadata type {type_id}")

    def array(self, keep: bool) -> list[MetadataValue] | SkippedArray:
        item_type = self.u32()
        length = self.u64()
        if item_type == _ARRAY:
            raise self.fail("nested arrays are not supported")
        min_item_bytes = _SCALARS[item_type].size if item_type in _SCALARS else 8
        if item_type not in _SCALARS and item_type != _STRING:
            raise self.fail(f"unknown array item type {item_type}")
        if length * min_item_bytes > self.left:
            raise self.fail(f"an array of {length} items cannot fit in the {self.left} bytes left")
        if keep or length <= MAX_KEPT_ARRAY_ITEMS:
            items: list[MetadataValue] = []
            for _ in range(length):
                item = self.value(item_type, keep_arrays=False)
                assert not isinstance(item, SkippedArray)
                items.append(item)
            return items
        if item_type == _STRING:
            for _ in range(length):
                self.skip(self.u64())
        else:
            self.skip(length * min_item_bytes)
        return SkippedArray(item_type, length)


def read_gguf_header(path: str | os.PathLike[str], keep_arrays: Collection[str] = ()) -> GgufHeader:
    """Read and check a GGUF file's header (its structure, and the bounds in `sanity`);
    `keep_arrays` names long arrays to read in full."""
    path = Path(path)
    try:
        size = path.stat().st_size
        handle = path.open("rb")
    except OSError as exc:
        raise InvalidModelFileError(str(path), exc.strerror or str(exc)) from exc
    with handle:
        header = _read(_Reader(handle, size, str(path)), keep_arrays)
    check_model_header(header, str(path))
    return header


def _read(reader: _Reader, keep_arrays: Collection[str]) -> GgufHeader:
    if reader.size < 24 or reader.read(4) != GGUF_MAGIC:
        raise InvalidModelFileError(reader.path, "it does not start with the GGUF magic")
    version = reader.u32()
    if version not in (2, 3):
        raise reader.fail(f"GGUF version {version} is not supported (2 or 3 are)")
    n_tensors = reader.u64()
    n_kv = reader.u64()
    # Each key/value pair takes at least 13 bytes and each tensor entry at least 28.
    if n_kv * 13 + n_tensors * 28 > reader.left:
        raise reader.fail(f"{n_kv} metadata keys and {n_tensors} tensors cannot fit in the file")

    metadata: dict[str, MetadataValue | SkippedArray] = {}
    for _ in range(n_kv):
        key = reader.string(limit=MAX_KEY_BYTES)
        type_id = reader.u32()
        metadata[key] = reader.value(type_id, keep_arrays=key in keep_arrays)

    alignment = metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise reader.fail(f"general.alignment {alignment!r} is not a power of two")

    tensors = tuple(_read_tensor_info(reader) for _ in range(n_tensors))
    position = reader.handle.tell()
    data_offset = position + (-position % alignment)
    for tensor in tensors:
        end = data_offset + tensor.offset + tensor.nbytes
        if tensor.offset % alignment or end > reader.size:
            raise InvalidModelFileError(
                reader.path,
                f"tensor {tensor.name!r} ends at byte {end} but the file has {reader.size}: "
                "truncated or corrupt",
            )
    return GgufHeader(version, metadata, tensors, data_offset, reader.size, alignment)


def _read_tensor_info(reader: _Reader) -> TensorInfo:
    name = reader.string(limit=MAX_KEY_BYTES)
    n_dims = reader.u32()
    if not 1 <= n_dims <= MAX_TENSOR_DIMS:
        raise reader.fail(f"tensor {name!r} has {n_dims} dimensions")
    shape = tuple(reader.u64() for _ in range(n_dims))
    type_id = reader.u32()
    if type_id not in GGML_TYPES:
        raise reader.fail(f"tensor {name!r} has unknown type {type_id}")
    offset = reader.u64()
    info = TensorInfo(name, shape, type_id, offset)
    if any(dim == 0 for dim in shape) or info.nbytes > reader.size:
        raise reader.fail(f"tensor {name!r} of shape {shape} cannot fit in the file")
    return info
