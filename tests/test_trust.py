"""Trust (DESIGN.md): consumers authenticate the producer, endpoints are only
owned ipc paths, nothing planted in a shared directory stops or fools the
producer, and groups admit their members, supplementary ones included.

Hostile peers run as `nobody` (tests/hostile.py drops privileges after its
imports); groups are created here with groupadd and removed afterwards.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import secrets
import socket
import subprocess
import sys
import threading

import pytest

import framebus
from framebus import _endpoint, _handshake as handshake, _protocol as protocol, paths
from framebus.buffers import MEMFD, BufferTable, Memory, Plane
from framebus.linux import fdpass, memfd
from framebus.report import query_status

from .conftest import ROOT, publishing, read_json

NOBODY = pwd.getpwnam("nobody")
FMT = framebus.FrameFormat(64, 48, "GREY")
HOSTILE = os.path.join(ROOT, "tests", "hostile.py")

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="hostile peers of another uid need root")


def hostile(procs, *argv: str):
    """tests/hostile.py ARGV as a child whose stdin keeps it holding."""
    return procs.start(HOSTILE, *argv, stdin=subprocess.PIPE)


def run_hostile(*argv: str) -> dict:
    """tests/hostile.py ARGV to completion; its JSON report."""
    done = subprocess.run([sys.executable, HOSTILE, *argv], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, cwd=ROOT)
    assert done.stdout, done.stderr
    return __import__("json").loads(done.stdout.splitlines()[0])


@pytest.fixture
def open_dir(workdir):
    os.chmod(workdir, 0o755)  # others may reach the socket file itself
    return workdir


@pytest.fixture
def nobody_dir(open_dir):
    """A directory `nobody` may create its socket in."""
    path = os.path.join(open_dir, "nobody")
    os.mkdir(path, 0o755)
    os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
    return path


@pytest.fixture
def nobody_producer(procs, nobody_dir):
    """The socket path of a producer run by `nobody`."""
    path = os.path.join(nobody_dir, "cam.sock")
    proc = hostile(procs, "--as", "nobody", "produce", path)
    assert read_json(proc)["uid"] == NOBODY.pw_uid
    return path


@pytest.fixture
def test_group():
    """A group made for this test (removed afterwards): its gid."""
    name = f"fbt{secrets.token_hex(4)}"
    subprocess.run(["groupadd", name], check=True, capture_output=True, timeout=30)
    try:
        import grp
        yield grp.getgrnam(name).gr_gid
    finally:
        subprocess.run(["groupdel", name], check=True, capture_output=True, timeout=30)


# --- consumers authenticate the producer --------------------------------------------------

def test_a_root_consumer_refuses_a_producer_run_by_nobody(nobody_producer):
    with pytest.raises(framebus.PermissionDenied,
                       match=f"runs as uid {NOBODY.pw_uid} \\(nobody\\)") as refused:
        framebus.Consumer(nobody_producer, timeout=5)
    assert isinstance(refused.value, PermissionError)
    assert f"producer_uid={NOBODY.pw_uid}" in str(refused.value)
    with pytest.raises(framebus.PermissionDenied, match=f"uid {NOBODY.pw_uid}"):
        query_status(nobody_producer)


def test_naming_the_producers_uid_admits_it(nobody_producer):
    # channel "socket": nobody's producer cannot start a zmq relay here (it may
    # not execute this machine's Python, which lives under /root).
    with framebus.Consumer(nobody_producer, producer_uid=NOBODY.pw_uid, timeout=5,
                           channel="socket") as cam:
        with cam.get(timeout=10) as frame:
            assert frame.seq >= 1
    report = query_status(nobody_producer, producer_uid=NOBODY.pw_uid)
    assert report["pid"] and report["consumers"] == []
    sock = handshake.connect(nobody_producer, 5, producer_uid=NOBODY.pw_uid)
    try:
        values, fds = handshake.read_hello(sock, nobody_producer)
        fdpass.close_all(fds)
        assert values[4].startswith("ipc://" + os.path.dirname(nobody_producer))
    finally:
        sock.close()


def test_the_cli_refuses_a_producer_run_by_nobody(nobody_producer):
    for argv in (["consume", "--socket", nobody_producer, "--frames", "3"],
                 ["status", "--socket", nobody_producer]):
        done = subprocess.run([sys.executable, "-m", "framebus", *argv], capture_output=True,
                              text=True, timeout=60, cwd=ROOT)
        assert done.returncode == 1, done
        assert "permission denied" in done.stderr and f"uid {NOBODY.pw_uid}" in done.stderr
        assert "Traceback" not in done.stderr and "frames" not in done.stdout
    done = subprocess.run([sys.executable, "-m", "framebus", "status", "--socket",
                           nobody_producer, "--producer-uid", "nobody", "--json"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert '"consumers": []' in done.stdout
    done = subprocess.run([sys.executable, "-m", "framebus", "consume", "--socket",
                           nobody_producer, "--frames", "3", "--producer-uid",
                           str(NOBODY.pw_uid), "--json", "--channel", "socket"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert '"final": true' in done.stdout and '"frames": 3' in done.stdout


def test_a_reconnecting_consumer_never_switches_to_a_squatter(nobody_dir, procs):
    """The real producer exits; `nobody` binds the same path; the consumer
    waiting to reconnect refuses it instead of taking its frames."""
    path = os.path.join(nobody_dir, "cam.sock")
    with framebus.Producer(path, FMT) as bus:
        cam = framebus.Consumer(path, reconnect=True, timeout=5)
        bus.publish(bus.acquire(timeout=1))
        cam.get(timeout=5).release()
    try:
        squatter = hostile(procs, "--as", "nobody", "produce", path)
        assert read_json(squatter)["uid"] == NOBODY.pw_uid
        with pytest.raises(framebus.PermissionDenied, match=f"runs as uid {NOBODY.pw_uid}"):
            cam.get(timeout=10)
        assert cam.received == 1
    finally:
        cam.close()


def test_a_producer_of_another_uid_never_gets_a_byte_from_the_consumer(nobody_dir):
    """The check comes right after connect: nothing is read or sent."""
    path = os.path.join(nobody_dir, "fake.sock")
    script = ("import os, socket, sys; s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET);"
              f"os.setgroups([]); os.setgid({NOBODY.pw_gid}); os.setuid({NOBODY.pw_uid});"
              f"s.bind({path!r}); s.listen(1); print('ready', flush=True); c, _ = s.accept();"
              "c.settimeout(10); print(repr(c.recv(4096)), flush=True)")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        with pytest.raises(framebus.PermissionDenied, match=f"uid {NOBODY.pw_uid}"):
            framebus.Consumer(path, timeout=5)
        assert child.stdout.readline().strip() == "b''"  # EOF: the consumer said nothing
    finally:
        child.kill()
        child.wait(timeout=10)
        child.stdout.close()


# --- HELLO names only an ipc endpoint the producer owns -------------------------------------

class FakeProducer:
    """Serves one HELLO naming `endpoint`, with `table` and its buffer `fds`
    (default: real sealed buffers) and a status board."""

    def __init__(self, path: str, endpoint: str, table: BufferTable | None = None,
                 fds: list[int] | None = None) -> None:
        table = table or BufferTable((Memory(4096, MEMFD),), ((Plane(0, 0, FMT.sizeimage, 64),),))
        self.hello = protocol.HELLO.encode(protocol.VERSION, 7, FMT.to_wire(), table.to_wire(),
                                           endpoint, b"Ftoken", 1000)
        if fds is None:
            fds = [_sealed(4096) for _ in table.memories]
        self.fds = [*fds, _sealed(4096)]
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(path)
        self.listener.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            fdpass.send_with_fds(conn, self.hello, self.fds)
            conn.settimeout(5)
            try:
                conn.recv(4096)
            except OSError:
                pass

    def close(self) -> None:
        self.thread.join(timeout=5)
        self.listener.close()
        os.unlink(self.path)
        fdpass.close_all(self.fds)


def _sealed(size: int, seals: int = memfd.READ_ONLY_SEALS) -> int:
    fd = memfd.create("fake", size)
    memfd.add_seals(fd, seals)
    return fd


def attach_to_fake(sock: str, endpoint: str, table: BufferTable | None = None,
                   fds: list[int] | None = None) -> None:
    """Attach to a FakeProducer (which closes `fds` when done)."""
    fake = FakeProducer(sock, endpoint, table, fds)
    try:
        framebus.Consumer(sock, timeout=5).close()
    finally:
        fake.close()


def test_a_hello_naming_tcp_is_refused_and_nothing_connects_out(sock):
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        port = listener.getsockname()[1]
        with pytest.raises(framebus.ProtocolError, match="only an absolute ipc:// path"):
            attach_to_fake(sock, f"tcp://127.0.0.1:{port}")
        listener.settimeout(0.5)
        with pytest.raises(TimeoutError):
            listener.accept()  # the consumer never dialled out
    finally:
        listener.close()


@pytest.mark.parametrize("endpoint, error, message", [
    ("pgm://eth0;239.192.1.1:5555", framebus.ProtocolError, "only an absolute ipc://"),
    ("ipc://relative/bus", framebus.ProtocolError, "only an absolute ipc://"),
    ("ipc:///nowhere/bus-0", framebus.ProtocolError, "No such file"),
    ("ipc:///tmp/../tmp/bus", framebus.ProtocolError, "without symlinks or '..'"),
    ("ipc://" + "/x" * 80, framebus.ProtocolError, "at most 107 bytes"),
    ("not an endpoint", framebus.ProtocolError, "only an absolute ipc://"),
])
def test_a_bad_endpoint_is_a_clear_error_never_a_zmq_error(sock, endpoint, error, message):
    with pytest.raises(error, match=message):
        attach_to_fake(sock, endpoint)


def test_an_endpoint_someone_else_owns_is_refused(workdir, sock):
    private = os.path.join(workdir, "bus")
    os.mkdir(private, 0o700)
    bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound.bind(os.path.join(private, "bus-0"))
    try:
        os.chown(bound.getsockname(), NOBODY.pw_uid, -1)
        with pytest.raises(framebus.PermissionDenied, match="not a socket owned by the "
                                                            "producer's uid 0"):
            attach_to_fake(sock, "ipc://" + bound.getsockname())
        os.chown(bound.getsockname(), 0, -1)
        os.chmod(private, 0o777)  # others could swap the socket file
        with pytest.raises(framebus.PermissionDenied, match="writable by others"):
            attach_to_fake(sock, "ipc://" + bound.getsockname())
    finally:
        bound.close()


def test_an_endpoint_through_a_symlink_is_refused(workdir, sock):
    private = os.path.join(workdir, "bus")
    os.mkdir(private, 0o700)
    os.symlink(private, os.path.join(workdir, "link"))
    bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound.bind(os.path.join(private, "bus-0"))
    try:
        with pytest.raises(framebus.ProtocolError, match="without symlinks"):
            attach_to_fake(sock, "ipc://" + os.path.join(workdir, "link", "bus-0"))
    finally:
        bound.close()


# --- nothing planted in a shared directory stops or fools the producer ----------------------

def _old_private_names(sock: str) -> list[str]:
    """Where the producer used to put its private directory, predictably."""
    near = os.path.join(os.path.dirname(sock), f".{os.path.basename(sock)}.bus")
    digest = hashlib.sha1(os.fsencode(near)).hexdigest()[:16]
    return [near, os.path.join("/tmp", f"framebus-{os.getuid()}-{digest}.bus")]


def test_a_symlink_at_the_old_predictable_name_does_not_stop_the_producer(workdir, sock):
    target = os.path.join(workdir, "victim")
    os.mkdir(target)
    planted = _old_private_names(sock)
    for name in planted:
        os.symlink(target, name)
    try:
        with framebus.Producer(sock, FMT) as bus, framebus.Consumer(sock) as cam:
            bus.publish(bus.acquire(timeout=1))
            cam.get(timeout=5).release()
            private = bus._dir.path
            assert private not in planted and os.path.dirname(private) == workdir
            st = os.lstat(private)
            assert st.st_uid == os.geteuid() and st.st_mode & 0o777 == 0o750
        assert all(os.readlink(name) == target for name in planted)
        assert os.listdir(target) == []  # nothing was created through the symlinks
    finally:
        for name in planted:
            os.unlink(name)


def test_private_directories_have_unpredictable_names(sock):
    names = set()
    for _ in range(3):
        with framebus.Producer(sock, FMT) as bus:
            names.add(bus._dir.path)
    assert len(names) == 3
    assert not os.listdir(os.path.dirname(sock))  # each removed at close


def test_a_long_socket_path_keeps_its_private_directory_out_of_tmp(workdir):
    deep = os.path.join(workdir, "d" * 60)
    os.mkdir(deep)
    path = os.path.join(deep, "camera-with-a-long-name.sock")
    with framebus.Producer(path, FMT) as bus, framebus.Consumer(path) as cam:
        assert os.path.dirname(bus._dir.path) == paths.runtime_dir()
        bus.publish(bus.acquire(timeout=1))
        cam.get(timeout=5).release()


def test_a_crashed_producers_private_directory_is_cleaned_up(workdir, sock):
    leftover = os.path.join(workdir, ".cam.sock.abcdefgh.bus")
    os.mkdir(leftover, 0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stale.bind(sock)
    stale.close()  # a socket file nobody listens on: a crashed producer's
    with framebus.Producer(sock, FMT):
        assert not os.path.exists(leftover)


def test_a_symlink_planted_at_the_socket_path_is_never_followed(workdir, sock):
    victim = os.path.join(workdir, "victim")
    with open(victim, "w") as f:
        f.write("precious")
    os.symlink(victim, sock)
    with pytest.raises(framebus.FramebusError, match="is a symlink; not replacing it"):
        framebus.Producer(sock, FMT)
    assert os.readlink(sock) == victim and open(victim).read() == "precious"
    os.unlink(sock)
    os.symlink(os.path.join(workdir, "nowhere"), sock)  # dangling: bind must not create it
    with pytest.raises(framebus.FramebusError, match="symlink"):
        _endpoint.listen(sock)
    assert not os.path.exists(os.path.join(workdir, "nowhere"))


# --- groups admit their members, supplementary ones included --------------------------------

def _attach_as_nobody(sock: str, groups: list[int]) -> dict:
    return run_hostile("--as", "nobody", "--groups", ",".join(map(str, groups)), "attach", sock)


def test_group_and_mode_660_admit_a_supplementary_member_only(open_dir, test_group):
    sock = os.path.join(open_dir, "cam.sock")
    with framebus.Producer(sock, FMT, group=test_group, mode=0o660) as bus:
        stop, thread = publishing(bus)
        try:
            member = _attach_as_nobody(sock, [test_group])
            stranger = _attach_as_nobody(sock, [])
        finally:
            stop.set()
            thread.join(timeout=5)
    assert member["ok"] is True and member["uid"] == NOBODY.pw_uid, member
    assert stranger["ok"] is False and stranger["permission"] is True, stranger


def test_the_cli_group_option_admits_a_supplementary_member(open_dir, test_group, procs):
    import grp
    sock = os.path.join(open_dir, "cam.sock")
    procs.producer(sock, "--group", grp.getgrgid(test_group).gr_name, "--mode", "660", fps=50)
    assert _attach_as_nobody(sock, [test_group])["ok"] is True


def test_allow_gid_matches_supplementary_groups(open_dir, test_group):
    sock = os.path.join(open_dir, "cam.sock")
    with framebus.Producer(sock, FMT, mode=0o666, allow_gids=[test_group]) as bus:
        stop, thread = publishing(bus)
        try:
            member = _attach_as_nobody(sock, [test_group])
            stranger = _attach_as_nobody(sock, [])
        finally:
            stop.set()
            thread.join(timeout=5)
    assert member["ok"] is True, member
    assert stranger["ok"] is False and stranger["type"] == "PermissionDenied"
    assert "may not attach" in stranger["message"]


def test_peer_groups_reads_the_supplementary_groups(test_group):
    many = list(range(70000, 70100))  # more than the first buffer holds (ERANGE, then retried)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        os.setgroups([test_group])  # credentials are taken at socketpair(): not before
        c, d = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        os.setgroups(many)
        e, f = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    finally:
        os.setgroups([])
    try:
        assert fdpass.peer_credentials(a, groups=True).groups == ()
        assert fdpass.peer_credentials(c, groups=True).groups == (test_group,)
        assert fdpass.peer_credentials(c).groups == ()
        assert fdpass.peer_groups(e) == tuple(many)
    finally:
        for s in (a, b, c, d, e, f):
            s.close()
