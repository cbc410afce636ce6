"""`framebus bench --smoke` runs end to end and writes well-formed results.

Only that: no timing assertions (CI machines are noisy)."""

from __future__ import annotations

import glob
import json
import os
import threading
import time
from typing import Any

import psutil
import pytest

from framebus_bench import cli, references, transports
from framebus_bench.transports.base import QUEUE_DEPTH, Setup
from framebus_bench.workload import SIZES, read_stamp, stamp

REQUIRED = [n for n in transports.NAMES if not transports.is_optional(n)]
REFERENCES = (transports.FLOOR, transports.LEAN_SEQPACKET, transports.LEAN_ZMQ)
PHASES = {(m, c) for m in ("paced", "flat") for c in ("inplace", "capture")}
NUMERIC = ("fps_per_consumer", "published_fps", "cpu_us_per_frame", "producer_peak_rss_mb", "consumer_uss_mb",
           "consumer_cpu_us_per_frame", "producer_cpu_us_per_publish")


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--quick", "--smoke", "--must-show", "--cases", "--sizes", "--consumers", "--transports",
                   "--duration", "--repeat", "--out"):
        assert option in out


def test_bad_arguments_are_refused() -> None:
    assert cli.main(["--smoke", "--transports", "nosuch"]) == 2
    assert cli.main(["--smoke", "--sizes", "12xab"]) == 2
    assert cli.main(["--smoke", "--cases", "sideways"]) == 2


def test_must_show_preset_plans_only_the_cells_it_checks() -> None:
    args = cli._parser().parse_args(["--must-show"])
    preset, frames, consumers, repeat, _, cases, names = cli._plan(args)
    assert preset == "must-show" and repeat == 3 and cases == ["inplace"]
    assert [f.key for f in frames] == ["64x64", "640x480", "1920x1080", "3840x2160"] and consumers == [1, 4]
    assert {"framebus", "framebus-socket", "iceoryx2", *REFERENCES} == set(names)


@pytest.mark.timeout(120)
def test_smoke_run(tmp_path) -> None:
    before = set(glob.glob("/dev/shm/fbbench-*"))
    assert cli.main(["--smoke", "--out", str(tmp_path)]) == 0

    (path,) = tmp_path.glob("bench-smoke-*.json")
    doc = json.loads(path.read_text())
    assert (tmp_path / path.name.replace(".json", ".md")).exists()
    assert doc["errors"] == []
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["python"]
    for name in REQUIRED:
        rows = [r for r in doc["results"] if r["transport"] == name]
        assert {(r["mode"], r["case"]) for r in rows} == PHASES, name
        for r in rows:
            assert r["consumers"] == 2 and r["size"] == "64x64"
            assert r["bad_frames"] == 0, f"{name} delivered wrong pixels: {r}"
            for field in NUMERIC:
                assert r[field] is None or r[field] >= 0, (name, field)
            if r["mode"] == "flat" and r["published_fps"]:  # lossless: nothing may be lost
                assert r["delivered_pct"] == 100.0, f"{name} lost frames in lossless mode: {r}"
            for field in ("latency_p50_us", "latency_p99_us"):
                assert r[field] is None or r[field] > 0, (name, field)
        assert sum(r["fps_per_consumer"] for r in rows) > 0, f"no frame reached a {name} consumer"
        for r in rows:  # one repetition: the spread is that one value
            assert r["latency_p50_us_range"] is None or r["latency_p50_us_range"][0] == r["latency_p50_us"]
    assert set(REFERENCES) <= set(doc["config"]["transports"])

    # framebus's ratios to the references: wherever both measured the figure (a 30 ms
    # window on a loaded machine may hold no frame), and only there
    ratios = doc["ratios"]
    assert {r["transport"] for r in ratios} == set(references.VARIANTS)
    medians = {(r["transport"], r["case"], r["mode"]): r for r in doc["results"]}
    for variant, lean in references.VARIANTS.items():
        for case in ("inplace", "capture"):
            got = {r["metric"]: r for r in ratios if r["transport"] == variant and r["case"] == case}
            for m in references.METRICS:
                ref = lean if m.reference == references.LEAN else m.reference
                a, b = medians[(variant, case, m.mode)][m.field], medians[(ref, case, m.mode)][m.field]
                if not (a and b):
                    assert m.key not in got, (variant, case, m.key)
                    continue
                r = got[m.key]
                assert r["reference"] == ref and (r["value"], r["reference_value"]) == (a, b)
                assert r["ratio"] > 0 and r["range"][0] <= r["range"][1]
                assert r["ratio"] == pytest.approx(a / b, abs=0.01)
    # the must-show checks: each judged (met or missed) where this run measured it
    checks = {c["target"]: c for c in doc["must_show"]}
    assert len(checks) == len(doc["must_show"]) == 10
    assert all(c["met"] in (True, False, None) and c["evidence"] for c in checks.values())
    lacking = {t for t in checks if "1 consumer" in t or "4K" in t}  # smoke: 2 consumers, 64x64 only
    assert all(checks[t]["met"] is None for t in lacking)
    assert any(isinstance(c["met"], bool) for c in checks.values())
    text = (tmp_path / path.name.replace(".json", ".md")).read_text()
    assert "framebus ÷ the lean references" in text and "must-show" in text

    # everything the bench started is gone (multiprocessing's resource tracker
    # lives as long as this interpreter, by design)
    left = [p for p in psutil.Process().children() if "resource_tracker" not in " ".join(p.cmdline())]
    assert left == []
    assert set(glob.glob("/dev/shm/fbbench-*")) <= before


@pytest.mark.timeout(60)
@pytest.mark.parametrize("lossless", [False, True], ids=["lossy", "lossless"])
@pytest.mark.parametrize("name", REFERENCES)
def test_lean_reference_moves_frames_and_leases(name: str, lossless: bool, tmp_path, no_leaks) -> None:
    """Producer and consumer side in this process: frames arrive whole, read-only, in
    order; releases come back; lossless backpressure holds, lossy drops (where leased)."""
    t = transports.load(name)(Setup(SIZES["64x64"], 1, str(tmp_path), f"t{os.getpid()}", lossless))
    try:
        prod, cons = t.producer(), t.consumer(0)
        try:
            seq = 0
            while seq < 3 * QUEUE_DEPTH:  # more frames than buffers: reuse needs the releases
                frame = prod.acquire(2.0)
                seq += 1
                stamp(frame, seq, 1000 + seq)
                prod.publish(frame, seq, 1000 + seq)
                got = cons.receive(2.0)
                if got is None and not lossless and seq < 20:  # lean-zmq: before its hello arrived
                    continue
                assert got is not None, f"frame {seq} did not arrive"
                assert read_stamp(got.array) == (seq, 1000 + seq, seq) == (got.seq, got.timestamp_ns, seq)
                assert not got.array.flags.writeable and got.array.shape == SIZES["64x64"].shape
                del got
                cons.release()
            prod.send_timeout = 0.2  # type: ignore[attr-defined]
            dropped = []
            for _ in range(QUEUE_DEPTH + 1):  # the consumer takes nothing now
                frame = prod.acquire(2.0)
                seq += 1
                if lossless and len(dropped) == QUEUE_DEPTH:
                    with pytest.raises(TimeoutError):
                        prod.publish(frame, seq, 0)
                    break
                dropped.append(prod.publish(frame, seq, 0))
            del frame
            if name == transports.LEAN_ZMQ and not lossless:
                # a release may still be on its way: which of the frames is dropped varies
                assert 1 in dropped, dropped
            elif not lossless:
                assert dropped[-1] == (0 if name == transports.FLOOR else 1), dropped
        finally:
            cons.close()
            prod.close()
    finally:
        t.cleanup()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", REFERENCES)
def test_lean_reference_lossless_with_a_slow_consumer(name: str, tmp_path, no_leaks) -> None:
    """Two consumer threads, one slow: the producer waits for the slow one while the
    fast one releases the very frame being published; no buffer may go missing."""
    frames = 150
    t = transports.load(name)(Setup(SIZES["64x64"], 2, str(tmp_path), f"s{os.getpid()}", True))
    seen: list[list[int]] = [[], []]

    def consume(side: Any, index: int) -> None:
        while len(seen[index]) < frames:
            got = side.receive(5.0)
            if got is None:
                return
            seen[index].append(read_stamp(got.array)[0])
            del got
            if index:
                time.sleep(0.0005)
            side.release()

    try:
        prod, sides = t.producer(), [t.consumer(0), t.consumer(1)]
        threads = [threading.Thread(target=consume, args=(s, i)) for i, s in enumerate(sides)]
        try:
            for th in threads:
                th.start()
            for seq in range(1, frames + 1):
                frame = prod.acquire(5.0)
                stamp(frame, seq, seq)
                del frame
                prod.publish(None, seq, seq)  # type: ignore[arg-type]
        finally:
            for th in threads:
                th.join(10)
            for side in sides:
                side.close()
            prod.close()
    finally:
        t.cleanup()
    assert seen == [list(range(1, frames + 1))] * 2
