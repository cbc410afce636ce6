"""The part of ``<linux/videodev2.h>`` that a capture source needs, in ctypes.

Structs, fields, constants and request codes carry the kernel's own names, so
this file reads side by side with the header and with the V4L2 documentation.
Every struct listed in :data:`STRUCTS` and every upper-case integer constant
here is checked against the installed header by ``tests/test_videodev2_abi.py``
(sizes, alignments, offsets and sizes of every field, values), so a typo fails
a test rather than corrupting the kernel's memory.

Anonymous unions of the C header are ctypes unions listed in ``_anonymous_``;
their members are reached directly (``frmsize.discrete.width``), as in C.
"""

from __future__ import annotations

import ctypes
from ctypes import (
    POINTER,
    Structure,
    Union,
    c_int32,
    c_int64,
    c_long,
    c_uint8,
    c_uint16,
    c_uint32,
    c_uint64,
    c_ulong,
    c_void_p,
)
from typing import Any

from framebus.linux.ioctl import _IOR, _IOW, _IOWR

# --- helpers -----------------------------------------------------------------


def fourcc(code: str) -> int:
    """The 32-bit little-endian code of a four-character code: ``v4l2_fourcc``.

    ``fourcc("YUYV") == V4L2_PIX_FMT_YUYV``. Shorter codes are padded with
    spaces, as the kernel does for e.g. ``"Y16 "``.
    """
    raw = code.encode("ascii")
    if not 1 <= len(raw) <= 4:
        raise ValueError(f"a FourCC has 1 to 4 characters, not {code!r}")
    raw = raw.ljust(4, b" ")
    return raw[0] | (raw[1] << 8) | (raw[2] << 16) | (raw[3] << 24)


def fourcc_str(code: int) -> str:
    """The four characters of a FourCC code; the inverse of :func:`fourcc`.

    A big-endian variant (bit 31 set, ``v4l2_fourcc_be``) is shown with a
    ``-BE`` suffix, as the kernel's ``%p4cc`` does.
    """
    if not 0 <= code <= 0xFFFFFFFF:
        raise ValueError(f"not a 32-bit FourCC: {code!r}")
    big_endian = bool(code & (1 << 31))
    code &= 0x7FFFFFFF
    chars = bytes((code >> shift) & 0xFF for shift in (0, 8, 16, 24))
    text = chars.decode("latin-1")
    return text + "-BE" if big_endian else text


# --- limits ------------------------------------------------------------------

VIDEO_MAX_FRAME = 32
VIDEO_MAX_PLANES = 8

# --- enum v4l2_field -----------------------------------------------------------

V4L2_FIELD_ANY = 0
V4L2_FIELD_NONE = 1

# --- enum v4l2_buf_type ------------------------------------------------------

V4L2_BUF_TYPE_VIDEO_CAPTURE = 1
V4L2_BUF_TYPE_VIDEO_OUTPUT = 2
V4L2_BUF_TYPE_VIDEO_OVERLAY = 3
V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE = 9
V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE = 10
V4L2_BUF_TYPE_META_CAPTURE = 13

# --- enum v4l2_memory --------------------------------------------------------

V4L2_MEMORY_MMAP = 1
V4L2_MEMORY_USERPTR = 2
V4L2_MEMORY_OVERLAY = 3
V4L2_MEMORY_DMABUF = 4

# --- enum v4l2_colorspace (the two a capture source meets first) -------------

V4L2_COLORSPACE_DEFAULT = 0
V4L2_COLORSPACE_SRGB = 8

# --- v4l2_capability.capabilities / device_caps ------------------------------

V4L2_CAP_VIDEO_CAPTURE = 0x00000001
V4L2_CAP_VIDEO_OUTPUT = 0x00000002
V4L2_CAP_VIDEO_OVERLAY = 0x00000004
V4L2_CAP_VIDEO_CAPTURE_MPLANE = 0x00001000
V4L2_CAP_VIDEO_OUTPUT_MPLANE = 0x00002000
V4L2_CAP_VIDEO_M2M_MPLANE = 0x00004000
V4L2_CAP_VIDEO_M2M = 0x00008000
V4L2_CAP_EXT_PIX_FORMAT = 0x00200000
V4L2_CAP_META_CAPTURE = 0x00800000
V4L2_CAP_READWRITE = 0x01000000
V4L2_CAP_STREAMING = 0x04000000
V4L2_CAP_IO_MC = 0x20000000
V4L2_CAP_DEVICE_CAPS = 0x80000000

# --- v4l2_fmtdesc.flags ------------------------------------------------------

V4L2_FMT_FLAG_COMPRESSED = 0x0001
V4L2_FMT_FLAG_EMULATED = 0x0002

# --- enum v4l2_frmsizetypes / v4l2_frmivaltypes ------------------------------

V4L2_FRMSIZE_TYPE_DISCRETE = 1
V4L2_FRMSIZE_TYPE_CONTINUOUS = 2
V4L2_FRMSIZE_TYPE_STEPWISE = 3

V4L2_FRMIVAL_TYPE_DISCRETE = 1
V4L2_FRMIVAL_TYPE_CONTINUOUS = 2
V4L2_FRMIVAL_TYPE_STEPWISE = 3

# --- v4l2_captureparm --------------------------------------------------------

V4L2_MODE_HIGHQUALITY = 0x0001
V4L2_CAP_TIMEPERFRAME = 0x1000

# --- v4l2_requestbuffers.capabilities ----------------------------------------

V4L2_BUF_CAP_SUPPORTS_MMAP = 1 << 0
V4L2_BUF_CAP_SUPPORTS_USERPTR = 1 << 1
V4L2_BUF_CAP_SUPPORTS_DMABUF = 1 << 2
V4L2_BUF_CAP_SUPPORTS_REQUESTS = 1 << 3
V4L2_BUF_CAP_SUPPORTS_ORPHANED_BUFS = 1 << 4
V4L2_BUF_CAP_SUPPORTS_M2M_HOLD_CAPTURE_BUF = 1 << 5
V4L2_BUF_CAP_SUPPORTS_MMAP_CACHE_HINTS = 1 << 6

V4L2_MEMORY_FLAG_NON_COHERENT = 1 << 0

# --- v4l2_buffer.flags -------------------------------------------------------

V4L2_BUF_FLAG_MAPPED = 0x00000001
V4L2_BUF_FLAG_QUEUED = 0x00000002
V4L2_BUF_FLAG_DONE = 0x00000004
V4L2_BUF_FLAG_KEYFRAME = 0x00000008
V4L2_BUF_FLAG_PFRAME = 0x00000010
V4L2_BUF_FLAG_BFRAME = 0x00000020
V4L2_BUF_FLAG_ERROR = 0x00000040
V4L2_BUF_FLAG_IN_REQUEST = 0x00000080
V4L2_BUF_FLAG_TIMECODE = 0x00000100
V4L2_BUF_FLAG_PREPARED = 0x00000400
V4L2_BUF_FLAG_NO_CACHE_INVALIDATE = 0x00000800
V4L2_BUF_FLAG_NO_CACHE_CLEAN = 0x00001000
V4L2_BUF_FLAG_TIMESTAMP_MASK = 0x0000E000
V4L2_BUF_FLAG_TIMESTAMP_UNKNOWN = 0x00000000
V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC = 0x00002000
V4L2_BUF_FLAG_TIMESTAMP_COPY = 0x00004000
V4L2_BUF_FLAG_TSTAMP_SRC_MASK = 0x00070000
V4L2_BUF_FLAG_TSTAMP_SRC_EOF = 0x00000000
V4L2_BUF_FLAG_TSTAMP_SRC_SOE = 0x00010000
V4L2_BUF_FLAG_LAST = 0x00100000
V4L2_BUF_FLAG_REQUEST_FD = 0x00800000

# --- pixel formats (FourCC) --------------------------------------------------

V4L2_PIX_FMT_GREY = fourcc("GREY")
V4L2_PIX_FMT_YUYV = fourcc("YUYV")
V4L2_PIX_FMT_UYVY = fourcc("UYVY")
V4L2_PIX_FMT_RGB24 = fourcc("RGB3")
V4L2_PIX_FMT_BGR24 = fourcc("BGR3")
V4L2_PIX_FMT_NV12 = fourcc("NV12")
V4L2_PIX_FMT_YUV420 = fourcc("YU12")
V4L2_PIX_FMT_MJPEG = fourcc("MJPG")
V4L2_PIX_FMT_NV21 = fourcc("NV21")
# the same 4:2:0 layouts with each plane in a buffer of its own (multi-planar API)
V4L2_PIX_FMT_NV12M = fourcc("NM12")
V4L2_PIX_FMT_NV21M = fourcc("NM21")
V4L2_PIX_FMT_YUV420M = fourcc("YM12")

# --- controls (<linux/v4l2-controls.h> and the control part of videodev2.h) --

V4L2_CTRL_CLASS_USER = 0x00980000
V4L2_CTRL_CLASS_CAMERA = 0x009A0000
V4L2_CID_BASE = V4L2_CTRL_CLASS_USER | 0x900
V4L2_CID_USER_CLASS = V4L2_CTRL_CLASS_USER | 1
V4L2_CID_BRIGHTNESS = V4L2_CID_BASE + 0
V4L2_CID_GAIN = V4L2_CID_BASE + 19
V4L2_CID_POWER_LINE_FREQUENCY = V4L2_CID_BASE + 24
V4L2_CID_WHITE_BALANCE_TEMPERATURE = V4L2_CID_BASE + 26
V4L2_CID_CAMERA_CLASS_BASE = V4L2_CTRL_CLASS_CAMERA | 0x900
V4L2_CID_CAMERA_CLASS = V4L2_CTRL_CLASS_CAMERA | 1
V4L2_CID_EXPOSURE_AUTO = V4L2_CID_CAMERA_CLASS_BASE + 1
V4L2_CID_EXPOSURE_ABSOLUTE = V4L2_CID_CAMERA_CLASS_BASE + 2
V4L2_CID_FOCUS_ABSOLUTE = V4L2_CID_CAMERA_CLASS_BASE + 10

V4L2_CTRL_ID_MASK = 0x0FFFFFFF
V4L2_CTRL_MAX_DIMS = 4
V4L2_CTRL_WHICH_CUR_VAL = 0
V4L2_CTRL_WHICH_DEF_VAL = 0x0F000000

# enum v4l2_ctrl_type (the scalar ones)
V4L2_CTRL_TYPE_INTEGER = 1
V4L2_CTRL_TYPE_BOOLEAN = 2
V4L2_CTRL_TYPE_MENU = 3
V4L2_CTRL_TYPE_BUTTON = 4
V4L2_CTRL_TYPE_INTEGER64 = 5
V4L2_CTRL_TYPE_CTRL_CLASS = 6
V4L2_CTRL_TYPE_STRING = 7
V4L2_CTRL_TYPE_BITMASK = 8
V4L2_CTRL_TYPE_INTEGER_MENU = 9

V4L2_CTRL_FLAG_DISABLED = 0x0001
V4L2_CTRL_FLAG_GRABBED = 0x0002
V4L2_CTRL_FLAG_READ_ONLY = 0x0004
V4L2_CTRL_FLAG_UPDATE = 0x0008
V4L2_CTRL_FLAG_INACTIVE = 0x0010
V4L2_CTRL_FLAG_SLIDER = 0x0020
V4L2_CTRL_FLAG_WRITE_ONLY = 0x0040
V4L2_CTRL_FLAG_VOLATILE = 0x0080
V4L2_CTRL_FLAG_HAS_PAYLOAD = 0x0100
V4L2_CTRL_FLAG_NEXT_CTRL = 0x80000000
V4L2_CTRL_FLAG_NEXT_COMPOUND = 0x40000000

# --- structs -----------------------------------------------------------------


class timeval(Structure):
    """``struct timeval`` as the x86_64/arm64 ABI lays it out (16 bytes)."""

    _fields_ = [("tv_sec", c_long), ("tv_usec", c_long)]


class v4l2_capability(Structure):
    """VIDIOC_QUERYCAP: what the driver and this device node can do."""

    _fields_ = [
        ("driver", c_uint8 * 16),
        ("card", c_uint8 * 32),
        ("bus_info", c_uint8 * 32),
        ("version", c_uint32),
        ("capabilities", c_uint32),
        ("device_caps", c_uint32),
        ("reserved", c_uint32 * 3),
    ]


class v4l2_rect(Structure):
    _fields_ = [
        ("left", c_int32),
        ("top", c_int32),
        ("width", c_uint32),
        ("height", c_uint32),
    ]


class v4l2_fract(Structure):
    """A fraction: ``numerator / denominator`` (a frame interval in seconds)."""

    _fields_ = [("numerator", c_uint32), ("denominator", c_uint32)]


class v4l2_fmtdesc(Structure):
    """VIDIOC_ENUM_FMT: one pixel format the device offers."""

    _fields_ = [
        ("index", c_uint32),
        ("type", c_uint32),
        ("flags", c_uint32),
        ("description", c_uint8 * 32),
        ("pixelformat", c_uint32),
        ("mbus_code", c_uint32),
        ("reserved", c_uint32 * 3),
    ]


class v4l2_frmsize_discrete(Structure):
    _fields_ = [("width", c_uint32), ("height", c_uint32)]


class v4l2_frmsize_stepwise(Structure):
    _fields_ = [
        ("min_width", c_uint32),
        ("max_width", c_uint32),
        ("step_width", c_uint32),
        ("min_height", c_uint32),
        ("max_height", c_uint32),
        ("step_height", c_uint32),
    ]


class _v4l2_frmsizeenum_u(Union):
    _fields_ = [
        ("discrete", v4l2_frmsize_discrete),
        ("stepwise", v4l2_frmsize_stepwise),
    ]


class v4l2_frmsizeenum(Structure):
    """VIDIOC_ENUM_FRAMESIZES: one frame size (or a range) for a format."""

    _anonymous_ = ("_u",)
    _fields_ = [
        ("index", c_uint32),
        ("pixel_format", c_uint32),
        ("type", c_uint32),
        ("_u", _v4l2_frmsizeenum_u),
        ("reserved", c_uint32 * 2),
    ]


class v4l2_frmival_stepwise(Structure):
    _fields_ = [("min", v4l2_fract), ("max", v4l2_fract), ("step", v4l2_fract)]


class _v4l2_frmivalenum_u(Union):
    _fields_ = [("discrete", v4l2_fract), ("stepwise", v4l2_frmival_stepwise)]


class v4l2_frmivalenum(Structure):
    """VIDIOC_ENUM_FRAMEINTERVALS: one frame interval for a format and size."""

    _anonymous_ = ("_u",)
    _fields_ = [
        ("index", c_uint32),
        ("pixel_format", c_uint32),
        ("width", c_uint32),
        ("height", c_uint32),
        ("type", c_uint32),
        ("_u", _v4l2_frmivalenum_u),
        ("reserved", c_uint32 * 2),
    ]


class v4l2_timecode(Structure):
    _fields_ = [
        ("type", c_uint32),
        ("flags", c_uint32),
        ("frames", c_uint8),
        ("seconds", c_uint8),
        ("minutes", c_uint8),
        ("hours", c_uint8),
        ("userbits", c_uint8 * 4),
    ]


class _v4l2_pix_format_enc(Union):
    _fields_ = [("ycbcr_enc", c_uint32), ("hsv_enc", c_uint32)]


class v4l2_pix_format(Structure):
    """A single-planar image format (``v4l2_format.fmt.pix``)."""

    _anonymous_ = ("_enc",)
    _fields_ = [
        ("width", c_uint32),
        ("height", c_uint32),
        ("pixelformat", c_uint32),
        ("field", c_uint32),
        ("bytesperline", c_uint32),
        ("sizeimage", c_uint32),
        ("colorspace", c_uint32),
        ("priv", c_uint32),
        ("flags", c_uint32),
        ("_enc", _v4l2_pix_format_enc),
        ("quantization", c_uint32),
        ("xfer_func", c_uint32),
    ]


class v4l2_plane_pix_format(Structure):
    """One plane of a multi-planar format (packed in the kernel)."""

    _pack_ = 1
    _fields_ = [
        ("sizeimage", c_uint32),
        ("bytesperline", c_uint32),
        ("reserved", c_uint16 * 6),
    ]


class _v4l2_pix_format_mplane_enc(Union):
    _pack_ = 1
    _fields_ = [("ycbcr_enc", c_uint8), ("hsv_enc", c_uint8)]


class v4l2_pix_format_mplane(Structure):
    """A multi-planar image format (``v4l2_format.fmt.pix_mp``; packed)."""

    _pack_ = 1
    _anonymous_ = ("_enc",)
    _fields_ = [
        ("width", c_uint32),
        ("height", c_uint32),
        ("pixelformat", c_uint32),
        ("field", c_uint32),
        ("colorspace", c_uint32),
        ("plane_fmt", v4l2_plane_pix_format * VIDEO_MAX_PLANES),
        ("num_planes", c_uint8),
        ("flags", c_uint8),
        ("_enc", _v4l2_pix_format_mplane_enc),
        ("quantization", c_uint8),
        ("xfer_func", c_uint8),
        ("reserved", c_uint8 * 7),
    ]


class v4l2_window(Structure):
    """An overlay window; here because its pointers give ``fmt`` its alignment."""

    _fields_ = [
        ("w", v4l2_rect),
        ("field", c_uint32),
        ("chromakey", c_uint32),
        ("clips", c_void_p),  # struct v4l2_clip *
        ("clipcount", c_uint32),
        ("bitmap", c_void_p),
        ("global_alpha", c_uint8),
    ]


class _v4l2_format_fmt(Union):
    _fields_ = [
        ("pix", v4l2_pix_format),
        ("pix_mp", v4l2_pix_format_mplane),
        ("win", v4l2_window),
        ("raw_data", c_uint8 * 200),
    ]


class v4l2_format(Structure):
    """VIDIOC_G_FMT / S_FMT / TRY_FMT: the stream's data format."""

    _fields_ = [("type", c_uint32), ("fmt", _v4l2_format_fmt)]


class v4l2_captureparm(Structure):
    _fields_ = [
        ("capability", c_uint32),
        ("capturemode", c_uint32),
        ("timeperframe", v4l2_fract),
        ("extendedmode", c_uint32),
        ("readbuffers", c_uint32),
        ("reserved", c_uint32 * 4),
    ]


class v4l2_outputparm(Structure):
    _fields_ = [
        ("capability", c_uint32),
        ("outputmode", c_uint32),
        ("timeperframe", v4l2_fract),
        ("extendedmode", c_uint32),
        ("writebuffers", c_uint32),
        ("reserved", c_uint32 * 4),
    ]


class _v4l2_streamparm_parm(Union):
    _fields_ = [
        ("capture", v4l2_captureparm),
        ("output", v4l2_outputparm),
        ("raw_data", c_uint8 * 200),
    ]


class v4l2_streamparm(Structure):
    """VIDIOC_G_PARM / S_PARM: streaming parameters (the frame interval)."""

    _fields_ = [("type", c_uint32), ("parm", _v4l2_streamparm_parm)]


class v4l2_requestbuffers(Structure):
    """VIDIOC_REQBUFS: allocate (count > 0) or free (count == 0) buffers."""

    _fields_ = [
        ("count", c_uint32),
        ("type", c_uint32),
        ("memory", c_uint32),
        ("capabilities", c_uint32),
        ("flags", c_uint8),
        ("reserved", c_uint8 * 3),
    ]


class _v4l2_plane_m(Union):
    _fields_ = [("mem_offset", c_uint32), ("userptr", c_ulong), ("fd", c_int32)]


class v4l2_plane(Structure):
    """One plane of a multi-planar buffer (``v4l2_buffer.m.planes[i]``)."""

    _fields_ = [
        ("bytesused", c_uint32),
        ("length", c_uint32),
        ("m", _v4l2_plane_m),
        ("data_offset", c_uint32),
        ("reserved", c_uint32 * 11),
    ]


class _v4l2_buffer_m(Union):
    _fields_ = [
        ("offset", c_uint32),
        ("userptr", c_ulong),
        ("planes", POINTER(v4l2_plane)),
        ("fd", c_int32),
    ]


class _v4l2_buffer_request(Union):
    _fields_ = [("request_fd", c_int32), ("reserved", c_uint32)]


class v4l2_buffer(Structure):
    """VIDIOC_QUERYBUF / QBUF / DQBUF: one video buffer.

    For a multi-planar queue, ``m.planes`` points to an array of
    :class:`v4l2_plane` of ``length`` entries, which the caller keeps alive
    for the duration of the call.
    """

    _anonymous_ = ("_request",)
    _fields_ = [
        ("index", c_uint32),
        ("type", c_uint32),
        ("bytesused", c_uint32),
        ("flags", c_uint32),
        ("field", c_uint32),
        ("timestamp", timeval),
        ("timecode", v4l2_timecode),
        ("sequence", c_uint32),
        ("memory", c_uint32),
        ("m", _v4l2_buffer_m),
        ("length", c_uint32),
        ("reserved2", c_uint32),
        ("_request", _v4l2_buffer_request),
    ]


class v4l2_exportbuffer(Structure):
    """VIDIOC_EXPBUF: export one plane of an MMAP buffer as a DMA-BUF fd."""

    _fields_ = [
        ("type", c_uint32),
        ("index", c_uint32),
        ("plane", c_uint32),
        ("flags", c_uint32),
        ("fd", c_int32),
        ("reserved", c_uint32 * 11),
    ]


class v4l2_query_ext_ctrl(Structure):
    """VIDIOC_QUERY_EXT_CTRL: one control's type, name, range and flags.

    With ``id | V4L2_CTRL_FLAG_NEXT_CTRL`` the driver answers for the next
    control after ``id``: how every control is enumerated.
    """

    _fields_ = [
        ("id", c_uint32),
        ("type", c_uint32),
        ("name", c_uint8 * 32),
        ("minimum", c_int64),
        ("maximum", c_int64),
        ("step", c_uint64),
        ("default_value", c_int64),
        ("flags", c_uint32),
        ("elem_size", c_uint32),
        ("elems", c_uint32),
        ("nr_of_dims", c_uint32),
        ("dims", c_uint32 * V4L2_CTRL_MAX_DIMS),
        ("reserved", c_uint32 * 32),
    ]


class _v4l2_querymenu_u(Union):
    _pack_ = 1
    _fields_ = [("name", c_uint8 * 32), ("value", c_int64)]


class v4l2_querymenu(Structure):
    """VIDIOC_QUERYMENU: one item of a menu control (``name``) or of an
    integer menu (``value``); packed in the kernel."""

    _pack_ = 1
    _anonymous_ = ("_u",)
    _fields_ = [
        ("id", c_uint32),
        ("index", c_uint32),
        ("_u", _v4l2_querymenu_u),
        ("reserved", c_uint32),
    ]


class _v4l2_ext_control_u(Union):
    _pack_ = 1
    _fields_ = [
        ("value", c_int32),
        ("value64", c_int64),
        ("string", ctypes.c_char_p),
        ("ptr", c_void_p),
    ]


class v4l2_ext_control(Structure):
    """One control's id and value in VIDIOC_G/S/TRY_EXT_CTRLS (packed)."""

    _pack_ = 1
    _anonymous_ = ("_u",)
    _fields_ = [
        ("id", c_uint32),
        ("size", c_uint32),
        ("reserved2", c_uint32 * 1),
        ("_u", _v4l2_ext_control_u),
    ]


class _v4l2_ext_controls_which(Union):
    _fields_ = [("ctrl_class", c_uint32), ("which", c_uint32)]


class v4l2_ext_controls(Structure):
    """VIDIOC_G_EXT_CTRLS / S_EXT_CTRLS / TRY_EXT_CTRLS: ``count`` controls
    at ``controls``; on failure ``error_idx`` says which one."""

    _anonymous_ = ("_which",)
    _fields_ = [
        ("_which", _v4l2_ext_controls_which),
        ("count", c_uint32),
        ("error_idx", c_uint32),
        ("request_fd", c_int32),
        ("reserved", c_uint32 * 1),
        ("controls", POINTER(v4l2_ext_control)),
    ]


#: The structs named as in the kernel header, each checked against it.
STRUCTS: tuple[type[ctypes.Structure], ...] = (
    timeval,
    v4l2_capability,
    v4l2_rect,
    v4l2_fract,
    v4l2_fmtdesc,
    v4l2_frmsize_discrete,
    v4l2_frmsize_stepwise,
    v4l2_frmsizeenum,
    v4l2_frmival_stepwise,
    v4l2_frmivalenum,
    v4l2_timecode,
    v4l2_pix_format,
    v4l2_plane_pix_format,
    v4l2_pix_format_mplane,
    v4l2_window,
    v4l2_format,
    v4l2_captureparm,
    v4l2_outputparm,
    v4l2_streamparm,
    v4l2_requestbuffers,
    v4l2_plane,
    v4l2_buffer,
    v4l2_exportbuffer,
    v4l2_query_ext_ctrl,
    v4l2_querymenu,
    v4l2_ext_control,
    v4l2_ext_controls,
)

# --- request codes -----------------------------------------------------------

VIDIOC_QUERYCAP = _IOR("V", 0, v4l2_capability)
VIDIOC_ENUM_FMT = _IOWR("V", 2, v4l2_fmtdesc)
VIDIOC_G_FMT = _IOWR("V", 4, v4l2_format)
VIDIOC_S_FMT = _IOWR("V", 5, v4l2_format)
VIDIOC_REQBUFS = _IOWR("V", 8, v4l2_requestbuffers)
VIDIOC_QUERYBUF = _IOWR("V", 9, v4l2_buffer)
VIDIOC_QBUF = _IOWR("V", 15, v4l2_buffer)
VIDIOC_EXPBUF = _IOWR("V", 16, v4l2_exportbuffer)
VIDIOC_DQBUF = _IOWR("V", 17, v4l2_buffer)
VIDIOC_STREAMON = _IOW("V", 18, ctypes.c_int)
VIDIOC_STREAMOFF = _IOW("V", 19, ctypes.c_int)
VIDIOC_G_PARM = _IOWR("V", 21, v4l2_streamparm)
VIDIOC_S_PARM = _IOWR("V", 22, v4l2_streamparm)
VIDIOC_TRY_FMT = _IOWR("V", 64, v4l2_format)
VIDIOC_ENUM_FRAMESIZES = _IOWR("V", 74, v4l2_frmsizeenum)
VIDIOC_ENUM_FRAMEINTERVALS = _IOWR("V", 75, v4l2_frmivalenum)
VIDIOC_QUERYMENU = _IOWR("V", 37, v4l2_querymenu)
VIDIOC_G_EXT_CTRLS = _IOWR("V", 71, v4l2_ext_controls)
VIDIOC_S_EXT_CTRLS = _IOWR("V", 72, v4l2_ext_controls)
VIDIOC_TRY_EXT_CTRLS = _IOWR("V", 73, v4l2_ext_controls)
VIDIOC_QUERY_EXT_CTRL = _IOWR("V", 103, v4l2_query_ext_ctrl)


def c_string(field: ctypes.Array[Any]) -> str:
    """A NUL-terminated ``__u8[]`` field (driver, card, description) as text."""
    raw = bytes(field)
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
