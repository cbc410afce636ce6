"""framebus.convert.to_bgr against conversions computed here, independently.

Each test builds a BGR picture, turns it into the pixel format with numpy
(BT.601 limited range, the formula written out below, not OpenCV's), lays it
into a buffer with or without padded rows (the padding filled with junk that
would show if it were read), and checks that to_bgr gives the picture back.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import cv2  # the cv extra, which `make test` installs
import numpy as np
import pytest

import framebus
from framebus.convert import _contiguous_i420, to_bgr
from framebus.formats import FrameFormat
from framebus.pattern import Pattern
from framebus.testing import synthetic_producer

W, H = 64, 48
RAW = [f for f in framebus.PIXEL_FORMATS if f != "MJPG"]
PAD = {"GREY": 16, "YUYV": 24, "UYVY": 40, "RGB3": 36, "BGR3": 12, "XR24": 20, "XB24": 8, "NV12": 64, "NV21": 48, "YU12": 32}


@dataclass
class FakeFrame:
    """A frame without a producer: what framebus.convert.FrameLike asks for."""

    format: FrameFormat
    planes: tuple[np.ndarray, ...]
    array: np.ndarray


def picture(w: int = W, h: int = H, seed: int = 1) -> np.ndarray:
    """A BGR picture of random colours in 2x2 blocks (so 4:2:0 chroma
    subsampling loses nothing)."""
    blocks = np.random.default_rng(seed).integers(0, 256, (h // 2, w // 2, 3), dtype=np.uint8)
    return np.repeat(np.repeat(blocks, 2, axis=0), 2, axis=1)


def smooth_picture(w: int = W, h: int = H) -> np.ndarray:
    """A BGR picture of gentle gradients (what JPEG keeps well)."""
    x, y = np.meshgrid(np.linspace(0, 1, w), np.linspace(0, 1, h))
    return u8(np.stack([255 * x, 255 * y, 128 + 100 * (x - y)], axis=-1))


def bgr_to_yuv(bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BT.601 limited range, full-resolution Y, U, V (float)."""
    b, g, r = (bgr[..., i].astype(np.float64) for i in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    return y, u, v


def yuv_to_bgr(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The inverse, for full-resolution Y, U, V planes. Luma below 16 (blacker
    than black, outside the limited range) reads as black."""
    y, u, v = (p.astype(np.float64) for p in (y, u, v))
    c, d, e = 1.164 * (np.maximum(y, 16) - 16), u - 128, v - 128
    bgr = np.stack([c + 2.018 * d, c - 0.391 * d - 0.813 * e, c + 1.596 * e], axis=-1)
    return np.clip(np.rint(bgr), 0, 255).astype(np.uint8)


def u8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def pack(bgr: np.ndarray, fourcc: str, padded: bool) -> FakeFrame:
    """`bgr` laid out in `fourcc`, rows padded or not; padding bytes are junk."""
    h, w = bgr.shape[:2]
    fmt = FrameFormat(w, h, fourcc, bytesperline=(w * _bpp(fourcc) + PAD[fourcc]) if padded else 0)
    memory = np.full(fmt.sizeimage, 0xA5, np.uint8)  # junk wherever nothing is written
    planes = fmt.views(memory).planes
    y, u, v = bgr_to_yuv(bgr)
    if fourcc == "GREY":
        planes[0][...] = bgr[..., 1]  # a grey picture: any channel
    elif fourcc in ("RGB3", "BGR3"):
        planes[0][...] = bgr[..., ::-1] if fourcc == "RGB3" else bgr
    elif fourcc in ("XR24", "XB24"):  # B, G, R, X and R, G, B, X in memory
        planes[0][..., :3] = bgr if fourcc == "XR24" else bgr[..., ::-1]
        planes[0][..., 3] = 0x5A  # the unused byte: junk that must not show
    elif fourcc in ("YUYV", "UYVY"):
        luma, chroma = (0, 1) if fourcc == "YUYV" else (1, 0)
        planes[0][..., luma] = u8(y)
        planes[0][:, 0::2, chroma] = u8(u[:, 0::2])
        planes[0][:, 1::2, chroma] = u8(v[:, 0::2])
    else:
        planes[0][...] = u8(y)
        if fourcc in ("NV12", "NV21"):
            first, second = (u, v) if fourcc == "NV12" else (v, u)
            planes[1][..., 0] = u8(first[0::2, 0::2])
            planes[1][..., 1] = u8(second[0::2, 0::2])
        else:
            planes[1][...] = u8(u[0::2, 0::2])
            planes[2][...] = u8(v[0::2, 0::2])
    memory.flags.writeable = False  # as a consumer sees it
    views = fmt.views(memory)
    return FakeFrame(fmt, views.planes, views.array)


def _bpp(fourcc: str) -> int:
    return {"YUYV": 2, "UYVY": 2, "RGB3": 3, "BGR3": 3, "XR24": 4, "XB24": 4}.get(fourcc, 1)


def reference(bgr: np.ndarray, fourcc: str) -> np.ndarray:
    """What `bgr` must come back as through `fourcc` (exact formats exactly)."""
    if fourcc == "GREY":
        return np.repeat(bgr[..., 1:2], 3, axis=2)
    if fourcc in ("RGB3", "BGR3", "XR24", "XB24"):
        return bgr
    return yuv_to_bgr(*(u8(p) for p in bgr_to_yuv(bgr)))


def error(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return float(diff.mean()), int(diff.max())


@pytest.mark.parametrize("padded", [False, True], ids=["tight", "padded"])
@pytest.mark.parametrize("fourcc", RAW)
def test_to_bgr_recovers_the_picture(fourcc, padded):
    bgr = picture()
    frame = pack(bgr, fourcc, padded)
    assert frame.format.bytesperline > W * _bpp(fourcc) or not padded
    out = to_bgr(frame)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8 and out.flags.writeable
    mean, worst = error(out, reference(bgr, fourcc))
    if fourcc in ("GREY", "RGB3", "BGR3", "XR24", "XB24"):
        assert worst == 0
    else:
        assert mean < 1.0 and worst <= 3, (mean, worst)


@pytest.mark.parametrize("fourcc", RAW)
def test_to_bgr_writes_into_dst_and_returns_it(fourcc):
    bgr = picture(seed=2)
    frame = pack(bgr, fourcc, padded=True)
    dst = np.zeros((H, W, 3), np.uint8)
    assert to_bgr(frame, dst) is dst
    np.testing.assert_array_equal(dst, to_bgr(frame))


def test_to_bgr_decodes_mjpg_up_to_bytesused():
    bgr = smooth_picture()
    ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 98])
    assert ok
    fmt = FrameFormat(W, H, "MJPG", sizeimage=jpeg.size + 4096)
    memory = np.full(fmt.sizeimage, 0xA5, np.uint8)
    memory[:jpeg.size] = jpeg.ravel()
    memory.flags.writeable = False
    views = fmt.views(memory)
    frame = FakeFrame(fmt, views.planes, views.array[:jpeg.size])
    mean, _ = error(to_bgr(frame), bgr)
    assert mean < 2.0
    dst = np.zeros((H, W, 3), np.uint8)
    assert to_bgr(frame, dst) is dst and error(dst, bgr)[0] < 2.0


def test_to_bgr_says_when_an_mjpg_frame_is_not_a_jpeg_of_the_stream():
    fmt = FrameFormat(W, H, "MJPG", sizeimage=8192)
    junk = np.full(100, 7, np.uint8)
    with pytest.raises(framebus.FramebusError, match="not a JPEG"):
        to_bgr(FakeFrame(fmt, (junk,), junk))
    ok, small = cv2.imencode(".jpg", picture(32, 16))
    with pytest.raises(framebus.FramebusError, match="decodes to 32x16, but the stream is 64x48"):
        to_bgr(FakeFrame(fmt, (small,), small))


def test_padded_nv12_defeats_the_naive_reshape_but_not_to_bgr():
    w, h = 640, 480  # 704-byte rows, as the camera
    bgr = picture(w, h, seed=4)
    frame = pack(bgr, "NV12", padded=True)
    assert frame.format.bytesperline == 704 and frame.array.ndim == 1
    want = reference(bgr, "NV12")
    naive = cv2.cvtColor(frame.array[:h * 3 // 2 * w].reshape(h * 3 // 2, w),
                         cv2.COLOR_YUV2BGR_NV12)  # no error, wrong colours
    assert error(naive, want)[0] > 20
    mean, worst = error(to_bgr(frame), want)
    assert mean < 1.0 and worst <= 3


def test_tight_yu12_is_read_in_place_and_padded_yu12_is_not():
    tight = pack(picture(seed=5), "YU12", padded=False)
    whole = _contiguous_i420(tight.array, *tight.planes, tight.format)
    assert whole is not None and whole.shape == (H * 3 // 2, W)
    assert np.shares_memory(whole, tight.array)
    padded = pack(picture(seed=5), "YU12", padded=True)
    assert _contiguous_i420(padded.array, *padded.planes, padded.format) is None
    np.testing.assert_array_equal(to_bgr(tight), to_bgr(padded))


@pytest.mark.parametrize("bad, why", [
    (np.zeros((H, W, 3), np.float32), "uint8 array of shape"),
    (np.zeros((H, W + 1, 3), np.uint8), "uint8 array of shape"),
    (np.zeros((W, H, 3), np.uint8), "uint8 array of shape"),
    (np.zeros((H, W * 2, 3), np.uint8)[:, ::2], "contiguous"),
    ([[0]], "not list"),
])
def test_a_dst_that_cannot_hold_the_image_is_a_value_error(bad, why):
    frame = pack(picture(), "NV12", padded=False)
    with pytest.raises(ValueError, match=why) as info:
        to_bgr(frame, bad)
    assert isinstance(info.value, framebus.FramebusError)


def test_a_read_only_dst_is_a_value_error():
    dst = np.zeros((H, W, 3), np.uint8)
    dst.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        to_bgr(pack(picture(), "YUYV", padded=False), dst)


def test_without_opencv_to_bgr_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # `import cv2` raises ImportError
    with pytest.raises(framebus.FramebusError, match=r"pip install 'framebus\[cv\]'"):
        to_bgr(pack(picture(), "GREY", padded=False))


def test_a_padded_nv12_stream_from_a_real_producer():
    w, h = 160, 120
    with synthetic_producer(width=w, height=h, pixel_format="NV12", bytesperline=192,
                            fps=50) as path:
        with framebus.Consumer(path, name="to-bgr") as cam:
            assert cam.format.bytesperline == 192
            for _ in range(5):  # read, then check valid(): a stalled test may lose a lease
                with cam.get(timeout=10) as frame:
                    out = to_bgr(FakeFrame(cam.format, frame.planes, frame.array))
                    y, uv = (np.array(p) for p in frame.planes)
                    seq = frame.seq
                    if frame.valid():
                        break
    assert Pattern(cam.format).check((y, uv), seq)
    up = np.repeat(np.repeat(uv, 2, axis=0), 2, axis=1)  # nearest-neighbour chroma
    mean, worst = error(out, yuv_to_bgr(y, up[..., 0], up[..., 1]))
    assert mean < 1.0 and worst <= 3, (mean, worst)


@pytest.mark.parametrize("fourcc", ["NV12", "MJPG"])
def test_a_producers_buffer_converts_too(fourcc):
    fmt = FrameFormat(W, H, fourcc, bytesperline=W + 32 if fourcc == "NV12" else 0)
    pool = framebus.BufferPool.allocate(fmt, 1)
    try:
        buffer = pool.buffers[0]
        Pattern(fmt).draw(buffer.planes, 9)  # an MJPG buffer keeps junk after the JPEG
        assert [p.shape for p in buffer.planes] == [p.shape for p in fmt.planes]
        bgr = to_bgr(buffer)
        planes = [np.array(p) for p in buffer.planes]
    finally:
        pool.close()
    if fourcc == "MJPG":  # flat 8x8 blocks of grey; the first 8 hold the stamp 9, 0, 0...
        assert (bgr[:8, :8] == 9).all() and (bgr[:8, 8:16] == 0).all()
        assert (bgr[8:16, :8] == (16 + 4 * 9) % 256).all()
    else:
        up = np.repeat(np.repeat(planes[1], 2, axis=0), 2, axis=1)
        mean, worst = error(bgr, yuv_to_bgr(planes[0], up[..., 0], up[..., 1]))
        assert mean < 1.0 and worst <= 3
