"""Frames from another machine: the consumer end of `framebus bridge`, over Zenoh.

    import framebus
    with framebus.RemoteConsumer("cam0", connect=["tcp/robot.local:7447"]) as cam:
        with cam.get(timeout=1.0) as frame:
            frame.array, frame.seq, frame.timestamp_ns, frame.format

The same `Frame` API as a local consumer: read-only `array` and `planes`,
the producer's own sequence numbers (gaps are frames this consumer never got),
`timestamp_ns` (the producer's CLOCK_MONOTONIC stamp: comparable with
`time.monotonic_ns()` only on the producer's machine), `valid()`, context
manager and iteration.

Raw frames arrive with tight rows (no `bytesperline` padding) in the
producer's pixel format; each is viewed in place in the one `bytes` object
zenoh-python hands over (`ZBytes.to_bytes()` is its only way out, so another
copy into a pooled buffer would only add work). JPEG frames are decoded into
a pool of `max_held` buffers allocated once per format: ``BGR3`` (or `color`)
for colour sources, ``GREY`` for grey ones.

Needs the ``remote`` extra: ``pip install 'framebus[remote]'``.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Iterable, Iterator

import numpy as np
from numpy.typing import NDArray

from . import _iteration
from ._zenoh import (FrameHeader, Info, Keys, import_simplejpeg, import_zenoh, last_chunk, new_id, open_session,
                     tight, unpack_message, zenoh_config)
from .errors import FramebusError, NoProducer, ProducerGone, ProtocolError, Timeout
from .formats import FrameFormat, FrameViews, PixelFormat

__all__ = ["RemoteConsumer", "RemoteFrame"]

_QUERY_INTERVAL = 0.5
_JPEG_COLORS = {"BGR3": "BGR", "RGB3": "RGB"}


class RemoteFrame:
    """One frame received from a bridge, held until `release()`.

    Its pixels stay put while it is held (nothing is decoded into a held
    frame's buffer), so `valid()` is True until the frame is released.
    """

    __slots__ = ("seq", "index", "timestamp_ns", "bytesused", "format", "_views", "_release")

    def __init__(self, header: FrameHeader, fmt: FrameFormat, views: FrameViews,
                 release: Any) -> None:
        self.seq = header.seq
        self.index = header.buffer  # the producer's buffer index
        self.timestamp_ns = header.timestamp_ns  # the producer's CLOCK_MONOTONIC, ns
        self.format = fmt  # of this frame's pixels
        self.bytesused = int(views.array.nbytes) if fmt.compressed else fmt.sizeimage
        self._views: FrameViews | None = views
        self._release = release

    @property
    def array(self) -> NDArray[np.uint8]:
        """The frame, read-only (the shape a local consumer sees for `format`)."""
        return self._held().array

    @property
    def planes(self) -> tuple[NDArray[np.uint8], ...]:
        """Each plane's read-only view (Y, UV for NV12; one for packed formats)."""
        return self._held().planes

    def to_bgr(self, dst: NDArray[np.uint8] | None = None) -> NDArray[np.uint8]:
        """The frame as an ``(H, W, 3)`` BGR image for OpenCV (``framebus[cv]``)."""
        from .convert import to_bgr
        return to_bgr(self, dst)

    def _held(self) -> FrameViews:
        if self._views is None:
            raise FramebusError(f"frame {self.seq} was released")
        return self._views

    def valid(self) -> bool:
        """True while held: a remote frame's pixels are never overwritten under it."""
        return self._views is not None

    @property
    def released(self) -> bool:
        return self._views is None

    def release(self) -> None:
        """Give the frame's buffer back to the consumer. Safe twice."""
        if self._views is not None:
            self._views = None
            self._release(self)

    def __enter__(self) -> RemoteFrame:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self._views is None else "held"
        return f"<RemoteFrame seq={self.seq} {self.format.pixel_format} {state}>"


class RemoteConsumer:
    """Frames of the bus that a `framebus bridge` publishes under `key`.

    Args:
        key: the bridge's ``--key`` (``cam0``, ``robot1/front``).
        connect: Zenoh endpoints to connect to (``tcp/HOST:7447``): the
            bridge's ``--listen`` endpoint, or a Zenoh router.
        listen: endpoints to listen on, for a bridge that ``--connect``s here.
        config: a Zenoh JSON5 configuration file to start from instead of
            framebus's own (peer mode, no multicast scouting, no shared memory).
        mode: ``peer`` (default) or ``client`` (through a router).
        name: shown in this consumer's reports.
        max_held: frames this consumer may hold at once.
        timeout: seconds to look for the bridge before `NoProducer`.
        reconnect: when the bridge goes away, wait for it to come back instead
            of raising `ProducerGone`.
        color: what JPEG streams from colour sources decode to, ``BGR3``
            (default, OpenCV's order) or ``RGB3``.

    Raises `NoProducer` if no bridge answers for `key` within `timeout`.
    """

    def __init__(self, key: str, *, connect: Iterable[str] = (), listen: Iterable[str] = (),
                 config: str | None = None, mode: str = "peer", name: str = "",
                 max_held: int = 2, timeout: float = 5.0, reconnect: bool = False,
                 color: PixelFormat = "BGR3") -> None:
        if not 1 <= max_held <= 64:
            raise FramebusError("max_held must be 1..64")
        if color not in _JPEG_COLORS:
            raise FramebusError(f"color must be one of {', '.join(_JPEG_COLORS)}, not {color!r}")
        self.keys = Keys(key)
        self.key = key
        self.id = new_id()
        self.name = (name or f"remote-{self.id[:6]}")[:64]
        self.max_held = max_held
        self.reconnect = reconnect
        self.color = color
        self.received = 0
        self.dropped = 0  # frames of the stream this consumer never got (sequence gaps)
        self.sessions = 0  # bridge or producer runs seen
        self._closed = False
        self._held: dict[int, RemoteFrame] = {}
        self._busy: dict[int, NDArray[np.uint8]] = {}  # pooled buffer of each held JPEG frame
        self._cond = threading.Condition()
        self._pending: tuple[FrameHeader, Any] | None = None
        self._gone: ProducerGone | None = None
        self._error: FramebusError | None = None
        self._bridges: set[str] = set()
        self._run = ""
        self._last_seq = 0
        self._pool: list[NDArray[np.uint8]] = []
        self._pool_format: FrameFormat | None = None
        self._zenoh = import_zenoh()
        connect, listen = list(connect), list(listen)
        self._session = open_session(zenoh_config(listen, connect, config, mode))
        try:
            self._declare()
            info = self._find_bridge(timeout, connect + listen)
            self.encoding = info.encoding
            self.source_format = info.format  # the producer's own format
            self.format = self._output_format(info.format, info.encoding)
            # Last: the bridge starts sending once it sees this token.
            self._token = self._session.liveliness().declare_token(self.keys.consumer(self.id))
        except BaseException:
            self._session.close()
            raise

    # ------------------------------------------------------------------ API
    def __enter__(self) -> RemoteConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def held(self) -> int:
        """How many frames this consumer holds now."""
        return len(self._held)

    def get(self, timeout: float | None = None) -> RemoteFrame:
        """The newest frame not yet seen, waiting for one if needed.

        Raises `framebus.Timeout` after `timeout` seconds (None: no limit),
        `framebus.ProducerGone` once the bridge has gone (unless `reconnect`),
        and `FramebusError` if this consumer already holds `max_held` frames.
        """
        if self._closed:
            raise FramebusError("consumer is closed")
        if len(self._held) >= self.max_held:
            raise FramebusError(f"consumer {self.name!r} already holds max_held={self.max_held} "
                                f"frames; release one before asking for another")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._error is not None:
                    raise self._error
                if self._pending is not None:
                    header, payload = self._pending
                    self._pending = None
                    break
                if self._gone is not None and not self.reconnect:
                    raise self._gone
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise Timeout(f"no frame from key {self.key!r} within {timeout} s")
                self._cond.wait(remaining)
        return self._frame(header, payload)

    def __iter__(self) -> Iterator[RemoteFrame]:
        """Every frame in turn, each released before the next is asked for.

        Ends when the bridge shuts down cleanly; raises `ProducerGone` if it
        vanished (with `reconnect`, it waits for the bridge instead).
        """
        def take(previous: RemoteFrame | None) -> RemoteFrame:
            if previous is not None:
                previous.release()
            return self.get()

        return _iteration.frames(take)

    def close(self) -> None:
        """Release every held frame and leave the Zenoh network. Safe twice."""
        if self._closed:
            return
        self._closed = True
        for frame in list(self._held.values()):
            frame.release()
        with self._cond:
            self._pending = None
            self._cond.notify_all()
        self._session.close()

    # ------------------------------------------------------------ internals
    def _declare(self) -> None:
        session = self._session
        self._acks = session.declare_publisher(self.keys.ack(self.id), express=True)
        self._frames = session.declare_subscriber(self.keys.frame(self.id), self._on_frame)
        self._watch = session.liveliness().declare_subscriber(
            self.keys.bridges, self._on_bridge, history=True)

    def _find_bridge(self, timeout: float, endpoints: list[str]) -> Info:
        """Ask for the bridge's info until one answers or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            for reply in self._session.get(self.keys.info, timeout=max(0.05, min(
                    _QUERY_INTERVAL, remaining))):
                if reply.ok is not None:
                    return Info.unpack(reply.ok.payload.to_bytes())
            if time.monotonic() >= deadline:
                where = ", ".join(endpoints) or "the Zenoh network (no endpoints given)"
                raise NoProducer(f"no framebus bridge publishes key {self.key!r} via {where} "
                                 f"(looked for {timeout:g} s)")

    def _on_frame(self, sample: Any) -> None:
        """Zenoh's thread: acknowledge the frame at once, keep it as the newest."""
        attachment = sample.attachment
        try:
            if attachment is None:
                raise ProtocolError("a frame from the bridge without its header")
            message = unpack_message(attachment.to_bytes())
        except FramebusError as exc:
            with self._cond:
                self._error = exc
                self._cond.notify_all()
            return
        self._acknowledge(0 if isinstance(message, str) else message.seq)
        if isinstance(message, str):
            with self._cond:
                self._gone = ProducerGone(f"bridge for {self.key!r} stopped: {message}",
                                          clean=True)
                self._cond.notify_all()
            return
        with self._cond:
            self._pending = (message, sample.payload)  # a newer frame replaces an unread one
            self._cond.notify_all()

    def _acknowledge(self, seq: int) -> None:
        """Tell the bridge a frame (or its goodbye, seq 0) arrived: it frees a slot."""
        try:
            self._acks.put(seq.to_bytes(8, "little"))
        except self._zenoh.ZError:
            pass  # the session is closing

    def _on_bridge(self, sample: Any) -> None:
        bridge = last_chunk(sample.key_expr)
        with self._cond:
            if sample.kind == self._zenoh.SampleKind.PUT:
                self._bridges.add(bridge)
                if self.reconnect:
                    self._gone = None
            else:
                self._bridges.discard(bridge)
                if not self._bridges and self._gone is None:
                    self._gone = ProducerGone(f"the bridge for {self.key!r} went away")
            self._cond.notify_all()

    def _frame(self, header: FrameHeader, payload: Any) -> RemoteFrame:
        if header.run != self._run:  # a new bridge or producer run: seqs start again
            self._run, self._last_seq = header.run, 0
            self.sessions += 1
        elif self._last_seq:
            self.dropped += max(0, header.seq - self._last_seq - 1)
        self._last_seq = header.seq
        self.received += 1
        data = payload.to_bytes()
        buffer = None
        if header.encoding == "raw":
            fmt = header.format
            views = _raw_views(fmt, data)
        else:
            fmt = self._output_format(header.format, "jpeg")
            buffer = self._free_buffer(fmt)
            views = _decode_jpeg(fmt, data, buffer)
        if fmt != self.format:
            self.format = fmt
        frame = RemoteFrame(header, fmt, views, self._release)
        self._held[id(frame)] = frame
        if buffer is not None:
            self._busy[id(frame)] = buffer
        return frame

    def _release(self, frame: RemoteFrame) -> None:
        self._held.pop(id(frame), None)
        self._busy.pop(id(frame), None)

    def _output_format(self, source: FrameFormat, encoding: str) -> FrameFormat:
        if encoding == "raw":
            return tight(source)
        pixel_format = "GREY" if source.pixel_format == "GREY" else self.color
        return FrameFormat(source.width, source.height, pixel_format)

    def _free_buffer(self, fmt: FrameFormat) -> NDArray[np.uint8]:
        """A pooled buffer for a `fmt` frame that no held frame uses."""
        if fmt != self._pool_format:
            self._pool = [np.empty(fmt.sizeimage, np.uint8) for _ in range(self.max_held)]
            self._pool_format = fmt
        busy = [id(b) for b in self._busy.values()]
        return next(b for b in self._pool if id(b) not in busy)


def _decode_jpeg(fmt: FrameFormat, data: bytes, buffer: NDArray[np.uint8]) -> FrameViews:
    """Decode a JPEG into `buffer`; read-only views of it as `fmt`."""
    simplejpeg = import_simplejpeg()
    colorspace = "GRAY" if fmt.pixel_format == "GREY" else _JPEG_COLORS[fmt.pixel_format]
    shape = (fmt.height, fmt.width, 1 if colorspace == "GRAY" else 3)
    try:
        simplejpeg.decode_jpeg(data, colorspace, buffer=buffer.reshape(shape))
    except ValueError as exc:
        raise ProtocolError(f"bad JPEG from the bridge: {exc}") from None
    readonly = buffer.view()
    readonly.flags.writeable = False
    return fmt.views(readonly)


def _raw_views(fmt: FrameFormat, data: bytes) -> FrameViews:
    """Read-only views of a raw frame's bytes, checked against its format."""
    if fmt.compressed:
        array = np.frombuffer(data, np.uint8)
        return FrameViews(array, array, (array,))
    if len(data) != fmt.sizeimage:
        raise ProtocolError(f"raw frame of {len(data)} bytes, expected {fmt.sizeimage} "
                            f"for {fmt.pixel_format} {fmt.width}x{fmt.height}")
    return fmt.views(np.frombuffer(data, np.uint8))
