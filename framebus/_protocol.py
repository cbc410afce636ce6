"""The wire protocol: every message declared once, one codec, strict checks.

A message is a msgpack array ``[kind, field1, field2, ...]``. Each kind is
declared below with its fields and their types (the way pyroute2 declares
netlink messages); `Message.decode` checks an incoming payload against the
declaration before anyone acts on it, so the rest of the code only ever sees
well-typed values.

Control socket (SOCK_SEQPACKET, msgpack): producer → HELLO (with every fd
attached) | REFUSE; consumer → ATTACH; producer → ACCEPT | REFUSE | STATUS;
later BYE when the producer shuts down.
zmq (ROUTER/DEALER): producer → FRAME; consumer → CREDIT, RELEASE.
A consumer that attaches with ``channel="socket"`` exchanges FRAME, CREDIT
and RELEASE over its control socket instead (one kernel hop, no zmq I/O
threads), checked against the same declarations.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Callable, Final, Literal, NamedTuple

import msgpack

from .errors import ProtocolError

VERSION = 1
MAX_CONTROL_MESSAGE = 64 * 1024  # HELLO with a 256-buffer table fits easily
MAX_ZMQ_MESSAGE = 4096  # FRAME/CREDIT/RELEASE are tens of bytes
MAX_RELEASE_BATCH = 64
U64 = (1 << 64) - 1

# Words the two sides agree on (ATTACH's policy and channel fields).
Policy = Literal["latest", "queue"]
Channel = Literal["zmq", "socket"]
LATEST: Final = "latest"  # policy: the newest frame whenever the consumer asks
QUEUE: Final = "queue"  # policy: every frame in order, up to a depth
POLICIES: tuple[Policy, ...] = (LATEST, QUEUE)
ZMQ: Final = "zmq"  # channel: FRAME/CREDIT/RELEASE over zmq (the default)
SOCKET: Final = "socket"  # channel: ... over the consumer's control socket
CHANNELS: tuple[Channel, ...] = (ZMQ, SOCKET)


def _uint(limit: int = U64) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return type(value) is int and 0 <= value <= limit
    check.__doc__ = f"an int in 0..{limit}"
    return check


def _str(limit: int) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return type(value) is str and len(value) <= limit
    check.__doc__ = f"a str of at most {limit} characters"
    return check


def _bytes(limit: int) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return type(value) is bytes and 0 < len(value) <= limit
    check.__doc__ = f"bytes, 1..{limit} long"
    return check


def _bool(value: Any) -> bool:
    """a bool"""
    return type(value) is bool


def _map(value: Any) -> bool:
    """a map"""
    return type(value) is dict


def _list(limit: int) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return type(value) is list and len(value) <= limit
    check.__doc__ = f"a list of at most {limit} items"
    return check


def _uint_list(value: Any) -> bool:
    """a list of at most 64 ints in 0..2**64-1"""
    return (type(value) is list and len(value) <= MAX_RELEASE_BATCH
            and all(type(v) is int and 0 <= v <= U64 for v in value))


class Field(NamedTuple):
    name: str
    check: Callable[[Any], bool]


@dataclass(frozen=True)
class Message:
    """One kind of message: its name, its code on the wire and its fields."""

    name: str
    code: int
    fields: tuple[Field, ...]

    def encode(self, *values: Any) -> bytes:
        """The message with these field values, in declaration order."""
        packed: bytes = msgpack.packb([self.code, *values])
        return packed

    def decode_fields(self, items: list[Any]) -> tuple[Any, ...]:
        """Check a decoded array (``[code, ...]``) against this declaration."""
        if len(items) != len(self.fields) + 1:
            raise ProtocolError(f"{self.name} has {len(self.fields)} fields, got {len(items) - 1}")
        values = items[1:]
        for field, value in zip(self.fields, values):
            if not field.check(value):
                raise ProtocolError(f"{self.name}.{field.name} must be {field.check.__doc__}, "
                                    f"got {type(value).__name__}")
        return tuple(values)


def _declare(*messages: Message) -> dict[int, Message]:
    return {m.code: m for m in messages}


# Control socket.
HELLO = Message("HELLO", 1, (
    Field("version", _uint(0xFFFF)),
    Field("session", _uint()),  # random per producer run: ties leases to it
    Field("format", _map),
    Field("table", _map),
    Field("endpoint", _str(512)),
    Field("token", _bytes(64)),  # this consumer's zmq routing id
    Field("lease_timeout_ms", _uint(86_400_000)),
))
ATTACH = Message("ATTACH", 2, (
    Field("role", _str(16)),  # "consumer", "status" or "controls"
    Field("name", _str(64)),
    Field("policy", _str(16)),  # "latest" or "queue"
    Field("max_held", _uint(256)),
    Field("depth", _uint(256)),
    Field("channel", _str(8)),  # where FRAME/CREDIT/RELEASE go: "zmq" or "socket"
))
ACCEPT = Message("ACCEPT", 3, ())
REFUSE = Message("REFUSE", 4, (Field("code", _str(32)), Field("reason", _str(1024))))
BYE = Message("BYE", 5, (
    Field("reason", _str(1024)),
    Field("clean", _bool),  # True: the stream ended (shutdown); False: this consumer was cut
))
STATUS = Message("STATUS", 6, (Field("report", _map),))
# After ATTACH with role "controls": the camera's controls, then optionally
# one SET_CONTROLS, answered by CONTROLS (with what was applied) or REFUSE.
CONTROLS = Message("CONTROLS", 7, (Field("controls", _list(256)), Field("applied", _map)))
SET_CONTROLS = Message("SET_CONTROLS", 8, (Field("values", _map),))
CONTROL = _declare(HELLO, ATTACH, ACCEPT, REFUSE, BYE, STATUS, CONTROLS, SET_CONTROLS)

# zmq.
FRAME = Message("FRAME", 10, (
    Field("seq", _uint()), Field("index", _uint(255)),
    Field("timestamp_ns", _uint()), Field("bytesused", _uint()),
))
CREDIT = Message("CREDIT", 11, (Field("count", _uint(256)),))
RELEASE = Message("RELEASE", 12, (
    Field("seqs", _uint_list),
    Field("credit", _uint(256)),  # frames asked for at the same time (saves a CREDIT)
    Field("received", _uint()),  # the newest seq the consumer has taken in (held vs queued)
))
REPORT = Message("REPORT", 13, (Field("figures", _map),))  # a consumer's own figures, for status
BUS = _declare(FRAME, CREDIT, RELEASE, REPORT)
AFTER_ACCEPT = _declare(FRAME, BYE)  # what the producer may send on a control socket then


class Decoded(NamedTuple):
    kind: Message
    values: tuple[Any, ...]


def decode(payload: bytes, table: dict[int, Message], limit: int) -> Decoded:
    """Decode one payload and check it against `table`'s declarations.

    Raises ProtocolError for anything that is not exactly a declared message.
    """
    if len(payload) > limit:
        raise ProtocolError(f"message of {len(payload)} bytes exceeds {limit}")
    try:
        # unpackb bounds every container by the payload's own length.
        items = msgpack.unpackb(payload, strict_map_key=True, raw=False, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"undecodable message: {type(exc).__name__}") from None
    if type(items) is not list or not items or type(items[0]) is not int:
        raise ProtocolError("a message must be a non-empty array starting with its kind")
    kind = table.get(items[0])
    if kind is None:
        raise ProtocolError(f"unknown message kind {items[0]}")
    return Decoded(kind, kind.decode_fields(items))


def expect(payload: bytes, kind: Message, table: dict[int, Message], limit: int) -> tuple[Any, ...]:
    """Decode `payload` and insist it is a `kind` message."""
    decoded = decode(payload, table, limit)
    if decoded.kind is not kind:
        raise ProtocolError(f"expected {kind.name}, got {decoded.kind.name}")
    return decoded.values


# FRAME's fast path. Every FRAME is written with the same layout: a 5-element
# msgpack array, the kind as a fixint, each field as a uint64. It is still
# plain msgpack (any decoder reads it), but the consumer checks and unpacks it
# with one struct call instead of a generic decode: it is the one message on
# the hot path. Anything else that claims to be a FRAME goes through `decode`.
_FRAME_LAYOUT = struct.Struct(">BBBQBQBQBQ")
FRAME_SIZE = _FRAME_LAYOUT.size
_ARRAY5, _UINT64 = 0x95, 0xCF
_FRAME_CODE = FRAME.code


#: A FRAME message's fields: seq, buffer index, timestamp_ns, bytesused (a
#: plain tuple: it is built once per frame on the consumer's hot path).
Announcement = tuple[int, int, int, int]


def encode_frame(seq: int, index: int, timestamp_ns: int, bytesused: int) -> bytes:
    """FRAME in its fixed layout (valid msgpack)."""
    return _FRAME_LAYOUT.pack(_ARRAY5, _FRAME_CODE, _UINT64, seq, _UINT64, index,
                              _UINT64, timestamp_ns, _UINT64, bytesused)


def decode_fixed_frame(payload: bytes) -> Announcement | None:
    """A FRAME's fields if `payload` has the fixed layout, else None (it may
    still be another message of the same size: decode that the generic way)."""
    if len(payload) == FRAME_SIZE:
        a, kind, t1, seq, t2, index, t3, stamp, t4, used = _FRAME_LAYOUT.unpack(payload)
        if (a == _ARRAY5 and kind == _FRAME_CODE and t1 == t2 == t3 == t4 == _UINT64
                and index <= 255):
            return seq, index, stamp, used
    return None


def decode_frame(payload: bytes) -> Announcement:
    """A FRAME's fields, checked: the fixed layout at once, anything else the
    generic way. Raises ProtocolError for what is not a well-formed FRAME."""
    announced = decode_fixed_frame(payload)
    if announced is not None:
        return announced
    seq, index, stamp, used = expect(payload, FRAME, BUS, MAX_ZMQ_MESSAGE)
    return seq, index, stamp, used


# RELEASE's fast path, likewise: the release of one frame (what a consumer
# sends per frame) always has this layout, still plain msgpack:
# [12, [seq], credit, received] with seq and received as uint64, credit uint16.
_RELEASE_LAYOUT = struct.Struct(">BBBBQBHBQ")
RELEASE_SIZE = _RELEASE_LAYOUT.size
_ARRAY4, _ARRAY1, _UINT16 = 0x94, 0x91, 0xCD


def encode_release(seqs: list[int], credit: int, received: int) -> bytes:
    """RELEASE (the fixed layout for one seq, valid msgpack either way)."""
    if len(seqs) == 1:
        return _RELEASE_LAYOUT.pack(_ARRAY4, RELEASE.code, _ARRAY1, _UINT64, seqs[0],
                                    _UINT16, credit, _UINT64, received)
    return RELEASE.encode(seqs, credit, received)


def decode_release(payload: bytes) -> tuple[int, int, int] | None:
    """A one-frame RELEASE in the fixed layout: (seq, credit, received);
    None for anything else (which `decode_bus` then checks)."""
    if len(payload) != RELEASE_SIZE:
        return None
    a, kind, a1, t1, seq, t2, credit, t3, received = _RELEASE_LAYOUT.unpack(payload)
    if (a == _ARRAY4 and kind == RELEASE.code and a1 == _ARRAY1 and t1 == t3 == _UINT64
            and t2 == _UINT16 and credit <= 256):
        return seq, credit, received
    return None


#: CREDIT 1, the request a `latest` consumer sends for each frame: built once,
#: and recognised by the producer with one comparison.
CREDIT_ONE = CREDIT.encode(1)
#: CREDIT 0: a `queue` consumer on zmq says "connected" (frames may flow).
CREDIT_ZERO = CREDIT.encode(0)


def decode_bus(payload: bytes) -> Decoded:
    """A consumer's bus message (CREDIT, RELEASE, REPORT or anything in
    `BUS`), checked: a one-frame RELEASE in the fixed layout at once, the
    rest the generic way. Raises ProtocolError."""
    release = decode_release(payload)
    if release is not None:
        seq, credit, received = release
        return Decoded(RELEASE, ((seq,), credit, received))
    return decode(payload, BUS, MAX_ZMQ_MESSAGE)
