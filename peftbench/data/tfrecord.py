"""Reading TFRecord files of `tf.train.Example` messages without TensorFlow.

Framing (TensorFlow's `tensorflow/core/lib/io/record_writer.cc`, described in the TFRecord section of
https://www.tensorflow.org/tutorials/load_data/tfrecord): each record is

    uint64 length (little endian) | uint32 masked CRC-32C of those 8 bytes | data | uint32 masked CRC-32C of data

with mask(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8 (mod 2**32). Both checksums are verified; a
mismatch or a truncated file is a one-line `PeftbenchError` naming the file and the record's byte offset.

The data of a TFDS record is a serialised `tf.train.Example` (tensorflow/core/example/example.proto and
feature.proto): Example{1: Features}, Features{1: map<string, Feature>}, Feature{oneof 1: BytesList,
2: FloatList, 3: Int64List}, each list `repeated ... value = 1` (floats and int64s usually packed).
We decode it with a small wire-format reader here rather than the `protobuf` package: the schema is four
frozen messages, the runtime API for building message classes from a descriptor has changed across
protobuf 3/4/5 (`MessageFactory.GetPrototype` vs `message_factory.GetMessageClass`), and the hand-written
reader needs no dependency, accepts packed and unpacked lists, and reports malformed data with the
record's offset. Image bytes are sliced, never copied byte by byte, so it is fast enough for VTAB-1k.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Iterator, Union

import crc32c

from ..errors import PeftbenchError

Feature = Union[list[bytes], list[float], list[int]]
Example = dict[str, Feature]

_HEADER = 12  # uint64 length + uint32 masked length CRC
_MASK_DELTA = 0xA282EAD8


def masked_crc(data: bytes) -> int:
    """The masked CRC-32C TFRecord stores for `data`."""
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _problem(path: Path, offset: int, what: str) -> PeftbenchError:
    return PeftbenchError(f"{path}: record at byte {offset}: {what} (file corrupted or not a TFRecord)")


def iter_records(path: Path, skip: int = 0, count: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(byte offset, data) of the records of one TFRecord file, in order, both CRCs checked.

    The first `skip` records are passed over by their headers alone (length CRC checked, data not
    read); then `count` records are yielded (all the rest when None; fewer in the file is an error).
    """
    path = Path(path)
    with open(path, "rb") as handle:
        index = 0
        for offset, length in _headers(handle, path):
            if count is not None and index == skip + count:
                return
            if index >= skip:
                yield offset, _data(handle, path, offset, length)
            index += 1
    if count is not None and index < skip + count:
        raise PeftbenchError(
            f"{path}: holds {index} records; expected at least {skip + count} (as dataset_info.json's shard lengths say)"
        )


def read_record(path: Path, offset: int) -> bytes:
    """The data of the one record starting at byte `offset` (both CRCs checked)."""
    path = Path(path)
    with open(path, "rb") as handle:
        length = _header_at(handle, path, offset, os.fstat(handle.fileno()).st_size)
        return _data(handle, path, offset, length)


def count_records(path: Path) -> int:
    """How many records a TFRecord file holds (headers read and checked, data skipped)."""
    with open(path, "rb") as handle:
        return sum(1 for _ in _headers(handle, Path(path)))


def _header_at(handle, path: Path, offset: int, size: int) -> int:
    """The data length of the record at `offset`, its length CRC checked; `handle` is left at the data."""
    handle.seek(offset)
    header = handle.read(_HEADER)
    if len(header) < _HEADER:
        raise _problem(path, offset, f"truncated header ({len(header)} of {_HEADER} bytes)")
    if masked_crc(header[:8]) != struct.unpack("<I", header[8:])[0]:
        raise _problem(path, offset, "length CRC mismatch")
    (length,) = struct.unpack("<Q", header[:8])
    left = size - offset - _HEADER
    if length + 4 > left:
        raise _problem(path, offset, f"truncated: the header says {length} + 4 bytes follow, {left} do")
    return length


def _data(handle, path: Path, offset: int, length: int) -> bytes:
    """The data the handle is at, its CRC checked."""
    body = handle.read(length + 4)
    if masked_crc(body[:length]) != struct.unpack("<I", body[length:])[0]:
        raise _problem(path, offset, "data CRC mismatch")
    return body[:length]


def _headers(handle, path: Path) -> Iterator[tuple[int, int]]:
    """(offset, data length) of every record, length CRCs checked; `handle` is left at each record's data."""
    size = os.fstat(handle.fileno()).st_size
    offset = 0
    while offset < size:
        length = _header_at(handle, path, offset, size)
        yield offset, length
        offset += _HEADER + length + 4


# ---- tf.train.Example wire format ----------------------------------------------------------------------


class _Malformed(Exception):
    """Bytes that are not the message expected; the caller adds file and offset."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise _Malformed("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Malformed("varint longer than 10 bytes")


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of a message: ints for varint and fixed, bytes for length-delimited."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1 or wire == 5:
            width = 8 if wire == 1 else 4
            if pos + width > len(buf):
                raise _Malformed("truncated fixed-width field")
            value, pos = buf[pos : pos + width], pos + width
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise _Malformed(f"field {number} runs past the end of its message")
            value, pos = buf[pos : pos + length], pos + length
        else:
            raise _Malformed(f"unsupported wire type {wire} (field {number})")
        yield number, wire, value


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _feature(buf: bytes) -> Feature:
    """A Feature: the last of its bytes_list (1), float_list (2) or int64_list (3) present; [] when empty."""
    values: Feature = []
    for number, wire, payload in _fields(buf):
        if wire != 2 or number not in (1, 2, 3):
            continue
        values = []
        for item_number, item_wire, item in _fields(payload):
            if item_number != 1:
                continue
            if number == 1 and item_wire == 2:
                values.append(bytes(item))
            elif number == 2 and item_wire == 2:  # packed floats
                if len(item) % 4:
                    raise _Malformed("packed float list length is not a multiple of 4")
                values.extend(struct.unpack(f"<{len(item) // 4}f", item))
            elif number == 2 and item_wire == 5:
                values.append(struct.unpack("<f", item)[0])
            elif number == 3 and item_wire == 2:  # packed int64s
                pos = 0
                while pos < len(item):
                    value, pos = _varint(item, pos)
                    values.append(_signed(value))
            elif number == 3 and item_wire == 0:
                values.append(_signed(item))
            else:
                raise _Malformed(f"wire type {item_wire} in {('bytes', 'float', 'int64')[number - 1]}_list")
    return values


def parse_example(data: bytes) -> Example:
    """A serialised `tf.train.Example` as {feature key: list of bytes, floats or ints}; ValueError if malformed."""
    example: Example = {}
    try:
        for number, wire, features in _fields(data):
            if number != 1 or wire != 2:
                continue
            for entry_number, entry_wire, entry in _fields(features):
                if entry_number != 1 or entry_wire != 2:
                    continue
                key, value = "", b""
                for part_number, part_wire, part in _fields(entry):
                    if part_number == 1 and part_wire == 2:
                        key = bytes(part).decode("utf-8")
                    elif part_number == 2 and part_wire == 2:
                        value = part
                example[key] = _feature(value)
    except (_Malformed, UnicodeDecodeError) as exc:
        raise ValueError(f"not a tf.train.Example: {exc}") from None
    return example


def read_examples(path: Path, skip: int = 0, count: int | None = None) -> Iterator[tuple[int, Example]]:
    """(byte offset, Example) of a TFRecord file's records; a malformed message names file and offset."""
    for offset, data in iter_records(path, skip, count):
        try:
            yield offset, parse_example(data)
        except ValueError as exc:
            raise PeftbenchError(f"{path}: record at byte {offset}: {exc}") from None
