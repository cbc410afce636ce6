"""Remote consumers over Zenoh: fps, latency, drops and CPU across a real link.

    sudo python -m framebus_bench.remote [--seconds 8] [--out remote.json]

For each case (640x480 YUYV and 1920x1080 NV12; raw and JPEG; an unshaped
veth and one shaped to 100 Mbit/s with tc's tbf) it builds two network
namespaces joined by a veth pair, runs a synthetic producer at 30 fps and
`framebus bridge` in one, and a `RemoteConsumer` in the other, then measures
for `--seconds` after a warm-up: frames received per second, latency from
publish on the bus to the frame in the remote consumer's hands (p50/p99; the
namespaces share CLOCK_MONOTONIC), frames the remote consumer never got,
the CPU of the bridge and of the remote consumer (percent of one core), the
bridge's lease and Zenoh-copy times, and the bytes that crossed the veth.
Zenoh's shared-memory transport and multicast scouting are off. Needs root.
Writes the JSON and a Markdown table (to `--out` and next to it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import psutil

from framebus_bench.netns import Namespaces

CASES = [(w, h, f, enc, link) for (w, h, f) in ((640, 480, "YUYV"), (1920, 1080, "NV12"))
         for enc in ("raw", "jpeg") for link in ("veth", "100mbit")]
ENDPOINT = "tcp/10.77.0.1:7447"

# The remote consumer: warm up, then measure; prints {"measuring"} and then the figures.
MEASURE = r"""
import json, sys, time
import numpy as np
import framebus
from framebus.remote import RemoteConsumer
spec = json.loads(sys.argv[1])
with RemoteConsumer("bench", connect=[spec["endpoint"]], timeout=20) as cam:
    end_warmup = time.monotonic() + spec["warmup"]
    while time.monotonic() < end_warmup:
        try:
            cam.get(timeout=1.0).release()
        except framebus.Timeout:
            pass
    print(json.dumps({"measuring": True}), flush=True)
    latency, first, last = [], None, None
    cpu0, t0 = time.process_time(), time.monotonic()
    while time.monotonic() - t0 < spec["seconds"]:
        try:
            frame = cam.get(timeout=1.0)
        except framebus.Timeout:
            continue
        with frame:
            latency.append(time.monotonic_ns() - frame.timestamp_ns)
            first = frame.seq if first is None else first
            last = frame.seq
    elapsed = time.monotonic() - t0
    cpu = time.process_time() - cpu0
lat = np.array(latency, dtype=np.float64) / 1e6
print(json.dumps({"frames": len(latency), "elapsed": elapsed,
                  "fps": len(latency) / elapsed,
                  "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
                  "p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
                  "missed": (last - first + 1 - len(latency)) if latency else 0,
                  "span": (last - first + 1) if latency else 0,
                  "cpu_pct": 100 * cpu / elapsed}), flush=True)
"""

_TIMES = re.compile(r"lease ([\d.]+) ms .*Zenoh copy ([\d.]+) ms")


def run_case(width: int, height: int, pixel_format: str, encoding: str, link: str,
             args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    sock = os.path.join(workdir, "cam.sock")
    producer = subprocess.Popen(
        [sys.executable, "-m", "framebus", "produce", "--socket", sock, "--width", str(width),
         "--height", str(height), "--format", pixel_format, "--fps", str(args.fps)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with Namespaces() as net:
            a, b = net.add("a"), net.add("b")
            dev = net.link(a, "10.77.0.1", b, "10.77.0.2")
            if link != "veth":
                net.shape(a, dev, link)
            deadline = time.monotonic() + 10
            while not os.path.exists(sock):
                if time.monotonic() > deadline or producer.poll() is not None:
                    raise RuntimeError("the producer did not start")
                time.sleep(0.05)
            log_path = os.path.join(workdir, "bridge.log")
            with open(log_path, "w") as log:
                bridge = net.python(a, "-m", "framebus", "bridge", "--socket", sock, "--key",
                                    "bench", "--listen", ENDPOINT, "--encoding", encoding,
                                    "--quality", str(args.quality), "--window", str(args.window),
                                    stderr=log)
            spec = {"endpoint": ENDPOINT, "warmup": args.warmup, "seconds": args.seconds}
            agent = net.python(b, "-c", MEASURE, json.dumps(spec))
            assert agent.stdout is not None
            if "measuring" not in json.loads(agent.stdout.readline() or "{}"):
                raise RuntimeError(f"the remote consumer failed: {agent.communicate()[1]}")
            bridge_proc = psutil.Process(bridge.pid)
            cpu0, tx0, t0 = sum(bridge_proc.cpu_times()[:2]), net.tx_bytes(a, dev), time.monotonic()
            line = agent.stdout.readline()
            cpu1, tx1, t1 = sum(bridge_proc.cpu_times()[:2]), net.tx_bytes(a, dev), time.monotonic()
            if not line:
                raise RuntimeError(f"the remote consumer failed: {agent.communicate()[1]}")
            result = json.loads(line)
            with open(log_path) as log:
                times = _TIMES.findall(log.read())
    finally:
        producer.terminate()
        producer.wait(timeout=10)
    lease_ms, zenoh_ms = times[-1] if times else ("", "")
    return {"size": f"{width}x{height}", "format": pixel_format, "encoding": encoding,
            "link": link, **result, "bridge_cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
            "wire_mbit_s": 8 * (tx1 - tx0) / (t1 - t0) / 1e6,
            "lease_ms": float(lease_ms or 0), "zenoh_copy_ms": float(zenoh_ms or 0)}


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| frames | encoding | link | received fps | latency p50 | p99 | dropped | "
             "bridge CPU | remote CPU | lease (copy/encode) | Zenoh copy | on the wire |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        dropped = f"{r['missed']} of {r['span']}"
        lines.append(
            f"| {r['size']} {r['format']} | {r['encoding']} | {r['link']} | {r['fps']:.1f} | "
            f"{r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {dropped} | "
            f"{r['bridge_cpu_pct']:.0f}% | {r['cpu_pct']:.0f}% | {r['lease_ms']:.2f} ms | "
            f"{r['zenoh_copy_ms']:.2f} ms | {r['wire_mbit_s']:.0f} Mbit/s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m framebus_bench.remote",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured per case")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--fps", type=float, default=30.0, help="the producer's rate")
    parser.add_argument("--quality", type=int, default=80, help="JPEG quality")
    parser.add_argument("--window", type=int, choices=(1, 2), default=1,
                        help="the bridge's frames in flight per link")
    parser.add_argument("--only", help="run only cases whose label contains this "
                                       "(e.g. 'YUYV raw 100mbit')")
    parser.add_argument("--out", default=time.strftime("remote-%Y%m%d-%H%M%S.json"),
                        help="where to write the JSON (the table goes next to it as .md)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
        print("needs root and iproute2 (ip, tc): network namespaces", file=sys.stderr)
        return 2
    results = []
    for case in CASES:
        label = f"{case[0]}x{case[1]} {case[2]} {case[3]} {case[4]}"
        if args.only and not all(word in label for word in args.only.split()):
            continue
        workdir = tempfile.mkdtemp(prefix="fbr-", dir="/tmp")
        try:
            result = run_case(*case, args=args, workdir=workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        print(f"{label}: {result['fps']:.1f} fps, p50 {result['p50_ms']:.1f} ms, "
              f"p99 {result['p99_ms']:.1f} ms, dropped {result['missed']}, bridge CPU "
              f"{result['bridge_cpu_pct']:.0f}%", flush=True)
        results.append(result)
    meta = {"seconds": args.seconds, "fps": args.fps, "quality": args.quality,
            "window": args.window, "cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%d %H:%M")}
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    markdown = table(results)
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
        f.write(markdown + "\n")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
