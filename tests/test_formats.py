"""Pixel formats: plane layouts and the numpy views built on them."""

import pytest

from framebus import PIXEL_FORMATS, FramebusError, FrameFormat

W, H = 64, 48

SHAPES = {
    "GREY": ((H, W), [(H, W)]),
    "YUYV": ((H, W, 2), [(H, W, 2)]),
    "UYVY": ((H, W, 2), [(H, W, 2)]),
    "RGB3": ((H, W, 3), [(H, W, 3)]),
    "BGR3": ((H, W, 3), [(H, W, 3)]),
    "XR24": ((H, W, 4), [(H, W, 4)]),
    "XB24": ((H, W, 4), [(H, W, 4)]),
    "NV12": ((W * H * 3 // 2,), [(H, W), (H // 2, W // 2, 2)]),
    "NV21": ((W * H * 3 // 2,), [(H, W), (H // 2, W // 2, 2)]),
    "YU12": ((W * H * 3 // 2,), [(H, W), (H // 2, W // 2), (H // 2, W // 2)]),
}


@pytest.mark.parametrize("fourcc", sorted(SHAPES))
def test_views_have_the_documented_shapes(fourcc):
    fmt = FrameFormat(W, H, fourcc)
    views = fmt.views(bytearray(fmt.sizeimage))
    array_shape, plane_shapes = SHAPES[fourcc]
    assert views.array.shape == array_shape
    assert [p.shape for p in views.planes] == plane_shapes


def test_every_listed_format_is_covered():
    assert set(PIXEL_FORMATS) == set(SHAPES) | {"MJPG"}


@pytest.mark.parametrize("fourcc", ["GREY", "YUYV", "RGB3"])
def test_row_padding_appears_as_stride_not_columns(fourcc):
    tight = FrameFormat(W, H, fourcc)
    padded = FrameFormat(W, H, fourcc, bytesperline=tight.bytesperline + 64)
    memory = bytearray(padded.sizeimage)
    view = padded.views(memory).array
    assert view.shape == tight.views(bytearray(tight.sizeimage)).array.shape
    assert view.strides[0] == tight.bytesperline + 64
    view[1, 0] = 7  # row 1 starts one padded stride in
    assert memory[padded.bytesperline] == 7


def test_nv12_planes_sit_where_v4l2_puts_them():
    fmt = FrameFormat(W, H, "NV12", bytesperline=W + 32)
    memory = bytearray(fmt.sizeimage)
    y, uv = fmt.views(memory).planes
    uv[0, 0, 1] = 9  # first V sample: after the whole padded Y plane, then one U byte
    assert memory[fmt.bytesperline * H + 1] == 9
    assert y.strides == (W + 32, 1) and uv.strides == (W + 32, 2, 1)


def test_yu12_chroma_rows_are_half_the_luma_stride():
    fmt = FrameFormat(W, H, "YU12", bytesperline=W + 32)
    y, u, v = fmt.views(bytearray(fmt.sizeimage)).planes
    assert u.strides[0] == v.strides[0] == (W + 32) // 2
    assert fmt.sizeimage == (W + 32) * H * 3 // 2


def test_mjpg_buffer_is_sizeimage_and_flat():
    fmt = FrameFormat(W, H, "MJPG", sizeimage=10_000)
    assert fmt.compressed and fmt.views(bytearray(10_000)).array.shape == (10_000,)


def test_views_of_read_only_memory_are_read_only():
    fmt = FrameFormat(W, H, "NV12")
    views = fmt.views(bytes(fmt.sizeimage))
    assert not views.array.flags.writeable
    assert not any(p.flags.writeable for p in views.planes)
    with pytest.raises(ValueError):
        views.planes[0][0, 0] = 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(width=W, height=H, pixel_format="XXXX"), "unknown pixel format"),
    (dict(width=0, height=H), "out of range"),
    (dict(width=W, height=H, bytesperline=10), "less than a row"),
    (dict(width=63, height=H, pixel_format="NV12"), "even"),
    (dict(width=W, height=H, sizeimage=100), "less than a frame"),
    (dict(width="64", height=H), "non-negative int"),
])
def test_bad_formats_are_clear_errors(kwargs, message):
    with pytest.raises(FramebusError, match=message):
        FrameFormat(**kwargs)


def test_wire_round_trip():
    fmt = FrameFormat(W, H, "YUYV", bytesperline=256)
    assert FrameFormat.from_wire(fmt.to_wire()) == fmt
    with pytest.raises(FramebusError):
        FrameFormat.from_wire({"width": W, "bogus": 1})
