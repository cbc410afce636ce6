"""The exceptions framebus raises.

One base class, `FramebusError`, and subclasses that also inherit the matching
built-in exception, so ``except TimeoutError`` or ``except PermissionError``
work as a Python user expects (the pattern of pyzmq's ``zmq.error``).
"""

from __future__ import annotations


class FramebusError(Exception):
    """Base class of every error framebus raises because of the bus itself.

    Bad arguments are `ValueError` or `TypeError`, as everywhere in Python.
    """


class ProducerGone(FramebusError, ConnectionError):
    """The producer went away (exited, crashed or closed the stream).

    `reason` is the producer's own words when it said goodbye, else a
    description of how the connection ended; `clean` is True when the producer
    closed the stream on purpose.
    """

    def __init__(self, reason: str, *, clean: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.clean = clean


class PermissionDenied(FramebusError, PermissionError):
    """The producer refused this consumer, or its socket could not be opened."""


class Refused(PermissionDenied):
    """The producer refused the consumer for a reason other than credentials
    (a limit was reached, or the request was malformed). A `PermissionDenied`
    too: DESIGN.md's contract raises that whenever the producer refuses."""


class Timeout(FramebusError, TimeoutError):
    """`acquire()` or `get()` waited for their whole timeout."""


class NoProducer(FramebusError, FileNotFoundError):
    """Nothing is listening at the socket path (no file there)."""


class ProducerRefusedConnection(FramebusError, ConnectionRefusedError):
    """A socket file is there but no producer is listening on it (stale)."""


class InvalidFormat(FramebusError, ValueError):
    """A `FrameFormat` that cannot be (a bad size, stride or pixel format)."""


class BusClosed(FramebusError):
    """The `Producer` or `Consumer` was used after `close()`."""


class ProtocolError(FramebusError):
    """A message broke the wire protocol (wrong version, kind, type or size)."""
