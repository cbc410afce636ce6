"""The ctypes V4L2 and DMA-BUF declarations agree with the kernel headers.

A C program is generated from the Python declarations themselves (every
struct in ``STRUCTS``, walked field by field through nested structs, unions
and arrays of structs, and every upper-case integer constant), compiled with
gcc against ``<linux/videodev2.h>`` and ``<linux/dma-buf.h>``, and run. It
prints what the C compiler knows; each struct and each constant is then
compared with what ctypes computes, as its own test case. A field added on the
Python side is checked without touching this file; a field the header lacks
fails to compile.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from framebus.linux import dma_buf, ioctl, videodev2

MODULES: tuple[ModuleType, ...] = (videodev2, dma_buf)
STRUCTS: list[type] = [s for m in MODULES for s in m.STRUCTS]  # type: ignore[attr-defined]
CONSTANT_NAME = re.compile(r"^(V4L2_|VIDIOC_|VIDEO_|DMA_BUF_)[A-Z0-9_]+$")
CONSTANTS: dict[str, int] = {
    name: value
    for module in MODULES
    for name, value in vars(module).items()
    if CONSTANT_NAME.match(name) and isinstance(value, int)
}

# --- the checker -------------------------------------------------------------

Layout = dict[str, tuple[int, int]]


def _is_aggregate(ctype: type) -> bool:
    return issubclass(ctype, (ctypes.Structure, ctypes.Union))


def _walk(cls: type, prefix: str, base: int) -> Iterator[tuple[str, int, int]]:
    """Yield ``(C member designator, offset, size)`` for every field of ``cls``.

    Anonymous members (listed in ``_anonymous_``) vanish from the designator,
    as in C; arrays of structs are walked through their first element.
    """
    anonymous = set(getattr(cls, "_anonymous_", ()))
    for name, ctype, *_bits in cls._fields_:
        offset = base + getattr(cls, name).offset
        if name in anonymous:
            yield from _walk(ctype, prefix, offset)
            continue
        path = prefix + name
        yield path, offset, ctypes.sizeof(ctype)
        if _is_aggregate(ctype):
            yield from _walk(ctype, path + ".", offset)
        elif issubclass(ctype, ctypes.Array) and _is_aggregate(ctype._type_):
            yield from _walk(ctype._type_, path + "[0].", offset)


def python_layout(cls: type, cname: str | None = None) -> Layout:
    """What ctypes says: ``{name: (sizeof, alignof), name.field: (offsetof, sizeof)}``."""
    cname = cname or cls.__name__
    layout: Layout = {cname: (ctypes.sizeof(cls), ctypes.alignment(cls))}
    for path, offset, size in _walk(cls, "", 0):
        layout[f"{cname}.{path}"] = (offset, size)
    return layout


def c_source(structs: list[type], constants: dict[str, int]) -> str:
    """A C program printing the C compiler's view of the same names."""
    lines = [
        "#include <stdio.h>",
        "#include <stddef.h>",
        "#include <sys/time.h>",
        "#include <linux/videodev2.h>",
        "#include <linux/dma-buf.h>",
        "",
        "int main(void)",
        "{",
    ]
    for cls in structs:
        name = cls.__name__
        lines.append(
            f'\tprintf("{name} %zu %zu\\n", sizeof(struct {name}), _Alignof(struct {name}));'
        )
        for path, _offset, _size in _walk(cls, "", 0):
            lines.append(
                f'\tprintf("{name}.{path} %zu %zu\\n", offsetof(struct {name}, {path}), '
                f"sizeof(((struct {name} *)0)->{path}));"
            )
    for cname in constants:
        lines.append(f'\tprintf("{cname} %llu\\n", (unsigned long long)({cname}));')
    lines += ["\treturn 0;", "}", ""]
    return "\n".join(lines)


def parse_c_output(text: str) -> tuple[Layout, dict[str, int]]:
    """Split the program's output into struct layouts and constant values."""
    layout: Layout = {}
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, *numbers = line.split()
        if len(numbers) == 2:
            layout[key] = (int(numbers[0]), int(numbers[1]))
        else:
            values[key] = int(numbers[0])
    return layout, values


def compare_layout(python: Layout, kernel: Layout) -> list[str]:
    """Every difference between the two views of the names in ``python``."""
    problems = []
    for key, (py_a, py_b) in python.items():
        if key not in kernel:
            problems.append(f"{key}: not in the C program's output")
            continue
        c_a, c_b = kernel[key]
        what = ("sizeof", "alignof") if "." not in key else ("offsetof", "sizeof")
        if py_a != c_a:
            problems.append(f"{key}: {what[0]} is {py_a} in Python, {c_a} in C")
        if py_b != c_b:
            problems.append(f"{key}: {what[1]} is {py_b} in Python, {c_b} in C")
    return problems


def compile_and_run(source: str, workdir: Path) -> str:
    """Compile ``source`` with gcc in ``workdir``, run it, return its stdout."""
    gcc = shutil.which("gcc")
    assert gcc, "gcc is needed to check the V4L2 ABI against the kernel headers"
    c_file = workdir / "abi.c"
    exe = workdir / "abi"
    c_file.write_text(source)
    subprocess.run(
        [gcc, "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-o", str(exe), str(c_file)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return subprocess.run([str(exe)], check=True, capture_output=True, text=True, timeout=10).stdout


@pytest.fixture(scope="module")
def kernel_view(tmp_path_factory: pytest.TempPathFactory) -> tuple[Layout, dict[str, int]]:
    """The headers' layouts and constants, as compiled by gcc (once per module)."""
    workdir = tmp_path_factory.mktemp("abi")
    return parse_c_output(compile_and_run(c_source(STRUCTS, CONSTANTS), workdir))


# --- the checks --------------------------------------------------------------


@pytest.mark.parametrize("struct", STRUCTS, ids=lambda s: s.__name__)
def test_struct_layout_matches_kernel_header(
    struct: type, kernel_view: tuple[Layout, dict[str, int]]
) -> None:
    layout, _ = kernel_view
    problems = compare_layout(python_layout(struct), layout)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", sorted(CONSTANTS))
def test_constant_matches_kernel_header(
    name: str, kernel_view: tuple[Layout, dict[str, int]]
) -> None:
    _, values = kernel_view
    assert CONSTANTS[name] == values[name], f"{name}: 0x{CONSTANTS[name]:x} != 0x{values[name]:x}"


def test_timeval_in_v4l2_buffer_is_16_bytes_on_64_bit() -> None:
    assert ctypes.sizeof(videodev2.timeval) == 2 * ctypes.sizeof(ctypes.c_long)
    if ctypes.sizeof(ctypes.c_void_p) == 8:
        assert ctypes.sizeof(videodev2.v4l2_buffer) == 88


def test_every_request_code_is_checked() -> None:
    wanted = {
        "QUERYCAP", "ENUM_FMT", "ENUM_FRAMESIZES", "ENUM_FRAMEINTERVALS", "G_FMT", "S_FMT",
        "TRY_FMT", "G_PARM", "S_PARM", "REQBUFS", "QUERYBUF", "QBUF", "DQBUF", "EXPBUF",
        "STREAMON", "STREAMOFF", "QUERY_EXT_CTRL", "QUERYMENU", "G_EXT_CTRLS",
        "S_EXT_CTRLS", "TRY_EXT_CTRLS",
    }  # fmt: skip
    assert {f"VIDIOC_{n}" for n in wanted} <= set(CONSTANTS)
    assert "DMA_BUF_IOCTL_SYNC" in CONSTANTS


def test_checker_reports_a_moved_field(kernel_view: tuple[Layout, dict[str, int]]) -> None:
    """A copy of v4l2_buffer with ``sequence`` moved before ``timecode`` is caught."""
    fields = list(videodev2.v4l2_buffer._fields_)
    sequence = next(f for f in fields if f[0] == "sequence")
    fields.remove(sequence)
    fields.insert([f[0] for f in fields].index("timecode"), sequence)
    wrong = type(
        "v4l2_buffer",
        (ctypes.Structure,),
        {"_anonymous_": videodev2.v4l2_buffer._anonymous_, "_fields_": fields},
    )
    layout, _ = kernel_view
    problems = compare_layout(python_layout(wrong), layout)
    assert "v4l2_buffer.sequence: offsetof is 40 in Python, 56 in C" in problems
    assert any(p.startswith("v4l2_buffer.timecode: offsetof") for p in problems)
    assert any(p.startswith("v4l2_buffer.timecode.frames: offsetof") for p in problems)
    assert not any(p.startswith("v4l2_buffer.m.") for p in problems)  # unmoved fields pass


def test_checker_reports_a_narrowed_field_and_a_missing_one(
    kernel_view: tuple[Layout, dict[str, int]],
) -> None:
    """A field of the wrong width, and one the C side never printed, are caught."""
    fields = [
        (name, ctypes.c_uint16) if name == "memory" else (name, ctype)
        for name, ctype in videodev2.v4l2_requestbuffers._fields_
    ]
    wrong = type("v4l2_requestbuffers", (ctypes.Structure,), {"_fields_": fields})
    layout, _ = kernel_view
    problems = compare_layout(python_layout(wrong), layout)
    # padding keeps every offset and the struct's size: only the width betrays it
    assert problems == ["v4l2_requestbuffers.memory: sizeof is 2 in Python, 4 in C"]
    extra = dict(python_layout(videodev2.v4l2_requestbuffers))
    extra["v4l2_requestbuffers.bogus"] = (0, 4)
    assert compare_layout(extra, layout) == ["v4l2_requestbuffers.bogus: not in the C program's output"]


def test_request_code_helpers_decode_what_they_encode() -> None:
    code = videodev2.VIDIOC_DQBUF
    assert ioctl._IOC_DIR(code) == ioctl._IOC_READ | ioctl._IOC_WRITE
    assert ioctl._IOC_TYPE(code) == ord("V")
    assert ioctl._IOC_NR(code) == 17
    assert ioctl._IOC_SIZE(code) == ctypes.sizeof(videodev2.v4l2_buffer)
    assert ioctl._IO("V", 1) == (ord("V") << 8) | 1
    with pytest.raises(ValueError):
        ioctl._IOC(0, "V", 256, 0)
    with pytest.raises(ValueError):
        ioctl._IOW("V", 1, ctypes.c_uint8 * (1 << 14))


def test_fourcc_round_trips() -> None:
    assert videodev2.fourcc("YUYV") == videodev2.V4L2_PIX_FMT_YUYV
    assert videodev2.fourcc_str(videodev2.V4L2_PIX_FMT_YUV420) == "YU12"
    assert videodev2.fourcc("Y16") == videodev2.fourcc("Y16 ")
    assert videodev2.fourcc_str(videodev2.fourcc("GREY") | (1 << 31)) == "GREY-BE"
    with pytest.raises(ValueError):
        videodev2.fourcc("TOOLONG")
