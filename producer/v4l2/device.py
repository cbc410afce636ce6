"""An open V4L2 capture node: its fd and the buffer-queue ioctls, typed.

`Device` is the thinnest layer the capture source needs over
``framebus.linux.videodev2``: open the node, ask what it is, and speak the
buffer-queue ioctls (REQBUFS, QUERYBUF, QBUF, DQBUF, STREAMON/OFF, EXPBUF) for
single-planar and multi-planar queues alike, with one plane per buffer or
several (NV12M: each plane its own memory). `VideoBuffer` is one
``v4l2_buffer`` together with the plane array a multi-planar queue needs, so
the rest of the source never asks which kind of queue it talks to.

Errors are the kernel's: every call raises ``OSError`` with its errno, except
`open` (a `FramebusError` that says what went wrong in words) and `dqbuf`
(None for EAGAIN, as the device is opened ``O_NONBLOCK``).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os

from framebus import FramebusError
from framebus.linux import videodev2 as v
from framebus.linux.ioctl import ioctl

__all__ = ["Device", "VideoBuffer", "busy_message", "MEMORY_NAMES"]

#: the kernel's names of the memory types, for messages
MEMORY_NAMES = {v.V4L2_MEMORY_MMAP: "V4L2_MEMORY_MMAP", v.V4L2_MEMORY_USERPTR: "V4L2_MEMORY_USERPTR",
                v.V4L2_MEMORY_DMABUF: "V4L2_MEMORY_DMABUF"}


def busy_message(path: str) -> str:
    """What to tell a user whose camera another process holds (EBUSY)."""
    return (f"{path} is busy: another process has the camera (it is streaming or owns its "
            f"buffers); find it with `fuser -v {path}` and stop it first")


class VideoBuffer:
    """One ``struct v4l2_buffer`` (and, for a multi-planar queue, its
    ``struct v4l2_plane`` array of `nplanes`), ready to pass to QUERYBUF,
    QBUF or DQBUF."""

    def __init__(self, buf_type: int, memory: int, index: int = 0, nplanes: int = 1) -> None:
        self._planes = (v.v4l2_plane * nplanes)()
        self.nplanes = nplanes
        self.b = v.v4l2_buffer(type=buf_type, memory=memory, index=index)
        self.mplane = buf_type == v.V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE
        if self.mplane:
            self.b.m.planes = ctypes.cast(self._planes, ctypes.POINTER(v.v4l2_plane))
            self.b.length = nplanes

    @property
    def index(self) -> int:
        return int(self.b.index)

    @property
    def flags(self) -> int:
        return int(self.b.flags)

    @property
    def sequence(self) -> int:
        return int(self.b.sequence)

    @property
    def bytesused(self) -> int:
        """Bytes the driver filled, over every plane."""
        if not self.mplane:
            return int(self.b.bytesused)
        return sum(int(self._planes[i].bytesused) for i in range(self.nplanes))

    def plane_bytesused(self, plane: int) -> int:
        return int(self._planes[plane].bytesused if self.mplane else self.b.bytesused)

    @property
    def length(self) -> int:
        """The length of plane 0 (the whole buffer for one-plane formats)."""
        return self.plane_length(0)

    def plane_length(self, plane: int) -> int:
        return int(self._planes[plane].length if self.mplane else self.b.length)

    @property
    def mem_offset(self) -> int:
        """An MMAP buffer's offset cookie for ``mmap()`` on the device fd."""
        return self.plane_mem_offset(0)

    def plane_mem_offset(self, plane: int) -> int:
        return int(self._planes[plane].m.mem_offset if self.mplane else self.b.m.offset)

    @property
    def timestamp_ns(self) -> int:
        """The driver's ``timestamp`` (a ``struct timeval``) in nanoseconds."""
        return int(self.b.timestamp.tv_sec) * 1_000_000_000 + int(self.b.timestamp.tv_usec) * 1000

    def set_userptr(self, address: int, length: int, plane: int = 0) -> None:
        """For a USERPTR QBUF: where the driver is to write plane `plane`,
        and how much room it has."""
        if self.mplane:
            self._planes[plane].m.userptr = address
            self._planes[plane].length = length
        else:
            self.b.m.userptr = address
            self.b.length = length


class Device:
    """A V4L2 video capture node, opened ``O_RDWR | O_NONBLOCK | O_CLOEXEC``.

    `buf_type` is ``V4L2_BUF_TYPE_VIDEO_CAPTURE`` or, when the node only
    speaks the multi-planar API, ``V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE``.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise FramebusError(_open_failure(path, exc)) from None
        try:
            cap = v.v4l2_capability()
            try:
                ioctl(self.fd, v.VIDIOC_QUERYCAP, cap)
            except OSError as exc:
                if exc.errno == errno.ENOTTY:
                    raise FramebusError(f"{path} is not a V4L2 device") from None
                raise FramebusError(f"{path}: VIDIOC_QUERYCAP failed: {exc.strerror}") from None
            caps = cap.device_caps if cap.capabilities & v.V4L2_CAP_DEVICE_CAPS else cap.capabilities
            if caps & v.V4L2_CAP_VIDEO_CAPTURE_MPLANE:
                self.buf_type = v.V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE
            elif caps & v.V4L2_CAP_VIDEO_CAPTURE:
                self.buf_type = v.V4L2_BUF_TYPE_VIDEO_CAPTURE
            else:
                raise FramebusError(f"{path} is not a video capture node "
                                    f"(device_caps 0x{caps:08x}); try another /dev/video*")
            if not caps & v.V4L2_CAP_STREAMING:
                raise FramebusError(f"{path} has no streaming I/O (V4L2_CAP_STREAMING), "
                                    f"only read(); framebus cannot capture from it")
            self.card = v.c_string(cap.card)
            self.driver = v.c_string(cap.driver)
            #: each plane's sizeimage as the driver set it (negotiate.py); one
            #: entry for single-buffer formats, one per plane for NV12M & co.
            self.plane_sizes: tuple[int, ...] = ()
        except BaseException:
            os.close(self.fd)
            raise

    @property
    def multiplanar(self) -> bool:
        return self.buf_type == v.V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE

    @property
    def num_planes(self) -> int:
        """Memory planes per buffer of the negotiated format."""
        return max(1, len(self.plane_sizes))

    def buffer(self, memory: int, index: int = 0) -> VideoBuffer:
        """A `VideoBuffer` shaped for this queue's format."""
        return VideoBuffer(self.buf_type, memory, index, self.num_planes)

    def format(self, request: int, fmt: v.v4l2_format | None = None) -> v.v4l2_format:
        """VIDIOC_G_FMT, VIDIOC_TRY_FMT or VIDIOC_S_FMT; returns the driver's answer."""
        f = fmt if fmt is not None else v.v4l2_format(type=self.buf_type)
        ioctl(self.fd, request, f)
        return f

    def parm(self, request: int, parm: v.v4l2_streamparm | None = None) -> v.v4l2_streamparm:
        """VIDIOC_G_PARM or VIDIOC_S_PARM; returns the driver's answer."""
        p = parm if parm is not None else v.v4l2_streamparm(type=self.buf_type)
        ioctl(self.fd, request, p)
        return p

    def reqbufs(self, memory: int, count: int) -> int:
        """VIDIOC_REQBUFS: how many buffers the driver granted (0 frees them)."""
        rb = v.v4l2_requestbuffers(count=count, type=self.buf_type, memory=memory)
        ioctl(self.fd, v.VIDIOC_REQBUFS, rb)
        return int(rb.count)

    def querybuf(self, memory: int, index: int) -> VideoBuffer:
        vb = self.buffer(memory, index)
        ioctl(self.fd, v.VIDIOC_QUERYBUF, vb.b)
        return vb

    def qbuf(self, vb: VideoBuffer) -> None:
        ioctl(self.fd, v.VIDIOC_QBUF, vb.b)

    def dqbuf(self, memory: int) -> VideoBuffer | None:
        """VIDIOC_DQBUF: the next filled buffer, or None if none is ready (EAGAIN)."""
        vb = self.buffer(memory)
        try:
            ioctl(self.fd, v.VIDIOC_DQBUF, vb.b)
        except BlockingIOError:
            return None
        return vb

    def streamon(self) -> None:
        ioctl(self.fd, v.VIDIOC_STREAMON, ctypes.c_int(self.buf_type))

    def streamoff(self) -> None:
        ioctl(self.fd, v.VIDIOC_STREAMOFF, ctypes.c_int(self.buf_type))

    def expbuf(self, index: int, plane: int = 0) -> int:
        """VIDIOC_EXPBUF of buffer `index`'s plane `plane`: a read-only
        DMA-BUF fd (``O_RDONLY | O_CLOEXEC``) the caller owns."""
        exp = v.v4l2_exportbuffer(type=self.buf_type, index=index, plane=plane,
                                  flags=os.O_RDONLY | os.O_CLOEXEC)
        ioctl(self.fd, v.VIDIOC_EXPBUF, exp)
        return int(exp.fd)

    def mmap(self, vb: VideoBuffer, plane: int = 0) -> mmap.mmap:
        """Map one plane of an MMAP buffer (from QUERYBUF) read-only, shared."""
        return mmap.mmap(self.fd, vb.plane_length(plane), mmap.MAP_SHARED, mmap.PROT_READ,
                         offset=vb.plane_mem_offset(plane))

    def close(self) -> None:
        """Close the fd (the driver frees what is still allocated); safe twice."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def _open_failure(path: str, exc: OSError) -> str:
    if exc.errno == errno.EBUSY:
        return busy_message(path)
    if exc.errno == errno.ENOENT:
        return f"{path} does not exist (is the camera plugged in? `framebus devices` lists them)"
    if exc.errno == errno.EACCES:
        return (f"no permission to open {path}: add this user to the device's group "
                f"(usually `video`: sudo usermod -aG video $USER, then log in again)")
    if exc.errno == errno.ENODEV:
        return f"{path}: the device is gone (unplugged?)"
    return f"cannot open {path}: {exc.strerror}"
