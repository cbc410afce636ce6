"""Iteration shared by local and remote consumers: each frame is released
when the next one is asked for, and a producer's clean shutdown ends the loop."""

from __future__ import annotations

from typing import Callable, Iterator, Protocol, TypeVar

from .errors import ProducerGone


class _Releasable(Protocol):
    def release(self) -> None: ...


F = TypeVar("F", bound=_Releasable)


def frames(take: Callable[[F | None], F]) -> Iterator[F]:
    """The frames `take(previous)` returns, one after another; `take` lets
    the previous frame go first. Ends when the producer shuts down cleanly,
    raises `ProducerGone` if it vanished; the last frame is released on exit."""
    frame: F | None = None
    try:
        while True:
            try:
                frame = take(frame)
            except ProducerGone as exc:
                if exc.clean:
                    return
                raise
            yield frame
    finally:
        if frame is not None:
            frame.release()
