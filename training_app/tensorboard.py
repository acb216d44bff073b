"""TensorBoard event files without TensorBoard (or protobuf, or torch): web nodes write them.

An event file is a sequence of TFRecords (a little-endian u64 length, its masked CRC-32C, the data,
the data's masked CRC-32C), each an `Event` protobuf: wall_time (field 1, double), step (2, int64),
file_version (3, string, first record) or summary (5): repeated `Value` (1) of tag (1, string) and
simple_value (2, float) or image (4: height 1, width 2, colorspace 3, encoded_image_string 4).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

FILE_VERSION = "brain.Event:2"


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits, value = value & 0x7F, value >> 7
        out.append(bits | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _bytes_field(field: int, data: bytes) -> bytes:
    return _key(field, 2) + _varint(len(data)) + data


@dataclass(frozen=True)
class Scalar:
    tag: str
    step: int
    value: float
    wall_time: float


@dataclass(frozen=True)
class ImageEntry:
    tag: str
    step: int
    png: bytes
    width: int
    height: int
    wall_time: float


def _event(wall_time: float, step: int | None = None, *, file_version: str = "", value: bytes = b"") -> bytes:
    data = _key(1, 1) + struct.pack("<d", wall_time)
    if step is not None:
        data += _key(2, 0) + _varint(step)
    if file_version:
        data += _bytes_field(3, file_version.encode())
    if value:
        data += _bytes_field(5, _bytes_field(1, value))  # a Summary holding one Value
    return data


def scalar_event(item: Scalar) -> bytes:
    value = _bytes_field(1, item.tag.encode()) + _key(2, 5) + struct.pack("<f", item.value)
    return _event(item.wall_time, item.step, value=value)


def image_event(item: ImageEntry) -> bytes:
    image = (_key(1, 0) + _varint(item.height) + _key(2, 0) + _varint(item.width) + _key(3, 0) + _varint(3)
             + _bytes_field(4, item.png))
    value = _bytes_field(1, item.tag.encode()) + _bytes_field(4, image)
    return _event(item.wall_time, item.step, value=value)


def record(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data))


def event_file_name(wall_time: float) -> str:
    """TensorBoard finds files by this prefix; the usual host name part is ours (not the server's)."""
    return f"events.out.tfevents.{int(wall_time)}.lorasite"


def write_event_file(folder: Path, scalars: Iterable[Scalar], images: Iterable[ImageEntry] = (),
                     start_time: float = 0.0) -> Path:
    path = Path(folder) / event_file_name(start_time)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        out.write(record(_event(start_time, file_version=FILE_VERSION)))
        for item in scalars:
            out.write(record(scalar_event(item)))
        for item in images:
            out.write(record(image_event(item)))
    return path
