"""The bench's outputs: machine description, markdown table, target check, JSON, PNG plot."""

from __future__ import annotations

import json
import os
import platform
import select
import subprocess
import sys
import time
from importlib import metadata
from typing import Any

import numpy as np

from framebus_bench import references
from framebus_bench.workload import CAPTURE, FLAT, INPLACE, PACED

PACKAGES = ("framebus", "numpy", "pyzmq", "msgpack", "psutil", "iceoryx2", "matplotlib")


def wake_floor(rate: float, seconds: float) -> dict[str, float]:
    """The machine's own cost of waking a blocked process at the paced rate: one
    process writes its timestamp into a pipe, another wakes in ``select`` and reads
    it. No transport can deliver faster than this; on VMs it is large."""
    r, w = os.pipe()
    n = max(10, int(rate * seconds))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(r)
            for _ in range(n):
                time.sleep(1.0 / rate)
                os.write(w, time.monotonic_ns().to_bytes(8, "little"))
        finally:
            os._exit(0)
    os.close(w)
    lat = []
    try:
        for _ in range(n):
            if not select.select([r], [], [], 2.0)[0]:
                break
            data = os.read(r, 8)
            if len(data) < 8:
                break
            lat.append(time.monotonic_ns() - int.from_bytes(data, "little"))
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    arr = np.array(lat or [0])
    return {"p50_us": round(float(np.percentile(arr, 50)) / 1e3, 1), "p99_us": round(float(np.percentile(arr, 99)) / 1e3, 1)}


def _source_version() -> str | None:
    """The framebus checkout measured: commit, plus "+dirty" with local changes."""
    root = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    try:
        out = subprocess.run(["git", "-C", root, "describe", "--always", "--dirty=+dirty"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "source": _source_version(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "packages": versions,
    }


# --------------------------------------------------------------------------- table


def _index(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {(r["transport"], r["size"], r["consumers"], r["case"], r["mode"]): r for r in rows}


def _fmt(v: Any, digits: int = 0) -> str:
    if v is None:
        return "–"
    return f"{v:,.{digits}f}" if isinstance(v, float) else str(v)


def table(rows: list[dict[str, Any]], transports: list[str]) -> str:
    """One line per (size, consumers, case, transport): flat-out fps, paced latency, CPU, memory."""
    idx = _index(rows)
    cells = sorted({(r["frame_bytes"], r["size"], r["format"], r["consumers"], r["case"]) for r in rows})
    head = (
        "| size | cons | case | transport | fps/consumer (flat) | p50 µs (paced) | p99 µs (paced) "
        "| recv % (paced) | CPU µs/frame paced | CPU µs/frame flat | flat CPU µs prod/publish · cons/frame "
        "| RSS MB prod/cons | USS MB prod/cons | bad |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for _, size, fourcc, n, case in cells:
        for t in transports:
            p, f = idx.get((t, size, n, case, PACED)), idx.get((t, size, n, case, FLAT))
            if p is None and f is None:
                continue
            p, f = p or {}, f or {}
            mem = [r for r in (p, f) if r]
            rss = f"{max(r['producer_peak_rss_mb'] for r in mem):.0f}/{max(r['consumer_peak_rss_mb'] for r in mem):.0f}"
            uss = f"{max(r['producer_uss_mb'] for r in mem):.0f}/{max(r['consumer_uss_mb'] for r in mem):.0f}"
            bad = sum(int(r.get("bad_frames") or 0) for r in mem)
            lines.append(
                f"| {size} {fourcc} | {n} | {case} | {t} | {_fmt(f.get('fps_per_consumer'))} "
                f"| {_fmt(p.get('latency_p50_us'))} | {_fmt(p.get('latency_p99_us'))} "
                f"| {_fmt(p.get('delivered_pct'))} | {_fmt(p.get('cpu_us_per_frame'))} "
                f"| {_fmt(f.get('cpu_us_per_frame'))} "
                f"| {_fmt(f.get('producer_cpu_us_per_publish'))} · {_fmt(f.get('consumer_cpu_us_per_frame'))} "
                f"| {rss} | {uss} | {bad} |"
            )
    return "\n".join(lines)


def _spread(row: dict[str, Any], field: str) -> str:
    """`` (min–max)`` over the repetitions, or nothing when there is no spread to show."""
    lo_hi = row.get(field + "_range")
    return f" ({_fmt(lo_hi[0])}–{_fmt(lo_hi[1])})" if lo_hi and lo_hi[0] != lo_hi[1] else ""


def glance(rows: list[dict[str, Any]], transports: list[str]) -> str:
    """Compact side-by-side: flat-out fps per consumer · paced p50 latency, per transport
    (medians, min–max over the repetitions in brackets)."""
    idx = _index(rows)
    cells = sorted({(r["frame_bytes"], r["size"], r["consumers"], r["case"]) for r in rows})
    lines = ["| size | cons | case | " + " | ".join(transports) + " |", "|---|---|---|" + "---|" * len(transports)]
    for _, size, n, case in cells:
        out = []
        for t in transports:
            f, p = idx.get((t, size, n, case, FLAT), {}), idx.get((t, size, n, case, PACED), {})
            out.append(f"{_fmt(f.get('fps_per_consumer'))}{_spread(f, 'fps_per_consumer')} fps · "
                       f"{_fmt(p.get('latency_p50_us'))}{_spread(p, 'latency_p50_us')} µs")
        lines.append(f"| {size} | {n} | {case} | " + " | ".join(out) + " |")
    return "\n".join(lines)


LEGEND = """\
- **fps/consumer (flat)**: flat-out mode, lossless: the producer publishes as fast as the
  slowest consumer takes frames (each transport's backpressure, depth 2); frames each
  consumer received per second of the measured window.
- **p50/p99 µs (paced)**: paced mode (a live source at the fixed rate; a consumer that is
  2 frames behind loses frames, the producer never waits): `time.monotonic_ns()` when the
  frame was ready (in-place: after it was made in the transport buffer; capture: when the
  camera buffer was ready, before any copy-in) to when the consumer holds a numpy view
  whose stamp it has read and verified.
- **recv % (paced)**: frames received / frames published × consumers; below 100 the
  transport could not keep up with the paced rate and its latency is an overload figure.
- **CPU µs/frame**: CPU time of the producer (with its helper processes: framebus's bus
  relays) and every consumer process (all threads, process CPU clocks) over the window / frames delivered to all consumers together,
  i.e. per consumer-frame. Paced includes the wake-ups a live source costs.
- **flat CPU µs prod/publish · cons/frame**: flat-out mode, the producer's CPU time (its
  helpers' included) / frames it published (per `publish()`, whatever the consumer count) · the consumers' CPU time
  together / frames delivered to them.
- **RSS/USS**: peak RSS (getrusage) and USS at the end (psutil) of the producer and of the
  largest consumer, max over both modes.
- **bad**: frames whose stamp failed verification (torn or overwritten pixels).
- Every figure is the median over the repetitions; in brackets, where shown, their min–max.
"""


# --------------------------------------------------------------------------- targets


def targets(rows: list[dict[str, Any]]) -> list[tuple[str, bool | None, str]]:
    """The framebus issue's targets, checked on this run for each framebus variant:
    (target, met?, evidence)."""
    out = []
    for name in ("framebus", "framebus-socket"):
        out += _targets_for(rows, name)
    return out


def _targets_for(rows: list[dict[str, Any]], name: str) -> list[tuple[str, bool | None, str]]:
    idx = _index(rows)
    fb = [r for r in rows if r["transport"] == name]
    out: list[tuple[str, bool | None, str]] = []
    if not fb:
        return out
    paced = [r for r in fb if r["mode"] == PACED and r["latency_p50_us"] is not None]
    if paced:
        worst50 = max(paced, key=lambda r: r["latency_p50_us"])
        worst99 = max(paced, key=lambda r: r["latency_p99_us"])
        out.append((f"{name} p50 ≤ 30 µs at every size", worst50["latency_p50_us"] <= 30,
                    f"worst p50 {worst50['latency_p50_us']} µs ({worst50['size']}, {worst50['consumers']} cons, {worst50['case']})"))
        out.append((f"{name} p99 ≤ 150 µs at every size", worst99["latency_p99_us"] <= 150,
                    f"worst p99 {worst99['latency_p99_us']} µs ({worst99['size']}, {worst99['consumers']} cons, {worst99['case']})"))
    ratios = []
    for r in paced:
        small = idx.get((name, "64x64", r["consumers"], r["case"], PACED))
        if r["size"] == "3840x2160" and small and small["latency_p50_us"]:
            ratios.append((r["latency_p50_us"] / small["latency_p50_us"], r))
    if ratios:
        worst, r = max(ratios, key=lambda x: x[0])
        out.append((f"{name} 4K p50 ≤ 1.2× 64×64 p50", worst <= 1.2, f"worst ratio {worst:.2f} ({r['consumers']} cons, {r['case']})"))
    for other in ("pyzmq", "mpqueue"):
        for case in (INPLACE, CAPTURE):
            a, b = idx.get((name, "3840x2160", 4, case, FLAT)), idx.get((other, "3840x2160", 4, case, FLAT))
            if a and b and a["fps_per_consumer"] is not None and b["fps_per_consumer"] is not None:
                fa, fb_ = a["fps_per_consumer"], b["fps_per_consumer"]
                ratio = fa / fb_ if fb_ else float("inf")
                why = f"{fa:.0f} vs {fb_:.1f} fps = {ratio:.0f}×" if fb_ else f"{fa:.0f} fps vs no {other} frame in the window"
                out.append((f"4K, 4 consumers, {case}: {name} fps ≥ 30× {other}", ratio >= 30, why))
    for mode in (PACED, FLAT):
        cpu = [r for r in fb if r["mode"] == mode and r["cpu_us_per_frame"] is not None]
        if not cpu:
            continue
        hi, lo = max(r["cpu_us_per_frame"] for r in cpu), min(r["cpu_us_per_frame"] for r in cpu)
        out.append((f"{name} CPU/frame ≤ 30 µs ({mode})", hi <= 30, f"{lo:.0f}–{hi:.0f} µs per consumer-frame"))
        by_cell: dict[tuple[Any, ...], dict[str, float]] = {}
        for r in cpu:
            by_cell.setdefault((r["consumers"], r["case"]), {})[r["size"]] = r["cpu_us_per_frame"]
        spreads = [(max(v.values()) / min(v.values()), k, v) for k, v in by_cell.items() if len(v) > 1 and min(v.values())]
        if spreads:
            worst, (n, case), v = max(spreads, key=lambda x: x[0])
            detail = ", ".join(f"{size} {us:.0f}" for size, us in v.items())
            out.append((f"{name} CPU/frame flat in frame size ({mode}, max/min ≤ 1.5)", worst <= 1.5,
                        f"worst {worst:.2f}× at {n} cons {case}: {detail} µs"))
    for case, factor in ((CAPTURE, 1.0), (INPLACE, 1.5)):
        for n in sorted({r["consumers"] for r in fb}):
            a, b = idx.get((name, "1920x1080", n, case, PACED)), idx.get(("iceoryx2", "1920x1080", n, case, PACED))
            if a and b and a["latency_p50_us"] and b["latency_p50_us"]:
                ok = a["latency_p50_us"] < b["latency_p50_us"] if factor == 1.0 else a["latency_p50_us"] <= factor * b["latency_p50_us"]
                what = "lower than" if factor == 1.0 else "within 1.5× of"
                out.append((f"1080p {case}, {n} cons: {name} p50 {what} iceoryx2", ok,
                            f"{a['latency_p50_us']} vs {b['latency_p50_us']} µs"))
    return out


# --------------------------------------------------------------------------- files


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    pk = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    parts = [
        f"# framebus bench ({doc['preset']})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['kernel']}, Python {m['python']}; {pk}; "
        f"source {m.get('source') or 'unknown'}.",
        f"Command: `{doc['command']}`",
        f"Paced rate {doc['config']['rate']} fps; window {doc['config']['duration']} s per phase after "
        f"{doc['config']['warmup']} s warm-up; {doc['config']['repeat']} repetition(s), transports "
        "interleaved round-robin.",
    ]
    if m.get("wake_floor"):
        wf = m["wake_floor"]
        parts.append(f"Machine wake-up floor at the paced rate (pipe + select between two processes): "
                     f"p50 {wf['p50_us']} µs, p99 {wf['p99_us']} µs.")
    parts += ["", "## At a glance: frames/s per consumer (flat-out) · p50 latency (paced)", "",
              glance(doc["results"], doc["config"]["transports"]), ""]
    parts += references.markdown(doc.get("ratios", []), doc.get("must_show", []))
    parts += ["## All figures", "", doc["table"], "", LEGEND]
    if doc["targets"]:
        parts += ["## Targets: earlier issues", ""]
        parts += [f"- {'MET ' if ok else 'MISSED' if ok is False else '?'} {name}: {why}" for name, ok, why in doc["targets"]]
        parts.append("")
    if doc["notes"]:
        parts += ["## Notes", ""] + [f"- {n}" for n in doc["notes"]] + [""]
    parts += ["## Transports", ""] + [f"- **{k}**: {v}" for k, v in doc["transports"].items()] + [""]
    return "\n".join(parts)


def write_json(path: str, doc: dict[str, Any]) -> None:
    data = {k: v for k, v in doc.items() if k != "table"}
    data["targets"] = [{"target": n, "met": ok, "evidence": why} for n, ok, why in doc["targets"]]
    data["must_show"] = [c._asdict() for c in doc.get("must_show", [])]
    tables = {k: data.pop(k) for k in ("ratios", "results") if k in data}
    text = json.dumps(data, indent=1)[:-2]
    # one line per row keeps the file small and diffable
    for key, rows in tables.items():
        body = ",\n  ".join(json.dumps(r, separators=(",", ":")) for r in rows)
        text += f',\n "{key}": [\n  ' + body + "\n ]"
    with open(path, "w") as f:
        f.write(text + "\n}\n")


def plot(path: str, rows: list[dict[str, Any]], transports: list[str]) -> str | None:
    """Latency (paced p50) and delivered fps (flat) against frame size, one line per
    transport; returns a note instead if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return "matplotlib is not installed: no plot (pip install -e './benchmarks[plots,iceoryx2]')"
    counts = sorted({r["consumers"] for r in rows})
    n = 4 if 4 in counts else counts[-1]
    cases = [c for c in (INPLACE, CAPTURE) if any(r["case"] == c for r in rows)]
    fig, axes = plt.subplots(2, len(cases), figsize=(5.5 * len(cases), 8), sharex=True, squeeze=False)
    for col, case in enumerate(cases):
        for row, (mode, field, label) in enumerate(
            ((PACED, "latency_p50_us", "p50 latency, µs (paced)"), (FLAT, "fps_per_consumer", "frames/s per consumer (flat-out)"))
        ):
            ax = axes[row][col]
            for t in transports:
                pts = sorted(
                    (r["frame_bytes"], r[field]) for r in rows
                    if r["transport"] == t and r["consumers"] == n and r["case"] == case and r["mode"] == mode and r[field]
                )
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=t)
            ax.set_xscale("log")
            ax.set_yscale("log")
            sizes = sorted({(r["frame_bytes"], r["size"]) for r in rows})
            ax.set_xticks([b for b, _ in sizes], [s for _, s in sizes])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.tick_params(axis="x", labelrotation=25)
            ax.set_title(f"{case}, {n} consumer{'s' if n > 1 else ''}")
            ax.set_ylabel(label)
            ax.grid(True, which="both", alpha=0.3)
            if row == 1:
                ax.set_xlabel("frame size")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)
    return None
