"""Where the consumers' acks arrive, and which of them the server thread reads.

Acks (CREDIT, RELEASE, REPORT) arrive on the relay links (zmq consumers, one
link per uid) and on the socket-channel connections. `AckSources` keeps these
fds in two level-triggered epoll sets:

- all of them, with a wake-up pipe, for the publishing thread: `acquire()`
  drains what `ready()` reports and sleeps in `wait()`;
- those the server thread reads now (`watch`): one fd in its poll set, which
  turns readable when one of them is.

Why two: while a producer publishes at a steady pace, `acquire()` drains the
acks before every frame anyway. A server thread that read them too would wake
once per consumer per frame, and on a small machine that wake-up, arriving
while the frame is on its way, is what costs the frame most (it doubles the
latency of the next one and the producer's CPU). So the server thread then
watches only the sources whose next message it must answer at once (see
`Server.watch_acks`). epoll, not poll, for that second set: a change takes
effect even while the server thread sleeps on it, without waking it.
"""

from __future__ import annotations

import select
from typing import Iterable, Union

from ._bus import Subscriber
from ._relays import RelayLink

Source = Union[Subscriber, RelayLink]  # a socket-channel consumer, or a relay link


class AckSources:
    """The fds acks arrive on, each with what it belongs to."""

    def __init__(self, wake_fd: int) -> None:
        self._all = select.epoll()
        self._watched = select.epoll()
        self._watching: set[int] = set()
        self._wake_fd = wake_fd
        self._all.register(wake_fd, select.EPOLLIN)
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
        if self.sources.pop(fd, None) is not None:
            self._all.unregister(fd)
        if fd in self._watching:
            self._watching.discard(fd)
            self._watched.unregister(fd)

    def ready(self) -> list[Source]:
        """The sources with something to read (or a hang-up), now."""
        sources = self.sources
        return [sources[fd] for fd, _ in self._all.poll(0) if fd in sources]

    def wait(self, timeout: float | None) -> None:
        """Sleep until a source or the wake-up pipe is readable, or `timeout` s."""
        self._all.poll(-1 if timeout is None else max(timeout, 0.0), 1)

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
        self.sources.clear()
        self._watching.clear()
        self._all.close()
        self._watched.close()
