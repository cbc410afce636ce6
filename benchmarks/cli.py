"""``framebus bench``: the same camera-frame workload through framebus and the
usual alternatives, in one run, with the figures side by side."""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import psutil

from framebus.commands import Command

from framebus_bench import references, report, stats, transports
from framebus_bench.harness import CellError, run_cell
from framebus_bench.transports.base import Transport
from framebus_bench.workload import ALL_PHASES, CAPTURE, FLAT, INPLACE, PACED, CellSpec, FrameSpec, Timing, parse_size

BACKGROUND_LIMIT = 10  # % of the CPUs used by other processes during a cell: noted as perturbed
SETTLE = 0.1  # s of quiet between cells, so one cell's teardown does not hit the next
DEFAULT_OUT = "bench-results"  # under the current directory

ALL_SIZES = "64x64,640x480,1920x1080,3840x2160"


@dataclass(frozen=True)
class Preset:
    sizes: str
    consumers: str
    repeat: int
    timing: Timing
    cases: str = f"{INPLACE},{CAPTURE}"
    transports: str | None = None  # None: every transport


#: the cells issue 10's must-show checks need, and nothing else: framebus's two
#: channels, the lean references, iceoryx2; in-place only (framebus and the
#: references map the capture buffer, so their capture case is the same work)
MUST_SHOW_TRANSPORTS = "framebus,framebus-socket,pipe-floor,lean-seqpacket,lean-zmq,iceoryx2"

PRESETS: dict[str, Preset] = {
    "full": Preset(ALL_SIZES, "1,2,4,8", 3, Timing(duration=1.0, warmup=0.2, gap=0.1)),
    "must-show": Preset(ALL_SIZES, "1,4", 3, Timing(duration=1.5, warmup=0.3, gap=0.1),
                        cases=INPLACE, transports=MUST_SHOW_TRANSPORTS),
    "quick": Preset("64x64,1920x1080,3840x2160", "1,4", 1, Timing(duration=0.35, warmup=0.1, gap=0.05)),
    "smoke": Preset("64x64", "2", 1, Timing(duration=0.03, warmup=0.02, gap=0.01, rate=200.0, wait=0.01)),
}

EPILOG = """\
load modes (each cell runs both, each with both producer cases):
  paced    a live source at --rate fps; a consumer 2 frames behind loses frames,
           the producer never waits. Gives latency and CPU per frame.
  flat     flat out and lossless: the producer publishes as fast as the slowest
           consumer takes frames (each transport's backpressure, depth 2).
           Gives the maximum delivered frames/s.
producer cases:
  inplace  the frame is made in the transport's buffer (or in a new array that
           the transport takes, for pyzmq and mp.Queue)
  capture  the frame starts in a separate capture buffer (a camera's); a
           transport that cannot map it copies it in; framebus maps it (V4L2
           USERPTR), so only its stamp is written
references (in every run unless --transports leaves them out): pipe-floor (the
  wake-up floor), lean-seqpacket and lean-zmq (framebus's job, nothing else); the
  report gives framebus's ratios to them and checks issue 10's must-show targets.
presets: --must-show (the cells those targets need: 4 sizes, 1 and 4 consumers,
           framebus, framebus-socket, the references, iceoryx2; in-place;
           3 repetitions of 1.5 s windows; 288 cells, about 10 min),
         --quick (3 sizes, 1 and 4 consumers, 1 repetition, about 2-3 min),
         --smoke (one tiny size, ~3 s, for CI); default: the full matrix (~40 min).
Writes <out>/bench-<preset>-<time>.{json,md,png}; iceoryx2 and matplotlib are
optional (pip install -e './benchmarks[plots,iceoryx2]').
"""


def _csv(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="framebus bench",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    preset = p.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true", help="a subset that finishes in 2-3 minutes")
    preset.add_argument("--smoke", action="store_true", help="tiny sizes, about 3 s: checks that everything runs")
    preset.add_argument("--must-show", action="store_true",
                        help="just the cells issue 10's must-show checks need (about 10 min)")
    p.add_argument("--sizes", help="frame sizes: 64x64,640x480,1920x1080,3840x2160 (aliases vga,1080p,4k) or WxH:FOURCC")
    p.add_argument("--consumers", help="consumer counts, e.g. 1,2,4,8")
    p.add_argument("--transports", help=f"subset of {','.join(transports.NAMES)} (default: all)")
    p.add_argument("--modes", default="paced,flat", help="load modes to run: paced,flat (default both)")
    p.add_argument("--cases", help="producer cases to run: inplace,capture (default both; --must-show: inplace)")
    p.add_argument("--duration", type=float, help="measured seconds per phase")
    p.add_argument("--warmup", type=float, help="warm-up seconds before each phase's window")
    p.add_argument("--rate", type=float, help="frames/s of the paced mode (default 100)")
    p.add_argument("--repeat", type=int, help="repetitions (medians are reported)")
    p.add_argument("--out", metavar="DIR",
                   help=f"where to write results (default: {DEFAULT_OUT}; --smoke: its tmp/, git-ignored)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    p.add_argument("--profile", metavar="DIR", help="write a cProfile .prof per process into DIR")
    return p


def _plan(args: argparse.Namespace) -> tuple[str, list[FrameSpec], list[int], int, Timing, list[str], list[str]]:
    """preset name, sizes, consumer counts, repetitions, timing, cases, transports."""
    preset = "smoke" if args.smoke else "quick" if args.quick else "must-show" if args.must_show else "full"
    plan = PRESETS[preset]
    sizes, counts, repeat, timing = plan.sizes, plan.consumers, plan.repeat, plan.timing
    custom = any(v is not None for v in (args.sizes, args.consumers, args.duration, args.repeat, args.rate, args.warmup,
                                         args.cases))
    timing = Timing(
        duration=args.duration if args.duration is not None else timing.duration,
        warmup=args.warmup if args.warmup is not None else timing.warmup,
        gap=timing.gap,
        rate=args.rate if args.rate is not None else timing.rate,
        wait=timing.wait,
    )
    frames = [parse_size(s) for s in _csv(args.sizes or sizes)]
    consumers = [int(c) for c in _csv(args.consumers or counts)]
    if not frames or not consumers or min(consumers) < 1:
        raise ValueError("need at least one size and consumer counts >= 1")
    if timing.duration <= 0 or timing.rate <= 0 or timing.warmup < 0:
        raise ValueError("--duration and --rate must be > 0, --warmup >= 0")
    repeat = args.repeat if args.repeat is not None else repeat
    if repeat < 1:
        raise ValueError("--repeat must be >= 1")
    cases = _csv(args.cases or plan.cases)
    if not cases or set(cases) - {INPLACE, CAPTURE}:
        raise ValueError("--cases takes inplace and/or capture")
    names = _csv(args.transports or plan.transports or ",".join(transports.NAMES))
    return preset + ("-custom" if custom else ""), frames, consumers, repeat, timing, cases, names


def _available(names: list[str]) -> tuple[dict[str, type[Transport]], list[str]]:
    found: dict[str, type[Transport]] = {}
    notes: list[str] = []
    for name in names:
        if name not in transports.REGISTRY:
            raise ValueError(f"unknown transport {name!r} (known: {', '.join(transports.NAMES)})")
        try:
            found[name] = transports.load(name)
        except ImportError as exc:
            if not transports.is_optional(name):
                raise
            notes.append(f"{name} skipped: it cannot be imported here ({exc}); pip install -e './benchmarks[plots,iceoryx2]'")
    return found, notes


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the bench; 0 if every cell was measured, 1 if some failed, 2 on bad
    arguments, 130 if interrupted (SIGINT or SIGTERM; everything is cleaned up)."""
    args = _parser().parse_args(argv)
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, _interrupt)
    try:
        return _run(args, argv)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _run(args: argparse.Namespace, argv: list[str] | None) -> int:
    try:
        preset, frames, consumers, repeat, timing, cases, names = _plan(args)
        modes = _csv(args.modes)
        if not modes or set(modes) - {PACED, FLAT}:
            raise ValueError("--modes takes paced and/or flat")
        classes, notes = _available(names)
    except (ValueError, ImportError) as exc:
        print(f"framebus bench: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    names = [n for n in names if n in classes]
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)

    cells = [(f, n, m) for f in frames for n in consumers for m in modes]
    total = repeat * len(cells) * len(names)
    records: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    started = time.monotonic()
    interrupted = False
    wake = None
    try:
        if preset != "smoke":
            busy = psutil.cpu_percent(interval=0.5)
            if busy > 15:
                notes.append(f"the machine was {busy:.0f}% busy before the run: other load perturbs the figures")
                print(f"note: {notes[-1]}", file=sys.stderr)
            wake = report.wake_floor(timing.rate, 0.5)
        done = 0
        for rep in range(repeat):
            for ci, (frame, n, mode) in enumerate(cells):
                shift = (rep + ci) % len(names)  # round-robin: each transport takes every slot in turn
                for name in names[shift:] + names[:shift]:
                    done += 1
                    phases = tuple(p for p in ALL_PHASES if p.mode == mode and p.case in cases)
                    spec = CellSpec(name, frame, n, phases=phases, timing=timing, rep=rep)
                    t = time.monotonic()
                    try:
                        raw = run_cell(spec, classes[name], args.profile)
                        records.extend(stats.phase_records(spec, raw))
                        status = "ok"
                    except CellError as exc:
                        errors.append({"transport": name, "size": frame.key, "consumers": n, "mode": mode, "rep": rep,
                                       "error": str(exc)})
                        status = "FAILED: " + str(exc).splitlines()[-1]
                    print(f"[{done}/{total}] {name:15s} {frame.label:16s} {n} cons {mode:5s} rep {rep + 1}: "
                          f"{status} ({time.monotonic() - t:.1f} s)", file=sys.stderr, flush=True)
                    time.sleep(SETTLE if preset != "smoke" else 0.0)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: every process and segment was cleaned up; writing what was measured", file=sys.stderr)

    rows = stats.medians(records)
    busy = sorted({(r["transport"], r["size"], r["consumers"], r["mode"]) for r in rows
                   if (r.get("background_cpu_pct") or 0) > BACKGROUND_LIMIT})
    if busy:
        notes.append(f"{len(busy)} cell(s) ran while other processes used > {BACKGROUND_LIMIT}% of the CPUs "
                     f"(figures perturbed; see background_cpu_pct in the JSON): "
                     + ", ".join(f"{t} {s} x{n} {m}" for t, s, n, m in busy[:8]) + (" …" if len(busy) > 8 else ""))
    doc: dict[str, Any] = {
        "preset": preset,
        "command": " ".join(["framebus bench", *(argv if argv is not None else sys.argv[1:])]),
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "interrupted": interrupted,
        "machine": {**report.machine(), "wake_floor": wake},
        "config": {"sizes": [f.label for f in frames], "consumers": consumers, "modes": modes, "cases": cases,
                   "repeat": repeat,
                   "duration": timing.duration, "warmup": timing.warmup, "rate": timing.rate,
                   "transports": names},
        "transports": {n: classes[n].describe for n in names},
        "notes": notes + [f"{e['transport']} {e['size']} x{e['consumers']} {e['mode']} failed" for e in errors],
        "results": rows,
        "errors": errors,
    }
    doc["table"] = report.table(rows, names)
    doc["targets"] = report.targets(rows)
    doc["ratios"] = references.ratios(records)
    doc["must_show"] = references.must_show(doc["ratios"], rows)

    out = args.out or (os.path.join(DEFAULT_OUT, "tmp") if preset == "smoke" else DEFAULT_OUT)
    os.makedirs(out, exist_ok=True)
    base = os.path.join(out, f"bench-{preset}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    if not args.no_plot and preset != "smoke" and rows:
        plot_note = report.plot(base + ".png", rows, names)
        if plot_note:
            doc["notes"].append(plot_note)
            print(f"note: {plot_note}", file=sys.stderr)
    report.write_json(base + ".json", doc)
    with open(base + ".md", "w") as f:
        f.write(report.markdown(doc))
    print(report.markdown(doc))
    print(f"results: {base}.json, {base}.md" + (f", {base}.png" if os.path.exists(base + ".png") else ""))
    if interrupted:
        return 130
    return 1 if errors else 0


#: `framebus bench`, registered through the ``framebus.commands`` entry point.
COMMAND = Command("bench", "side-by-side benchmark against other transports "
                           "(framebus bench --help)", lambda args: main([]), main=main)


if __name__ == "__main__":
    sys.exit(main())
