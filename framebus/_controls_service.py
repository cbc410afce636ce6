"""Camera-control requests on the producer's control socket (role "controls").

A peer that passed the credential check and ATTACHed with role "controls" is
sent the source's controls (CONTROLS); it may then send one SET_CONTROLS
before its deadline, answered by CONTROLS with what was applied, or REFUSE.
The server thread owns these connections; this class keeps their state.
"""

from __future__ import annotations

import select
import socket
import threading
import time

from . import _protocol as protocol
from ._control import POLL_IN, ControlServer, send_quietly
from .controls import Controls, wire_controls
from .errors import ProtocolError


class ControlRequests:
    """The peers asking for the source's controls, until they are answered."""

    def __init__(self, controls: Controls | None, control: ControlServer, poller: select.poll,
                 lock: threading.Lock, timeout: float) -> None:
        self.controls = controls
        self._control = control
        self._poller = poller
        self._lock = lock
        self._timeout = timeout
        self._peers: dict[int, tuple[socket.socket, float]] = {}  # fd -> (conn, deadline)

    def owns(self, fd: int) -> bool:
        return fd in self._peers

    def serve(self, conn: socket.socket, values: dict[str, int | str] | None) -> None:
        """List the source's controls (and set `values` first); a peer that
        only listed may send one SET_CONTROLS before its deadline."""
        if self.controls is None:
            self._control.refuse(conn, "controls", "this producer's source has no controls")
            return
        # A USB camera takes milliseconds per control: publishing goes on meanwhile.
        self._lock.release()
        try:
            applied = self.controls.set(values) if values else {}
            listing = wire_controls(self.controls.describe())
        except Exception as exc:  # the source's code: whatever it raises is a refusal
            problem: str | None = str(exc) or type(exc).__name__
        else:
            problem = None
        finally:
            self._lock.acquire()
        if problem is not None:
            self._control.refuse(conn, "controls", problem[:1000])
            return
        send_quietly(conn, protocol.CONTROLS.encode(listing, applied))
        if values is not None:
            conn.close()
            return
        self._peers[conn.fileno()] = (conn, time.monotonic() + self._timeout)
        self._poller.register(conn, POLL_IN)

    def on_request(self, fd: int) -> None:
        conn, _ = self._peers.pop(fd)
        self._poller.unregister(conn)
        try:
            data = conn.recv(protocol.MAX_CONTROL_MESSAGE)
            values = protocol.expect(data, protocol.SET_CONTROLS, protocol.CONTROL,
                                     protocol.MAX_CONTROL_MESSAGE)[0] if data else None
        except (OSError, ProtocolError) as exc:
            self._control.refuse(conn, "protocol", f"bad SET_CONTROLS: {exc}")
            return
        if values is None:  # the peer only wanted the list
            conn.close()
            return
        self.serve(conn, values)

    def next_deadline(self) -> float | None:
        return min((deadline for _, deadline in self._peers.values()), default=None)

    def expire(self, now: float) -> None:
        for fd, (conn, deadline) in list(self._peers.items()):
            if deadline <= now:
                del self._peers[fd]
                self._poller.unregister(conn)
                conn.close()

    def close(self) -> None:
        for conn, _ in self._peers.values():
            conn.close()
        self._peers.clear()
