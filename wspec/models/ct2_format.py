"""Read CTranslate2's `model.bin` into NumPy arrays.

Layout (binary version 6, as written by ctranslate2.specs): u32 version, spec name,
u32 spec revision, u32 variable count, then per variable a name, u8 rank, u32 dims,
u8 dtype, u32 byte count and the raw little-endian bytes; finally an alias table.
Strings are a u16 length (including the trailing NUL) followed by the bytes.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

# ctranslate2::DataType enum order.
_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
}
_BFLOAT16 = 5


class TruncatedModelError(ValueError):
    """The byte stream ended before the header said it would."""


@dataclass
class CT2Model:
    """Variables of a CTranslate2 model, with aliases resolved lazily by `get`."""

    version: int
    spec_name: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> np.ndarray:
        return self.variables[self.aliases.get(name, name)]

    def scalar(self, name: str) -> int:
        return int(self.get(name).reshape(()))


def _read(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise TruncatedModelError(f"expected {n} bytes, got {len(data)}")
    return data


def _u(stream: BinaryIO, fmt: str) -> int:
    return struct.unpack("<" + fmt, _read(stream, struct.calcsize(fmt)))[0]


def _string(stream: BinaryIO) -> str:
    length = _u(stream, "H")
    return _read(stream, length)[:-1].decode("utf-8")


def _array(raw: bytes, dtype_id: int, shape: tuple[int, ...]) -> np.ndarray:
    if dtype_id == _BFLOAT16:
        # bfloat16 is the upper half of a float32: widen exactly.
        halves = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return halves.view(np.float32).reshape(shape)
    if dtype_id not in _DTYPES:
        raise ValueError(f"unsupported CTranslate2 dtype id {dtype_id}")
    return np.frombuffer(raw, dtype=_DTYPES[dtype_id]).reshape(shape)


def read_ct2(stream: BinaryIO | bytes) -> CT2Model:
    """Parse a whole `model.bin`; raises TruncatedModelError if bytes are missing."""
    if isinstance(stream, bytes | bytearray | memoryview):
        stream = io.BytesIO(stream)
    version = _u(stream, "I")
    if version < 5:
        raise ValueError(f"CTranslate2 binary version {version} is too old (need >= 5)")
    spec_name = _string(stream)
    revision = _u(stream, "I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(_u(stream, "I")):
        name = _string(stream)
        rank = _u(stream, "B")
        shape = tuple(_u(stream, "I") for _ in range(rank))
        dtype_id = _u(stream, "B")
        nbytes = _u(stream, "I")
        variables[name] = _array(_read(stream, nbytes), dtype_id, shape)
    aliases = {}
    for _ in range(_u(stream, "I")):
        alias = _string(stream)
        aliases[alias] = _string(stream)
    if stream.read(1):
        raise ValueError("trailing bytes after the alias table: not a CTranslate2 model.bin")
    return CT2Model(version, spec_name, revision, variables, aliases)
