"""A tiny baseline JPEG encoder for test pictures made of flat 8x8 blocks.

Each block of a greyscale picture is one level (its DCT has a DC term and no
AC terms), so encoding is a DC difference and an end-of-block per block:
vectorised numpy, no dependency, a few milliseconds even at 1080p. Any JPEG
decoder (libjpeg, OpenCV, PIL, a browser) shows it. A COM segment right
after SOI carries a tag and 8 bytes of the frame's sequence number, at a
fixed offset, so the stamp is read without decoding.
"""

from __future__ import annotations

import struct

import numpy as np
from numpy.typing import NDArray

__all__ = ["STAMP_OFFSET", "encode_blocks", "jpeg_header", "read_jpeg_stamp"]

_TAG = b"FBUS"
_SOI_COM = b"\xff\xd8\xff\xfe"
STAMP_OFFSET = len(_SOI_COM) + 2 + len(_TAG)  # where the 8-byte stamp starts

_DC_Q = 8  # DC quantiser: a flat block of level L has DC coefficient 8*(L-128)
# Standard luminance DC table (ITU T.81 K.3): code lengths 2..9 for categories 0..11.
_DC_BITS = (0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0)
_DC_VALUES = tuple(range(12))
# An AC table with one symbol, end-of-block, coded as the single bit 0.
_AC_BITS = (1,) + (0,) * 15
_AC_VALUES = (0x00,)


def _canonical_codes(bits: tuple[int, ...], values: tuple[int, ...]) -> dict[int, tuple[int, int]]:
    """value -> (code, length), the canonical Huffman codes of T.81 Annex C."""
    codes, code, k = {}, 0, 0
    for length, count in enumerate(bits, start=1):
        for _ in range(count):
            codes[values[k]] = (code, length)
            code, k = code + 1, k + 1
        code <<= 1
    return codes


_DC_CODES = _canonical_codes(_DC_BITS, _DC_VALUES)
_DC_CODE = np.array([_DC_CODES[c][0] for c in range(12)], np.uint32)
_DC_LEN = np.array([_DC_CODES[c][1] for c in range(12)], np.uint32)


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", marker, len(payload) + 2) + payload


def jpeg_header(width: int, height: int) -> bytes:
    """The DQT, SOF0, DHT and SOS segments of a greyscale baseline JPEG of
    `width` x `height` (SOI and the stamp's COM precede them, entropy-coded
    data and EOI follow: `encode_blocks` writes those)."""
    dqt = bytes([0]) + bytes([_DC_Q] + [1] * 63)
    sof = struct.pack(">BHHB", 8, height, width, 1) + bytes([1, 0x11, 0])
    dht = (bytes([0x00]) + bytes(_DC_BITS) + bytes(_DC_VALUES)
           + bytes([0x10]) + bytes(_AC_BITS) + bytes(_AC_VALUES))
    sos = bytes([1, 1, 0x00, 0, 63, 0])
    return (_segment(0xFFDB, dqt) + _segment(0xFFC0, sof) + _segment(0xFFC4, dht)
            + _segment(0xFFDA, sos))


def encode_blocks(levels: NDArray[np.uint8], header: bytes, seq: int,
                  out: NDArray[np.uint8]) -> int:
    """Encode a picture whose 8x8 block (row r, column c) has grey level
    ``levels[r, c]`` into `out`; returns the JPEG's length in bytes.

    `header` is `jpeg_header(width, height)`, and `levels` has one entry
    per block: shape ``(ceil(height/8), ceil(width/8))``. Raises ValueError
    if `out` is too small.
    """
    dc = levels.astype(np.int32).ravel() - 128  # quantised DC of each block
    diff = np.diff(dc, prepend=0)
    magnitude = np.abs(diff)
    category = np.zeros_like(magnitude)
    nonzero = magnitude > 0
    category[nonzero] = np.floor(np.log2(magnitude[nonzero])).astype(np.int32) + 1
    extra = np.where(diff < 0, diff + (1 << category) - 1, diff).astype(np.uint32)
    cat = category.astype(np.uint32)
    # One codeword per block: DC code, extra bits, then EOB (the bit 0).
    code = (((_DC_CODE[cat] << cat) | extra) << 1)
    length = _DC_LEN[cat] + cat + 1
    width = int(length.max())
    shifts = length[:, None].astype(np.int64) - 1 - np.arange(width)[None, :]
    bits = ((code[:, None] >> np.maximum(shifts, 0).astype(np.uint32)) & 1).astype(np.uint8)
    stream = bits[shifts >= 0]
    stream = np.concatenate([stream, np.ones(-stream.size % 8, np.uint8)])  # pad with 1s
    data = np.packbits(stream)
    stuffed = np.insert(data, np.flatnonzero(data == 0xFF) + 1, 0)  # 0xFF -> 0xFF 0x00
    com = _SOI_COM + struct.pack(">H", 2 + len(_TAG) + 8) + _TAG + seq.to_bytes(8, "little")
    parts = (com, header, stuffed.tobytes(), b"\xff\xd9")
    total = sum(len(p) for p in parts)
    if total > out.size:
        raise ValueError(f"a {total}-byte JPEG does not fit a {out.size}-byte buffer")
    at = 0
    for part in parts:
        out[at:at + len(part)] = np.frombuffer(part, np.uint8)
        at += len(part)
    return total


def read_jpeg_stamp(data: NDArray[np.uint8]) -> int | None:
    """The sequence number in a JPEG made by `encode_blocks`; None if `data`
    does not start with that stamp."""
    head = data[:STAMP_OFFSET + 8].tobytes()
    if len(head) < STAMP_OFFSET + 8 or not head.startswith(_SOI_COM) \
            or head[STAMP_OFFSET - len(_TAG):STAMP_OFFSET] != _TAG:
        return None
    return int.from_bytes(head[STAMP_OFFSET:], "little")
