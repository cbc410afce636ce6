"""Child process for the V4L2 simulator tests: drives a simulated device.

Run with ``LD_PRELOAD=libv4l2sim.so FRAMEBUS_V4L2SIM=...`` as
``python simchild.py SCENARIO ARGS...``; it speaks to the device only through
``framebus.linux`` (os.open, fcntl.ioctl, mmap, poll, all real calls that the
preloaded simulator answers) and prints one JSON object describing what it saw.
The parent test makes the assertions.
"""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import select
import sys
import time
import zlib
from collections.abc import Callable
from typing import Any

from framebus.linux import dma_buf
from framebus.linux import videodev2 as v
from framebus.linux.ioctl import _IOWR, ioctl

MEMORY = {"mmap": v.V4L2_MEMORY_MMAP, "userptr": v.V4L2_MEMORY_USERPTR,
          "dmabuf": v.V4L2_MEMORY_DMABUF, "expbuf": v.V4L2_MEMORY_MMAP}  # fmt: skip


def errname(fn: Callable[[], object]) -> str | None:
    """Run ``fn``; the errno name of the OSError it raised, or None."""
    try:
        fn()
    except OSError as exc:
        return errno.errorcode[exc.errno]
    return None


def buf_type(fd: int) -> int:
    cap = v.v4l2_capability()
    ioctl(fd, v.VIDIOC_QUERYCAP, cap)
    if cap.device_caps & v.V4L2_CAP_VIDEO_CAPTURE_MPLANE:
        return v.V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE
    return v.V4L2_BUF_TYPE_VIDEO_CAPTURE


class Buffer:
    """A v4l2_buffer with its plane array, ready for one ioctl."""

    def __init__(self, type_: int, memory: int, index: int = 0) -> None:
        self.planes = (v.v4l2_plane * v.VIDEO_MAX_PLANES)()
        self.b = v.v4l2_buffer(type=type_, memory=memory, index=index)
        if type_ == v.V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE:
            self.b.m.planes = ctypes.cast(self.planes, ctypes.POINTER(v.v4l2_plane))
            self.b.length = 1

    @property
    def mplane(self) -> bool:
        return self.b.type == v.V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE

    @property
    def length(self) -> int:
        return self.planes[0].length if self.mplane else self.b.length

    @property
    def bytesused(self) -> int:
        return self.planes[0].bytesused if self.mplane else self.b.bytesused

    @property
    def offset(self) -> int:
        return self.planes[0].m.mem_offset if self.mplane else self.b.m.offset

    def set_userptr(self, address: int, length: int) -> None:
        if self.mplane:
            self.planes[0].m.userptr = address
            self.planes[0].length = length
        else:
            self.b.m.userptr = address
            self.b.length = length

    def set_fd(self, fd: int) -> None:
        if self.mplane:
            self.planes[0].m.fd = fd
        else:
            self.b.m.fd = fd


def reqbufs(fd: int, type_: int, memory: int, count: int) -> v.v4l2_requestbuffers:
    rb = v.v4l2_requestbuffers(count=count, type=type_, memory=memory)
    ioctl(fd, v.VIDIOC_REQBUFS, rb)
    return rb


def get_fmt(fd: int, type_: int) -> tuple[int, int, int, int, int]:
    """(width, height, pixelformat, bytesperline, sizeimage) of the current format."""
    f = v.v4l2_format(type=type_)
    ioctl(fd, v.VIDIOC_G_FMT, f)
    if type_ == v.V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE:
        p = f.fmt.pix_mp
        return p.width, p.height, p.pixelformat, p.plane_fmt[0].bytesperline, p.plane_fmt[0].sizeimage
    q = f.fmt.pix
    return q.width, q.height, q.pixelformat, q.bytesperline, q.sizeimage


class Stream:
    """Buffers of one memory mode, allocated, mapped and queued."""

    def __init__(self, fd: int, memory_name: str, count: int) -> None:
        self.fd = fd
        self.type = buf_type(fd)
        self.memory = MEMORY[memory_name]
        self.memory_name = memory_name
        self.sizeimage = get_fmt(fd, self.type)[4]
        self.rb = reqbufs(fd, self.type, self.memory, count)
        self.maps: list[mmap.mmap] = []
        self.anchors: list[ctypes.c_char] = []  # keep USERPTR addresses pinned
        self.memfds: list[int] = []
        self.exported: list[int] = []
        self.offsets: list[int] = []
        for i in range(self.rb.count):
            buf = Buffer(self.type, self.memory, i)
            ioctl(fd, v.VIDIOC_QUERYBUF, buf.b)
            if memory_name in ("mmap", "expbuf"):
                self.offsets.append(buf.offset)
                length = buf.length
                if memory_name == "expbuf":
                    exp = v.v4l2_exportbuffer(type=self.type, index=i, flags=os.O_CLOEXEC)
                    ioctl(fd, v.VIDIOC_EXPBUF, exp)
                    self.exported.append(exp.fd)
                    self.maps.append(mmap.mmap(exp.fd, length, mmap.MAP_SHARED, mmap.PROT_READ))
                else:
                    self.maps.append(
                        mmap.mmap(fd, length, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE, offset=buf.offset)  # fmt: skip
                    )
            elif memory_name == "userptr":
                m = mmap.mmap(-1, self.sizeimage)
                self.maps.append(m)
                self.anchors.append(ctypes.c_char.from_buffer(m))
            else:  # dmabuf: the application's own memory, imported by fd
                mfd = os.memfd_create(f"app-buf{i}", os.MFD_CLOEXEC)
                os.ftruncate(mfd, self.sizeimage)
                self.memfds.append(mfd)
                self.maps.append(mmap.mmap(mfd, self.sizeimage, mmap.MAP_SHARED, mmap.PROT_READ))

    def qbuf(self, index: int) -> Buffer:
        buf = Buffer(self.type, self.memory, index)
        if self.memory_name == "userptr":
            buf.set_userptr(ctypes.addressof(self.anchors[index]), self.sizeimage)
        elif self.memory_name == "dmabuf":
            buf.set_fd(self.memfds[index])
        ioctl(self.fd, v.VIDIOC_QBUF, buf.b)
        return buf

    def dqbuf(self) -> Buffer:
        buf = Buffer(self.type, self.memory)
        ioctl(self.fd, v.VIDIOC_DQBUF, buf.b)
        return buf

    def streamon(self) -> None:
        ioctl(self.fd, v.VIDIOC_STREAMON, ctypes.c_int(self.type))

    def streamoff(self) -> None:
        ioctl(self.fd, v.VIDIOC_STREAMOFF, ctypes.c_int(self.type))

    def pixels(self, index: int, n: int) -> bytes:
        return self.maps[index][:n]

    def close(self) -> None:
        del self.anchors[:]
        for m in self.maps:
            m.close()
        for fd in self.memfds + self.exported:
            os.close(fd)


def wait_readable(fd: int, timeout_ms: int = 3000) -> int:
    """poll() the fd for POLLIN; the revents (0 on timeout)."""
    p = select.poll()
    p.register(fd, select.POLLIN)
    events = p.poll(timeout_ms)
    return events[0][1] if events else 0


def frame_record(stream: Stream, buf: Buffer) -> dict[str, Any]:
    data = stream.pixels(buf.b.index, buf.bytesused)
    return {
        "index": buf.b.index,
        "sequence": buf.b.sequence,
        "bytesused": buf.bytesused,
        "length": buf.length,
        "flags": buf.b.flags,
        "field": buf.b.field,
        "head": int.from_bytes(data[:8], "little"),
        "crc": zlib.crc32(data),
        "timestamp_ns": buf.b.timestamp.tv_sec * 1_000_000_000 + buf.b.timestamp.tv_usec * 1000,
        "now_ns": time.monotonic_ns(),
        "userptr": buf.planes[0].m.userptr if buf.mplane else buf.b.m.userptr,
    }


# --- scenarios ---------------------------------------------------------------


def querycap(path: str) -> dict[str, Any]:
    fd = os.open(path, os.O_RDWR)
    try:
        cap = v.v4l2_capability()
        ioctl(fd, v.VIDIOC_QUERYCAP, cap)
        return {
            "driver": v.c_string(cap.driver),
            "card": v.c_string(cap.card),
            "bus_info": v.c_string(cap.bus_info),
            "version": cap.version,
            "capabilities": cap.capabilities,
            "device_caps": cap.device_caps,
            "cloexec": not os.get_inheritable(fd),
        }
    finally:
        os.close(fd)


def formats(path: str) -> dict[str, Any]:
    fd = os.open(path, os.O_RDWR)
    try:
        type_ = buf_type(fd)
        out: dict[str, Any] = {"formats": []}
        for i in range(64):
            fd_ = v.v4l2_fmtdesc(index=i, type=type_)
            if errname(lambda: ioctl(fd, v.VIDIOC_ENUM_FMT, fd_)) == "EINVAL":
                break
            sizes = []
            for j in range(64):
                fs = v.v4l2_frmsizeenum(index=j, pixel_format=fd_.pixelformat)
                if errname(lambda: ioctl(fd, v.VIDIOC_ENUM_FRAMESIZES, fs)) == "EINVAL":
                    break
                if fs.type == v.V4L2_FRMSIZE_TYPE_DISCRETE:
                    w, h = fs.discrete.width, fs.discrete.height
                else:
                    sw = fs.stepwise
                    sizes.append(["stepwise", sw.min_width, sw.max_width, sw.step_width,
                                  sw.min_height, sw.max_height, sw.step_height])  # fmt: skip
                    w, h = sw.max_width, sw.max_height
                ivals = []
                for k in range(64):
                    fi = v.v4l2_frmivalenum(index=k, pixel_format=fd_.pixelformat, width=w, height=h)
                    if errname(lambda: ioctl(fd, v.VIDIOC_ENUM_FRAMEINTERVALS, fi)) == "EINVAL":
                        break
                    ivals.append([fi.discrete.numerator, fi.discrete.denominator])
                if fs.type == v.V4L2_FRMSIZE_TYPE_DISCRETE:
                    sizes.append([w, h, ivals])
                else:
                    sizes[-1].append(ivals)
            out["formats"].append({
                "fourcc": v.fourcc_str(fd_.pixelformat),
                "description": v.c_string(fd_.description),
                "flags": fd_.flags,
                "sizes": sizes,
            })  # fmt: skip
        out["g_fmt"] = get_fmt(fd, type_)
        # TRY_FMT adjusts an impossible request without changing anything
        f = v.v4l2_format(type=type_)
        target = f.fmt.pix_mp if type_ == v.V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE else f.fmt.pix
        target.width, target.height, target.pixelformat = 333, 250, v.fourcc("XXXX")
        ioctl(fd, v.VIDIOC_TRY_FMT, f)
        out["try_fmt"] = [target.width, target.height, v.fourcc_str(target.pixelformat)]
        out["g_fmt_after_try"] = get_fmt(fd, type_)
        # S_FMT to the last format at its last size
        last = out["formats"][-1]
        f = v.v4l2_format(type=type_)
        target = f.fmt.pix_mp if type_ == v.V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE else f.fmt.pix
        target.pixelformat = v.fourcc(last["fourcc"])
        target.width, target.height = 320, 240
        ioctl(fd, v.VIDIOC_S_FMT, f)
        if type_ == v.V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE:
            out["s_fmt_planes"] = target.num_planes
            out["s_fmt_field"] = target.field
        else:
            out["s_fmt_field"] = target.field
        out["g_fmt_after_set"] = get_fmt(fd, type_)
        # frame interval
        parm = v.v4l2_streamparm(type=type_)
        ioctl(fd, v.VIDIOC_G_PARM, parm)
        out["g_parm"] = [parm.parm.capture.capability, parm.parm.capture.timeperframe.numerator,
                         parm.parm.capture.timeperframe.denominator]  # fmt: skip
        parm = v.v4l2_streamparm(type=type_)
        parm.parm.capture.timeperframe = v.v4l2_fract(1, 14)
        ioctl(fd, v.VIDIOC_S_PARM, parm)
        out["s_parm"] = [parm.parm.capture.timeperframe.numerator,
                         parm.parm.capture.timeperframe.denominator]  # fmt: skip
        wrong = v.V4L2_BUF_TYPE_VIDEO_CAPTURE + v.V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE - type_
        out["wrong_type_g_fmt"] = errname(lambda: ioctl(fd, v.VIDIOC_G_FMT, v.v4l2_format(type=wrong)))
        out["wrong_type_enum_fmt"] = errname(
            lambda: ioctl(fd, v.VIDIOC_ENUM_FMT, v.v4l2_fmtdesc(index=0, type=wrong))
        )
        return out
    finally:
        os.close(fd)


def capture(path: str, memory: str, count: str, frames: str) -> dict[str, Any]:
    """Queue every buffer, stream, dequeue ``frames`` frames re-queueing each."""
    fds_before = len(os.listdir("/proc/self/fd"))
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    stream = Stream(fd, memory, int(count))
    out: dict[str, Any] = {"granted": stream.rb.count, "capabilities": stream.rb.capabilities,
                           "sizeimage": stream.sizeimage, "offsets": stream.offsets,
                           "frames": [], "error": None, "revents": 0}  # fmt: skip
    try:
        out["not_readable_before"] = wait_readable(fd, 0)
        out["dqbuf_before_streamon"] = errname(stream.dqbuf)
        for i in range(stream.rb.count):
            stream.qbuf(i)
        stream.streamon()
        while len(out["frames"]) < int(frames):
            revents = wait_readable(fd)
            out["revents"] = revents
            if not revents & select.POLLIN:
                out["error"] = errname(stream.dqbuf)
                break
            try:
                buf = stream.dqbuf()
                out["frames"].append(frame_record(stream, buf))
                # The device may vanish between DQBUF and the re-QBUF, as a real one can.
                stream.qbuf(buf.b.index)
            except OSError as exc:
                out["error"] = errno.errorcode[exc.errno]
                break
        if out["error"]:
            out["querycap_after"] = errname(lambda: ioctl(fd, v.VIDIOC_QUERYCAP, v.v4l2_capability()))
            out["streamoff_after"] = errname(stream.streamoff)
            out["mmap_after"] = errname(
                lambda: mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ, offset=0)
            )
            out["revents_after"] = wait_readable(fd, 0)
        else:
            stream.streamoff()
    finally:
        stream.close()
        os.close(fd)
    out["fds_leaked"] = len(os.listdir("/proc/self/fd")) - fds_before
    return out


def streamoff(path: str) -> dict[str, Any]:
    """STREAMOFF with buffers queued and done: all come back; the fd quiets."""
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    stream = Stream(fd, "mmap", 4)
    out: dict[str, Any] = {}
    try:
        for i in range(4):
            stream.qbuf(i)
        out["flags_queued"] = [_querybuf(stream, i).b.flags for i in range(4)]
        stream.streamon()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # until all four are done, none dequeued
            out["flags_streaming"] = [_querybuf(stream, i).b.flags for i in range(4)]
            if all(f & v.V4L2_BUF_FLAG_DONE for f in out["flags_streaming"]):
                break
            time.sleep(0.005)
        stream.streamoff()
        out["flags_after"] = [_querybuf(stream, i).b.flags for i in range(4)]
        out["readable_after"] = wait_readable(fd, 0)
        out["dqbuf_after"] = errname(stream.dqbuf)
        # they can all be queued again and streaming restarts from sequence 0
        for i in range(4):
            stream.qbuf(i)
        stream.streamon()
        wait_readable(fd)
        out["first_sequence_again"] = stream.dqbuf().b.sequence
        stream.streamoff()
        out["requeue_twice"] = errname(lambda: (stream.qbuf(0), stream.qbuf(0)))
        stream.streamoff()
        # count = 0 frees; QUERYBUF then has nothing to answer
        unmapped = stream.maps.pop(0)
        unmapped.close()
        out["mapped_flags"] = [_querybuf(stream, i).b.flags & v.V4L2_BUF_FLAG_MAPPED for i in range(4)]
        rb = reqbufs(fd, stream.type, v.V4L2_MEMORY_MMAP, 0)
        out["freed_count"] = rb.count
        out["querybuf_after_free"] = errname(lambda: _querybuf(stream, 0))
        out["orphaned_mapping_head"] = stream.maps[0][:8].hex()
    finally:
        stream.close()
        os.close(fd)
    return out


def _querybuf(stream: Stream, index: int) -> Buffer:
    buf = Buffer(stream.type, stream.memory, index)
    ioctl(stream.fd, v.VIDIOC_QUERYBUF, buf.b)
    return buf


def errors(path: str) -> dict[str, Any]:
    """Malformed and out-of-order requests fail as the kernel's would."""
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    out: dict[str, Any] = {}
    try:
        type_ = buf_type(fd)

        class short_buffer(ctypes.Structure):  # v4l2_buffer without its last field
            _fields_ = v.v4l2_buffer._fields_[:-1]

        bad_qbuf = _IOWR("V", 15, short_buffer)
        out["short_struct"] = errname(lambda: ioctl(fd, bad_qbuf, short_buffer()))
        out["unknown_request"] = errname(lambda: ioctl(fd, _IOWR("V", 200, ctypes.c_int), ctypes.c_int()))
        out["streamon_without_buffers"] = errname(
            lambda: ioctl(fd, v.VIDIOC_STREAMON, ctypes.c_int(type_))
        )
        out["qbuf_without_buffers"] = errname(
            lambda: ioctl(fd, v.VIDIOC_QBUF, Buffer(type_, v.V4L2_MEMORY_MMAP).b)
        )
        out["reqbufs_bad_memory"] = errname(lambda: reqbufs(fd, type_, 99, 2))
        stream = Stream(fd, "mmap", 2)
        try:
            out["querybuf_out_of_range"] = errname(lambda: _querybuf(stream, 2))
            out["qbuf_wrong_memory"] = errname(
                lambda: ioctl(fd, v.VIDIOC_QBUF, Buffer(type_, v.V4L2_MEMORY_USERPTR).b)
            )
            out["mmap_private"] = errname(
                lambda: mmap.mmap(fd, 4096, mmap.MAP_PRIVATE, mmap.PROT_READ, offset=0)
            )
            out["mmap_bad_offset"] = errname(
                lambda: mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ, offset=1 << 30)
            )
            out["mmap_too_long"] = errname(
                lambda: mmap.mmap(fd, 1 << 28, mmap.MAP_SHARED, mmap.PROT_READ, offset=0)
            )
            out["s_fmt_with_buffers"] = errname(
                lambda: ioctl(fd, v.VIDIOC_S_FMT, _current_format(fd, type_))
            )
            stream.streamon()
            out["dqbuf_nothing_done"] = errname(stream.dqbuf)
            out["reqbufs_while_streaming"] = errname(lambda: reqbufs(fd, type_, v.V4L2_MEMORY_MMAP, 2))
            if type_ == v.V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE:
                nulled = Buffer(type_, v.V4L2_MEMORY_MMAP)
                nulled.b.m.planes = None
                out["mplane_null_planes"] = errname(lambda: ioctl(fd, v.VIDIOC_QUERYBUF, nulled.b))
            stream.streamoff()
            # a second opener cannot take over the queue
            other = os.open(path, os.O_RDWR)
            try:
                out["second_handle_reqbufs"] = errname(lambda: reqbufs(other, type_, v.V4L2_MEMORY_MMAP, 2))
                out["second_handle_querycap"] = errname(
                    lambda: ioctl(other, v.VIDIOC_QUERYCAP, v.v4l2_capability())
                )
            finally:
                os.close(other)
        finally:
            stream.close()
        # a request the simulator does not own goes to the kernel untouched
        plain = os.memfd_create("plain", os.MFD_CLOEXEC)
        try:
            out["querycap_on_memfd"] = errname(lambda: ioctl(plain, v.VIDIOC_QUERYCAP, v.v4l2_capability()))
            out["dma_buf_sync_on_memfd"] = errname(lambda: dma_buf.sync_start(plain))
        finally:
            os.close(plain)
        out["enoent"] = errname(lambda: os.open(path + "-not-configured", os.O_RDWR))
    finally:
        os.close(fd)
    return out


def _current_format(fd: int, type_: int) -> v.v4l2_format:
    f = v.v4l2_format(type=type_)
    ioctl(fd, v.VIDIOC_G_FMT, f)
    return f


def busy(path: str) -> dict[str, Any]:
    """Open, then S_FMT: either may be refused with EBUSY."""
    out: dict[str, Any] = {"open": None, "s_fmt": None}
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as exc:
        out["open"] = errno.errorcode[exc.errno]
        return out
    try:
        type_ = buf_type(fd)
        out["s_fmt"] = errname(lambda: ioctl(fd, v.VIDIOC_S_FMT, _current_format(fd, type_)))
        out["try_fmt"] = errname(lambda: ioctl(fd, v.VIDIOC_TRY_FMT, _current_format(fd, type_)))
    finally:
        os.close(fd)
    return out


def expbuf(path: str) -> dict[str, Any]:
    """EXPBUF hands out real fds over the buffer memory; DMA_BUF sync works on them."""
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    type_ = buf_type(fd)
    stream = Stream(fd, "mmap", 2)
    out: dict[str, Any] = {}
    fds: list[int] = []
    try:
        for flags in (os.O_CLOEXEC, 0):
            exp = v.v4l2_exportbuffer(type=type_, index=1, flags=flags)
            ioctl(fd, v.VIDIOC_EXPBUF, exp)
            fds.append(exp.fd)
        out["inheritable"] = [os.get_inheritable(f) for f in fds]
        out["link"] = os.readlink(f"/proc/self/fd/{fds[0]}")
        out["bad_flags"] = errname(
            lambda: ioctl(fd, v.VIDIOC_EXPBUF, v.v4l2_exportbuffer(type=type_, index=0, flags=os.O_APPEND))
        )
        out["bad_plane"] = errname(
            lambda: ioctl(fd, v.VIDIOC_EXPBUF, v.v4l2_exportbuffer(type=type_, index=0, plane=1))
        )
        out["bad_index"] = errname(
            lambda: ioctl(fd, v.VIDIOC_EXPBUF, v.v4l2_exportbuffer(type=type_, index=2))
        )
        out["sync_start"] = errname(lambda: dma_buf.sync_start(fds[0]))
        out["sync_end"] = errname(lambda: dma_buf.sync_end(fds[0]))
        out["sync_rw"] = errname(lambda: dma_buf.sync_start(fds[1], read=True, write=True))
        out["sync_bad_flags"] = errname(
            lambda: ioctl(fds[0], dma_buf.DMA_BUF_IOCTL_SYNC, dma_buf.dma_buf_sync(1 << 7))
        )
        # the exported fd and the device mapping show the same memory
        stream.maps[1][:4] = b"ABCD"
        with mmap.mmap(fds[0], 4096, mmap.MAP_SHARED, mmap.PROT_READ) as m:
            out["shared_bytes"] = m[:4].decode()
        # capture into it and read the frame through the DMA-BUF, bracketed by sync
        stream.qbuf(1)
        stream.streamon()
        wait_readable(fd)
        buf = stream.dqbuf()
        dma_buf.sync_start(fds[0])
        with mmap.mmap(fds[0], buf.bytesused, mmap.MAP_SHARED, mmap.PROT_READ) as m:
            data = m[: buf.bytesused]
        dma_buf.sync_end(fds[0])
        out["frame"] = {"sequence": buf.b.sequence, "bytesused": buf.bytesused, "crc": zlib.crc32(data)}
        stream.streamoff()
        reqbufs(fd, type_, v.V4L2_MEMORY_MMAP, 0)  # the exported fds outlive the buffers
        out["sync_after_free"] = errname(lambda: dma_buf.sync_start(fds[0]))
        with mmap.mmap(fds[0], 8, mmap.MAP_SHARED, mmap.PROT_READ) as m:
            out["head_after_free"] = int.from_bytes(m[:8], "little")
        reqbufs(fd, type_, v.V4L2_MEMORY_USERPTR, 2)
        out["expbuf_userptr"] = errname(
            lambda: ioctl(fd, v.VIDIOC_EXPBUF, v.v4l2_exportbuffer(type=type_, index=0))
        )
    finally:
        stream.close()
        for f in fds:
            os.close(f)
        os.close(fd)
    return out


def userptr_short(path: str) -> dict[str, Any]:
    """USERPTR: a buffer shorter than sizeimage, or a NULL pointer, is refused."""
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    stream = Stream(fd, "userptr", 2)
    try:
        short = Buffer(stream.type, stream.memory, 0)
        short.set_userptr(ctypes.addressof(stream.anchors[0]), stream.sizeimage - 1)
        null = Buffer(stream.type, stream.memory, 0)
        null.set_userptr(0, stream.sizeimage)
        return {
            "short": errname(lambda: ioctl(fd, v.VIDIOC_QBUF, short.b)),
            "null": errname(lambda: ioctl(fd, v.VIDIOC_QBUF, null.b)),
        }
    finally:
        stream.close()
        os.close(fd)


def memory_probe(path: str) -> dict[str, Any]:
    """REQBUFS count = 0 for each memory type: accepted?, and the capability bits."""
    fd = os.open(path, os.O_RDWR)
    try:
        type_ = buf_type(fd)
        out: dict[str, Any] = {}
        for name in ("mmap", "userptr", "dmabuf"):
            rb = v.v4l2_requestbuffers(count=0, type=type_, memory=MEMORY[name])
            out[name] = errname(lambda: ioctl(fd, v.VIDIOC_REQBUFS, rb))
            out[name + "_caps"] = rb.capabilities
        return out
    finally:
        os.close(fd)


def blocking(path: str) -> dict[str, Any]:
    """Without O_NONBLOCK, DQBUF waits for the next frame."""
    fd = os.open(path, os.O_RDWR)
    stream = Stream(fd, "mmap", 2)
    try:
        stream.qbuf(0)
        stream.streamon()
        start = time.monotonic()
        buf = stream.dqbuf()
        waited = time.monotonic() - start
        stream.streamoff()
        return {"sequence": buf.b.sequence, "waited": waited}
    finally:
        stream.close()
        os.close(fd)


def streamoff_wakes_dqbuf(path: str) -> dict[str, Any]:
    """A DQBUF blocked in one thread returns EINVAL when another calls STREAMOFF."""
    import threading

    fd = os.open(path, os.O_RDWR)
    stream = Stream(fd, "mmap", 2)
    result: dict[str, Any] = {}

    def blocked() -> None:
        start = time.monotonic()
        result["dqbuf"] = errname(stream.dqbuf)
        result["waited"] = time.monotonic() - start

    try:
        stream.streamon()  # nothing queued: no frame will ever be done
        thread = threading.Thread(target=blocked)
        thread.start()
        time.sleep(0.2)
        result["still_blocked"] = thread.is_alive()
        stream.streamoff()
        thread.join(5)
        result["returned"] = not thread.is_alive()
    finally:
        stream.close()
        os.close(fd)
    return result


def probe(*paths: str) -> Any:
    """producer.v4l2.devices.list_devices over the given paths."""
    from dataclasses import asdict

    from framebus.apps.producer.v4l2.devices import format_devices, list_devices

    devices = list_devices(list(paths))
    after = {}  # the probe leaves every queue free for the next opener
    for dev in devices:
        if dev.error is None:
            fd = os.open(dev.path, os.O_RDWR)
            try:
                after[dev.path] = errname(lambda: reqbufs(fd, dev.buf_type, v.V4L2_MEMORY_MMAP, 1))
            finally:
                os.close(fd)
    return {"devices": [asdict(d) for d in devices], "text": format_devices(devices), "after": after}


def probe_busy(path: str) -> Any:
    """list_devices while this process streams from the device on another fd."""
    from dataclasses import asdict

    from framebus.apps.producer.v4l2.devices import list_devices

    fd = os.open(path, os.O_RDWR)
    stream = Stream(fd, "mmap", 2)
    try:
        stream.qbuf(0)
        stream.streamon()
        devices = list_devices([path])
        stream.streamoff()
    finally:
        stream.close()
        os.close(fd)
    return [asdict(d) for d in devices]


def planes(path: str) -> dict[str, Any]:
    """A separate-plane format (NM12, YM12): its geometry, a buffer per plane
    for MMAP (each mapped and exported alone) and USERPTR, one frame each."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    out: dict[str, Any] = {}
    try:
        type_ = v.V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE
        f = v.v4l2_format(type=type_)
        ioctl(fd, v.VIDIOC_G_FMT, f)
        n = f.fmt.pix_mp.num_planes
        geometry = [(f.fmt.pix_mp.plane_fmt[i].bytesperline, f.fmt.pix_mp.plane_fmt[i].sizeimage)
                    for i in range(n)]
        out["fourcc"] = v.fourcc_str(f.fmt.pix_mp.pixelformat)
        out["geometry"] = geometry
        reqbufs(fd, type_, v.V4L2_MEMORY_MMAP, 2)
        short = Buffer(type_, v.V4L2_MEMORY_MMAP, 0)  # room for one plane only
        out["querybuf_one_plane"] = errname(lambda: ioctl(fd, v.VIDIOC_QUERYBUF, short.b))
        bufs, maps, exported = [], [], []
        for index in range(2):
            buf = Buffer(type_, v.V4L2_MEMORY_MMAP, index)
            buf.b.length = n
            ioctl(fd, v.VIDIOC_QUERYBUF, buf.b)
            bufs.append(buf)
            maps.append([mmap.mmap(fd, buf.planes[i].length, mmap.MAP_SHARED, mmap.PROT_READ,
                                   offset=buf.planes[i].m.mem_offset) for i in range(n)])
            for i in range(n):
                exp = v.v4l2_exportbuffer(type=type_, index=index, plane=i, flags=os.O_CLOEXEC)
                ioctl(fd, v.VIDIOC_EXPBUF, exp)
                exported.append(exp.fd)
        out["lengths"] = [[b.planes[i].length for i in range(n)] for b in bufs]
        out["offsets"] = [[b.planes[i].m.mem_offset for i in range(n)] for b in bufs]
        out["exported_inodes"] = len({os.fstat(e).st_ino for e in exported})
        beyond = v.v4l2_exportbuffer(type=type_, index=0, plane=n, flags=os.O_CLOEXEC)
        out["expbuf_beyond"] = errname(lambda: ioctl(fd, v.VIDIOC_EXPBUF, beyond))
        for buf in bufs:
            ioctl(fd, v.VIDIOC_QBUF, buf.b)
        ioctl(fd, v.VIDIOC_STREAMON, ctypes.c_int(type_))
        done = Buffer(type_, v.V4L2_MEMORY_MMAP)
        done.b.length = n
        ioctl(fd, v.VIDIOC_DQBUF, done.b)
        frame = b"".join(maps[done.b.index][i][:done.planes[i].bytesused] for i in range(n))
        out["mmap_frame"] = {"sequence": done.b.sequence, "crc": zlib.crc32(frame),
                             "bytesused": [done.planes[i].bytesused for i in range(n)]}
        ioctl(fd, v.VIDIOC_STREAMOFF, ctypes.c_int(type_))
        for plane_maps in maps:
            for m in plane_maps:
                m.close()
        for e in exported:
            os.close(e)
        reqbufs(fd, type_, v.V4L2_MEMORY_MMAP, 0)
        # USERPTR: one pointer per plane, each plane its own user memory
        reqbufs(fd, type_, v.V4L2_MEMORY_USERPTR, 1)
        memory = [mmap.mmap(-1, size) for _, size in geometry]
        anchors = [ctypes.c_char.from_buffer(m) for m in memory]
        buf = Buffer(type_, v.V4L2_MEMORY_USERPTR, 0)
        buf.b.length = n
        for i, (_, size) in enumerate(geometry):
            buf.planes[i].m.userptr = ctypes.addressof(anchors[i])
            buf.planes[i].length = size - (1 if i == n - 1 else 0)  # the last plane too short
        out["userptr_short_plane"] = errname(lambda: ioctl(fd, v.VIDIOC_QBUF, buf.b))
        buf.planes[n - 1].length = geometry[-1][1]
        ioctl(fd, v.VIDIOC_QBUF, buf.b)
        ioctl(fd, v.VIDIOC_STREAMON, ctypes.c_int(type_))
        done = Buffer(type_, v.V4L2_MEMORY_USERPTR)
        done.b.length = n
        ioctl(fd, v.VIDIOC_DQBUF, done.b)
        frame = b"".join(memory[i][:done.planes[i].bytesused] for i in range(n))
        out["userptr_frame"] = {"sequence": done.b.sequence, "crc": zlib.crc32(frame)}
        ioctl(fd, v.VIDIOC_STREAMOFF, ctypes.c_int(type_))
        del anchors[:]
        for m in memory:
            m.close()
    finally:
        os.close(fd)
    return out


SCENARIOS: dict[str, Callable[..., Any]] = {
    f.__name__: f
    for f in (querycap, formats, capture, streamoff, errors, busy, expbuf, userptr_short,
              memory_probe, blocking, streamoff_wakes_dqbuf, probe, probe_busy, planes)  # fmt: skip
}


def main() -> None:
    name, *args = sys.argv[1:]
    result = SCENARIOS[name](*args)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
