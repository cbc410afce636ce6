"""Recording frames into H.264 files (MP4 or MKV) with PyAV.

`Recorder` encodes the frames you hand it and writes them to a file, optionally
cut into segments of a fixed length, or held back in a pre-trigger ring that is
written only when `trigger()` is called (as picamera2's CircularOutput does)::

    from framebus import Consumer
    from framebus.recorder import Recorder

    with Consumer(path, policy="queue") as cam, Recorder("out.mp4", cam.format) as rec:
        for frame in cam:            # each frame is released when the next is asked for,
            rec.write(frame)         # so its lease outlives the encoder's read of it
            if rec.frames_written >= 300:
                break

NV12, YU12 and GREY frames go into the encoder without a copy: the encoder
reads the consumer's read-only shared view, which is why `write` must return
before the frame is released. Other formats are converted once (see
docs/recording.md). Timestamps come from each frame's `timestamp_ns`, so a
frame the producer dropped leaves a gap in the file's time line.

PyAV is imported when a Recorder is made; without it the error names the extra
to install: ``pip install 'framebus[record]'``.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from types import ModuleType
from typing import TYPE_CHECKING

from ._encoder_frames import Converter, converter
from .errors import FramebusError
from .formats import FrameFormat
from .frame import Frame

if TYPE_CHECKING:
    from av.container import OutputContainer
    from av.packet import Packet
    from av.stream import Stream
    from av.video.codeccontext import VideoCodecContext

__all__ = ["INSTALL_HINT", "Recorder", "RecordingFile", "CONTAINERS"]

INSTALL_HINT = "pip install 'framebus[record]'"
TIME_BASE = Fraction(1, 90_000)  # the MPEG clock: 11 us resolution
CONTAINERS = {".mp4": "mp4", ".mkv": "matroska"}
# The encoder's pixel format for each bus format when the encoder accepts it.
# (MJPG decodes to full-range YUV: yuvj420p keeps its range.)
_ENCODER_FORMAT = {"NV12": "nv12", "YU12": "yuv420p", "GREY": "gray", "MJPG": "yuvj420p"}
# ultrafast: 1080p30 NV12 takes ~8 ms of CPU a frame here (veryfast ~20 ms for a fifth
# of the size); a recorder that keeps up matters more than the smallest file.
_DEFAULT_OPTIONS = {"libx264": {"preset": "ultrafast", "forced-idr": "1"}}


def import_av() -> ModuleType:
    """PyAV, or a `FramebusError` that says how to install it."""
    try:
        import av
    except ImportError:
        raise FramebusError(f"recording needs PyAV, which is not installed: "
                            f"{INSTALL_HINT}") from None
    return av


@dataclass
class RecordingFile:
    """One file the recorder wrote (one per segment or per trigger)."""

    path: str
    frames: int = 0
    first_seq: int = 0
    last_seq: int = 0
    first_timestamp_ns: int = 0  # CLOCK_MONOTONIC of its first frame
    last_timestamp_ns: int = 0
    bytes: int = 0  # the file's size once closed

    @property
    def span_s(self) -> float:
        """Seconds from its first frame's timestamp to its last one's."""
        return (self.last_timestamp_ns - self.first_timestamp_ns) / 1e9


class _Pending:
    """An encoded packet with the frame it came from."""

    __slots__ = ("packet", "seq", "timestamp_ns")

    def __init__(self, packet: Packet[Stream], seq: int, timestamp_ns: int) -> None:
        self.packet, self.seq, self.timestamp_ns = packet, seq, timestamp_ns


class Recorder:
    """Encodes frames of `fmt` to H.264 in `path` (``.mp4`` or ``.mkv``).

    Args:
        path: the output file. With `segment_seconds`, files are named
            ``<stem>-0000<suffix>``, ``<stem>-0001<suffix>``, ...
        fmt: the stream format (``consumer.format``).
        segment_seconds: start a new file every this many seconds (0: one file).
        pre_seconds: keep the last this-many seconds encoded in memory and
            write nothing until `trigger()`; then write them and every frame
            after, until `close()`. 0: write from the first frame.
        fps_hint: the expected frame rate, for the encoder's rate control and
            the keyframe interval (one a second). Timestamps never depend on it.
        codec: an FFmpeg H.264 encoder name ("h264": FFmpeg's default one).
        pix_fmt: the encoder's pixel format (default: the frame's own where
            the encoder takes it, else yuv420p).
        options: encoder options (default for libx264: preset ultrafast).
    """

    def __init__(self, path: str | os.PathLike[str], fmt: FrameFormat, *,
                 segment_seconds: float = 0.0, pre_seconds: float = 0.0,
                 fps_hint: float = 30.0, codec: str = "h264", pix_fmt: str | None = None,
                 options: dict[str, str] | None = None) -> None:
        self._av = import_av()
        self.path = os.fspath(path)
        stem, suffix = os.path.splitext(self.path)
        if suffix.lower() not in CONTAINERS:
            raise FramebusError(f"cannot tell the container from {self.path!r}: "
                                f"name it {' or '.join('*' + s for s in CONTAINERS)}")
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
            raise FramebusError(f"cannot write into {folder}: no such folder, or not writable")
        if segment_seconds < 0 or pre_seconds < 0 or not 0 < fps_hint <= 1000:
            raise FramebusError("segment_seconds and pre_seconds must be >= 0, fps_hint 0..1000")
        self._stem, self._suffix = stem, suffix
        self.format = fmt
        self.segment_ns = int(segment_seconds * 1e9)
        self.pre_ns = int(pre_seconds * 1e9)
        self._encoder: VideoCodecContext | None = self._open_encoder(codec, pix_fmt, fps_hint,
                                                                     options)
        self._convert: Converter | None = converter(self._av, fmt)
        encoder = self._encoder  # what each file's stream says of the packets
        self._stream_args = (encoder.codec.name, encoder.framerate, encoder.width, encoder.height)
        self.files: list[RecordingFile] = []
        self._container: OutputContainer | None = None
        self._stream: Stream | None = None
        self._pts_offset = 0
        self._frames: dict[int, tuple[int, int]] = {}  # pts -> (seq, timestamp) in the encoder
        self._ring: deque[_Pending] = deque()
        self._trigger_asked = not self.pre_ns
        self.recording = False  # packets go to a file (not into the ring)
        self.triggered_at_ns = 0  # timestamp of the frame at which writing began
        self._frame_ticks = round(TIME_BASE.denominator / fps_hint)
        self._origin_ns: int | None = None
        self._last_pts = -1
        self._cut_from_ns = 0  # start of the segment the encoder is in
        self._last_seq = 0
        self.frames_in = 0  # frames handed to write()
        self.frames_missing = 0  # gaps in their sequence numbers
        self.frames_written = 0  # frames in files
        self.first_seq = 0
        self._failed = False  # writing failed: close() only cleans up

    # ------------------------------------------------------------------ API
    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def trigger(self) -> None:
        """Start writing the ring and what follows. Safe from a signal handler
        or another thread; takes effect at the next `write()`."""
        self._trigger_asked = True

    @property
    def ring_seconds(self) -> float:
        """How much the pre-trigger ring holds now."""
        if len(self._ring) < 2:
            return 0.0
        return (self._ring[-1].timestamp_ns - self._ring[0].timestamp_ns) / 1e9

    def write(self, frame: Frame) -> None:
        """Encode `frame`. Release it only after this returns: the encoder
        may read the shared buffer itself."""
        encoder, convert = self._encoder, self._convert
        if encoder is None or convert is None:
            raise FramebusError("recorder is closed")
        ts = frame.timestamp_ns
        if self._origin_ns is None:
            self._origin_ns = self._cut_from_ns = ts
            self.first_seq = frame.seq
        if self._last_seq:
            self.frames_missing += max(0, frame.seq - self._last_seq - 1)
        self._last_seq = frame.seq
        self.frames_in += 1
        if self._trigger_asked and not self.recording:
            self._start(ts)
        pts = max(self._last_pts + 1, (ts - self._origin_ns) * 9 // 100_000)
        self._last_pts = pts
        for picture in convert(frame):
            picture.pts = pts
            picture.duration = self._frame_ticks  # what the last frame of a file lasts
            picture.time_base = TIME_BASE
            if self.segment_ns and ts - self._cut_from_ns >= self.segment_ns:
                picture.pict_type = self._av.video.frame.PictureType.I  # the next file's first
                self._cut_from_ns = ts
            self._frames[pts] = (frame.seq, ts)
            try:
                self._take(encoder.encode(picture))
            except (self._av.FFmpegError, OSError) as exc:  # a full disk, say
                self._failed = True
                raise FramebusError(f"recording {self.path} failed: {exc}") from None

    def close(self) -> None:
        """Flush the encoder and finalize the file. Safe twice."""
        encoder, self._encoder, self._convert = self._encoder, None, None
        if encoder is None:
            return
        try:
            if self._origin_ns is not None and not self._failed:
                if self._trigger_asked and not self.recording:
                    self._start(self._last_ts())
                self._take(encoder.encode(None))
        except (self._av.FFmpegError, OSError) as exc:
            self._failed = True
            raise FramebusError(f"recording {self.path} failed: {exc}") from None
        finally:  # the codecs' threads end when they are freed
            self._close_file()
            self._ring.clear()

    # ------------------------------------------------------------ internals
    def _open_encoder(self, codec: str, pix_fmt: str | None, fps: float,
                      options: dict[str, str] | None) -> VideoCodecContext:
        av = self._av
        try:
            encoder: VideoCodecContext = av.CodecContext.create(codec, "w")
        except (av.FFmpegError, ValueError) as exc:
            raise FramebusError(f"no video encoder {codec!r} in this FFmpeg: {exc}") from None
        if encoder.type != "video":
            raise FramebusError(f"{codec!r} is not a video encoder")
        supported = [f.name for f in encoder.codec.video_formats or ()]
        wanted = pix_fmt or _ENCODER_FORMAT.get(self.format.pixel_format, "yuv420p")
        if supported and wanted not in supported:
            if pix_fmt:
                raise FramebusError(f"encoder {encoder.name} does not take {pix_fmt}; "
                                    f"it takes {', '.join(supported)}")
            wanted = "yuv420p" if "yuv420p" in supported else supported[0]
        if wanted != "gray" and (self.format.width % 2 or self.format.height % 2):
            raise FramebusError(f"{wanted} needs an even width and height, not "
                                f"{self.format.width}x{self.format.height}")
        encoder.width, encoder.height = self.format.width, self.format.height
        encoder.pix_fmt = wanted
        encoder.time_base = TIME_BASE
        encoder.framerate = Fraction(fps).limit_denominator(1001)
        encoder.gop_size = max(1, round(fps))  # a keyframe a second: segments, ring, seeking
        encoder.options = {**_DEFAULT_OPTIONS.get(encoder.name, {}), **(options or {})}
        try:
            encoder.open()
        except (av.FFmpegError, ValueError) as exc:
            raise FramebusError(f"cannot open encoder {encoder.name}: {exc}") from None
        return encoder

    def _last_ts(self) -> int:
        return self._ring[-1].timestamp_ns if self._ring else self._origin_ns or 0

    def _start(self, ts: int) -> None:
        """Switch from the ring to files; the ring's packets go first."""
        self.recording = True
        self.triggered_at_ns = ts
        ring, self._ring = self._ring, deque()
        for pending in ring:
            self._write_packet(pending)

    def _take(self, packets: list[Packet[Stream]]) -> None:
        for packet in packets:
            seq, ts = self._frames.pop(packet.pts or 0, (self._last_seq, 0))
            pending = _Pending(packet, seq, ts)
            if self.recording:
                self._write_packet(pending)
            else:
                self._keep(pending)

    def _keep(self, pending: _Pending) -> None:
        """Into the ring, dropping whole keyframe intervals older than pre_seconds."""
        ring = self._ring
        ring.append(pending)
        newest = pending.timestamp_ns
        while True:
            second_key = next((i for i, p in enumerate(ring) if i and p.packet.is_keyframe), 0)
            if not second_key or newest - ring[second_key].timestamp_ns < self.pre_ns:
                break
            for _ in range(second_key):
                ring.popleft()
        while ring and not ring[0].packet.is_keyframe:  # a file must start with one
            ring.popleft()

    def _write_packet(self, pending: _Pending) -> None:
        packet = pending.packet
        current = self.files[-1] if self._container is not None else None
        if packet.is_keyframe and (current is None or (
                self.segment_ns and pending.timestamp_ns - current.first_timestamp_ns
                >= self.segment_ns)):
            self._open_file(pending)
        elif current is None:
            return  # nothing before a file's first keyframe is decodable
        assert self._container is not None and self._stream is not None
        record = self.files[-1]
        if packet.pts is not None:
            packet.pts -= self._pts_offset
        if packet.dts is not None:
            packet.dts -= self._pts_offset
        packet.stream = self._stream
        self._container.mux(packet)
        record.frames += 1
        self.frames_written += 1
        record.first_seq = min(record.first_seq or pending.seq, pending.seq)
        record.last_seq = max(record.last_seq, pending.seq)
        record.last_timestamp_ns = max(record.last_timestamp_ns, pending.timestamp_ns)

    def _open_file(self, first: _Pending) -> None:
        self._close_file()
        n = len(self.files)
        path = f"{self._stem}-{n:04d}{self._suffix}" if self.segment_ns else self.path
        av = self._av
        try:
            container = av.open(path, "w", format=CONTAINERS[self._suffix.lower()])
        except (av.FFmpegError, OSError) as exc:
            raise FramebusError(f"cannot write {path}: {exc}") from None
        codec, rate, width, height = self._stream_args
        container.metadata["comment"] = (
            f"framebus: first seq {first.seq}, CLOCK_MONOTONIC {first.timestamp_ns} ns")
        stream = container.add_mux_stream(codec, rate=rate, width=width, height=height)
        stream.time_base = TIME_BASE
        self._container, self._stream = container, stream
        self._pts_offset = first.packet.pts or 0
        self.files.append(RecordingFile(path, first_seq=first.seq,
                                        first_timestamp_ns=first.timestamp_ns))

    def _close_file(self) -> None:
        container, self._container, self._stream = self._container, None, None
        if container is None:
            return
        record = self.files[-1]
        try:
            container.close()
            record.bytes = os.path.getsize(record.path)
        except (self._av.FFmpegError, OSError):
            if not self._failed:
                raise
