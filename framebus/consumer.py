"""The consumer side of the bus: attach to a producer, get frames, release them."""

from __future__ import annotations

import os
import time
from typing import Iterator

from . import _protocol as protocol
from .errors import (FramebusError, NoProducer, ProducerGone, ProducerRefusedConnection,
                     ProtocolError, Timeout)
from .formats import FrameFormat
from .frame import Frame
from ._session import Announcement, Session
from ._protocol import CHANNELS, LATEST, POLICIES, ZMQ

_RECONNECT_INTERVAL = 0.1


class Consumer:
    """A connection to the producer at `path`, with every buffer mapped read-only.

    Args:
        path: the producer's control socket.
        name: shown by `framebus status` (default: ``pid<N>``).
        policy: ``"latest"`` (the newest frame whenever you ask) or ``"queue"``
            (every frame in order, up to `depth` waiting; beyond that the
            producer drops frames for this consumer and counts them).
        max_held: frames this consumer may hold at once.
        depth: frames the producer may queue ahead (policy ``queue``).
        timeout: seconds to wait for the producer during the handshake.
        reconnect: when the producer goes away, wait for it to come back and
            carry on with its new buffers instead of raising `ProducerGone`.
            Sequence numbers start again with the new producer run.
        channel: ``"zmq"`` (default) or ``"socket"``: FRAME, CREDIT and
            RELEASE over the control socket, one kernel hop instead of zmq's
            I/O thread in each process (a third to a half less latency and CPU).
        spin: seconds `get()` busy-polls before it sleeps (default 0: never).
            Trades a core's CPU for lower wake-up latency.
    """

    def __init__(self, path: str | os.PathLike[str], *, name: str = "", policy: str = LATEST,
                 max_held: int = 2, depth: int = 4, timeout: float = 5.0,
                 reconnect: bool = False, channel: str = ZMQ, spin: float = 0.0) -> None:
        if policy not in POLICIES:
            raise FramebusError(f"unknown policy {policy!r} (known: {', '.join(POLICIES)})")
        if channel not in CHANNELS:
            raise FramebusError(f"unknown channel {channel!r} (known: {', '.join(CHANNELS)})")
        if not 0 <= spin <= 1:
            raise FramebusError(f"spin must be 0..1 s, not {spin}")
        if not 1 <= max_held <= 256 or not 0 <= depth <= 256:
            raise FramebusError("max_held must be 1..256 and depth 0..256")
        self.path = os.fspath(path)
        self.name = (name or f"pid{os.getpid()}")[:64]
        self.policy = policy
        self.max_held = max_held
        self.depth = depth
        self.reconnect = reconnect
        self.channel = channel
        self.spin = spin
        self._timeout = timeout
        self._closed = False
        self._held: dict[int, Frame] = {}
        self._credit_pending = False  # a CREDIT is out and its frame not yet received
        self._credit_stale = False  # ... and it was sent by an earlier get() call
        self._last_seq = 0
        self.received = 0
        self.dropped = 0
        self.sessions = 0  # producer runs attached to (more than 1 after reconnects)
        self._session: Session | None = self._attach()

    def _attach(self) -> Session:
        session = Session(self.path, self.name, self.policy, self.max_held, self.depth,
                          self._timeout, self.channel, self.spin)
        self.format: FrameFormat = session.format
        self.lease_timeout = session.lease_timeout
        self.sessions += 1
        self._last_seq = 0
        self._credit_pending = self._credit_stale = False
        return session

    # ------------------------------------------------------------------ API
    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def held(self) -> int:
        """How many frames this consumer holds now."""
        return len(self._held)

    def get(self, timeout: float | None = None) -> Frame:
        """The next frame (policy latest: the newest one not yet seen).

        Raises `framebus.Timeout` after `timeout` seconds (None: no limit),
        `framebus.ProducerGone` once the producer has gone (unless
        `reconnect`), and `FramebusError` if this consumer already holds
        `max_held` frames.
        """
        return self._next(timeout)

    def _next(self, timeout: float | None, after: Frame | None = None) -> Frame:
        """`get()`, releasing `after` first in the same message as the request."""
        if self._closed:
            raise FramebusError("consumer is closed")
        releasing: list[int] = []
        if after is not None and after.drop_views() and self._held.pop(after.seq, None):
            if after.session is self._session:
                releasing.append(after.seq)
        if len(self._held) >= self.max_held:
            raise FramebusError(f"consumer {self.name!r} already holds max_held={self.max_held} "
                                f"frames; release one before asking for another")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            session = self._session or self._reattach(deadline, timeout)
            try:
                return self._get(session, deadline, timeout, releasing)
            except ProducerGone:
                if not self.reconnect:
                    raise
                self._drop_session()

    def __iter__(self) -> Iterator[Frame]:
        """Every frame in turn, each released when the next is asked for.

        Ends when the producer shuts down cleanly; raises `ProducerGone` if it
        vanished (with `reconnect`, it waits for the producer instead).
        """
        frame: Frame | None = None
        try:
            while True:
                try:
                    # Releases the previous frame before asking (so max_held=1
                    # works), in the same message as the request.
                    frame = self._next(None, after=frame)
                except ProducerGone as exc:
                    if exc.clean:
                        return
                    raise
                yield frame
        finally:
            if frame is not None:
                frame.release()

    def close(self) -> None:
        """Release every held frame, detach and unmap. Safe from any state, twice."""
        if self._closed:
            return
        self._closed = True
        self._drop_session()

    # ------------------------------------------------------------ internals
    def _get(self, session: Session, deadline: float | None, timeout: float | None,
             releasing: list[int]) -> Frame:
        credit = 0
        if self.policy == LATEST:
            if self._credit_pending:
                self._credit_stale = True
            else:
                credit = 1
                self._credit_pending = True
        if releasing:
            session.send(protocol.RELEASE.encode(releasing, credit))
            releasing.clear()  # sent once, even if the session is replaced
        elif credit:
            session.send(protocol.CREDIT.encode(credit))
        while True:
            frame = self._frame(session, session.receive(deadline, timeout))
            if self.policy == LATEST:
                self._credit_pending = False
                stale = self._credit_stale and session.status.newest > frame.seq
                self._credit_stale = False
                if stale:  # asked for long ago: let it go and ask for the newest
                    frame.release()
                    session.send(protocol.CREDIT.encode(1))
                    self._credit_pending = True
                    continue
            return frame

    def _frame(self, session: Session, announced: Announcement) -> Frame:
        seq, index, stamp, used = announced
        views = session.views
        if index >= len(views) or used > len(views[index].raw) or seq <= self._last_seq:
            raise ProtocolError(f"producer announced an impossible frame "
                                f"(seq {seq}, buffer {index}, {used} bytes)")
        if self._last_seq:
            self.dropped += seq - self._last_seq - 1
        self._last_seq = seq
        self.received += 1

        frame = Frame(seq, index, stamp, used, views[index], self.format.compressed,
                      session, self._release, session.sync_fds[index])
        self._held[seq] = frame
        return frame

    def _release(self, frame: Frame) -> None:
        """Tell the producer `frame` is released. A frame of an earlier
        producer run is only forgotten locally, never released into the new one."""
        if self._held.pop(frame.seq, None) is not None and frame.session is self._session:
            frame.session.send(protocol.RELEASE.encode([frame.seq], 0))

    def _reattach(self, deadline: float | None, timeout: float | None) -> Session:
        """Attach to the producer again, waiting for it to come back."""
        while True:
            try:
                self._session = self._attach()
                return self._session
            except (NoProducer, ProducerRefusedConnection, ProducerGone, Timeout):
                if deadline is not None and time.monotonic() >= deadline:
                    raise Timeout(f"no producer at {self.path} within {timeout} s") from None
                time.sleep(_RECONNECT_INTERVAL)

    def _drop_session(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        held = list(self._held)
        if held:
            session.send(protocol.RELEASE.encode(held[: protocol.MAX_RELEASE_BATCH], 0))
        for frame in list(self._held.values()):
            frame.release()  # local only now: the session is no longer current
        session.close()
