"""The bytes of a `tf.train.Example` and of a TFRecord, written without TensorFlow.

    record = frame(example({"track_id": bytes_feature(b"t"), "chunk_index": int64_feature(0)}))

Extraction workers serialize and frame their own records with these (numpy and
google-crc32c only, no TensorFlow to import per worker), so the job's parent
only appends finished bytes to a shard. They equal TensorFlow's bytes:
`Example.SerializeToString(deterministic=True)` (map entries in key order) and
`tf.io.TFRecordWriter`'s framing, which TensorFlow's readers check (tested in
tests/test_records.py).

Wire format (protocol buffers): Example {Features features = 1}; Features
{map<string, Feature> feature = 1}, each entry {string key = 1; Feature value
= 2}; Feature {oneof: BytesList bytes_list = 1, FloatList float_list = 2,
Int64List int64_list = 3}; each list {repeated value = 1}, packed for floats
and int64. TFRecord: uint64 length, uint32 masked CRC-32C of the length, the
data, uint32 masked CRC-32C of the data, all little-endian.
"""

import struct

import google_crc32c
import numpy as np

_LENGTH_DELIMITED = 2
_CRC_MASK_DELTA = 0xA282EAD8


def _varint(value: int) -> bytes:
    """Base-128 varint; a negative int64 as its 64-bit two's complement."""
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return _varint(number << 3 | _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def bytes_feature(value: bytes) -> bytes:
    """A Feature holding one bytes value."""
    return _field(1, _field(1, value))


def floats_feature(values) -> bytes:
    """A Feature holding float32 values (packed, little-endian)."""
    packed = np.asarray(values, dtype="<f4").tobytes()
    return _field(2, _field(1, packed) if packed else b"")


def int64_feature(value: int) -> bytes:
    """A Feature holding one int64 value."""
    return _field(3, _field(1, _varint(int(value))))


def example(features: dict[str, bytes]) -> bytes:
    """An Example of {key: a Feature from the functions above}, keys in order."""
    entries = b"".join(
        _field(1, _field(1, key.encode()) + _field(2, value))
        for key, value in sorted(features.items())
    )
    return _field(1, entries)


def _masked_crc(data: bytes) -> bytes:
    crc = google_crc32c.value(data)
    return struct.pack("<I", ((crc >> 15 | crc << 17) + _CRC_MASK_DELTA) & 0xFFFFFFFF)


def frame(record: bytes) -> bytes:
    """One TFRecord: `record` with its length and checksums."""
    length = struct.pack("<Q", len(record))
    return length + _masked_crc(length) + record + _masked_crc(record)


# --- reading back (a shard rewritten without TensorFlow: `shards.drop_tracks`) ---


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes):
    """(field number, payload) of each length-delimited or varint field
    (the only wire types an Example holds); a varint's payload is its int."""
    pos = 0
    while pos < len(data):
        tag, pos = _read_varint(data, pos)
        number, kind = tag >> 3, tag & 7
        if kind == 0:
            value, pos = _read_varint(data, pos)
            yield number, value
        elif kind == _LENGTH_DELIMITED:
            length, pos = _read_varint(data, pos)
            yield number, data[pos : pos + length]
            pos += length
        else:
            raise ValueError(f"not an Example: wire type {kind} of field {number}")


def parse(record: bytes) -> dict:
    """An Example's {key: value}: bytes for a BytesList of one value, a
    float32 array for a FloatList, an int for an Int64List of one value."""
    out = {}
    for number, features in _fields(record):
        if number != 1:
            continue
        for _, entry in _fields(features):
            parts = dict(_fields(entry))
            key, feature = parts[1].decode(), parts.get(2, b"")
            for kind, values in _fields(feature):
                inner = dict(_fields(values)) if values else {}
                if kind == 1:
                    out[key] = inner.get(1, b"")
                elif kind == 2:
                    out[key] = np.frombuffer(inner.get(1, b""), "<f4")
                elif kind == 3:
                    value = inner.get(1, 0)
                    out[key] = (
                        _read_varint(value, 0)[0] if isinstance(value, bytes) else value
                    )
            out.setdefault(key, None)
    return out


def unframe(f):
    """(framed bytes, record) of each TFRecord in the binary file `f`, the
    checksums checked.

    Raises:
      ValueError: a record cut short or whose checksum does not match.
    """
    while header := f.read(12):
        if len(header) < 12:
            raise ValueError("a record's header is cut short")
        length = struct.unpack("<Q", header[:8])[0]
        if _masked_crc(header[:8]) != header[8:]:
            raise ValueError("a record's length fails its checksum")
        body = f.read(length + 4)
        if len(body) < length + 4 or _masked_crc(body[:length]) != body[length:]:
            raise ValueError("a record is cut short or fails its checksum")
        yield header + body, body[:length]
