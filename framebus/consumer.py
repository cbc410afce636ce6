"""The consumer side of the bus: attach to a producer, get frames, release them.

Threads and asyncio: a `Consumer` is driven by one thread (or one event loop)
at a time — `get()`, `aget()`, iteration and `close()` from that thread —
while `Frame.release()` may be called from any thread. `fileno()` turns
readable when a frame may be waiting, for event loops; `await cam.aget()` and
``async for frame in cam`` never block the loop.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from typing import AsyncIterator, Iterator, Mapping

from . import _iteration, _protocol as protocol
from ._protocol import CHANNELS, LATEST, POLICIES, ZMQ, Announcement, Channel, Policy
from ._session import Session
from .errors import (BusClosed, FramebusError, NoProducer, ProducerGone,
                     ProducerRefusedConnection, ProtocolError, Timeout)
from .formats import FrameFormat
from .frame import Frame

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
            I/O threads (a third to a half less latency and CPU).
        spin: seconds `get()` busy-polls before it sleeps (default 0: never).
            Trades a core's CPU for lower wake-up latency.
        producer_uid: the uid the producer may run as besides root and your
            own (anyone else serving the socket is refused: `PermissionDenied`).

    Raises `ValueError` for arguments out of range, and the handshake's
    errors (`NoProducer`, `PermissionDenied`, `Timeout`, ...).
    """

    def __init__(self, path: str | os.PathLike[str], *, name: str = "", policy: Policy = LATEST,
                 max_held: int = 2, depth: int = 4, timeout: float = 5.0,
                 reconnect: bool = False, channel: Channel = ZMQ, spin: float = 0.0,
                 producer_uid: int | None = None) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r} (known: {', '.join(POLICIES)})")
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r} (known: {', '.join(CHANNELS)})")
        if not 0 <= spin <= 1:
            raise ValueError(f"spin must be 0..1 s, not {spin}")
        if not 1 <= max_held <= 256 or not 0 <= depth <= 256:
            raise ValueError("max_held must be 1..256 and depth 0..256")
        self.path = os.fspath(path)
        self.name = (name or f"pid{os.getpid()}")[:64]
        self.policy = policy
        self.max_held = max_held
        self.depth = depth
        self.reconnect = reconnect
        self.channel = channel
        self.spin = spin
        self.producer_uid = producer_uid
        self._timeout = timeout
        self._closed = False
        self._credit_pending = False  # a CREDIT is out and its frame not yet received
        self._credit_stale = False  # ... and it was sent by an earlier get() call
        self._last_seq = 0
        self.received = 0
        self.dropped = 0
        self.sessions = 0  # producer runs attached to (more than 1 after reconnects)
        self._session: Session | None = self._attach()

    def _attach(self) -> Session:
        session = Session(self.path, self.name, self.policy, self.max_held, self.depth,
                          self._timeout, self.channel, self.spin, self.producer_uid)
        self.format: FrameFormat = session.format
        self.lease_timeout: float = session.lease_timeout
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
        return len(self._session.held) if self._session is not None else 0

    def fileno(self) -> int:
        """A file descriptor that turns readable when a frame (or news of the
        producer) may be waiting: for `select`, `selectors` or an event loop.
        Readable does not promise a frame; `get(timeout=0)` tells."""
        self._check_open()
        if self._session is None:
            raise ProducerGone("not attached (waiting for the producer to come back)")
        return self._session.fileno()

    def get(self, timeout: float | None = None) -> Frame:
        """The next frame (policy latest: the newest one not yet seen).

        Raises `framebus.Timeout` after `timeout` seconds (None: no limit),
        `framebus.ProducerGone` once the producer has gone (unless
        `reconnect`), and `FramebusError` if this consumer already holds
        `max_held` frames.
        """
        return self._next(timeout)

    async def aget(self, timeout: float | None = None) -> Frame:
        """`get()` for asyncio: waits on `fileno()` in the running loop,
        never blocking it."""
        return await self._anext(timeout)

    def publish_figures(self, figures: Mapping[str, int | float | str]) -> None:
        """Show these figures of yours in `framebus status` (a bridge's link
        rates, say): at most 32 short names, numbers or short text."""
        self._check_open()
        if self._session is not None:
            self._session.send(protocol.REPORT.encode(dict(figures)))

    def __iter__(self) -> Iterator[Frame]:
        """Every frame in turn, each released when the next is asked for.

        Ends when the producer shuts down cleanly; raises `ProducerGone` if it
        vanished (with `reconnect`, it waits for the producer instead).
        """
        # Each request releases the previous frame first (so max_held=1
        # works), in the same message.
        return _iteration.frames(lambda previous: self._next(None, after=previous))

    async def __aiter__(self) -> AsyncIterator[Frame]:
        """`iter()` for asyncio: ``async for frame in cam``."""
        frame: Frame | None = None
        try:
            while True:
                try:
                    frame = await self._anext(None, after=frame)
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
    def _check_open(self) -> None:
        if self._closed:
            raise BusClosed("consumer is closed")

    def _start(self, after: Frame | None) -> list[int]:
        """Checks before a get; releases `after` locally, returning the seqs
        to release in the same message as the request."""
        self._check_open()
        releasing: list[int] = []
        if after is not None and after.drop_views():
            owner = after.session
            if owner.held.pop(after.seq, None) is not None and owner is self._session:
                releasing.append(after.seq)
        session = self._session
        if session is not None and len(session.held) >= self.max_held:
            raise FramebusError(f"consumer {self.name!r} already holds max_held={self.max_held} "
                                f"frames; release one before asking for another")
        return releasing

    def _next(self, timeout: float | None, after: Frame | None = None) -> Frame:
        """`get()`, releasing `after` first in the same message as the request."""
        releasing = self._start(after)
        deadline = _deadline(timeout)
        while True:
            session = self._session or self._reattach(deadline, timeout)
            try:
                self._ask(session, releasing)
                while True:
                    try:
                        announced = session.receive(self._wait_until(deadline), timeout)
                    except Timeout:
                        self._ask_again(session, deadline, timeout)
                        continue
                    frame = self._accept(session, announced)
                    if frame is not None:
                        return frame
            except ProducerGone as exc:
                self._after_producer_gone(exc)

    async def _anext(self, timeout: float | None, after: Frame | None = None) -> Frame:
        releasing = self._start(after)
        loop = asyncio.get_running_loop()
        deadline = _deadline(timeout)
        while True:
            session = self._session
            if session is None:
                session = await loop.run_in_executor(None, self._reattach, deadline, timeout)
            try:
                self._ask(session, releasing)
                while True:
                    announced = session.try_receive()
                    if announced is None:
                        try:
                            await _readable(loop, session.fileno(), self._wait_until(deadline),
                                            timeout)
                        except Timeout:
                            self._ask_again(session, deadline, timeout)
                        continue
                    frame = self._accept(session, announced)
                    if frame is not None:
                        return frame
            except ProducerGone as exc:
                self._after_producer_gone(exc)

    def _after_producer_gone(self, exc: ProducerGone) -> None:
        """A get() lost its session: raise (BusClosed if close() from another
        thread ended the wait), or drop it to attach again (`reconnect`)."""
        self._check_open()
        if not self.reconnect:
            raise exc
        self._drop_session()

    def _wait_until(self, deadline: float | None) -> float:
        """How long to wait before asking again: a request or its answer can
        be lost (a relay that failed to deliver, a full socket), and a
        consumer with a request out would otherwise wait for ever."""
        retry = time.monotonic() + max(self.lease_timeout, 0.05)
        return retry if deadline is None else min(deadline, retry)

    def _ask_again(self, session: Session, deadline: float | None,
                   timeout: float | None) -> None:
        """Called when a wait ran out: raise at the caller's deadline, else
        repeat the request (the producer caps credit at what we may hold)."""
        if deadline is not None and time.monotonic() >= deadline:
            raise Timeout(f"no frame within {timeout} s")
        if self.policy == LATEST and self._credit_pending:
            session.send(protocol.CREDIT_ONE)
        elif self.policy != LATEST and self.channel == ZMQ and not self._last_seq:
            session.send(protocol.CREDIT_ZERO)  # "connected", again: the first may be lost

    def _ask(self, session: Session, releasing: list[int]) -> None:
        """Release and ask for a frame, in one message where possible."""
        credit = 0
        if self.policy == LATEST:
            if self._credit_pending:
                self._credit_stale = True
            else:
                credit = 1
                self._credit_pending = True
        if releasing:
            session.send(protocol.encode_release(releasing, credit, session.received))
            releasing.clear()  # sent once, even if the session is replaced
        elif credit:
            session.send(protocol.CREDIT_ONE)

    def _accept(self, session: Session, announced: Announcement) -> Frame | None:
        """A Frame for this announcement; None if it was stale and the newest
        frame has been asked for instead."""
        seq, index, stamp, used = announced
        if index >= len(session.views) or used > session.sizeimage or seq <= self._last_seq:
            raise ProtocolError(f"producer announced an impossible frame "
                                f"(seq {seq}, buffer {index}, {used} bytes)")
        if self._last_seq:
            self.dropped += seq - self._last_seq - 1
        self._last_seq = seq
        self.received += 1
        frame = Frame(seq, index, stamp, used, session)
        session.held[seq] = frame
        session.received = seq
        if self.policy == LATEST:
            self._credit_pending = False
            stale = self._credit_stale and session.status is not None \
                and session.status.newest > seq
            self._credit_stale = False
            if stale:  # asked for long ago: let it go and ask for the newest
                frame.release()
                session.send(protocol.CREDIT_ONE)
                self._credit_pending = True
                return None
        return frame

    def _reattach(self, deadline: float | None, timeout: float | None) -> Session:
        """Attach to the producer again, waiting for it to come back."""
        while True:
            self._check_open()
            try:
                session = self._attach()
            except (NoProducer, ProducerRefusedConnection, ProducerGone, Timeout):
                if deadline is not None and time.monotonic() >= deadline:
                    raise Timeout(f"no producer at {self.path} within {timeout} s") from None
                time.sleep(_RECONNECT_INTERVAL)
                continue
            if self._closed:  # closed while attaching: the new session is nobody's
                session.close()
                self._check_open()
            self._session = session
            return session

    def _drop_session(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        held = list(session.held)
        if held:
            session.send(protocol.RELEASE.encode(held[: protocol.MAX_RELEASE_BATCH], 0,
                                                 session.received))
        for frame in list(session.held.values()):
            frame.drop_views()
        session.held.clear()
        session.close()


def _deadline(timeout: float | None) -> float | None:
    """When a get(timeout) gives up (None: never)."""
    if timeout is None or timeout == math.inf:
        return None
    if math.isnan(timeout):
        raise ValueError("timeout must be a number of seconds or None, not NaN")
    return time.monotonic() + timeout


async def _readable(loop: asyncio.AbstractEventLoop, fd: int, deadline: float | None,
                    timeout: float | None) -> None:
    """Wait until `fd` is readable, or raise `Timeout` at `deadline`."""
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        await asyncio.wait_for(ready, remaining)
    except asyncio.TimeoutError:
        raise Timeout(f"no frame within {timeout} s") from None
    finally:
        loop.remove_reader(fd)
