"""`framebus demo`: a synthetic camera and three consumer processes, live.

Starts `framebus produce --source synthetic` and three programs from
`consumers/` (a monitor that checks every frame's stamp, a motion detector and
a snapshot writer), each in its own process, plus `framebus preview` (the live
picture in a browser; its address is printed), and shows per process: fps,
publish→view latency p50/p99, drops, leases held and memory. The producer's
RSS holds the frame buffers; each consumer's USS (memory only it has) stays
small, because the frames it reads are the producer's pages, not copies.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import IO, Any

import psutil

from framebus import FramebusError
from framebus.report import query_status

MB = 1024 * 1024


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[str]
    report: dict[str, Any] = field(default_factory=dict)
    memory: tuple[float, float] = (0.0, 0.0)  # RSS, USS in MB


def run_demo(args: argparse.Namespace) -> int:
    workdir = tempfile.mkdtemp(prefix="framebus-demo-")
    sock = os.path.join(workdir, "cam0.sock")
    children: list[_Child] = []
    try:
        with open(os.path.join(workdir, "producer.log"), "w") as log:  # the child keeps a copy
            producer = _start(
                "producer", ["framebus", "produce", "--socket", sock, "--source", "synthetic",
                             "--width", str(args.width), "--height", str(args.height),
                             "--format", args.format, "--fps", str(args.fps),
                             "--buffers", "10"],  # 8 + the preview's lease and one spare
                stdout=subprocess.DEVNULL, stderr=log)
        children.append(producer)
        _wait_for_socket(sock, producer, workdir)
        preview, url = _start_preview(args, sock, workdir)
        if preview is not None:
            children.append(preview)
            print(f"preview: {url}  (open it in a browser)", flush=True)
        args.preview_url = url
        common = ["--socket", sock, "--json", "--interval", "0.5", "--wait", "5"]
        for name, extra in (("monitor", ["--verify"]), ("motion", []),
                            ("snapshot", ["--dir", os.path.join(workdir, "snapshots")])):
            children.append(_start(name, [f"{__package__}.{name}", *common, "--name", name, *extra],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
        summary = _watch(args, sock, producer,
                         [c for c in children[1:] if c is not preview])
    finally:
        _stop_all(children)
        shutil.rmtree(workdir, ignore_errors=True)
    print(_summary_text(args, summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return 0


def _start(name: str, argv: list[str], **streams: Any) -> _Child:
    module = "framebus" if argv[0] == "framebus" else argv[0]
    rest = argv[1:]
    command = [sys.executable, "-m", module, *rest]
    return _Child(name, subprocess.Popen(command, text=True, **streams))


def _start_preview(args: argparse.Namespace, sock: str,
                   workdir: str) -> tuple[_Child | None, str]:
    """`framebus preview` on --preview-port (any free port if that one is taken);
    returns it and its address, or (None, why not) if it cannot run here."""
    port = getattr(args, "preview_port", 8080)
    for attempt in dict.fromkeys((port, 0)):
        with open(os.path.join(workdir, "preview.log"), "w") as log:
            child = _start("preview", ["framebus", "preview", "--socket", sock, "--port",
                                       str(attempt), "--wait", "5"],
                           stdout=subprocess.PIPE, stderr=log)
        assert child.process.stdout is not None
        ready, _, _ = select.select([child.process.stdout], [], [], 15)
        line = child.process.stdout.readline() if ready else ""
        if line.startswith("preview: "):
            return child, line.split()[1]
        _stop_all([child])
    with open(os.path.join(workdir, "preview.log")) as log:
        why = log.read().strip().splitlines()[-1:] or ["it did not start"]
    print(f"(no preview: {why[0]})", file=sys.stderr)
    return None, ""


def _wait_for_socket(sock: str, producer: _Child, workdir: str) -> None:
    deadline = time.monotonic() + 10
    while not os.path.exists(sock):
        if producer.process.poll() is not None or time.monotonic() > deadline:
            with open(os.path.join(workdir, "producer.log")) as log:
                raise FramebusError(f"the demo producer did not start:\n{log.read()}")
        time.sleep(0.05)


def _watch(args: argparse.Namespace, sock: str, producer: _Child,
           consumers: list[_Child]) -> dict[str, Any]:
    selector = selectors.DefaultSelector()
    for child in consumers:
        assert child.process.stdout is not None
        selector.register(child.process.stdout, selectors.EVENT_READ, child)
    tty = sys.stdout.isatty()
    started = time.monotonic()
    next_draw = started + (0.5 if tty else 1.0)
    status: dict[str, Any] = {}
    try:
        while time.monotonic() - started < args.seconds:
            for key, _ in selector.select(timeout=0.1):
                _read_report(key.data.process.stdout, key.data, selector)
            if time.monotonic() >= next_draw:
                next_draw += 0.5 if tty else 1.0
                status = _sample(sock, producer, consumers) or status
                elapsed = time.monotonic() - started
                if tty:
                    print("\x1b[H\x1b[J" + _table(args, elapsed, status, producer, consumers),
                          flush=True)
                else:
                    print(_lines(elapsed, consumers), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        selector.close()
    return _summary(args, status, producer, consumers)


def _read_report(stream: IO[str], child: _Child, selector: selectors.BaseSelector) -> None:
    line = stream.readline()
    if not line:
        selector.unregister(stream)
        return
    try:
        child.report = json.loads(line)
    except ValueError:
        pass


def _sample(sock: str, producer: _Child, consumers: list[_Child]) -> dict[str, Any] | None:
    for child in (producer, *consumers):
        child.memory = _memory(child.process.pid)
    try:
        return query_status(sock, timeout=1.0)
    except FramebusError:
        return None


def _memory(pid: int) -> tuple[float, float]:
    try:
        info = psutil.Process(pid).memory_full_info()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return (0.0, 0.0)
    return (info.rss / MB, info.uss / MB)


def _held(status: dict[str, Any], name: str) -> str:
    for c in status.get("consumers", []):
        if c["name"] == name:
            return f"{c['held']}/{c['max_held']}"
    return "-"


def _notes(report: dict[str, Any]) -> str:
    keys = ("bad", "motion_score", "motion_events", "snapshots")
    return " ".join(f"{k}={report[k]}" for k in keys if k in report)


def _table(args: argparse.Namespace, elapsed: float, status: dict[str, Any],
           producer: _Child, consumers: list[_Child]) -> str:
    rows = [f"framebus demo: synthetic {args.width}x{args.height} {args.format} at {args.fps:g} fps, "
            f"{status.get('buffers', '?')} buffers   {elapsed:4.1f}/{args.seconds:g} s  (Ctrl-C stops)",
            f"preview: {args.preview_url or '(not running)'}",
            "",
            f"{'process':<10} {'fps':>6} {'p50 us':>8} {'p99 us':>8} {'dropped':>8} {'held':>5} "
            f"{'RSS MB':>8} {'USS MB':>8}  notes"]
    rss, uss = producer.memory
    rows.append(f"{'producer':<10} {status.get('fps', 0):>6.1f} {'':>8} {'':>8} {'':>8} {'':>5} "
                f"{rss:>8.1f} {uss:>8.1f}  published={status.get('published', 0)}")
    for child in consumers:
        r = child.report
        rss, uss = child.memory
        rows.append(f"{child.name:<10} {r.get('fps', 0):>6.1f} {r.get('latency_p50_us', 0):>8.0f} "
                    f"{r.get('latency_p99_us', 0):>8.0f} {r.get('dropped', 0):>8} "
                    f"{_held(status, child.name):>5} {rss:>8.1f} {uss:>8.1f}  {_notes(r)}")
    return "\n".join(rows)


def _lines(elapsed: float, consumers: list[_Child]) -> str:
    parts = [f"{c.name} {c.report.get('fps', 0):.1f} fps p50 {c.report.get('latency_p50_us', 0):.0f} us "
             f"p99 {c.report.get('latency_p99_us', 0):.0f} us drop {c.report.get('dropped', 0)} "
             f"USS {c.memory[1]:.1f} MB" for c in consumers]
    return f"[{elapsed:4.1f} s] " + " | ".join(parts)


def _summary(args: argparse.Namespace, status: dict[str, Any], producer: _Child,
             consumers: list[_Child]) -> dict[str, Any]:
    return {
        "format": f"{args.width}x{args.height} {args.format}", "fps_requested": args.fps,
        "preview": args.preview_url,
        "producer": {"published": status.get("published"), "fps": status.get("fps"),
                     "rss_mb": producer.memory[0], "uss_mb": producer.memory[1],
                     "revoked": status.get("revoked"), "buffers": status.get("buffers"),
                     "frame_mb": status.get("format", {}).get("sizeimage", 0) / MB},
        "consumers": [{**c.report, "rss_mb": c.memory[0], "uss_mb": c.memory[1]}
                      for c in consumers],
    }


def _summary_text(args: argparse.Namespace, summary: dict[str, Any]) -> str:
    p = summary["producer"]
    lines = [f"\nsummary: {summary['format']}, {p['published']} frames published "
             f"({(p['fps'] or 0):.1f} fps); producer RSS {p['rss_mb']:.1f} MB "
             f"(holds {p['buffers']} buffers of {p['frame_mb']:.1f} MB)"]
    for c in summary["consumers"]:
        lines.append(f"  {c.get('name', '?'):<9} {c.get('frames', 0):>5} frames "
                     f"{c.get('fps', 0):>5.1f} fps  latency p50 {c.get('latency_p50_us', 0):.0f} us "
                     f"p99 {c.get('latency_p99_us', 0):.0f} us  dropped {c.get('dropped', 0)}  "
                     f"USS {c['uss_mb']:.1f} MB  {_notes(c)}")
    lines.append("  a consumer's USS is its private memory: no frame was copied into it.")
    if summary.get("preview"):
        lines.append(f"  the preview was at {summary['preview']}")
    return "\n".join(lines)


def _stop_all(children: list[_Child]) -> None:
    """SIGTERM consumers first, then the producer; kill what does not stop."""
    for group in (children[1:], children[:1]):
        for child in group:
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        for child in group:
            try:
                child.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
            if child.process.stdout is not None:
                child.process.stdout.close()
