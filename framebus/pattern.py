"""The synthetic test pattern: frames any process can recompute and check.

Every byte of every plane is a function of the frame's sequence number,
``(x + 2*y + 4*seq) mod 256`` for byte column x of row y, and the first 8 bytes
of the frame hold the sequence number itself (little-endian), so any process
can recompute what a frame must contain and prove that nothing corrupted it.

`Pattern.draw` writes straight into a shared buffer: each row is one copy from
a fixed 256-byte-periodic ramp, seen through a strided view, so no frame-sized
array is ever allocated. The synthetic source, the test fixture, the monitor
and the benchmarks all use it.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .formats import FrameFormat

__all__ = ["Pattern", "byte_rows", "read_stamp", "stamp"]

_ROW_STEP = 2
_FRAME_STEP = 4


def byte_rows(plane: np.ndarray) -> np.ndarray:
    """A (rows, bytes-per-row) uint8 view of a plane view (no copy)."""
    rows = plane.shape[0]
    return plane.reshape(rows, -1) if plane.ndim > 1 else plane.reshape(1, -1)


class Pattern:
    """Draws pattern frames of one format."""

    def __init__(self, fmt: FrameFormat) -> None:
        if fmt.compressed:
            raise ValueError(f"the test pattern cannot make {fmt.pixel_format} frames; "
                             f"pick a raw format")
        self.format = fmt
        widest = max(p.bytesperline for p in fmt.planes)
        rows = max(p.shape[0] for p in fmt.planes)
        self._ramp = (np.arange(256 + _ROW_STEP * rows + widest) % 256).astype(np.uint8)

    def source_rows(self, seq: int, rows: int, width: int) -> np.ndarray:
        """The pattern of one plane as a strided view of the ramp (no copy)."""
        start = self._ramp[(_FRAME_STEP * seq) % 256:]
        return as_strided(start, shape=(rows, width), strides=(_ROW_STEP, 1), writeable=False)

    def draw(self, planes: tuple[np.ndarray, ...], seq: int) -> None:
        """Write frame `seq` into `planes` (the buffer's writable plane views)."""
        for plane in planes:
            dst = byte_rows(plane)
            np.copyto(dst, self.source_rows(seq, *dst.shape))
        stamp(planes[0], seq)

    def expected(self, seq: int) -> list[np.ndarray]:
        """What each plane of frame `seq` must hold (for checks; allocates)."""
        out = []
        for n, layout in enumerate(self.format.planes):
            rows = layout.shape[0]
            width = int(np.prod(layout.shape[1:]))
            plane = self.source_rows(seq, rows, width).copy()
            if n == 0:
                plane.reshape(-1)[:8] = np.frombuffer(seq.to_bytes(8, "little"), np.uint8)
            out.append(plane)
        return out

    def check(self, planes: tuple[np.ndarray, ...], seq: int) -> bool:
        """True if `planes` hold exactly frame `seq`."""
        return all(np.array_equal(byte_rows(p), e) for p, e in zip(planes, self.expected(seq)))


def stamp(plane: np.ndarray, seq: int) -> None:
    byte_rows(plane)[0, :8] = np.frombuffer(seq.to_bytes(8, "little"), np.uint8)


def read_stamp(plane: np.ndarray) -> int:
    """The sequence number stamped in a frame's first 8 bytes."""
    return int.from_bytes(byte_rows(plane)[0, :8].tobytes(), "little")
