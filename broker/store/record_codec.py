"""Records <-> bytes, and the journal's frames: `length:u32 | crc32:u32 | body`.

A body is one type byte followed by the record's fields in declaration order, each written by
its kind: `str` (u16 length + UTF-8), `bytes` (u32 length), `int` (u64), `small` (u8),
`bool` (u8), `float` (f64), `props` (MQTT 5 PUBLISH properties, as on the wire), `ids` (u16
count, then a u32 each). One table (`RECORD_TYPES`) maps type bytes to record classes and their
field kinds; adding a record means adding a row, never renumbering one, so old journals stay
readable. A record class that gained fields later has a second row, with the new fields at
its end: the record is written with the first row (the bytes it always had) while the new
fields hold their defaults, and with the second once one does not.

A record class may gain trailing fields with defaults: its old row keeps reading the fields
it always had (the new ones take their defaults) and a new row reads them all. A record is
written with the shortest row whose missing fields hold their defaults, so what an older
version wrote is still what this one writes whenever the new fields are not used
(`Subscribed` without a subscription identifier is row 4, with one row 16).

Decoding never trusts the bytes: a short body, a bad type byte or bad UTF-8 raises
`CorruptRecord`, which the journal reports with the file offset.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any

from ..codec.primitives import Reader
from ..codec.properties import NO_PROPERTIES, decode_properties, encode_properties
from ..errors import MQTTError
from .records import (
    IncomingQos2,
    IncomingReleased,
    MessageQueued,
    MessageStored,
    OutgoingDone,
    OutgoingReleased,
    OutgoingSent,
    OutgoingStored,
    OutgoingWithdrawn,
    Record,
    RetainedCleared,
    RetainedSet,
    SessionClosed,
    SessionDeleted,
    SessionOpened,
    Subscribed,
    Unsubscribed,
)

FRAME_HEADER = struct.Struct(">II")  # length of the body, crc32 of the body
MAX_RECORD = 512 * 1024 * 1024  # a PUBLISH is at most 256 MiB; anything larger is corruption

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")


class CorruptRecord(Exception):
    """Bytes that are not a record this version can read."""


# type byte -> (class, field kinds). Never renumber: the numbers are on disk.
RECORD_TYPES: dict[int, tuple[type[Record], tuple[str, ...]]] = {
    1: (SessionOpened, ("str", "small", "int")),
    2: (SessionClosed, ("str", "float")),
    3: (SessionDeleted, ("str",)),
    4: (Subscribed, ("str", "str", "small")),  # no subscription identifier
    5: (Unsubscribed, ("str", "str")),
    6: (MessageStored, ("int", "str", "bytes", "small", "bool", "str", "props")),
    7: (OutgoingStored, ("str", "int", "small", "bool", "int")),
    8: (OutgoingSent, ("str", "int", "int")),
    9: (OutgoingReleased, ("str", "int")),
    10: (OutgoingDone, ("str", "int")),
    11: (IncomingQos2, ("str", "int")),
    12: (IncomingReleased, ("str", "int")),
    13: (RetainedSet, ("str", "int")),
    14: (RetainedCleared, ("str",)),
    15: (MessageQueued, ("int", "str", "bytes", "small", "bool", "str", "props", "str", "small",
                         "bool", "int")),
    16: (Subscribed, ("str", "str", "small", "int")),  # with its subscription identifier
    17: (OutgoingWithdrawn, ("str", "int")),
    # MQTT 5: the arrival time of a message with an expiry, and a delivery's subscription ids.
    18: (MessageStored, ("int", "str", "bytes", "small", "bool", "str", "props", "float")),
    19: (MessageQueued, ("int", "str", "bytes", "small", "bool", "str", "props", "str", "small",
                         "bool", "int", "float", "ids")),
    20: (OutgoingStored, ("str", "int", "small", "bool", "int", "ids")),
}


def _rows() -> dict[type, list[tuple[int, tuple[str, ...], tuple[tuple[str, Any], ...]]]]:
    """class -> its rows, shortest first: (type byte, the fields the row writes, the
    (name, default) of those it leaves out)."""
    rows: dict[type, list[tuple[int, tuple[str, ...], tuple[tuple[str, Any], ...]]]] = {}
    for type_byte, (cls, kinds) in RECORD_TYPES.items():
        every = fields(cls)
        left_out = tuple((f.name, f.default) for f in every[len(kinds):])
        rows.setdefault(cls, []).append((type_byte, tuple(f.name for f in every[:len(kinds)]),
                                         left_out))
    for cls, choices in rows.items():
        choices.sort(key=lambda row: len(row[1]))
        assert not choices[-1][2], f"no row of {cls.__name__} writes every field"
    return rows


_ROWS = _rows()


def _put_str(out: bytearray, value: str) -> None:
    data = value.encode("utf-8")
    out += _U16.pack(len(data))
    out += data


def _put_bytes(out: bytearray, value: bytes) -> None:
    out += _U32.pack(len(value))
    out += value


def _ids_field(ids: tuple[int, ...]) -> bytes:
    return struct.pack(f">H{len(ids)}I", len(ids), *ids)


_WRITERS: dict[str, Callable[[bytearray, Any], None]] = {
    "str": _put_str,
    "bytes": _put_bytes,
    "int": lambda out, v: out.extend(_U64.pack(v)),
    "small": lambda out, v: out.append(v),
    "bool": lambda out, v: out.append(1 if v else 0),
    "float": lambda out, v: out.extend(_F64.pack(v)),
    "props": lambda out, v: out.extend(encode_properties(v, "PUBLISH")),
    "ids": lambda out, v: out.extend(_ids_field(v)),
}


def encode_record(record: Record) -> bytes:
    fast = _FAST_ENCODERS.get(type(record))
    if fast is not None:
        return fast(record)
    return _encode_generic(record)


def _encode_generic(record: Record) -> bytes:
    type_byte, names = next((type_byte, names) for type_byte, names, left_out
                            in _ROWS[type(record)]
                            if all(getattr(record, name) == default
                                   for name, default in left_out))
    out = bytearray((type_byte,))
    for name, kind in zip(names, RECORD_TYPES[type_byte][1], strict=True):
        _WRITERS[kind](out, getattr(record, name))
    return bytes(out)


def encode_frame(record: Record) -> bytes:
    fast = _FAST_ENCODERS.get(type(record))
    body = fast(record) if fast is not None else _encode_generic(record)
    return FRAME_HEADER.pack(len(body), zlib.crc32(body)) + body


# The records written for every QoS 1/2 message of a persistent session, laid out by hand:
# byte for byte what the generic encoder writes (a test compares the two for every type).
_STR_FIELDS: dict[str, bytes] = {}  # client ids and topics recur: their encoded fields
_STR_FIELDS_MAX = 4096  # entries, each of a string of at most _STR_FIELD_CACHED characters
_STR_FIELD_CACHED = 256


def _str_field(value: str) -> bytes:
    field = _STR_FIELDS.get(value)
    if field is None:
        data = value.encode("utf-8")
        field = _U16.pack(len(data)) + data
        if len(value) <= _STR_FIELD_CACHED:
            if len(_STR_FIELDS) >= _STR_FIELDS_MAX:
                _STR_FIELDS.clear()
            _STR_FIELDS[value] = field
    return field


_B_Q = struct.Struct(">BQ")
_B_BOOL = struct.Struct(">B?")
_B_BOOL_Q = struct.Struct(">B?Q")
_Q_B_BOOL_Q = struct.Struct(">QB?Q")
_Q_Q = struct.Struct(">QQ")


def _message_parts(r: MessageStored | MessageQueued, type_byte: int) -> tuple[bytes, ...]:
    props = encode_properties(r.properties, "PUBLISH") if r.properties else b"\x00"
    payload = r.payload
    return (_B_Q.pack(type_byte, r.msg_id), _str_field(r.topic), _U32.pack(len(payload)),
            payload, _B_BOOL.pack(r.qos, r.retain), _str_field(r.origin), props)


def _message_queued(r: MessageQueued) -> bytes:
    if r.received_at or r.sub_ids:
        return b"".join((*_message_parts(r, 19), _str_field(r.client_id),
                         _B_BOOL_Q.pack(r.out_qos, r.out_retain, r.packet_id),
                         _F64.pack(r.received_at), _ids_field(r.sub_ids)))
    return b"".join((*_message_parts(r, 15), _str_field(r.client_id),
                     _B_BOOL_Q.pack(r.out_qos, r.out_retain, r.packet_id)))


def _message_stored(r: MessageStored) -> bytes:
    if r.received_at:
        return b"".join((*_message_parts(r, 18), _F64.pack(r.received_at)))
    return b"".join(_message_parts(r, 6))


def _outgoing_stored(r: OutgoingStored) -> bytes:
    head = _str_field(r.client_id) + _Q_B_BOOL_Q.pack(r.msg_id, r.qos, r.retain, r.packet_id)
    if r.sub_ids:
        return b"\x14" + head + _ids_field(r.sub_ids)
    return b"\x07" + head


_FAST_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    MessageQueued: _message_queued,
    MessageStored: _message_stored,
    OutgoingStored: _outgoing_stored,
    OutgoingSent: lambda r: b"\x08" + _str_field(r.client_id) + _Q_Q.pack(r.msg_id, r.packet_id),
    OutgoingReleased: lambda r: b"\x09" + _str_field(r.client_id) + _U64.pack(r.packet_id),
    OutgoingDone: lambda r: b"\x0a" + _str_field(r.client_id) + _U64.pack(r.packet_id),
    IncomingQos2: lambda r: b"\x0b" + _str_field(r.client_id) + _U64.pack(r.packet_id),
    IncomingReleased: lambda r: b"\x0c" + _str_field(r.client_id) + _U64.pack(r.packet_id),
}


def _take(data: bytes, pos: int, n: int) -> int:
    if pos + n > len(data):
        raise CorruptRecord(f"record body ends early ({n} bytes needed at {pos})")
    return pos + n


def _str_at(body: bytes, pos: int) -> tuple[str, int]:
    end = pos + 2 + _U16.unpack_from(body, pos)[0]
    if end > len(body):
        raise CorruptRecord(f"record body ends early (a string runs to {end})")
    return body[pos + 2:end].decode("utf-8"), end


# msg_id, topic, payload, qos, retain, origin, properties
_MessageFields = tuple[int, str, bytes, int, bool, str, Mapping[str, Any]]


def _dec_message_stored(body: bytes) -> tuple[Record, int]:
    fields, pos = _message_fields(body)
    return MessageStored(*fields), pos


def _dec_message_queued(body: bytes) -> tuple[Record, int]:
    fields, pos = _message_fields(body)
    client_id, pos = _str_at(body, pos)
    out_qos, out_retain, packet_id = _B_BOOL_Q.unpack_from(body, pos)
    pos += 10
    if body[0] == 15:
        return MessageQueued(*fields, client_id, out_qos, out_retain, packet_id), pos
    received_at = _F64.unpack_from(body, pos)[0]
    sub_ids, pos = _ids_at(body, pos + 8)
    return MessageQueued(*fields, client_id, out_qos, out_retain, packet_id, received_at,
                         sub_ids), pos


def _dec_message_stored_at(body: bytes) -> tuple[Record, int]:
    fields, pos = _message_fields(body)
    return MessageStored(*fields, _F64.unpack_from(body, pos)[0]), pos + 8


def _ids_at(body: bytes, pos: int) -> tuple[tuple[int, ...], int]:
    count = _U16.unpack_from(body, pos)[0]
    return struct.unpack_from(f">{count}I", body, pos + 2), pos + 2 + 4 * count


def _message_fields(body: bytes) -> tuple[_MessageFields, int]:
    """The fields `MessageStored` and `MessageQueued` begin with, and where they end."""
    msg_id = _U64.unpack_from(body, 1)[0]
    topic, pos = _str_at(body, 9)
    end = pos + 4 + _U32.unpack_from(body, pos)[0]
    if end + 2 > len(body):
        raise CorruptRecord("record body ends early (payload)")
    payload = body[pos + 4:end]
    qos, retain = body[end], bool(body[end + 1])
    origin, pos = _str_at(body, end + 2)
    if body[pos] == 0:  # no properties, as with every MQTT 3.x message
        props, pos = NO_PROPERTIES, pos + 1
    else:
        reader = Reader(body, pos)
        props = decode_properties(reader, "PUBLISH")
        pos = reader.pos
    return (msg_id, topic, payload, qos, retain, origin, props), pos


def _dec_outgoing_stored(body: bytes) -> tuple[Record, int]:
    client_id, pos = _str_at(body, 1)
    msg_id, qos, retain, packet_id = _Q_B_BOOL_Q.unpack_from(body, pos)
    if body[0] == 7:
        return OutgoingStored(client_id, msg_id, qos, retain, packet_id), pos + 18
    sub_ids, pos = _ids_at(body, pos + 18)
    return OutgoingStored(client_id, msg_id, qos, retain, packet_id, sub_ids), pos


def _dec_outgoing_sent(body: bytes) -> tuple[Record, int]:
    client_id, pos = _str_at(body, 1)
    msg_id, packet_id = _Q_Q.unpack_from(body, pos)
    return OutgoingSent(client_id, msg_id, packet_id), pos + 16


def _dec_client_and_id(cls: type) -> Callable[[bytes], tuple[Record, int]]:
    def decode(body: bytes) -> tuple[Record, int]:
        client_id, pos = _str_at(body, 1)
        return cls(client_id, _U64.unpack_from(body, pos)[0]), pos + 8
    return decode


# type byte -> decoder of the hot records (the others go through the table).
_FAST_DECODERS: dict[int, Callable[[bytes], tuple[Record, int]]] = {
    6: _dec_message_stored,
    15: _dec_message_queued,
    7: _dec_outgoing_stored,
    18: _dec_message_stored_at,
    19: _dec_message_queued,
    20: _dec_outgoing_stored,
    8: _dec_outgoing_sent,
    9: _dec_client_and_id(OutgoingReleased),
    10: _dec_client_and_id(OutgoingDone),
    11: _dec_client_and_id(IncomingQos2),
    12: _dec_client_and_id(IncomingReleased),
}


def decode_record(body: bytes) -> Record:
    if not body:
        raise CorruptRecord("empty record body")
    fast = _FAST_DECODERS.get(body[0])
    if fast is not None:
        try:
            record, pos = fast(body)
        except (struct.error, IndexError, UnicodeDecodeError, MQTTError) as exc:
            name = RECORD_TYPES[body[0]][0].__name__
            raise CorruptRecord(f"{name}: {exc}") from None
        if pos != len(body):
            raise CorruptRecord(f"{type(record).__name__}: {len(body) - pos} unexpected bytes "
                                "at the end")
        return record
    entry = RECORD_TYPES.get(body[0])
    if entry is None:
        raise CorruptRecord(f"unknown record type {body[0]}")
    cls, kinds = entry
    values: list[Any] = []
    pos = 1
    try:
        for kind in kinds:
            if kind == "str":
                end = _take(body, pos, 2)
                n = _U16.unpack_from(body, pos)[0]
                pos, start = _take(body, end, n), end
                values.append(body[start:pos].decode("utf-8"))
            elif kind == "bytes":
                end = _take(body, pos, 4)
                n = _U32.unpack_from(body, pos)[0]
                pos, start = _take(body, end, n), end
                values.append(body[start:pos])
            elif kind == "int":
                values.append(_U64.unpack_from(body, pos)[0])
                pos = _take(body, pos, 8)
            elif kind in ("small", "bool"):
                pos = _take(body, pos, 1)
                values.append(body[pos - 1] if kind == "small" else bool(body[pos - 1]))
            elif kind == "float":
                values.append(_F64.unpack_from(body, pos)[0])
                pos = _take(body, pos, 8)
            elif kind == "ids":
                ids, end = _ids_at(body, pos)
                pos = _take(body, pos, end - pos)
                values.append(ids)
            else:  # props
                reader = Reader(body, pos)
                values.append(decode_properties(reader, "PUBLISH"))
                pos = reader.pos
    except (struct.error, UnicodeDecodeError, MQTTError) as exc:
        raise CorruptRecord(f"{cls.__name__}: {exc}") from None
    if pos != len(body):
        raise CorruptRecord(f"{cls.__name__}: {len(body) - pos} unexpected bytes at the end")
    return cls(*values)
