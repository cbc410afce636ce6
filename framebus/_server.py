"""The producer's server loop: one thread that owns every socket it serves.

It owns the control socket (handshakes, through `ControlServer`), each
consumer's control connection (whose EOF says the consumer is gone, whatever
killed it), the links to the bus relays (one child process per consumer uid,
holding the zmq ROUTER: see `_relay`), and a wake pipe. Everything it decides
it asks the bookkeeping (`Bus`), under the producer's lock.

The producer's hot path (`_delivery.Delivery`: send a FRAME, drain and apply
the acks waiting on the relay links and socket-channel connections) is also
called from the thread that publishes, under the same lock, so a release
reaches `acquire()` without this thread ever waking: kernel sockets may be
read from any thread, and the lock orders who does.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from typing import Callable

from . import _protocol as protocol
from ._bus import Admission, Bus, Subscriber
from ._control import POLL_IN, Attach, ControlServer, close_quietly, send_quietly
from ._endpoint import PrivateDir
from ._acks import AckSources, AckTurns
from ._protocol import LATEST, SOCKET, ZMQ
from ._ratelimit import RateLimitedLog
from ._delivery import Delivery
from ._relays import RelayLink, RelayPool
from ._wakeup import WakePipe
from ._controls_service import ControlRequests
from .controls import Controls
from .errors import FramebusError

log = logging.getLogger("framebus.producer")

RELAY_IDLE = 2.0  # s a relay with no consumer is kept, for the next one to attach


class Server:
    """The I/O side of a producer.

    Args:
        bus: the bookkeeping, guarded by `lock`.
        describe: the producer's status report (called under the lock).
        lease_timeout: seconds; the producer updates it on reconfigure.
    """

    def __init__(self, bus: Bus, lock: threading.Lock, control: ControlServer,
                 private_dir: PrivateDir, describe: Callable[[], dict[str, object]], *,
                 lease_timeout: float, mode: int, group: int | None,
                 rate_log: RateLimitedLog, controls: Controls | None = None,
                 request_timeout: float = 5.0) -> None:
        self.bus = bus
        self._poller = select.poll()
        self._requests = ControlRequests(controls, control, self._poller, lock,
                                         request_timeout)
        self.lock = lock
        self.control = control
        self.relays = RelayPool(private_dir.path, mode, group)
        self.turns = AckTurns()
        self._timers_at = 0.0  # when the timers (handshakes, leases, idle relays) next need a look
        self.closed = False
        self._describe = describe
        self._rate_log = rate_log
        self._conns: dict[int, Subscriber] = {}  # by control fd
        self._sockets: dict[int, socket.socket] = {}  # by subscriber id
        self._wake = WakePipe()
        self._poller.register(control.fileno(), select.POLLIN)
        self._poller.register(self._wake.fileno(), select.POLLIN)
        self.acks = AckSources()
        self._poller.register(self.acks.watched_fileno(), select.POLLIN)
        self.delivery = Delivery(bus, self.relays, self._sockets, self.acks, rate_log,
                                 self.notify, self.watch_acks, lease_timeout)
        self.pump = self.delivery.pump
        self._thread = threading.Thread(target=self._run, name="framebus-server", daemon=True)
        self._bye_reason = "producer shut down"

    def start(self) -> None:
        self._thread.start()

    def endpoint_for(self, uid: int) -> str:
        """Where consumers of `uid` find their relay (stable for this producer)."""
        return self.relays.endpoint_for(uid)

    # ------------------------------------------- the hot path (lock held)
    def watch_acks(self) -> None:
        """Choose the ack sources this thread reads (lock held; after a
        publish, a delivery or a change of hands): all of them, or while
        the acks are acquire()'s, those of `latest` consumers that have not
        had the newest frame, whose next credit is answered with it at once,
        and those a pump left with a backlog (`AckSources.backlog`)."""
        acks = self.acks
        if not self.turns.muted:
            acks.watch_all()
            return
        newest = self.bus.newest_seq
        behind = [s for s in self.bus.subscribers.values()
                  if s.policy == LATEST and s.last_seq < newest]
        if behind or acks.watching or acks.backlog:
            fds = {fd for fd in map(self._ack_fd, behind) if fd is not None}
            acks.watch(fds | acks.backlog)

    def _ack_fd(self, sub: Subscriber) -> int | None:
        """Where `sub`'s acks arrive: its connection, or its uid's relay link."""
        if sub.channel == SOCKET:
            conn = self._sockets.get(sub.id)
            return None if conn is None else conn.fileno()
        relay = self.relays.get(sub.peer.uid)
        return None if relay is None else relay.fileno()

    def notify(self) -> None:
        """Wake the server thread."""
        self._wake.wake()

    def _run(self) -> None:
        listen_fd = self.control.fileno()
        while True:
            with self.lock:
                # While acquire() sleeps on the ack fds, or runs at a steady
                # pace, it handles the acks itself: this thread reads only
                # those it must answer at once (`watch_acks`), so the two
                # never race for each release.
                self._mute_acks(self.turns.acquires(time.monotonic()))
                deadline = self._timers_at
            events = self._sleep(deadline)
            with self.lock:
                if self.closed:
                    break
                try:
                    self._serve(events, listen_fd)
                except Exception as exc:  # a bug must not silently stop serving everyone
                    self._rate_log.warning("server-loop", "the producer's server loop failed "
                                           "(carrying on): %r", exc)
        with self.lock:
            for sub in list(self.bus.subscribers.values()):
                self._drop(sub, "detached at shutdown", bye=self._bye_reason, clean=True)

    def _serve(self, events: list[tuple[int, int]], listen_fd: int) -> None:
        """One wake-up's work (lock held).

        Acks are read from the watched sources that are ready (the poll set
        holds the other ack fds for their hang-ups only). A wake-up for acks
        alone (a consumer's RELEASE, once per frame at a camera's pace)
        skips the timers until they are due: they look at every handshake,
        lease and relay.
        """
        self.delivery.book()
        now = time.monotonic()
        freed = False
        timers = now >= self._timers_at
        for fd, mask in events:
            if fd == self.acks.watched_fileno():
                freed |= self._read_watched(now)
                continue
            timers = True  # anything else may change a deadline
            if fd == listen_fd:
                self.control.accept(self._poller)
            elif fd == self._wake.fileno():
                self._wake.drain()
            elif self.control.owns(fd):
                attach = self.control.finish(self._poller, fd)
                if attach is not None:
                    self._on_attach(attach, now)
            elif fd in self._conns:
                freed |= self._on_control(self._conns[fd], mask, now)
            elif self._requests.owns(fd):
                self._requests.on_request(fd)
            elif (relay := self.relays.at(fd)) is not None:  # hung up
                relay.alive = False
        while self.delivery.hung_up:  # (a half-closed one reports no hang-up)
            sub = self.delivery.hung_up.pop()
            if sub.id in self._sockets:
                self._drop(sub, "disconnected")
                freed = timers = True
        if self._reap_relays():
            freed = timers = True
        for sub in self.bus.to_cut():
            self.bus.counters["cut_off"] += 1
            self._drop(sub, sub.cut_off, bye=f"disconnected: {sub.cut_off}")
            freed = timers = True  # (its relay may be idle now)
        if timers:
            self.control.expire(self._poller, now)
            self._requests.expire(now)
            self._stop_idle_relays(now)
            freed |= self.delivery.pump(now)  # (a release not read yet is no reason to revoke)
            freed |= self.bus.revoke_expired(now) > 0
            self._timers_at = self._next_wake()
        if freed:
            self._wake_acquire()
        self.watch_acks()

    def _read_watched(self, now: float) -> bool:
        """Read what the watched sources that are ready have (a bounded
        batch each, so a flood costs one wake-up per batch; a hang-up is
        the poll set's to report); True if a buffer was freed."""
        freed = False
        for source in self.acks.watched_ready():
            if isinstance(source, RelayLink):
                freed |= self.delivery.read_relay(source, now)
            else:
                freed |= self.delivery.read_socket_channel(source, now)
        return freed

    def _wake_acquire(self) -> None:
        """Make a waiting acquire() look again (a buffer was freed)."""
        if self.turns.waiters:
            self.acks.wake()

    def _sleep(self, deadline: float) -> list[tuple[int, int]]:
        """Poll until an event or `deadline`. While the acks are acquire()'s,
        wake when its hold ends and look, without the lock (taking it would
        cost the publishing thread a futex wake-up), whether they still are.
        While acquire() waits on them this thread sleeps on; acquire() wakes
        it if it stops waiting while this thread means to sleep past its hold
        (`sleeping_until`, written before the state is read, so either this
        thread sees the change or acquire() sees the long sleep)."""
        turns = self.turns
        while True:
            turns.sleeping_until = deadline
            now = time.monotonic()
            until = turns.sleep_until(now, deadline)
            if until is None:
                return []  # time to take the acks back
            turns.sleeping_until = until
            events = self._poller.poll(max(0, int((until - now) * 1000) + 1))
            if events or time.monotonic() >= deadline:
                return events

    def acquire_done(self) -> None:
        """acquire() stopped waiting (lock held): wake this thread if it
        sleeps past acquire()'s hold on the acks, so they are not left
        unattended once publishing stops."""
        if self.turns.left_unattended():
            self.notify()

    def _mute_acks(self, mute: bool) -> None:
        """Leave the acks to acquire() (`mute`), or take them all back."""
        if mute != self.turns.muted:
            self.turns.muted = mute
            self.watch_acks()

    def _next_wake(self) -> float:
        # Leases granted on the hot path do not wake this thread (that would
        # cost a syscall and a thread switch per frame): it looks at least
        # four times per lease timeout instead, so a lease is revoked at most
        # a quarter of that late. Leases last *at least* lease_timeout.
        wake = time.monotonic() + self.delivery.lease_timeout / 4
        for deadline in (self.control.next_deadline(), self.bus.next_deadline(),
                         self._requests.next_deadline(), self.relays.next_idle(RELAY_IDLE)):
            if deadline is not None:
                wake = min(wake, deadline)
        return wake

    def _on_attach(self, a: Attach, now: float) -> None:
        if a.role == "status":
            send_quietly(a.conn, protocol.STATUS.encode(self._describe()))
            a.conn.close()
            return
        if a.role == "controls":
            self._requests.serve(a.conn, None)
            return
        if a.role != "consumer":
            self.control.refuse(a.conn, "protocol", f"unknown role {a.role!r}")
            return
        try:
            sub = self.bus.admit(a.token, a.name or f"pid{a.peer.pid}", a.peer, a.policy,
                                 a.max_held, a.depth, a.channel, now)
        except Admission as exc:
            self.control.refuse(a.conn, exc.code, exc.reason)
            return
        if sub.channel == ZMQ:
            try:
                relay = self._relay_for(a.peer.uid)
                relay.idle_since = 0.0
                relay.admit(sub.token, a.peer.pid)
            except (FramebusError, OSError) as exc:
                self.bus.remove(sub)
                self.control.refuse(a.conn, "relay", f"cannot serve this consumer: {exc}")
                return
        else:
            sub.connected = True
        try:
            a.conn.send(protocol.ACCEPT.encode())
        except OSError:
            self._forget(sub)
            a.conn.close()
            return
        self._conns[a.conn.fileno()] = sub
        self._sockets[sub.id] = a.conn
        # A socket-channel connection carries acks: the poll set watches it
        # for its hang-up, the ack sets for data.
        self._poller.register(a.conn, 0 if sub.channel == SOCKET else POLL_IN)
        if sub.channel == SOCKET:
            self.acks.add(a.conn.fileno(), sub)  # a waiting acquire() sees it at once
        self.watch_acks()
        log.info("consumer %r attached (pid %d, uid %d, %s, holds up to %d)",
                 sub.name, sub.peer.pid, sub.peer.uid, a.policy, sub.quota)

    def _relay_for(self, uid: int) -> RelayLink:
        relay = self.relays.get(uid)
        if relay is None:
            # A relay takes ~0.1 s to start: publishing goes on meanwhile.
            self.lock.release()
            try:
                relay = self.relays.start(uid)
            finally:
                self.lock.acquire()
            self.relays[uid] = relay
            self._poller.register(relay.fileno(), 0)  # (its hang-up; acks: `acks`)
            self.acks.add(relay.fileno(), relay)
        return relay

    def _on_control(self, sub: Subscriber, mask: int, now: float) -> bool:
        # After ATTACH a consumer says nothing on its control socket unless
        # it chose it as its bus channel; its EOF (whatever killed it) is how
        # we learn it is gone.
        conn = self._sockets[sub.id]
        if sub.channel == SOCKET:
            freed = self.delivery.read_socket_channel(sub, now)
            if mask & _HANG_UP or not self.acks.watches(conn.fileno()):  # (EOF read)
                self._drop(sub, "disconnected")
                return True
            return freed
        try:
            data = conn.recv(protocol.MAX_CONTROL_MESSAGE) if mask & POLL_IN else b""
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if data:
            self.bus.counters["errors"] += 1
            self._drop(sub, "sent data on the control socket after ATTACH",
                       bye="protocol error: nothing may be sent after ATTACH")
        else:
            self._drop(sub, "disconnected")
        return True

    def _drop(self, sub: Subscriber, why: str, bye: str | None = None,
              clean: bool = False) -> None:
        conn = self._sockets.pop(sub.id, None)
        if conn is not None:
            if bye is not None:
                send_quietly(conn, protocol.BYE.encode(bye[:1000], clean))
            self._conns.pop(conn.fileno(), None)
            self._poller.unregister(conn)
            self.acks.discard(conn.fileno())
            close_quietly(conn)
        reclaimed = self._forget(sub)
        log.info("consumer %r (pid %d) %s; reclaimed %d leases",
                 sub.name, sub.peer.pid, why, reclaimed)

    def _forget(self, sub: Subscriber) -> int:
        # The frame sent last is booked first, while every subscriber it
        # went to is still known (a publish can come in while the lock is
        # released for a relay's start, in the same pass that drops `sub`).
        self.delivery.book()
        reclaimed = self.bus.remove(sub)
        relay = self.relays.get(sub.peer.uid) if sub.channel == ZMQ else None
        if relay is not None:
            relay.forget(sub.token)
            if not any(s.channel == ZMQ and s.peer.uid == sub.peer.uid
                       for s in self.bus.subscribers.values()):
                relay.idle_since = time.monotonic()  # its last consumer left
        return reclaimed

    def _stop_idle_relays(self, now: float) -> None:
        """No process is kept for nobody: a relay whose uid has had no
        consumer for RELAY_IDLE seconds is stopped (a new one starts on demand)."""
        for relay in self.relays.pop_idle(now, RELAY_IDLE):
            self._close_relay(relay)

    def _close_relay(self, relay: RelayLink) -> None:
        self._poller.unregister(relay.fileno())
        self.acks.discard(relay.fileno())
        relay.close()

    def _reap_relays(self) -> bool:
        """Replace nothing, drop the consumers of any relay that died; True
        if one did."""
        dead = self.relays.pop_dead()
        for relay in dead:
            self._close_relay(relay)
            uid = relay.uid
            log.warning("the bus relay for uid %d ended (status %s); its consumers are "
                        "disconnected", uid, relay.process.returncode)
            self.bus.counters["relay_failures"] = self.bus.counters.get("relay_failures", 0) + 1
            for sub in [s for s in self.bus.subscribers.values()
                        if s.channel == ZMQ and s.peer.uid == uid]:
                self._drop(sub, "lost its bus relay",
                           bye=f"the producer's bus relay for uid {uid} failed; reattach")
        return bool(dead)

    def evict(self, subs: list[Subscriber], reason: str) -> None:
        """Disconnect `subs` with `reason` (the server thread sees them go)."""
        for sub in subs:
            conn = self._sockets.get(sub.id)
            if conn is not None:
                send_quietly(conn, protocol.BYE.encode(reason, False))
                conn.shutdown(socket.SHUT_RDWR)

    def relay_counters(self) -> dict[str, int]:
        return self.relays.counters()

    # --------------------------------------------------------- shutdown
    def stop(self, reason: str) -> None:
        """Stop the thread, saying `reason` to every consumer; then free
        everything. Call without the lock; safe twice."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self._bye_reason = reason
        if self._thread.is_alive():
            self.notify()
            self._thread.join()
        with self.lock:
            self._wake_acquire()  # a blocked acquire() wakes to find the producer closed
        deadline = time.monotonic() + 5
        while self.turns.waiters and time.monotonic() < deadline:
            time.sleep(0.001)
        else:
            with self.lock:
                for sub in list(self.bus.subscribers.values()):
                    self._drop(sub, "detached at shutdown", bye=reason, clean=True)
        self.relays.close()
        self._requests.close()
        self.acks.close()
        self._wake.close()


_HANG_UP = select.POLLHUP | select.POLLERR

