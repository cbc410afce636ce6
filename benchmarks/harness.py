"""Runs one cell: one transport, one frame size, N consumers, one load mode (its phases).

Process layout (all forked from the harness, which only orchestrates and sleeps)::

    harness ──fork──▶ producer ──frames──▶ consumer 0 … N-1
       ▲                 │                      │
       └── results queue ┴──────────────────────┘   (ready / result / error)

Both sides learn one start time ``t0`` through a shared control block; from it
:meth:`Timing.windows` gives every phase's warm-up, measured window and drain
gap, so no further coordination is needed while frames flow. A frame counts for
the phase whose window holds its stamped timestamp. CPU time is each process's
``CLOCK_PROCESS_CPUTIME_ID`` (all its threads, ns resolution; psutil's
``cpu_times`` has only clock-tick resolution), read when the process first sees
a window boundary pass. The producer's figure includes its helper processes
(framebus's bus relays, which hold its zmq sockets), read through their own
process CPU clocks.

Every wait has a timeout; every child is joined, then terminated, then killed;
the transport's shared resources and the cell's directory are removed on every
path, Ctrl-C included (children ignore SIGINT and leave it to the harness, get
SIGTERM if the harness dies, and turn SIGTERM into a clean exit).
"""

from __future__ import annotations

import cProfile
import ctypes
import itertools
import multiprocessing as mp
import os
import queue
import resource
import shutil
import signal
import tempfile
import time
import traceback
from array import array
from typing import Any

import numpy as np
import psutil

from framebus_bench.transports.base import ConsumerSide, ProducerSide, Setup, Transport
from framebus_bench.workload import CAPTURE, FLAT, PACED, CellSpec, capture_buffer, read_stamp, stamp

CTX = mp.get_context("fork")  # children inherit the transport's queues and mappings
# slots of the control block: start time, stop flag, producer done, its last measured seq
_T0, _STOP, _DONE, _LAST = 0, 1, 2, 3
SETUP_TIMEOUT = 30.0  # s: a process to open its side of the transport
FINISH_MARGIN = 30.0  # s: past the schedule's end before the harness gives up
ACQUIRE_TIMEOUT = 2.0  # s: producer waiting for a free transport buffer
DRAIN_TIMEOUT = 10.0  # s: lossless consumers waiting for the last measured frame
_cells = itertools.count()


class CellError(RuntimeError):
    """A cell could not be run or measured (its processes are cleaned up)."""


def _cpu_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_PROCESS_CPUTIME_ID)


class _Helpers:
    """The child processes a producer side runs (framebus's bus relays), whose CPU
    is the producer's: each read through its process CPU clock (what
    ``clock_getcpuclockid()`` returns: ns, every thread), as this process's own."""

    def __init__(self) -> None:
        self.clocks = [((~child.pid) << 3) | 2 for child in psutil.Process().children(recursive=True)]

    def read(self) -> list[int]:
        """Each helper's CPU ns now (-1 for one that has exited)."""
        times = []
        for clock in self.clocks:
            try:
                times.append(time.clock_gettime_ns(clock))
            except OSError:
                times.append(-1)
        return times

    @staticmethod
    def spent(before: list[int], after: list[int]) -> int:
        """CPU ns the helpers spent between two reads (those alive at both)."""
        return sum(b - a for a, b in zip(before, after) if a >= 0 and b >= 0)


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (all processes, all CPUs)."""
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0) + getattr(t, "steal", 0.0)
    guest = getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)  # also counted in user/nice
    return sum(t) - idle - guest


def _own_cpu_s() -> float:
    """CPU seconds of this process and its reaped children (the cells' processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _memory() -> dict[str, int]:
    """Peak RSS over the process's life and its USS now (end of the last window)."""
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"peak_rss": peak_rss, "uss": psutil.Process().memory_full_info().uss}


# --------------------------------------------------------------------------- children


class _Stopped(Exception):
    """The harness raised the stop flag."""


def _child_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the harness's to handle

    def _terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    try:  # PR_SET_PDEATHSIG: SIGTERM when the harness dies, whatever killed it
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _wait_go(ctl: Any) -> int:
    deadline = time.monotonic() + SETUP_TIMEOUT
    while not (t0 := ctl[_T0]):
        if ctl[_STOP]:
            raise _Stopped
        if time.monotonic() > deadline:
            raise TimeoutError("no start signal from the harness")
        time.sleep(0.001)
    return int(t0)


def _sleep_until(t_ns: int, ctl: Any) -> None:
    while (left := t_ns - time.monotonic_ns()) > 0:
        if ctl[_STOP]:
            raise _Stopped
        time.sleep(min(left / 1e9, 0.01))


def _produce(side: ProducerSide, spec: CellSpec, maps_capture: bool, t0: int, ctl: Any) -> dict[str, Any]:
    """The producer's loop: each phase paced or flat out, frames made in place or copied in."""
    timing = spec.timing
    capture = capture_buffer(spec.frame) if any(p.case == CAPTURE for p in spec.phases) else None
    seq = 0
    phases = []
    helpers = _Helpers()  # (the consumers are attached: their relays run)
    for phase, (begin, start, stop) in zip(spec.phases, timing.windows(t0, len(spec.phases))):
        _sleep_until(begin, ctl)
        copy_in = phase.case == CAPTURE and not maps_capture
        period = int(1e9 / timing.rate) if phase.mode == PACED else 0
        next_t = begin
        published = dropped = 0
        cpu0: int | None = None
        helpers0: list[int] = []
        while True:
            now = time.monotonic_ns()
            if period:
                if now < next_t:
                    if next_t >= stop:
                        break
                    time.sleep((next_t - now) / 1e9)
                    now = time.monotonic_ns()
                next_t = max(next_t + period, now)  # behind schedule: skip, never burst
            if now >= stop:
                break
            if ctl[_STOP]:
                raise _Stopped
            if cpu0 is None and now >= start:
                cpu0, helpers0 = _cpu_ns(), helpers.read()
            seq += 1
            if copy_in:  # the camera's frame is ready: copy it into the transport
                ts = time.monotonic_ns()
                stamp(capture, seq, ts)  # type: ignore[arg-type]
                frame = side.acquire(ACQUIRE_TIMEOUT)
                np.copyto(frame, capture)  # type: ignore[arg-type]
            else:  # made in the transport's buffer (framebus: the capture buffer is one)
                frame = side.acquire(ACQUIRE_TIMEOUT)
                ts = time.monotonic_ns()
                stamp(frame, seq, ts)
            drops = side.publish(frame, seq, ts)
            del frame
            if start <= ts < stop:
                published += 1
                dropped += drops
                ctl[_LAST] = seq
        cpu = _cpu_ns() - cpu0 + helpers.spent(helpers0, helpers.read()) if cpu0 is not None else 0
        phases.append({"published": published, "dropped": dropped, "cpu_ns": cpu})
    return {"phases": phases}


def _consume(side: ConsumerSide, spec: CellSpec, t0: int, ctl: Any) -> dict[str, Any]:
    """The consumer's loop, the same for every transport: receive, touch, verify, release."""
    timing = spec.timing
    windows = timing.windows(t0, len(spec.phases))
    n = len(windows)
    count = [0] * n
    bad = [0] * n
    lat = [array("q") for _ in range(n)]
    cpu = [0] * n
    bounds = sorted((t, k, sign) for k, (_, s, e) in enumerate(windows) for t, sign in ((s, -1), (e, 1)))
    bi = 0
    end = windows[-1][2] + int(timing.gap * 1e9)
    give_up = end + int(DRAIN_TIMEOUT * 1e9)
    lossless = spec.phases[0].mode == FLAT
    last_seq = 0
    seq_offset: int | None = None
    k = 0
    while True:
        got = side.receive(timing.wait)
        if got is None:
            now = time.monotonic_ns()
        else:
            seq, ts, tail = read_stamp(got.array)  # touch both ends of the frame
            now = time.monotonic_ns()  # publish -> a view we have touched
            side.release()
            ok = tail == seq and seq > last_seq and (got.timestamp_ns is None or got.timestamp_ns == ts)
            if got.seq is not None:
                if seq_offset is None:
                    seq_offset = got.seq - seq
                ok = ok and got.seq - seq == seq_offset
            if ok:
                last_seq = seq
            if not windows[k][1] <= ts < windows[k][2]:
                k = next((j for j, w in enumerate(windows) if w[1] <= ts < w[2]), k)
            if windows[k][1] <= ts < windows[k][2]:
                if ok:
                    count[k] += 1
                    lat[k].append(now - ts)
                else:
                    bad[k] += 1
        while bi < len(bounds) and now >= bounds[bi][0]:
            _, j, sign = bounds[bi]
            cpu[j] += sign * _cpu_ns()
            bi += 1
        # Lossless mode: every measured frame is still on its way to us; wait for the last.
        if now >= end and ctl[_DONE] and (not lossless or last_seq >= ctl[_LAST] or now >= give_up):
            break
        if ctl[_STOP]:
            break
    phases = [
        {"received": count[j], "bad": bad[j], "cpu_ns": max(cpu[j], 0), "latency_ns": lat[j].tobytes()}
        for j in range(n)
    ]
    return {"phases": phases}


def _child(
    role: str, index: int, transport: Transport, spec: CellSpec, ctl: Any, results: Any, profile_dir: str | None
) -> None:
    _child_init()
    side: ProducerSide | ConsumerSide | None = None
    try:
        side = transport.producer() if role == "producer" else transport.consumer(index)
        results.put(("ready", role, index, None))
        t0 = _wait_go(ctl)
        prof = cProfile.Profile() if profile_dir else None
        if prof:
            prof.enable()
        if role == "producer":
            data = _produce(side, spec, transport.maps_capture, t0, ctl)  # type: ignore[arg-type]
            ctl[_DONE] = 1
        else:
            data = _consume(side, spec, t0, ctl)  # type: ignore[arg-type]
        if prof and profile_dir:
            prof.disable()
            name = f"{spec.transport}-{spec.frame.key}-n{spec.consumers}-{role}{index}.prof"
            prof.dump_stats(os.path.join(profile_dir, name))
        data["memory"] = _memory()
        results.put(("result", role, index, data))
        if role == "producer":  # keep the transport up until every consumer is done
            deadline = time.monotonic() + FINISH_MARGIN
            while not ctl[_STOP] and time.monotonic() < deadline:
                time.sleep(0.005)
    except _Stopped:
        pass
    except Exception:
        results.put(("error", role, index, traceback.format_exc(limit=6)))
    finally:
        if side is not None:
            side.close()


# --------------------------------------------------------------------------- harness


def _reap(procs: list[mp.process.BaseProcess]) -> None:
    deadline = time.monotonic() + 3.0
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for stop in ("terminate", "kill"):
        alive = [p for p in procs if p.is_alive()]
        for p in alive:
            getattr(p, stop)()
        for p in alive:
            p.join(2.0)
    for p in procs:
        if not p.is_alive():
            p.close()


Key = tuple[str, int]  # (role, index) of a child process


def _gather(results: Any, procs: dict[Key, Any], kind: str, want: set[Key], deadline: float) -> dict[Key, Any]:
    """Messages of ``kind`` from every (role, index) in ``want``; CellError on error/death/timeout."""
    got: dict[Key, Any] = {}
    dead_seen = 0.0
    while want - got.keys():
        try:
            msg_kind, role, index, data = results.get(timeout=0.1)
        except queue.Empty:
            missing = want - got.keys()
            dead = [key for key in missing if key in procs and procs[key].exitcode is not None]
            if dead:  # allow its last message to arrive before calling it dead
                dead_seen = dead_seen or time.monotonic()
                if time.monotonic() - dead_seen > 0.5:
                    role, index = dead[0]
                    raise CellError(f"{role} {index} exited ({procs[dead[0]].exitcode}) before {kind}") from None
            if time.monotonic() > deadline:
                raise CellError(f"timed out waiting for {kind} from {sorted(missing)}") from None
            continue
        if msg_kind == "error":
            raise CellError(f"{role} {index} failed:\n{data}")
        if msg_kind == kind:
            got[(role, index)] = data
    return got


def run_cell(spec: CellSpec, transport_cls: type[Transport], profile_dir: str | None = None) -> dict[str, Any]:
    """Run ``spec`` for ``transport_cls``: the raw per-process figures of every phase,
    plus how busy other processes kept the machine meanwhile (``background_cpu_pct``).

    Raises :class:`CellError` if the cell could not be measured, and lets
    KeyboardInterrupt through; either way after cleaning everything up."""
    busy0, own0, wall0 = _busy_cpu_s(), _own_cpu_s(), time.monotonic()
    workdir = tempfile.mkdtemp(prefix="fbbench-")
    tag = f"{os.getpid()}x{next(_cells)}"
    ctl = CTX.RawArray("q", 4)
    results = CTX.Queue()
    procs: dict[Key, Any] = {}
    transport: Transport | None = None
    try:
        modes = {p.mode for p in spec.phases}
        if len(modes) != 1:
            raise ValueError("the phases of one cell share one load mode")
        lossless = modes == {FLAT}
        transport = transport_cls(Setup(spec.frame, spec.consumers, workdir, tag, lossless))

        def start(role: str, index: int) -> None:
            p = CTX.Process(
                target=_child,
                args=(role, index, transport, spec, ctl, results, profile_dir),
                name=f"bench-{spec.transport}-{role}{index}",
                daemon=True,
            )
            p.start()
            procs[(role, index)] = p

        start("producer", 0)
        _gather(results, procs, "ready", {("producer", 0)}, time.monotonic() + SETUP_TIMEOUT)
        consumers = {("consumer", i) for i in range(spec.consumers)}
        for _, i in sorted(consumers):
            start("consumer", i)
        _gather(results, procs, "ready", consumers, time.monotonic() + SETUP_TIMEOUT)
        ctl[_T0] = time.monotonic_ns() + 20_000_000
        span = spec.timing.span(len(spec.phases))
        got = _gather(
            results, procs, "result", consumers | {("producer", 0)}, time.monotonic() + span + FINISH_MARGIN
        )
        raw = {
            "producer": got[("producer", 0)],
            "consumers": [got[("consumer", i)] for i in range(spec.consumers)],
        }
    finally:
        # A second Ctrl-C must not cut the cleanup short: hold it until the end.
        masked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            ctl[_STOP] = 1
            _reap(list(procs.values()))
            if transport is not None:
                transport.cleanup()
        finally:
            results.close()
            shutil.rmtree(workdir, ignore_errors=True)
            signal.pthread_sigmask(signal.SIG_SETMASK, masked)
    # What other processes used meanwhile: the cell's figures are perturbed if much.
    foreign = (_busy_cpu_s() - busy0) - (_own_cpu_s() - own0)
    raw["background_cpu_pct"] = round(max(0.0, 100 * foreign / ((time.monotonic() - wall0) * (os.cpu_count() or 1))), 1)
    return raw
