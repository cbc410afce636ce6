"""`framebus bridge`: republish the bus to Zenoh for consumers on other machines.

An ordinary local consumer (policy ``latest``) that sends each remote
consumer (`framebus.RemoteConsumer`) its own stream under
``framebus/<KEY>/frame/<ID>``, with seq, timestamp and format in every
message's header. Each link has at most `--window` frames (1 or 2) in
flight: a frame counts from the moment it is handed to the link until the
remote consumer acknowledges it, and the bridge takes a frame from the bus only
when some link has room. A slow link therefore skips frames (counted as
dropped) instead of queueing seconds of them in socket buffers.

Pixels and leases: zenoh-python accepts only ``bytes``/``bytearray`` payloads
(not a buffer view), so a raw frame is copied once, with the lease held, into
a staging buffer allocated once, and the lease ends right there; zenoh-python
then makes its own copy (``ZBytes(bytearray)``) that all links share. A JPEG
frame is encoded straight from the shared view (the lease is held during the
encode) and the JPEG handed to Zenoh. The copy and encode times are reported.
"""

from __future__ import annotations

import argparse
import queue
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

import numpy as np

from framebus import Consumer, Frame, FrameFormat, FramebusError, NoProducer, Timeout, paths
from framebus import ProducerRefusedConnection
from framebus._zenoh import (ENCODINGS, FrameHeader, Info, Keys, bye_message, import_zenoh,
                             last_chunk, new_id, open_session, tight, zenoh_config)
from framebus.commands import Command

from .jpeg import JpegEncoder

BYE_SEQ = 0  # what a consumer acknowledges a goodbye as (frame seqs start at 1)
BYE_TIMEOUT = 1.0  # how long a stopping bridge waits for its goodbyes to be acknowledged
ACK_TIMEOUT = 2.0  # a frame not acknowledged by then is counted lost and its slot freed
_WAIT = 0.1  # the main loop's longest sleep (stop signal, new links, reports)
# Remote consumers served at once: each costs a publisher and a sender thread, and
# anyone who reaches the Zenoh network can declare one (a liveliness token).
MAX_LINKS = 32


class Link:
    """One remote consumer: its own key, a sender thread, a window of frames in flight."""

    def __init__(self, cid: str, publisher: Any, window: int) -> None:
        self.cid = cid
        self.publisher = publisher
        self.window = window
        self.in_flight: dict[int, float] = {}  # seq -> monotonic time handed over
        self.sent = self.dropped = self.lost = self.bytes = 0
        self._last: tuple[str, int] = ("", 0)  # (run, seq) of the last frame sent
        self._outbox: queue.SimpleQueue[tuple[Any, bytes] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._send_loop, name=f"link-{cid[:6]}",
                                        daemon=True)
        self._thread.start()

    def has_room(self) -> bool:
        return len(self.in_flight) < self.window

    def send(self, run: str, seq: int, payload: Any, header: bytes, size: int) -> None:
        """Hand a frame to the sender thread (never blocks)."""
        last_run, last_seq = self._last
        if last_run == run and last_seq:
            self.dropped += max(0, seq - last_seq - 1)
        self._last = (run, seq)
        self.in_flight[seq] = time.monotonic()
        self.sent += 1
        self.bytes += size
        self._outbox.put((payload, header))

    def expire(self, now: float) -> None:
        for seq, handed in list(self.in_flight.items()):
            if now - handed > ACK_TIMEOUT:
                del self.in_flight[seq]
                self.lost += 1

    def say_goodbye(self, reason: str) -> None:
        """Send the goodbye message; the consumer acknowledges it as seq 0."""
        self.in_flight[BYE_SEQ] = time.monotonic()
        self._outbox.put((b"", bye_message(reason)))

    def stop(self) -> None:
        self._outbox.put(None)
        self._thread.join(timeout=2.0)
        try:
            self.publisher.undeclare()
        except Exception:  # the session is closing under it: nothing left to undeclare
            pass

    def _send_loop(self) -> None:
        while (item := self._outbox.get()) is not None:
            payload, header = item
            try:
                self.publisher.put(payload, attachment=header)  # blocks while Zenoh's queue is full
            except Exception as exc:  # a closing session; the ack timeout frees the slot
                print(f"bridge: link {self.cid}: {exc}", file=sys.stderr)


class Bridge:
    """A local consumer republishing frames to every remote consumer of `key`."""

    def __init__(self, args: argparse.Namespace) -> None:
        if args.encoding not in ENCODINGS:
            raise FramebusError(f"unknown encoding {args.encoding!r} ({', '.join(ENCODINGS)})")
        if not 1 <= args.quality <= 100:
            raise FramebusError(f"--quality must be 1..100, not {args.quality}")
        if args.max_fps < 0:
            raise FramebusError(f"--max-fps must be positive, not {args.max_fps}")
        if not (args.listen or args.connect or args.zenoh_config):
            raise FramebusError("say where remote consumers reach the bridge: --listen "
                                "tcp/0.0.0.0:7447, --connect tcp/HOST:7447 or --zenoh-config FILE")
        if args.interval <= 0:
            raise FramebusError(f"--interval must be positive, not {args.interval}")
        self.args = args
        self.keys = Keys(args.key)
        self.id = new_id()
        self.zenoh = import_zenoh()
        self.config = zenoh_config(args.listen, args.connect, args.zenoh_config, args.mode)
        self.stop = threading.Event()
        self.links: dict[str, Link] = {}
        self._lock = threading.Condition()
        self._events: queue.SimpleQueue[tuple[bool, str]] = queue.SimpleQueue()
        self._encoder: JpegEncoder | None = None
        self._staging = bytearray()
        # (lease held, Zenoh's copy) in ms for each frame since the last report
        self._timing: list[tuple[float, float]] = []
        self.revoked = 0  # frames not sent because their lease was revoked while read
        self.refused_links = 0  # remote consumers turned away (MAX_LINKS)
        self._closed = Figures()  # totals of links that have gone
        self._rate_mark = (time.monotonic(), 0, 0)  # (time, sent, bytes) at the last report

    # ------------------------------------------------------------ running
    def run(self, cam: Consumer) -> None:
        self.cam = cam
        session = open_session(self.config)
        try:
            self.session = session
            # Kept referenced: Zenoh undeclares what is dropped.
            self._declared = [
                session.declare_queryable(self.keys.info, self._on_info),
                session.declare_subscriber(self.keys.acks, self._on_ack),
                session.liveliness().declare_subscriber(self.keys.consumers, self._on_consumer,
                                                        history=True)]
            token = session.liveliness().declare_token(self.keys.bridge(self.id))
            self._loop()
            self._say_goodbye("the bridge stopped")
            token.undeclare()
        finally:
            session.close()

    def _loop(self) -> None:
        period = 1.0 / self.args.max_fps if self.args.max_fps else 0.0
        next_frame_at = next_report = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            self._apply_events()
            if now >= next_report:
                self._report(now)
                next_report = now + self.args.interval
            with self._lock:
                for link in self.links.values():
                    link.expire(now)
                if not any(link.has_room() for link in self.links.values()):
                    self._lock.wait(_WAIT)
                    continue
            if now < next_frame_at:
                self.stop.wait(min(next_frame_at - now, _WAIT))
                continue
            try:
                frame = self.cam.get(timeout=_WAIT)
            except Timeout:
                continue  # no frame yet, or the producer is being waited for
            next_frame_at = max(next_frame_at + period, time.monotonic() - period)
            self._publish(frame)

    def _publish(self, frame: Frame) -> None:
        fmt = self.cam.format
        started = time.perf_counter()
        with frame:  # the lease: held while the pixels are copied or encoded
            data, sent_format = self._payload(frame, fmt)
            if not frame.valid():  # the lease was revoked under the copy: pixels may be torn
                self.revoked += 1
                return
        released = time.perf_counter()
        payload = self.zenoh.ZBytes(data)  # zenoh-python's own copy, shared by every link
        self._timing.append(((released - started) * 1000, (time.perf_counter() - released) * 1000))
        run = f"{self.id}.{self.cam.sessions}"
        header = FrameHeader(frame.seq, frame.timestamp_ns, frame.index, sent_format,
                             self.args.encoding, run).pack()
        size = len(data)
        with self._lock:
            for link in self.links.values():
                if link.has_room():
                    link.send(run, frame.seq, payload, header, size)

    def _payload(self, frame: Frame, fmt: FrameFormat) -> tuple[bytes | bytearray, FrameFormat]:
        """The bytes to send of a held frame, and the format they travel in."""
        if self.args.encoding == "jpeg":
            if self._encoder is None or self._encoder.format != fmt:
                self._encoder = JpegEncoder(fmt, self.args.quality)
            planes = (frame.array,) if fmt.compressed else frame.planes
            return self._encoder.encode(planes), fmt
        if fmt.compressed:
            return bytes(frame.array), fmt
        sent = tight(fmt)
        if len(self._staging) != sent.sizeimage:
            self._staging = bytearray(sent.sizeimage)
        staged = sent.views(np.frombuffer(self._staging, np.uint8))
        for dst, src in zip(staged.planes, frame.planes):
            np.copyto(dst, src)
        return self._staging, sent

    def _say_goodbye(self, reason: str) -> None:
        """Tell every consumer, and wait (briefly) until they have heard it: the
        liveliness token must not vanish first, or they would think we crashed."""
        with self._lock:
            for link in self.links.values():
                link.say_goodbye(reason)
            self._lock.wait_for(lambda: all(BYE_SEQ not in link.in_flight
                                            for link in self.links.values()), BYE_TIMEOUT)
            links, self.links = list(self.links.values()), {}
        for link in links:
            link.stop()

    # ------------------------------------------------- Zenoh's threads
    def _on_info(self, query: Any) -> None:
        query.reply(self.keys.info, Info(self.cam.format, self.args.encoding, self.id).pack())

    def _on_ack(self, sample: Any) -> None:
        seq = int.from_bytes(sample.payload.to_bytes()[:8], "little")
        with self._lock:
            link = self.links.get(last_chunk(sample.key_expr))
            if link is not None:
                link.in_flight.pop(seq, None)
                self._lock.notify_all()

    def _on_consumer(self, sample: Any) -> None:
        self._events.put((sample.kind == self.zenoh.SampleKind.PUT, last_chunk(sample.key_expr)))
        with self._lock:
            self._lock.notify_all()

    # ------------------------------------------------------- bookkeeping
    def _apply_events(self) -> None:
        """Remote consumers that came or went (declared here, not in Zenoh's callbacks)."""
        while not self._events.empty():
            came, cid = self._events.get()
            if came and cid not in self.links and len(self.links) >= MAX_LINKS:
                self.refused_links += 1
                if self.refused_links in (1, 10, 100, 1000):
                    print(f"bridge {self.args.key}: {self.refused_links} remote consumer(s) "
                          f"turned away: {MAX_LINKS} are served at most", file=sys.stderr)
            elif came and cid not in self.links:
                publisher = self.session.declare_publisher(
                    self.keys.frame(cid), congestion_control=self.zenoh.CongestionControl.BLOCK)
                with self._lock:
                    self.links[cid] = Link(cid, publisher, self.args.window)
                print(f"bridge {self.args.key}: consumer {cid} joined", file=sys.stderr)
            elif not came and cid in self.links:
                with self._lock:
                    link = self.links.pop(cid)
                link.stop()
                self._closed.add(link)
                print(f"bridge {self.args.key}: consumer {cid} left", file=sys.stderr)

    def _report(self, now: float) -> None:
        with self._lock:
            figures = Figures()
            for link in self.links.values():
                figures.add(link)
        figures.add_totals(self._closed)
        lease_ms, zenoh_ms = np.median(self._timing, axis=0) if self._timing else (0.0, 0.0)
        self._timing.clear()
        mark_time, mark_sent, mark_bytes = self._rate_mark
        self._rate_mark = (now, figures.sent, figures.bytes)
        elapsed = max(now - mark_time, 1e-6)
        report: dict[str, int | float | str] = {
            "links": len(self.links), "encoding": self.args.encoding, "sent": figures.sent,
            "dropped": figures.dropped, "lost": figures.lost, "in_flight": figures.in_flight,
            "fps": round((figures.sent - mark_sent) / elapsed, 1),
            "bytes_per_s": int((figures.bytes - mark_bytes) / elapsed),
            "lease_ms": round(float(lease_ms), 2), "zenoh_copy_ms": round(float(zenoh_ms), 2),
            "bus_dropped": self.cam.dropped, "revoked": self.revoked,
            "refused_links": self.refused_links}
        print(format_figures(self.args.key, report), file=sys.stderr, flush=True)
        try:
            self.cam.publish_figures(report)  # shown by `framebus status`
        except FramebusError:
            pass  # the producer is away; the next report goes to the next one


class Figures:
    """Totals over links."""

    def __init__(self) -> None:
        self.sent = self.dropped = self.lost = self.bytes = self.in_flight = 0

    def add(self, link: Link) -> None:
        self.sent += link.sent
        self.dropped += link.dropped
        self.lost += link.lost
        self.bytes += link.bytes
        self.in_flight += len(link.in_flight)

    def add_totals(self, other: Figures) -> None:
        self.sent += other.sent
        self.dropped += other.dropped
        self.lost += other.lost
        self.bytes += other.bytes


def format_figures(key: str, f: dict[str, int | float | str]) -> str:
    work = "copy" if f["encoding"] == "raw" else "encode"
    return (f"bridge {key}: {f['links']} link(s), {f['fps']} fps sent, "
            f"{float(f['bytes_per_s']) / 1e6:.1f} MB/s, sent {f['sent']}, dropped {f['dropped']}, "
            f"lost {f['lost']}, in flight {f['in_flight']}, lease {f['lease_ms']} ms ({work}), "
            f"Zenoh copy {f['zenoh_copy_ms']} ms")


# ------------------------------------------------------------------ CLI
def _attach(args: argparse.Namespace, stop: threading.Event) -> Consumer | None:
    """The bridge's local consumer, waiting for the producer to appear."""
    said = False
    while not stop.is_set():
        try:
            return Consumer(args.socket or paths.default_socket(), name=f"bridge:{args.key}",
                            max_held=1, reconnect=True)
        except (NoProducer, ProducerRefusedConnection) as exc:
            if not said:
                print(f"bridge {args.key}: waiting for a producer ({exc})", file=sys.stderr)
                said = True
            stop.wait(0.2)
    return None


def run_bridge(args: argparse.Namespace) -> int:
    """`framebus bridge`."""
    try:
        bridge = Bridge(args)
    except FramebusError as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        return 2

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        bridge.stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    cam = _attach(args, bridge.stop)
    if cam is None:
        return 0
    with cam:
        try:
            bridge.run(cam)
        except FramebusError as exc:
            print(f"bridge: {exc}", file=sys.stderr)
            return 1
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", help=paths.socket_help())
    parser.add_argument("--key", required=True,
                        help="the stream's name on Zenoh (frames go under framebus/KEY/...)")
    parser.add_argument("--encoding", choices=ENCODINGS, default="raw",
                        help="raw: planes as they are (a LAN); jpeg: compressed (a WAN)")
    parser.add_argument("--quality", type=int, default=80, help="JPEG quality 1..100 (default 80)")
    parser.add_argument("--max-fps", type=float, default=0.0,
                        help="send at most this many frames a second (default: all it can)")
    parser.add_argument("--window", type=int, choices=(1, 2), default=1,
                        help="frames in flight per link (default 1: lowest latency; "
                             "2 uses a fast link better)")
    parser.add_argument("--listen", action="append", default=[], metavar="EP",
                        help="Zenoh endpoint to listen on, e.g. tcp/0.0.0.0:7447 (repeatable)")
    parser.add_argument("--connect", action="append", default=[], metavar="EP",
                        help="Zenoh endpoint to connect to: a consumer or a router (repeatable)")
    parser.add_argument("--mode", choices=("peer", "client"), default="peer",
                        help="Zenoh mode (client: through a router given by --connect)")
    parser.add_argument("--zenoh-config", metavar="FILE",
                        help="a Zenoh JSON5 config file to start from instead of framebus's "
                             "(peer, no multicast scouting, no shared memory)")
    parser.add_argument("--interval", type=float, default=1.0,
                        help="seconds between the figures printed on stderr")


COMMAND = Command(
    "bridge", "publish the bus to Zenoh for consumers on other machines", run_bridge,
    add_arguments,
    "Attach to the producer as a consumer (policy latest) and republish its frames to Zenoh "
    "under framebus/KEY/..., raw or JPEG, for framebus.RemoteConsumer and "
    "'framebus consume --zenoh KEY'. Each remote consumer gets its own stream with at most "
    "--window frames in flight, so a slow link drops frames instead of adding latency. "
    "Figures (fps, bytes/s, dropped, in flight, copy/encode time) go to stderr each second "
    "and to 'framebus status'.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="framebus bridge", description=COMMAND.description)
    add_arguments(parser)
    return run_bridge(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
