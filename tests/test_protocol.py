"""The wire protocol: golden encodings, and strict rejection of anything else."""

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framebus import ProtocolError, _protocol as protocol

BUS = protocol.BUS
LIMIT = protocol.MAX_ZMQ_MESSAGE


def test_frame_golden_bytes():
    # [10, seq=5, index=1, ts=123, bytesused=100] as a msgpack fixarray
    assert protocol.FRAME.encode(5, 1, 123, 100) == b"\x95\x0a\x05\x01\x7b\x64"


def test_release_golden_bytes():
    assert protocol.RELEASE.encode([1, 2], 1, 2) == b"\x94\x0c\x92\x01\x02\x01\x02"


@pytest.mark.parametrize("message, values", [
    (protocol.FRAME, (2**64 - 1, 255, 0, 1)),
    (protocol.CREDIT, (1,)),
    (protocol.RELEASE, ([1, 2, 3], 0, 3)),
])
def test_round_trip(message, values):
    decoded = protocol.decode(message.encode(*values), BUS, LIMIT)
    assert decoded.kind is message and decoded.values == values


@pytest.mark.parametrize("payload, why", [
    (b"", "undecodable"),
    (b"\x95\x0a\x05", "undecodable"),  # truncated
    (msgpack.packb({"kind": 10}), "array"),
    (msgpack.packb([]), "array"),
    (msgpack.packb([99, 1]), "unknown message kind"),
    (msgpack.packb([10, 1, 2, 3]), "has 4 fields"),
    (msgpack.packb([10, "1", 2, 3, 4]), "FRAME.seq"),
    (msgpack.packb([10, -1, 2, 3, 4]), "FRAME.seq"),
    (msgpack.packb([10, 1, 256, 3, 4]), "FRAME.index"),
    (msgpack.packb([10, True, 2, 3, 4]), "FRAME.seq"),
    (msgpack.packb([11, 1.5]), "CREDIT.count"),
    (msgpack.packb([12, list(range(65)), 0, 0]), "RELEASE.seqs"),
    (msgpack.packb([12, [1, "x"], 0, 0]), "RELEASE.seqs"),
    (msgpack.packb([12, [1], 257, 0]), "RELEASE.credit"),
    (b"\x00" * (LIMIT + 1), "exceeds"),
])
def test_malformed_messages_are_rejected(payload, why):
    with pytest.raises(ProtocolError, match=why):
        protocol.decode(payload, BUS, LIMIT)


def test_control_kinds_are_not_bus_kinds():
    with pytest.raises(ProtocolError, match="unknown message kind"):
        protocol.decode(protocol.BYE.encode("x"), BUS, LIMIT)


def test_expect_names_the_wrong_kind():
    with pytest.raises(ProtocolError, match="expected FRAME, got CREDIT"):
        protocol.expect(protocol.CREDIT.encode(1), protocol.FRAME, BUS, LIMIT)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=LIMIT + 16))
def test_arbitrary_bytes_decode_or_raise_protocol_error(payload):
    try:
        decoded = protocol.decode(payload, BUS, LIMIT)
    except ProtocolError:
        return
    assert decoded.kind in BUS.values()


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70).filter(lambda v: -2**63 <= v < 2**64)
    | st.floats(allow_nan=False) | st.text(max_size=8) | st.binary(max_size=8),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=4), children, max_size=4),
    max_leaves=20)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([10, 11, 12, 13, 1]), st.lists(_values, max_size=6))
def test_well_formed_msgpack_of_wrong_shape_is_rejected_or_valid(code, fields):
    payload = msgpack.packb([code, *fields])
    try:
        decoded = protocol.decode(payload, BUS, LIMIT)
    except ProtocolError:
        return
    # Whatever passed must match its declaration exactly.
    assert len(decoded.values) == len(decoded.kind.fields)
    assert all(f.check(v) for f, v in zip(decoded.kind.fields, decoded.values))


# The fixed layouts of the hot path (FRAME, a one-frame RELEASE) are plain
# msgpack, and the fast decoders agree with the checked, generic one on
# every payload of their size: same values, or a ProtocolError.

def test_fixed_layouts_are_plain_msgpack():
    frame = protocol.encode_frame(2**64 - 1, 255, 123, 4096)
    assert len(frame) == protocol.FRAME_SIZE
    assert msgpack.unpackb(frame) == [10, 2**64 - 1, 255, 123, 4096]
    release = protocol.encode_release([7], 256, 9)
    assert len(release) == protocol.RELEASE_SIZE
    assert msgpack.unpackb(release) == [12, [7], 256, 9]
    decoded = protocol.decode_bus(release)
    assert decoded.kind is protocol.RELEASE and tuple(decoded.values[0]) == (7,)
    assert decoded.values[1:] == (256, 9)
    # more than one frame: the generic encoding, decoded the same way
    assert protocol.encode_release([1, 2], 1, 2) == protocol.RELEASE.encode([1, 2], 1, 2)
    assert protocol.decode_bus(protocol.encode_release([1, 2], 1, 2)).values == ([1, 2], 1, 2)


def test_fixed_release_with_too_much_credit_is_rejected():
    with pytest.raises(ProtocolError, match="RELEASE.credit"):
        protocol.decode_bus(protocol.encode_release([7], 257, 9))


def _generic_or_error(payload: bytes, expected_kind=None):
    try:
        decoded = protocol.decode(payload, BUS, LIMIT)
    except ProtocolError:
        return "error"
    if expected_kind is not None and decoded.kind is not expected_kind:
        return "error"
    return (decoded.kind.name, *[tuple(v) if isinstance(v, list) else v for v in decoded.values])


@settings(max_examples=2000, deadline=None)
@given(st.data())
def test_fast_release_decoder_agrees_with_the_generic_one(data):
    good = bytearray(protocol.encode_release([data.draw(st.integers(0, 2**64 - 1))],
                                             data.draw(st.integers(0, 300)),
                                             data.draw(st.integers(0, 2**64 - 1))))
    for _ in range(data.draw(st.integers(0, 3))):  # corrupt a few bytes
        good[data.draw(st.integers(0, len(good) - 1))] = data.draw(st.integers(0, 255))
    payload = bytes(good)
    try:
        decoded = protocol.decode_bus(payload)
        fast = (decoded.kind.name, *[tuple(v) if isinstance(v, list) else v
                                     for v in decoded.values])
    except ProtocolError:
        fast = "error"
    assert fast == _generic_or_error(payload)


@settings(max_examples=2000, deadline=None)
@given(st.data())
def test_fast_frame_decoder_agrees_with_the_generic_one(data):
    u64 = st.integers(0, 2**64 - 1)
    good = bytearray(protocol.encode_frame(data.draw(u64), data.draw(st.integers(0, 255)),
                                           data.draw(u64), data.draw(u64)))
    for _ in range(data.draw(st.integers(0, 3))):
        good[data.draw(st.integers(0, len(good) - 1))] = data.draw(st.integers(0, 255))
    payload = bytes(good)
    try:
        fast = ("FRAME", *protocol.decode_frame(payload))
    except ProtocolError:
        fast = "error"
    assert fast == _generic_or_error(payload, protocol.FRAME)


def test_credit_one_is_the_generic_credit_of_one():
    # The producer recognises CREDIT_ONE by comparison; it must be exactly
    # what the generic codec makes and reads as CREDIT 1.
    assert protocol.CREDIT_ONE == msgpack.packb([protocol.CREDIT.code, 1])
    decoded = protocol.decode_bus(protocol.CREDIT_ONE)
    assert decoded.kind is protocol.CREDIT and decoded.values == (1,)
