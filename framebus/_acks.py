"""Where the consumers' acks arrive, and which of them the server thread reads.

Acks (CREDIT, RELEASE, REPORT) arrive on the relay links (zmq consumers, one
link per uid) and on the socket-channel connections. `AckSources` keeps these
fds in two level-triggered epoll sets:

- all of them, with a wake-up pipe (`wake`), for the publishing thread:
  `acquire()` drains what `ready()` reports and sleeps in `wait()`;
- those the server thread reads now (`watch`): one fd in its poll set, which
  turns readable when one of them is.

Why two: while a producer publishes at a steady pace, `acquire()` drains the
acks before every frame anyway. A server thread that read them too would wake
once per consumer per frame, and on a small machine that wake-up, arriving
while the frame is on its way, is what costs the frame most (it doubles the
latency of the next one and the producer's CPU). So the server thread then
watches only the sources whose next message it must answer at once (see
`Server.watch_acks`), and those a pump left with messages unread after a full
batch (`backlog`): more than a consumer sends per frame, likely a flood, which
must be read at its own rate for the flood limits to see it. epoll, not poll,
for that second set: a change takes effect even while the server thread sleeps
on it, without waking it.
"""

from __future__ import annotations

import select
from typing import Iterable, Union

from ._bus import Subscriber
from ._relays import RelayLink
from ._wakeup import WakePipe

Source = Union[Subscriber, RelayLink]  # a socket-channel consumer, or a relay link


class AckSources:
    """The fds acks arrive on, each with what it belongs to."""

    def __init__(self) -> None:
        self._all = select.epoll()
        self._watched = select.epoll()
        self._watching: set[int] = set()
        #: sources a pump left unread after a full batch (the server thread
        #: reads them as fast as they come until a pump finds none waiting)
        self.backlog: set[int] = set()
        self._wake = WakePipe()
        self._all.register(self._wake.fileno(), select.EPOLLIN)
        self.sources: dict[int, Source] = {}

    def add(self, fd: int, source: Source) -> None:
        """A new source (not watched by the server thread until `watch` says so)."""
        self._all.register(fd, select.EPOLLIN)
        self.sources[fd] = source

    def watches(self, fd: int) -> bool:
        """Whether `fd` is still a source (False once its EOF was read)."""
        return fd in self.sources

    def discard(self, fd: int) -> None:
        """Stop watching `fd` (before it is closed); safe if not watched."""
        self.backlog.discard(fd)
        if self.sources.pop(fd, None) is not None:
            self._all.unregister(fd)
        if fd in self._watching:
            self._watching.discard(fd)
            self._watched.unregister(fd)

    def ready(self) -> list[Source]:
        """The sources with something to read (or a hang-up), now."""
        sources = self.sources
        return [sources[fd] for fd, _ in self._all.poll(0) if fd in sources]

    def add_backlog(self, sources: Iterable[Source]) -> None:
        """These sources still had messages after a full batch."""
        ids = {id(source) for source in sources}
        self.backlog.update(fd for fd, source in self.sources.items() if id(source) in ids)

    def wait(self, timeout: float | None) -> None:
        """Sleep until a source is readable, `wake()` is called, or `timeout` s."""
        self._all.poll(-1 if timeout is None else max(timeout, 0.0), 1)
        self._wake.drain()

    def wake(self) -> None:
        """End a `wait()` now (or the next one, if none is under way)."""
        self._wake.wake()

    # ------------------------------------------------ the server thread's share
    def watch(self, fds: Iterable[int]) -> None:
        """Make these sources (and no others) the server thread's to read."""
        wanted = {fd for fd in fds if fd in self.sources}
        if wanted == self._watching:
            return
        for fd in self._watching - wanted:
            self._watched.unregister(fd)
        for fd in wanted - self._watching:
            self._watched.register(fd, select.EPOLLIN)
        self._watching = wanted

    @property
    def watching(self) -> bool:
        """Whether the server thread reads any source now."""
        return bool(self._watching)

    def watch_all(self) -> None:
        if len(self._watching) != len(self.sources):
            self.watch(self.sources)

    def watched_fileno(self) -> int:
        """Readable when a watched source is (for the server thread's poll)."""
        return self._watched.fileno()

    def watched_ready(self) -> list[Source]:
        """The watched sources with something to read (or a hang-up), now."""
        sources = self.sources
        return [sources[fd] for fd, _ in self._watched.poll(0) if fd in sources]

    def close(self) -> None:
        """Close the epoll sets and the pipe (no `wait()` may be under way)."""
        self.sources.clear()
        self._watching.clear()
        self._all.close()
        self._watched.close()
        self._wake.close()


# While acquire() runs at a steady pace (a new call at most PACE_MAX after the
# last: a camera at 4 fps or more, or flat out), the acks are its own for
# HOLD_MIN, or two of its periods if longer, after each call.
PACE_MAX = 0.25  # s
HOLD_MIN = 0.1  # s


class AckTurns:
    """Whose turn it is to read the acks: `acquire()`'s while it sleeps on
    them or runs at a steady pace (it drains them before every frame), else
    the server thread's. The server thread then still reads those it must
    answer at once (`Server.watch_acks`), and takes them all back when the
    hold ends. Pure state, under the producer's lock; the server thread reads
    it without the lock only to decide how long to sleep.
    """

    def __init__(self) -> None:
        self.waiters = 0  # acquire() calls sleeping on the acks
        self.muted = False  # the server thread has left the acks to acquire()
        self.hot_until = 0.0  # ... until then, unless acquire() waits (see `acquiring`)
        self.sleeping_until = 0.0  # when the server thread's current poll ends
        self._last_acquire = 0.0
        self._hold = 0.0  # how long the acks are acquire()'s after a call (0: not paced)

    def acquiring(self, now: float, *, new_call: bool) -> None:
        """acquire() is draining the acks now; with `new_call`, a new call
        (its period sets how long the acks stay its own)."""
        if new_call:
            period, self._last_acquire = now - self._last_acquire, now
            self._hold = max(HOLD_MIN, 2 * period) if period <= PACE_MAX else 0.0
        if self._hold:
            self.hot_until = now + self._hold

    def acquires(self, now: float) -> bool:
        """Whether the acks are acquire()'s now."""
        return self.waiters > 0 or self.hot_until > now

    def sleep_until(self, now: float, deadline: float) -> float | None:
        """How long the muted server thread may sleep: to `deadline`, or to
        the end of acquire()'s hold; None when the acks are its again."""
        if not self.muted:
            return deadline
        hot_until = self.hot_until
        if hot_until <= now and not self.waiters:
            return None
        return min(deadline, hot_until) if hot_until > now else deadline

    def left_unattended(self) -> bool:
        """acquire() stopped waiting: True if the server thread sleeps past
        acquire()'s hold on the acks (it must be woken to take them back)."""
        return self.muted and not self.waiters and self.sleeping_until > self.hot_until
