"""What a benchmark cell moves: frame sizes, the per-frame stamp, load phases and timing.

Every frame carries a stamp that the producer writes and each consumer reads back
(that read is the consumer "touching" the frame):

* bytes ``0..8``   sequence number (little-endian u64)
* bytes ``8..16``  ``time.monotonic_ns()`` taken when the frame was ready
* last 8 bytes     the sequence number again (proves both ends of the frame belong
  to the same frame, i.e. the consumer sees a whole, untorn frame).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

_HEAD = struct.Struct("<QQ")
_TAIL = struct.Struct("<Q")

#: producer cases
INPLACE = "inplace"  # the frame is made directly in the transport's buffer
CAPTURE = "capture"  # the frame starts in a separate capture buffer (a camera's)
#: load modes
PACED = "paced"  # fixed frame rate well below saturation: latency, CPU per frame
FLAT = "flat"  # producer flat out: maximum delivered frame rate

_BYTES_PER_PIXEL = {"GREY": 1, "YUYV": 2, "UYVY": 2, "RGB3": 3, "BGR3": 3}


@dataclass(frozen=True)
class FrameSpec:
    """One frame size: a V4L2 FourCC and its numpy shape (uint8)."""

    width: int
    height: int
    fourcc: str

    @property
    def shape(self) -> tuple[int, ...]:
        bpp = _BYTES_PER_PIXEL[self.fourcc]
        return (self.height, self.width) if bpp == 1 else (self.height, self.width, bpp)

    @property
    def nbytes(self) -> int:
        return self.width * self.height * _BYTES_PER_PIXEL[self.fourcc]

    @property
    def label(self) -> str:
        return f"{self.width}x{self.height} {self.fourcc}"

    @property
    def key(self) -> str:
        return f"{self.width}x{self.height}"


#: the issue's four sizes, by the names the CLI accepts
SIZES: dict[str, FrameSpec] = {
    "64x64": FrameSpec(64, 64, "GREY"),
    "640x480": FrameSpec(640, 480, "YUYV"),
    "1920x1080": FrameSpec(1920, 1080, "RGB3"),
    "3840x2160": FrameSpec(3840, 2160, "RGB3"),
}
_ALIASES = {"vga": "640x480", "1080p": "1920x1080", "4k": "3840x2160", "tiny": "64x64"}


def parse_size(text: str) -> FrameSpec:
    """``64x64``, ``1080p``, ``4k`` or ``WxH:FOURCC`` (e.g. ``320x240:YUYV``)."""
    name, _, fourcc = text.strip().partition(":")
    name = _ALIASES.get(name.lower(), name.lower())
    if not fourcc and name in SIZES:
        return SIZES[name]
    try:
        w, h = (int(v) for v in name.split("x"))
    except ValueError:
        raise ValueError(f"bad frame size {text!r}: use WxH[:FOURCC] or one of {list(SIZES)}") from None
    fourcc = (fourcc or "RGB3").upper()
    if fourcc not in _BYTES_PER_PIXEL:
        raise ValueError(f"unsupported pixel format {fourcc!r} (one of {sorted(_BYTES_PER_PIXEL)})")
    spec = FrameSpec(w, h, fourcc)
    if spec.nbytes < _HEAD.size + _TAIL.size:
        raise ValueError(f"frame {text!r} is too small to carry the stamp")
    return spec


@dataclass(frozen=True)
class Phase:
    case: str  # INPLACE or CAPTURE
    mode: str  # PACED or FLAT


ALL_PHASES: tuple[Phase, ...] = (
    Phase(INPLACE, PACED),
    Phase(CAPTURE, PACED),
    Phase(INPLACE, FLAT),
    Phase(CAPTURE, FLAT),
)


@dataclass(frozen=True)
class Timing:
    """Durations in seconds. Each phase: warm-up, measured window, then a drain gap."""

    duration: float = 1.0
    warmup: float = 0.2
    gap: float = 0.1
    rate: float = 100.0  # frames/s of the paced mode
    wait: float = 0.05  # timeout of every blocking receive (bounds reaction to stop)

    def windows(self, t0: int, n_phases: int) -> list[tuple[int, int, int]]:
        """(begin, start, stop) in monotonic ns for each phase, starting at ``t0``."""
        step = self.warmup + self.duration + self.gap
        out = []
        for k in range(n_phases):
            begin = t0 + int(k * step * 1e9)
            start = begin + int(self.warmup * 1e9)
            out.append((begin, start, start + int(self.duration * 1e9)))
        return out

    def span(self, n_phases: int) -> float:
        return n_phases * (self.warmup + self.duration + self.gap)


@dataclass(frozen=True)
class CellSpec:
    """One run of one transport: a frame size, a consumer count, the phases to run."""

    transport: str
    frame: FrameSpec
    consumers: int
    phases: tuple[Phase, ...] = ALL_PHASES
    timing: Timing = field(default_factory=Timing)
    rep: int = 0


def stamp(frame: np.ndarray, seq: int, ts: int) -> None:
    """Write the stamp into a writable, C-contiguous frame."""
    _HEAD.pack_into(frame, 0, seq, ts)
    _TAIL.pack_into(frame, frame.nbytes - _TAIL.size, seq)


def read_stamp(frame: np.ndarray) -> tuple[int, int, int]:
    """(seq at head, timestamp, seq at tail): reads 24 bytes, copies nothing else."""
    seq, ts = _HEAD.unpack_from(frame, 0)
    (tail,) = _TAIL.unpack_from(frame, frame.nbytes - _TAIL.size)
    return seq, ts, tail


def capture_buffer(spec: FrameSpec) -> np.ndarray:
    """A stand-in for the camera's buffer: private memory, every page written."""
    return np.full(spec.shape, 0x5A, np.uint8)
