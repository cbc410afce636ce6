"""The bus with real processes: zero-copy, seals, pixels, crashes, stops and signals."""

import os
import signal
import subprocess
import sys
import time

import pytest

import framebus
from framebus.report import query_status

from .conftest import ROOT, read_json, wait_for


def consumers_of(sock):
    return query_status(sock)["consumers"]


@pytest.mark.timeout(120)
def test_consumer_array_is_a_read_only_shared_memfd_mapping_and_memory_stays_flat(sock, procs):
    procs.producer(sock, fps=0, width=1920, height=1080)  # flat out, 1080p RGB3
    agent = procs.agent("zerocopy", sock, "--count", "300")
    result = read_json(agent, timeout=100)
    perms, path = result["mapping"].split()[1], result["mapping"].split()[-2]
    assert perms == "r--s", result["mapping"]
    assert path.startswith("/memfd:framebus"), result["mapping"]
    assert result["writeable"] is False
    # 300 frames of 6 MB went through; had any been copied into the consumer,
    # its private memory would have grown by at least one frame.
    growth = result["uss_end"] - result["uss_start"]
    assert growth < result["frame_bytes"] / 2, f"consumer USS grew by {growth} bytes"


def test_consumer_cannot_write_truncate_or_grow_the_buffers(sock, procs):
    procs.producer(sock)
    result = read_json(procs.agent("seals", sock))
    assert result == {"mmap_rw": "EPERM", "write": "EPERM", "ftruncate_shrink": "EPERM",
                      "ftruncate_grow": "EPERM", "mprotect_rw": "EACCES", "mmap_ro": "ok"}


@pytest.mark.timeout(120)
def test_pixels_do_not_change_while_leased_under_a_flat_out_producer(sock, procs):
    procs.producer(sock, fps=0, width=640, height=480, fmt="YUYV")
    result = read_json(procs.agent("verify", sock, "--count", "30"), timeout=100)
    assert result == {"checked": 30, "changed": 0}


def test_every_frame_a_consumer_gets_has_the_right_pixels(sock, procs):
    procs.producer(sock, fps=0, fmt="NV12")
    result = read_json(procs.agent("count", sock, "--seconds", "1"))
    assert result["frames"] > 10 and result["bad"] == 0


def test_leases_are_reclaimed_when_a_consumer_holding_frames_is_killed(sock, procs):
    procs.producer(sock, fps=100)
    holder = procs.agent("hold", sock, "--count", "2", "--name", "holder")
    assert len(read_json(holder)["held"]) == 2
    [report] = consumers_of(sock)
    assert report["held"] == 2
    os.kill(holder.pid, signal.SIGKILL)
    wait_for(lambda: consumers_of(sock) == [], timeout=5, what="the killed consumer to go")
    status = query_status(sock)
    assert status["reclaimed"] == 2 and status["leased"] == 0


@pytest.mark.timeout(90)
def test_a_stopped_consumer_does_not_slow_the_others(sock, procs):
    procs.producer(sock, "--lease-timeout", "0.3", fps=100)
    stopped = procs.agent("hold", sock, "--count", "2", "--name", "stopped")
    read_json(stopped)
    os.kill(stopped.pid, signal.SIGSTOP)
    before = query_status(sock)["published"]
    result = read_json(procs.agent("count", sock, "--seconds", "2", "--name", "runner"), timeout=60)
    after = query_status(sock)
    # The runner kept getting good frames while the stopped one held its leases,
    # and the producer kept publishing: the stopped consumer cost only itself.
    assert result["bad"] == 0 and result["frames"] >= 20
    assert after["published"] - before >= 20
    stopped_report = next(c for c in after["consumers"] if c["name"] == "stopped")
    assert stopped_report["revoked"] == 2 and stopped_report["held"] == 0


def test_producer_death_raises_producer_gone_not_a_hang(sock, procs):
    producer = procs.producer(sock, fps=100)
    with framebus.Consumer(sock) as cam:
        cam.get(timeout=5).release()
        producer.kill()
        started = time.monotonic()
        with pytest.raises(framebus.ProducerGone) as info:
            for _ in range(1000):
                cam.get(timeout=10).release()
        assert time.monotonic() - started < 5
        assert not info.value.clean
        with pytest.raises(framebus.ProducerGone):  # and again, at once
            cam.get(timeout=10)


def test_produce_stops_on_sigterm_removes_its_socket_and_exits_0(sock, procs):
    producer = procs.producer(sock)
    with framebus.Consumer(sock) as cam:
        producer.send_signal(signal.SIGTERM)
        assert producer.wait(timeout=10) == 0
        with pytest.raises(framebus.ProducerGone) as info:
            while True:
                cam.get(timeout=5).release()
        assert info.value.clean
    assert not os.path.exists(sock)
    assert not os.path.exists(os.path.join(os.path.dirname(sock), ".cam.sock.bus"))


def test_produce_sigint_also_exits_0(sock, procs):
    producer = procs.producer(sock)
    producer.send_signal(signal.SIGINT)
    assert producer.wait(timeout=10) == 0
    assert not os.path.exists(sock)


def run_cli(*argv, timeout=60):
    return subprocess.run([sys.executable, "-m", "framebus", *argv], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def test_consume_exits_0_after_n_frames_and_reports(sock, procs):
    procs.producer(sock, fps=100)
    done = run_cli("consume", "--socket", sock, "--frames", "20", "--name", "cli")
    assert done.returncode == 0, done.stderr
    assert "20 frames" in done.stdout and "latency p50" in done.stdout


def test_consume_without_a_producer_says_so_and_fails(sock):
    done = run_cli("consume", "--socket", sock, "--frames", "1")
    assert done.returncode != 0
    assert "no producer" in done.stderr


def test_consume_can_wait_for_the_producer(sock, procs):
    waiting = procs.start("-m", "framebus", "consume", "--socket", sock, "--frames", "5",
                          "--wait", "20")
    time.sleep(0.5)
    procs.producer(sock, fps=100)
    assert waiting.wait(timeout=30) == 0


def test_status_json_lists_consumers(sock, procs):
    procs.producer(sock, fps=50)
    holder = procs.agent("hold", sock, "--name", "watcher")
    read_json(holder)
    done = run_cli("status", "--socket", sock, "--json")
    assert done.returncode == 0, done.stderr
    import json
    report = json.loads(done.stdout)
    assert [c["name"] for c in report["consumers"]] == ["watcher"]
    assert report["consumers"][0]["held"] == 1
    text = run_cli("status", "--socket", sock).stdout
    assert "watcher" in text


@pytest.mark.timeout(120)
def test_demo_runs_and_prints_a_summary(workdir):
    out = os.path.join(workdir, "demo.json")
    done = run_cli("demo", "--seconds", "3", "--width", "640", "--height", "480",
                   "--json", out, timeout=100)
    assert done.returncode == 0, done.stderr
    assert "summary" in done.stdout
    import json
    summary = json.load(open(out))
    names = [c["name"] for c in summary["consumers"]]
    assert names == ["monitor", "motion", "snapshot"]
    assert all(c["frames"] > 0 for c in summary["consumers"])
    assert summary["consumers"][0]["bad"] == 0


def test_status_watch_reports_again_until_stopped(sock, procs):
    procs.producer(sock, fps=50)
    watcher = procs.start("-m", "framebus", "status", "--socket", sock, "--watch", "0.2", "--json")
    reports = [read_json(watcher, timeout=10) for _ in range(3)]
    assert [r["pid"] for r in reports] == [reports[0]["pid"]] * 3
    assert reports[2]["published"] > reports[0]["published"]
    watcher.send_signal(signal.SIGINT)
    assert watcher.wait(timeout=10) == 130
