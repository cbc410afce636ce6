"""`framebus preview`: JPEGs from every format, the HTTP endpoints, many and
vanishing viewers, and a real headless browser (Debian's chromium)."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from urllib.parse import urlsplit

import av
import numpy as np
import psutil
import pytest
import simplejpeg

import framebus
from framebus import FrameFormat
from framebus.apps.consumers.preview import jpeg_encoder
from framebus.pattern import Pattern

from .conftest import wait_for
from .preview_viewers import Viewer

SIZE = (320, 240)


# --------------------------------------------------------------- JPEG making
def expected_rgb(fmt: FrameFormat, seq: int) -> np.ndarray:
    """The picture frame `seq` of `fmt` shows, as RGB (BT.601 full range, as JPEG)."""
    planes = Pattern(fmt).expected(seq)
    h, w = fmt.height, fmt.width
    if fmt.pixel_format in ("RGB3", "BGR3"):
        rgb = planes[0].reshape(h, w, 3).astype(float)
        return rgb[:, :, ::-1] if fmt.pixel_format == "BGR3" else rgb
    if fmt.pixel_format in ("XR24", "XB24"):  # B, G, R, X and R, G, B, X in memory
        rgb = planes[0].reshape(h, w, 4)[:, :, :3].astype(float)
        return rgb[:, :, ::-1] if fmt.pixel_format == "XR24" else rgb
    if fmt.pixel_format == "GREY":
        return np.repeat(planes[0].reshape(h, w, 1), 3, axis=2).astype(float)
    if fmt.pixel_format == "NV12":
        y, uv = planes[0].reshape(h, w), planes[1].reshape(h // 2, w // 2, 2)
        u, v = uv[:, :, 0], uv[:, :, 1]
    elif fmt.pixel_format == "YU12":
        y, u, v = planes[0].reshape(h, w), planes[1].reshape(h // 2, w // 2), \
            planes[2].reshape(h // 2, w // 2)
    else:
        luma = 0 if fmt.pixel_format == "YUYV" else 1
        packed = planes[0].reshape(h, w, 2)
        y = packed[:, :, luma]
        u, v = packed[:, 0::2, 1 - luma], packed[:, 1::2, 1 - luma]
    u, v = (np.repeat(np.repeat(c, h // c.shape[0], 0), 2, 1).astype(float) - 128 for c in (u, v))
    y = y.astype(float)
    return np.clip(np.stack([y + 1.402 * v, y - 0.344136 * u - 0.714136 * v, y + 1.772 * u],
                            axis=2), 0, 255)


def smooth_error(picture: np.ndarray, wanted: np.ndarray) -> float:
    """Median absolute difference: JPEG blurs the pattern's few 255->0 edges."""
    return float(np.median(np.abs(picture.astype(float) - wanted)))


FORMATS = [FrameFormat(64, 48, f) for f in ("NV12", "YU12", "YUYV", "UYVY", "RGB3", "BGR3",
                                             "XR24", "XB24", "GREY")] + \
    [FrameFormat(64, 48, "NV12", bytesperline=80), FrameFormat(64, 48, "YU12", bytesperline=96),
     FrameFormat(64, 48, "RGB3", bytesperline=200), FrameFormat(64, 48, "YUYV", bytesperline=160)]


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f"{f.pixel_format}-bpl{f.bytesperline}")
def test_jpeg_from_every_format_shows_the_frame(fmt, sock):
    encode = jpeg_encoder(fmt, quality=95)
    with framebus.Producer(sock, fmt, buffers=4) as producer, framebus.Consumer(sock) as cam:
        buf = producer.acquire(timeout=2)
        Pattern(fmt).draw(buf.views.planes, producer.next_seq)
        seq = producer.publish(buf)
        with cam.get(timeout=5) as frame:
            jpeg = encode(frame)
    picture = simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
    assert picture.shape == (fmt.height, fmt.width, 3)
    assert smooth_error(picture, expected_rgb(fmt, seq)) <= 3


def test_mjpg_passes_through_untouched(sock):
    fmt = FrameFormat(64, 48, "MJPG")
    jpeg = simplejpeg.encode_jpeg(np.full((48, 64, 3), 99, np.uint8))
    with framebus.Producer(sock, fmt, buffers=4) as producer, framebus.Consumer(sock) as cam:
        buf = producer.acquire(timeout=2)
        buf.views.raw[:len(jpeg)] = np.frombuffer(jpeg, np.uint8)
        producer.publish(buf, bytesused=len(jpeg))
        with cam.get(timeout=5) as frame:
            assert jpeg_encoder(fmt)(frame) == jpeg


# ---------------------------------------------------------- the real server
def start_preview(procs, sock: str, *extra: str) -> tuple[subprocess.Popen[str], str]:
    proc = procs.start("-m", "framebus", "preview", "--socket", sock, "--port", "0",
                       "--wait", "5", *extra)
    line = read_line(proc, 20)
    assert line.startswith("preview: http://"), line
    return proc, line.split()[1]


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    import selectors
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            pytest.fail(f"no line from {proc.args} within {timeout} s")
    line = proc.stdout.readline()
    if not line:
        pytest.fail(f"{proc.args} exited: {proc.communicate(timeout=10)}")
    return line.strip()


def get(url: str, path: str) -> tuple[int, dict[str, str], bytes]:
    address = urlsplit(url)
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def status(url: str) -> dict:
    code, headers, body = get(url, "/status.json")
    assert code == 200 and headers["Content-Type"].startswith("application/json")
    return json.loads(body)


@pytest.fixture
def preview(procs, sock):
    """A 320x240 RGB3 producer at 50 fps, and a preview of it: (process, url)."""
    procs.producer(sock, fps=50, width=SIZE[0], height=SIZE[1], fmt="RGB3")
    proc, url = start_preview(procs, sock)
    yield proc, url
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
        assert proc.returncode == 0 and "Traceback" not in err, err


def test_endpoints(preview):
    proc, url = preview
    assert urlsplit(url).hostname == "127.0.0.1"
    listening = [c.laddr for c in psutil.Process(proc.pid).net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN]
    assert [a.ip for a in listening] == ["127.0.0.1"], "binds to localhost by default"
    code, headers, page = get(url, "/")
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert b'<img id="picture" src="/stream.mjpg"' in page and b'id="seq"' in page
    code, headers, jpeg = get(url, "/snapshot.jpg")
    assert code == 200 and headers["Content-Type"] == "image/jpeg"
    seq = int(headers["X-Frame-Seq"])
    fmt = FrameFormat(*SIZE, "RGB3")
    assert smooth_error(simplejpeg.decode_jpeg(jpeg), expected_rgb(fmt, seq)) <= 3
    viewer = Viewer(url, keep_jpegs=True)
    try:
        wait_for(lambda: len(viewer.parts) >= 10, timeout=10, what="10 frames of the stream")
    finally:
        viewer.stop()
    seqs = [p.seq for p in viewer.parts]
    assert seqs == sorted(set(seqs)) and seqs[0] >= seq  # the newest picture at once
    assert simplejpeg.decode_jpeg(viewer.parts[-1].jpeg).shape == (SIZE[1], SIZE[0], 3)
    report = status(url)
    assert report["preview"]["seq"] >= seqs[-1] and report["preview"]["encoded"] >= 10
    names = [c["name"] for c in report["producer"]["consumers"]]
    assert names == ["preview"]


def test_many_viewers_cost_one_consumer_and_one_encode_per_frame(preview):
    _, url = preview
    before = status(url)
    viewers = [Viewer(url) for _ in range(5)]
    try:
        wait_for(lambda: min(len(v.parts) for v in viewers) >= 25, timeout=15,
                 what="25 frames at each of 5 viewers")
        during = status(url)
    finally:
        for v in viewers:
            v.stop()
    assert during["preview"]["viewers"] == 5
    assert [c["name"] for c in during["producer"]["consumers"]] == ["preview"]
    encoded = during["preview"]["encoded"] - before["preview"]["encoded"]
    seen = [{p.seq for p in v.parts} for v in viewers]
    # one JPEG per frame, whatever the number of viewers: as many encodes as frames shown
    assert encoded <= len(set().union(*seen)) + 3
    # ... and every viewer got the same JPEGs (a part or two at either end aside)
    common = set.intersection(*seen)
    assert all(len(s - common) <= 3 for s in seen)
    assert during["preview"]["sent"] - before["preview"]["sent"] >= 5 * 25
    assert all(not v.error for v in viewers), [v.error for v in viewers]


def test_viewers_that_vanish_or_stall_cost_nothing(preview):
    proc, url = preview
    address = urlsplit(url)
    rude = []
    for linger in (True, False):  # reset (RST) and orderly close, mid-stream
        s = socket.create_connection((address.hostname, address.port), timeout=10)
        s.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(4096)
        if linger:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        rude.append(s)
    stalled = socket.create_connection((address.hostname, address.port), timeout=10)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
    try:
        wait_for(lambda: status(url)["preview"]["viewers"] == 3, timeout=10, what="3 viewers")
        for s in rude:
            s.close()
        wait_for(lambda: status(url)["preview"]["viewers"] == 1, timeout=10,
                 what="the closed viewers to be gone")
        viewer = Viewer(url)  # a new viewer beside the stalled one gets the full rate
        try:
            time.sleep(2.0)
            # 100 at 50 fps: at least a quarter of them even on a very busy machine
            assert len(viewer.parts) >= 25, f"{len(viewer.parts)} frames in 2 s at 50 fps"
        finally:
            viewer.stop()
    finally:
        stalled.close()
    wait_for(lambda: status(url)["preview"]["viewers"] == 0, timeout=10, what="no viewers")
    assert proc.poll() is None
    assert get(url, "/snapshot.jpg")[0] == 200


def test_preview_follows_a_producer_that_comes_back_with_another_format(procs, sock):
    first = procs.producer(sock, fps=50, width=SIZE[0], height=SIZE[1], fmt="RGB3")
    proc, url = start_preview(procs, sock)
    assert get(url, "/snapshot.jpg")[0] == 200
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=10)
    procs.producer(sock, fps=50, width=160, height=120, fmt="NV12")

    def snapshot_size() -> tuple[int, int] | None:
        code, _, jpeg = get(url, "/snapshot.jpg")
        return simplejpeg.decode_jpeg_header(jpeg)[:2] if code == 200 else None
    wait_for(lambda: snapshot_size() == (120, 160), timeout=20, what="a 160x120 snapshot")
    assert status(url)["preview"]["format"]["pixel_format"] == "NV12"
    assert proc.poll() is None


def test_browser_shows_the_moving_picture_and_its_sequence(procs, sock, workdir):
    # The pattern repeats every 64 frames: at 6 fps that is 10.7 s, far from the
    # few seconds between two screenshots, so two shots never show the same phase.
    procs.producer(sock, fps=6, width=SIZE[0], height=SIZE[1], fmt="RGB3")
    _, url = start_preview(procs, sock)
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (.ci/system-packages)"
    viewer = Viewer(url)  # keeps the figures warm
    try:
        wait_for(lambda: len(viewer.parts) >= 3, timeout=10, what="the stream to run")
        shots = []
        for n in (1, 2):
            shots.append(screenshot(chromium, url, os.path.join(workdir, f"preview-{n}.png"),
                                    workdir))
            time.sleep(1.0)
        dom = browser(chromium, url, workdir, "--dump-dom")
    finally:
        viewer.stop()
    w, h = SIZE
    pictures = [shot[:h, :w].astype(float) for shot in shots]
    assert np.abs(pictures[0] - pictures[1]).mean() > 10, "the picture did not move"
    fmt = FrameFormat(w, h, "RGB3")
    phases = []
    for picture in pictures:  # which frame of the pattern it shows (it repeats every 64)
        errors = [smooth_error(picture, expected_rgb(fmt, s)) for s in range(64)]
        phases.append(int(np.argmin(errors)))
        assert min(errors) <= 4, f"the screenshot is not the pattern (error {min(errors)})"
    assert phases[0] != phases[1]
    figures = [shot[:60, w:].astype(float) for shot in shots]  # "frame N" is printed there
    assert np.abs(figures[0] - figures[1]).max() > 100, "the printed sequence did not change"
    seq = re.search(r'<b id="seq">(\d+)</b>', dom)
    assert seq and int(seq.group(1)) > viewer.parts[0].seq


def browser(chromium: str, url: str, workdir: str, *what: str) -> str:
    profile = os.path.join(workdir, f"profile-{time.monotonic_ns()}")
    os.mkdir(profile)
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--window-size=900,300",
         "--hide-scrollbars", *what, url], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def screenshot(chromium: str, url: str, path: str, workdir: str) -> np.ndarray:
    browser(chromium, url, workdir, f"--screenshot={path}")
    with av.open(path) as png:
        return next(png.decode(video=0)).to_ndarray(format="rgb24")


def test_preview_needs_its_extra_and_says_so(sock, workdir):
    code = ("import sys; sys.modules['aiohttp'] = None\n"
            "from framebus.cli import main\n"
            f"sys.exit(main(['preview', '--socket', {sock!r}]))")
    framebus_producer = subprocess.Popen(
        [sys.executable, "-m", "framebus", "produce", "--socket", sock, "--width", "64",
         "--height", "48"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.exists(sock), what="the producer")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=30, cwd=workdir)
    finally:
        framebus_producer.terminate()
        framebus_producer.wait(timeout=10)
    assert proc.returncode == 1, proc.stderr
    assert "pip install 'framebus[preview]'" in proc.stderr and "Traceback" not in proc.stderr


def test_demo_starts_the_preview_and_prints_its_address(procs):
    proc = procs.start("-m", "framebus", "demo", "--seconds", "3", "--width", "320",
                       "--height", "240", "--preview-port", "0")
    line = ""
    deadline = time.monotonic() + 30
    while "preview: http://" not in line:
        assert time.monotonic() < deadline, "the demo printed no preview address"
        line = read_line(proc, 30)
    url = line[line.index("http://"):].split()[0]
    assert urlsplit(url).hostname == "127.0.0.1"
    wait_for(lambda: get(url, "/snapshot.jpg")[0] == 200, timeout=10, what="a snapshot")
    assert "preview" in [c["name"] for c in status(url)["producer"]["consumers"]]
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "summary:" in out
