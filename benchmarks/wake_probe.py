"""What one more woken thread costs a frame: the probe behind framebus's ack hand-off.

A lean SEQPACKET producer sends a fixed-layout FRAME every 10 ms to a consumer
process, which answers with a 4-byte release. Two variants, interleaved:

- ``alone``: the producer reads the releases itself before the next frame
  (what framebus's ``acquire()`` does at a steady pace);
- ``thread``: a second thread in the producer polls the socket and reads each
  release as it arrives (what framebus's server thread did at a camera's pace).

It prints, per variant, the medians of: how long the producer's ``send()``
took, from the send to the consumer's ``recv()`` returning, and from the
stamp to the consumer holding the decoded FRAME::

    python -m framebus_bench.wake_probe [--frames 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import select
import socket
import statistics
import struct
import threading
import time

FRAME = struct.Struct("<QIQI")


def _consume(sock: socket.socket, frames: int, out: "mp.SimpleQueue[list[tuple[int, int]]]") -> None:
    marks = []
    for _ in range(frames):
        message = sock.recv(64)
        received = time.monotonic_ns()
        _, _, stamp, _ = FRAME.unpack(message)
        marks.append((stamp, received))
        sock.send(b"done")
    out.put(marks)


def run(variant: str, frames: int) -> dict[str, float]:
    """One run of `variant`; the medians in µs."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    ctx = mp.get_context("fork")
    out: mp.SimpleQueue[list[tuple[int, int]]] = ctx.SimpleQueue()
    child = ctx.Process(target=_consume, args=(theirs, frames, out))
    child.start()
    theirs.close()
    lock = threading.Lock()
    stop = threading.Event()
    reader = None
    if variant == "thread":
        def read_releases() -> None:
            poller = select.poll()
            poller.register(ours.fileno(), select.POLLIN)
            while not stop.is_set():
                if poller.poll(100):
                    with lock:
                        try:
                            ours.recv(64)
                        except BlockingIOError:
                            pass
        reader = threading.Thread(target=read_releases, daemon=True)
        reader.start()
    sends: dict[int, tuple[int, int]] = {}
    try:
        time.sleep(0.3)
        for seq in range(frames):
            stamp = time.monotonic_ns()
            with lock:
                message = FRAME.pack(seq, 0, stamp, 0)
                sent = time.monotonic_ns()
                ours.send(message)
                sends[stamp] = (sent, time.monotonic_ns())
            time.sleep(0.01)
            if reader is None:
                try:
                    ours.recv(64)
                except BlockingIOError:
                    pass
        marks = out.get()
    finally:
        stop.set()
        child.join(5)
        if reader is not None:
            reader.join(1)
        ours.close()
    med = statistics.median
    return {
        "send": med(sends[s][1] - sends[s][0] for s, _ in marks) / 1e3,
        "send_to_recv": med(r - sends[s][0] for s, r in marks) / 1e3,
        "p50": med(r - s for s, r in marks) / 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300, help="frames per run (default 300)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each variant (default 3)")
    args = parser.parse_args(argv)
    for rep in range(args.repeat):
        for variant in ("alone", "thread"):
            r = run(variant, args.frames)
            print(f"run {rep + 1} {variant:6}: send() {r['send']:5.1f} µs, send -> consumer's "
                  f"recv() {r['send_to_recv']:5.1f} µs, stamp -> FRAME decoded {r['p50']:5.1f} µs",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
