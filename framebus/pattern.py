"""The synthetic test pattern: frames any process can recompute and check.

Every byte of every plane is a function of the frame's sequence number,
``(x + 2*y + 4*seq) mod 256`` for byte column x of row y, and the first 8 bytes
of the frame hold the sequence number itself (little-endian), so any process
can recompute what a frame must contain and prove that nothing corrupted it.

`Pattern.draw` writes straight into a shared buffer: each row is one copy from
a fixed 256-byte-periodic ramp, seen through a strided view, so no frame-sized
array is ever allocated. The synthetic source, the test fixture, the monitor
and the benchmarks all use it.

MJPG frames are small greyscale JPEGs of the same ramp at 8x8-block
resolution: block (column c, row r) has level ``(8*c + 16*r + 4*seq) mod
256``, except that the first 8 blocks of the top row show the sequence
number's bytes. Their size varies from frame to frame, as a camera's do, and
the sequence number also sits in a COM segment at a fixed offset
(`read_stamp` finds it there, no decoding needed); any JPEG decoder shows
the moving ramp.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided
from numpy.typing import NDArray

from ._jpeg import encode_blocks, jpeg_header, read_jpeg_stamp
from .formats import FrameFormat

__all__ = ["Pattern", "byte_rows", "read_stamp", "stamp"]

_ROW_STEP = 2
_FRAME_STEP = 4


def byte_rows(plane: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """A (rows, bytes-per-row) uint8 view of a plane view (no copy)."""
    rows = plane.shape[0]
    return plane.reshape(rows, -1) if plane.ndim > 1 else plane.reshape(1, -1)


class Pattern:
    """Draws pattern frames of one format."""

    def __init__(self, fmt: FrameFormat) -> None:
        self.format = fmt
        self._jpeg_header = jpeg_header(fmt.width, fmt.height) if fmt.compressed else b""
        widest = max(p.bytesperline for p in fmt.planes)
        rows = max(p.shape[0] for p in fmt.planes)
        self._ramp = (np.arange(256 + _ROW_STEP * rows + widest) % 256).astype(np.uint8)

    def source_rows(self, seq: int, rows: int, width: int) -> NDArray[np.uint8]:
        """The pattern of one plane as a strided view of the ramp (no copy)."""
        start = self._ramp[(_FRAME_STEP * seq) % 256:]
        return as_strided(start, shape=(rows, width), strides=(_ROW_STEP, 1), writeable=False)

    def block_levels(self, seq: int) -> NDArray[np.uint8]:
        """MJPG: the grey level of each 8x8 block of frame `seq`; the first
        eight blocks of the top row hold the sequence number's bytes, as a
        raw frame's first 8 bytes do."""
        rows, cols = -(-self.format.height // 8), -(-self.format.width // 8)
        levels = ((8 * np.arange(cols)[None, :] + 16 * np.arange(rows)[:, None]
                   + _FRAME_STEP * seq) % 256).astype(np.uint8)
        seq_bytes = np.frombuffer(seq.to_bytes(8, "little"), np.uint8)
        levels[0, :8] = seq_bytes[:min(8, cols)]
        return levels

    def draw(self, planes: tuple[NDArray[np.uint8], ...], seq: int) -> int:
        """Write frame `seq` into `planes` (the buffer's writable plane views);
        returns the bytes used (pass it to `Producer.publish(bytesused=...)`:
        an MJPG frame's size varies)."""
        if self.format.compressed:
            return encode_blocks(self.block_levels(seq), self._jpeg_header, seq,
                                 planes[0].reshape(-1))
        for plane in planes:
            dst = byte_rows(plane)
            np.copyto(dst, self.source_rows(seq, *dst.shape))
        stamp(planes[0], seq)
        return self.format.sizeimage

    def expected(self, seq: int) -> list[NDArray[np.uint8]]:
        """What each plane of frame `seq` must hold (for checks; allocates).
        For MJPG, the one plane's first bytes: the whole JPEG."""
        if self.format.compressed:
            jpeg = np.empty(self.format.sizeimage, np.uint8)
            return [jpeg[:self.draw((jpeg,), seq)]]
        out = []
        for n, layout in enumerate(self.format.planes):
            rows = layout.shape[0]
            width = int(np.prod(layout.shape[1:]))
            plane = self.source_rows(seq, rows, width).copy()
            if n == 0:
                plane.reshape(-1)[:8] = np.frombuffer(seq.to_bytes(8, "little"), np.uint8)
            out.append(plane)
        return out

    def check(self, planes: tuple[NDArray[np.uint8], ...], seq: int) -> bool:
        """True if `planes` hold exactly frame `seq`."""
        if self.format.compressed:
            jpeg = self.expected(seq)[0]
            return np.array_equal(planes[0][:jpeg.size], jpeg)
        return all(np.array_equal(byte_rows(p), e) for p, e in zip(planes, self.expected(seq)))


def stamp(plane: NDArray[np.uint8], seq: int) -> None:
    """Write `seq` into the first 8 bytes of a raw plane (little-endian)."""
    byte_rows(plane)[0, :8] = np.frombuffer(seq.to_bytes(8, "little"), np.uint8)


def read_stamp(plane: NDArray[np.uint8]) -> int:
    """The sequence number stamped in a frame's first 8 bytes (for an MJPG
    frame's one-dimensional plane, in its COM segment)."""
    if plane.ndim == 1:
        jpeg_stamp = read_jpeg_stamp(plane)
        if jpeg_stamp is not None:
            return jpeg_stamp
    return int.from_bytes(byte_rows(plane)[0, :8].tobytes(), "little")
