"""Remote consumers over Zenoh, across real network namespaces.

Each test builds its own namespaces (`ip netns add`) joined by veth pairs with
private addresses, runs the bridge in one and the remote consumer in another
(`ip netns exec`), and removes every namespace afterwards. Zenoh's
shared-memory transport and multicast scouting are off (framebus's default
Zenoh configuration), and each test checks the veth byte counters: the frames
really crossed the link. Needs root, as CI runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from typing import Iterator

import numpy as np
import pytest

from framebus import FrameFormat, FramebusError
from framebus._zenoh import Keys, zenoh_config
from framebus.pattern import Pattern
from framebus.report import query_status
from framebus_bench.netns import Namespaces

from .conftest import Processes, read_json, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                                reason="network namespaces need root and iproute2")

PORT = 7447

# A remote consumer: takes frames, checks them against the test pattern, prints JSON.
AGENT = r"""
import json, sys, time
import numpy as np
import framebus
from framebus.remote import RemoteConsumer
from framebus.pattern import Pattern
spec = json.loads(sys.argv[1])

def ycc_to_bgr(y, u, v):
    y = y.astype(np.float32); u = u.astype(np.float32) - 128; v = v.astype(np.float32) - 128
    return np.clip(np.stack([y + 1.772 * u, y - 0.344136 * u - 0.714136 * v, y + 1.402 * v],
                            -1).round(), 0, 255)

def expected_bgr(fmt, seq):  # the NV12 pattern frame `seq` as full-range JFIF decodes it
    y, uv = Pattern(fmt).expected(seq)
    uv = uv.reshape(fmt.height // 2, fmt.width // 2, 2).repeat(2, 0).repeat(2, 1)
    return ycc_to_bgr(y.reshape(fmt.height, fmt.width), uv[..., 0], uv[..., 1])

out = {"frames": 0, "bad": 0, "mae": 0.0, "latency_ms": [], "gone": None, "after": 0}
cam = RemoteConsumer(spec["key"], connect=spec["connect"], mode=spec.get("mode", "peer"),
                     timeout=15, reconnect=spec.get("reconnect", False))
try:
    deadline = time.monotonic() + spec["seconds"]
    while time.monotonic() < deadline:
        if out["frames"] >= spec["frames"] and cam.sessions >= spec.get("sessions", 1) \
                and out["after"] >= 5:
            break
        try:
            frame = cam.get(timeout=1.0)
        except framebus.Timeout:
            continue
        with frame:
            out["latency_ms"].append((time.monotonic_ns() - frame.timestamp_ns) / 1e6)
            if cam.encoding == "raw":
                out["bad"] += not Pattern(frame.format).check(frame.planes, frame.seq)
            else:
                error = np.abs(frame.array - expected_bgr(cam.source_format, frame.seq)).mean()
                out["mae"] = max(out["mae"], float(error))
            assert not frame.array.flags.writeable
        out["frames"] += 1
        out["after"] += cam.sessions >= spec.get("sessions", 1)
        if out["frames"] == 1:
            print(json.dumps({"first": frame.seq, "format": frame.format.pixel_format}), flush=True)
except framebus.ProducerGone as exc:
    out["gone"] = {"clean": exc.clean, "reason": exc.reason}
finally:
    out.update(dropped=cam.dropped, sessions=cam.sessions, received=cam.received)
    cam.close()
print(json.dumps(out), flush=True)
"""

ROUTER = r"""
import json, signal, sys, threading
from framebus._zenoh import open_session, zenoh_config
config = zenoh_config(listen=sys.argv[1:])
config.insert_json5("mode", '"router"')
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
session = open_session(config)
print(json.dumps({"router": str(session.info.zid())}), flush=True)
stop.wait(60)
session.close()
"""


class Net(Namespaces):
    """The test's namespaces, and framebus processes run inside them."""

    def __init__(self, workdir: str) -> None:
        super().__init__()
        self.workdir = workdir

    def run(self, ns: str, *argv: str, log: str | None = None) -> subprocess.Popen[str]:
        """`python argv...` inside namespace ns (stderr to a log file if named)."""
        if not log:
            return self.python(ns, *argv)
        with open(os.path.join(self.workdir, log), "w") as stderr:
            return self.python(ns, *argv, stderr=stderr)

    def bridge(self, ns: str, sock: str, *extra: str, log: str = "bridge.log") -> subprocess.Popen[str]:
        return self.run(ns, "-m", "framebus", "bridge", "--socket", sock, "--key", "cam0",
                        "--interval", "0.5", *extra, log=log)

    def agent(self, ns: str, **spec: object) -> subprocess.Popen[str]:
        spec.setdefault("key", "cam0")
        spec.setdefault("frames", 20)
        spec.setdefault("seconds", 30)
        return self.run(ns, "-c", AGENT, json.dumps(spec))

    def log(self, name: str) -> str:
        with open(os.path.join(self.workdir, name)) as f:
            return f.read()


@pytest.fixture
def net(workdir: str) -> Iterator[Net]:
    network = Net(workdir)
    try:
        yield network
    finally:
        network.close()
        assert not network.left(), "a network namespace was left behind"


def _pair(net: Net) -> tuple[str, str, str]:
    """Namespaces a (bridge) and b (remote consumer) on one veth; a's device."""
    a, b = net.add("a"), net.add("b")
    dev = net.link(a, "10.77.0.1", b, "10.77.0.2")
    return a, b, dev


def _finish(agent: subprocess.Popen[str], timeout: float = 40) -> dict:
    """The agent's last JSON line."""
    result = read_json(agent, timeout)
    while "frames" not in result:
        result = read_json(agent, timeout)
    agent.wait(timeout=10)
    return result


def test_raw_frames_cross_the_link_exactly(net: Net, procs: Processes, sock: str) -> None:
    procs.producer(sock, fps=30, width=320, height=240, fmt="YUYV")
    a, b, dev = _pair(net)
    before = net.tx_bytes(a, dev)
    net.bridge(a, sock, "--listen", f"tcp/10.77.0.1:{PORT}")
    result = _finish(net.agent(b, connect=[f"tcp/10.77.0.1:{PORT}"], frames=20))
    assert result["frames"] >= 20 and result["bad"] == 0, result
    assert result["gone"] is None
    # Every frame crossed the veth (no shared memory between the namespaces).
    assert net.tx_bytes(a, dev) - before > 20 * 320 * 240 * 2
    # The command line's remote consumer, on the same bridge.
    consume = net.run(b, "-m", "framebus", "consume", "--zenoh", "cam0", "--connect",
                      f"tcp/10.77.0.1:{PORT}", "--frames", "10", "--json")
    out, err = consume.communicate(timeout=30)
    assert consume.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["frames"] >= 10
    # The bridge is a consumer of the bus, with its link figures (Consumer.publish_figures).
    wait_for(lambda: _status_entry(sock, "bridge:cam0"), what="the bridge in status")
    wait_for(lambda: _status_entry(sock, "bridge:cam0")["figures"].get("sent"), what="figures")
    figures = _status_entry(sock, "bridge:cam0")["figures"]
    assert figures["sent"] >= 20 and {"dropped", "bytes_per_s", "in_flight"} <= set(figures)


def _status_entry(sock: str, name: str) -> dict | None:
    report = query_status(sock)
    return next((c for c in report["consumers"] if c["name"] == name), None)


def test_jpeg_from_nv12_within_tolerance(net: Net, procs: Processes, sock: str) -> None:
    procs.producer(sock, fps=30, width=320, height=240, fmt="NV12")
    a, b, dev = _pair(net)
    net.bridge(a, sock, "--listen", f"tcp/10.77.0.1:{PORT}", "--encoding", "jpeg",
               "--quality", "90")
    agent = net.agent(b, connect=[f"tcp/10.77.0.1:{PORT}"], frames=15)
    assert read_json(agent, 30)["format"] == "BGR3"
    result = _finish(agent)
    assert result["frames"] >= 15, result
    # A wrong frame or a wrong conversion is off by tens of levels on average.
    assert 0 < result["mae"] < 4, result


def test_through_a_zenoh_router(net: Net, procs: Processes, sock: str) -> None:
    """Bridge and consumer each reach only the router's namespace (no route between them)."""
    procs.producer(sock, fps=30, width=320, height=240, fmt="RGB3")
    a, r, b = net.add("a"), net.add("r"), net.add("b")
    dev_a = net.link(a, "10.77.0.5", r, "10.77.0.6")
    net.link(r, "10.77.0.9", b, "10.77.0.10")
    router = net.run(r, "-c", ROUTER, f"tcp/10.77.0.6:{PORT}", f"tcp/10.77.0.9:{PORT}")
    assert "router" in read_json(router, 20)
    before = net.tx_bytes(a, dev_a)
    net.bridge(a, sock, "--mode", "client", "--connect", f"tcp/10.77.0.6:{PORT}")
    result = _finish(net.agent(b, connect=[f"tcp/10.77.0.9:{PORT}"], mode="client", frames=15))
    assert result["frames"] >= 15 and result["bad"] == 0, result
    assert net.tx_bytes(a, dev_a) - before > 15 * 320 * 240 * 3


def test_bridge_restarts_and_goes_away(net: Net, procs: Processes, sock: str) -> None:
    procs.producer(sock, fps=30, width=160, height=120, fmt="GREY")
    a, b, _ = _pair(net)
    listen = ("--listen", f"tcp/10.77.0.1:{PORT}")
    bridge = net.bridge(a, sock, *listen, log="bridge1.log")
    staying = net.agent(b, connect=[f"tcp/10.77.0.1:{PORT}"], reconnect=True, sessions=2,
                        frames=10)
    leaving = net.agent(b, connect=[f"tcp/10.77.0.1:{PORT}"], frames=10 ** 6)
    read_json(staying, 30), read_json(leaving, 30)  # both have frames
    bridge.kill()  # no goodbye: the liveliness token vanishes with the session
    bridge.wait(timeout=10)
    gone = _finish(leaving)
    assert gone["gone"] == {"clean": False, "reason": "the bridge for 'cam0' went away"}, gone
    # A new bridge on the same endpoint: the reconnecting consumer carries on.
    bridge = net.bridge(a, sock, *listen, log="bridge2.log")
    result = _finish(staying)
    assert result["sessions"] >= 2 and result["after"] >= 5 and result["bad"] == 0, result
    # A clean stop says goodbye: iteration ends without an error.
    leaving = net.agent(b, connect=[f"tcp/10.77.0.1:{PORT}"], frames=10 ** 6)
    read_json(leaving, 30)
    bridge.send_signal(signal.SIGTERM)
    assert bridge.wait(timeout=10) == 0
    assert _finish(leaving)["gone"]["clean"] is True


def test_producer_restart_under_the_bridge(net: Net, procs: Processes, sock: str) -> None:
    producer = procs.producer(sock, fps=30, width=160, height=120, fmt="GREY")
    a, b, _ = _pair(net)
    net.bridge(a, sock, "--listen", f"tcp/10.77.0.1:{PORT}")
    agent = net.agent(b, connect=[f"tcp/10.77.0.1:{PORT}"], sessions=2, frames=10)
    read_json(agent, 30)
    producer.send_signal(signal.SIGTERM)
    producer.wait(timeout=10)
    wait_for(lambda: not os.path.exists(sock), what="the producer's socket to go")
    procs.producer(sock, fps=30, width=160, height=120, fmt="GREY")
    result = _finish(agent)
    assert result["sessions"] >= 2 and result["after"] >= 5 and result["bad"] == 0, result


def test_slow_link_drops_frames_instead_of_queueing(net: Net, procs: Processes,
                                                   sock: str) -> None:
    """Raw 640x480 YUYV at 30 fps needs 147 Mbit/s; the link carries 100."""
    procs.producer(sock, fps=30, width=640, height=480, fmt="YUYV")
    a, b, dev = _pair(net)
    net.shape(a, dev, "100mbit")
    net.bridge(a, sock, "--listen", f"tcp/10.77.0.1:{PORT}", log="slow.log")
    result = _finish(net.agent(b, connect=[f"tcp/10.77.0.1:{PORT}"], frames=60))
    assert result["frames"] >= 60 and result["bad"] == 0, result
    assert result["dropped"] > 0, result  # the consumer sees the gaps ...
    log = net.log("slow.log")
    figures = [line for line in log.splitlines() if "link(s)" in line]
    assert any(" dropped 0," not in line for line in figures), log  # ... the bridge counts them
    assert all("in flight 0," in line or "in flight 1," in line for line in figures), log
    # Queueing in socket buffers would add 170+ ms; one frame in flight is ~50 ms on the wire.
    assert float(np.median(result["latency_ms"])) < 150, result


# ------------------------------------------------------- without a network
def test_consume_with_no_bridge_says_so(procs: Processes) -> None:
    consume = procs.start("-m", "framebus", "consume", "--zenoh", "nothing", "--connect",
                          "tcp/127.0.0.1:1")
    out, err = consume.communicate(timeout=30)
    assert consume.returncode == 1
    assert "no framebus bridge publishes key 'nothing' via tcp/127.0.0.1:1" in err


def test_no_bridge_is_a_clear_error(procs: Processes) -> None:
    """A NoProducer naming the key (in a child: Zenoh's runtime threads outlive a session)."""
    probe = procs.start("-c", "from framebus import NoProducer\n"
                              "from framebus.remote import RemoteConsumer\n"
                              "try:\n    RemoteConsumer('nothing', timeout=0.3)\n"
                              "except NoProducer as exc:\n    print('NoProducer:', exc)\n")
    out, err = probe.communicate(timeout=30)
    assert out.startswith("NoProducer: no framebus bridge publishes key 'nothing'"), (out, err)


@pytest.mark.parametrize("key", ["", "a/*", "a//b", "$x", "a b"])
def test_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(FramebusError, match="bad key"):
        Keys(key)


@pytest.mark.parametrize("argv,message", [
    (["--key", "cam0"], "say where remote consumers reach the bridge"),
    (["--key", "a*", "--listen", "tcp/127.0.0.1:7447"], "bad key 'a*'"),
    (["--key", "cam0", "--listen", "127.0.0.1:7447"], "bad Zenoh endpoint"),
    (["--key", "cam0", "--listen", "tcp/127.0.0.1:7447", "--quality", "0"], "--quality"),
])
def test_bridge_bad_arguments(procs: Processes, argv: list[str], message: str) -> None:
    bridge = procs.start("-m", "framebus", "bridge", *argv)
    _, err = bridge.communicate(timeout=30)
    assert bridge.returncode == 2 and message in err, err


def test_bad_endpoint_is_refused() -> None:
    with pytest.raises(FramebusError, match="bad Zenoh endpoint"):
        zenoh_config(connect=["10.77.0.1:7447"])


@pytest.mark.parametrize("pixel_format", ["GREY", "YUYV", "UYVY", "RGB3", "BGR3", "XR24", "XB24",
                                          "NV12", "YU12"])
def test_jpeg_from_every_pixel_format(pixel_format: str) -> None:
    """Encoded from the (row-padded) shared view, decoded into a pooled buffer."""
    from framebus.apps.consumers.jpeg import JpegEncoder
    from framebus.remote import _decode_jpeg
    tight_format = FrameFormat(320, 240, pixel_format)
    fmt = FrameFormat(320, 240, pixel_format, bytesperline=tight_format.bytesperline + 64)
    views = fmt.views(np.zeros(fmt.sizeimage, np.uint8))
    Pattern(fmt).draw(views.planes, 7)
    out = FrameFormat(320, 240, "GREY" if pixel_format == "GREY" else "BGR3")
    buffer = np.empty(out.sizeimage, np.uint8)
    decoded = _decode_jpeg(out, JpegEncoder(fmt, 90).encode(views.planes), buffer).array
    assert np.shares_memory(decoded, buffer) and not decoded.flags.writeable
    expected = _as_bgr(fmt, views.planes)
    assert np.abs(decoded.astype(np.float32) - expected).mean() < 4


def _as_bgr(fmt: FrameFormat, planes: tuple[np.ndarray, ...]) -> np.ndarray:
    def ycc(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        y, u, v = y.astype(np.float32), u.astype(np.float32) - 128, v.astype(np.float32) - 128
        return np.clip(np.stack([y + 1.772 * u, y - 0.344136 * u - 0.714136 * v,
                                 y + 1.402 * v], -1).round(), 0, 255)

    def up(plane: np.ndarray, rows: int) -> np.ndarray:
        return plane.repeat(rows, 0).repeat(2, 1)

    name = fmt.pixel_format
    if name == "GREY":
        return planes[0].astype(np.float32)
    if name in ("RGB3", "BGR3"):
        image = planes[0].astype(np.float32)
        return image[..., ::-1] if name == "RGB3" else image
    if name in ("XR24", "XB24"):  # B, G, R, X and R, G, B, X in memory
        image = planes[0][..., :3].astype(np.float32)
        return image[..., ::-1] if name == "XB24" else image
    if name in ("YUYV", "UYVY"):
        luma = 0 if name == "YUYV" else 1
        image = planes[0]
        return ycc(image[:, :, luma], up(image[:, 0::2, 1 - luma], 1),
                   up(image[:, 1::2, 1 - luma], 1))
    if name == "NV12":
        return ycc(planes[0], up(planes[1][:, :, 0], 2), up(planes[1][:, :, 1], 2))
    return ycc(planes[0], up(planes[1], 2), up(planes[2], 2))
