"""A reader for CTranslate2's model files (`model.bin`), in numpy, executing nothing.

faster-whisper ships Whisper as a CTranslate2 conversion. Its `model_spec` serialisation,
all little-endian:

    u32 binary version (6)
    u16 length + bytes: the spec's name ("WhisperSpec"), NUL-terminated
    u32 spec revision
    u32 variable count, then per variable:
        u16 length + bytes: name ("encoder/conv1/weight"), NUL-terminated
        u8 rank, rank x u32 dimensions
        u8 dtype id (0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16)
        u32 byte count, the bytes
    u32 alias count, then per alias: two names (alias, target)

Every offset is checked against the buffer, so a cut or altered file is one
`EncoderLoadError` sentence, never a crash or a read past the end. The reader only
parses: callers check the file's digest before they hand it the bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from .errors import EncoderLoadError

SUPPORTED_VERSION = 6
DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}  # 5 (bf16) has no numpy type


@dataclass
class ModelSpec:
    name: str  # "WhisperSpec"
    revision: int
    variables: dict[str, np.ndarray]  # read-only views into the file's bytes
    aliases: dict[str, str]


class _Reader:
    def __init__(self, data: bytes | memoryview, where: str) -> None:
        self.data, self.at, self.where = memoryview(data), 0, where

    def take(self, n: int) -> memoryview:
        if n < 0 or self.at + n > len(self.data):
            raise EncoderLoadError(
                f"{self.where} is cut short or corrupt (a read at byte {self.at} runs past its end)."
            )
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def name(self) -> str:
        raw = bytes(self.take(self.u16()))
        try:
            return raw.rstrip(b"\0").decode("utf-8")
        except UnicodeDecodeError as e:
            raise EncoderLoadError(f"{self.where} holds a name that is not text (byte {self.at}).") from e


def read_model_spec(data: bytes | memoryview, where: str = "model.bin") -> ModelSpec:
    """Parse a CTranslate2 model file's bytes; `where` names it in error messages."""
    r = _Reader(data, where)
    version = r.u32()
    if version != SUPPORTED_VERSION:
        raise EncoderLoadError(f"{where} has CTranslate2 binary version {version}; emomon reads version 6.")
    name, revision = r.name(), r.u32()
    variables: dict[str, np.ndarray] = {}
    for _ in range(r.u32()):
        var = r.name()
        dims = tuple(r.u32() for _ in range(r.u8()))
        dtype_id = r.u8()
        if dtype_id not in DTYPES:
            raise EncoderLoadError(f"{where}: variable '{var}' has dtype id {dtype_id}, which emomon does not read.")
        dtype = np.dtype(DTYPES[dtype_id])
        size = r.u32()
        if size != dtype.itemsize * int(np.prod(dims, dtype=np.int64)):
            raise EncoderLoadError(
                f"{where}: variable '{var}' holds {size} bytes, which does not fit its shape {dims}."
            )
        variables[var] = np.frombuffer(r.take(size), dtype=dtype).reshape(dims)
    aliases = {}
    for _ in range(r.u32()):
        alias = r.name()
        aliases[alias] = r.name()
    if r.at != len(r.data):
        raise EncoderLoadError(f"{where} has {len(r.data) - r.at} bytes after its last entry: not a model file.")
    return ModelSpec(name, revision, variables, aliases)
