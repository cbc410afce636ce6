"""Linux ioctl request codes and one typed ``ioctl()`` call.

The request-code helpers follow the generic encoding of
``<asm-generic/ioctl.h>`` (x86, arm, arm64, riscv; not alpha, mips, powerpc or
sparc, whose direction bits differ)::

    bits 31..30  direction (_IOC_NONE, _IOC_WRITE, _IOC_READ)
    bits 29..16  size of the argument
    bits 15..8   type (a character naming the subsystem, 'V' for V4L2)
    bits  7..0   number

Sizes are taken from ctypes types, so a request code always agrees with the
struct it is declared with.
"""

from __future__ import annotations

import ctypes
import fcntl
from typing import Any, TypeAlias

__all__ = [
    "_IOC",
    "_IO",
    "_IOR",
    "_IOW",
    "_IOWR",
    "_IOC_NONE",
    "_IOC_WRITE",
    "_IOC_READ",
    "_IOC_DIR",
    "_IOC_TYPE",
    "_IOC_NR",
    "_IOC_SIZE",
    "ioctl",
]

_IOC_NRBITS = 8
_IOC_TYPEBITS = 8
_IOC_SIZEBITS = 14
_IOC_DIRBITS = 2

_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS

_IOC_NONE = 0
_IOC_WRITE = 1
_IOC_READ = 2

#: Any ctypes type: a struct, a union, an array or a simple C type.
CType: TypeAlias = type
#: A mutable ctypes object passed by reference to the kernel.
CData: TypeAlias = "ctypes.Structure | ctypes.Union | ctypes.Array[Any] | ctypes.c_int | ctypes.c_uint | ctypes.c_ulong"


def _type_code(type_: str | int) -> int:
    code = ord(type_) if isinstance(type_, str) else type_
    if not 0 <= code < (1 << _IOC_TYPEBITS):
        raise ValueError(f"ioctl type out of range: {type_!r}")
    return code


def _IOC(direction: int, type_: str | int, nr: int, size: int) -> int:
    """Encode a request code from its four parts, as the kernel's ``_IOC``."""
    if not 0 <= direction < (1 << _IOC_DIRBITS):
        raise ValueError(f"ioctl direction out of range: {direction}")
    if not 0 <= nr < (1 << _IOC_NRBITS):
        raise ValueError(f"ioctl number out of range: {nr}")
    if not 0 <= size < (1 << _IOC_SIZEBITS):
        raise ValueError(f"ioctl argument size out of range: {size}")
    return (
        (direction << _IOC_DIRSHIFT)
        | (_type_code(type_) << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
        | (size << _IOC_SIZESHIFT)
    )


def _IO(type_: str | int, nr: int) -> int:
    """A request without an argument."""
    return _IOC(_IOC_NONE, type_, nr, 0)


def _IOR(type_: str | int, nr: int, argtype: CType) -> int:
    """A request whose argument the kernel writes (userspace reads)."""
    return _IOC(_IOC_READ, type_, nr, ctypes.sizeof(argtype))


def _IOW(type_: str | int, nr: int, argtype: CType) -> int:
    """A request whose argument the kernel reads (userspace writes)."""
    return _IOC(_IOC_WRITE, type_, nr, ctypes.sizeof(argtype))


def _IOWR(type_: str | int, nr: int, argtype: CType) -> int:
    """A request whose argument travels both ways."""
    return _IOC(_IOC_READ | _IOC_WRITE, type_, nr, ctypes.sizeof(argtype))


def _IOC_DIR(request: int) -> int:
    """The direction bits of a request code."""
    return (request >> _IOC_DIRSHIFT) & ((1 << _IOC_DIRBITS) - 1)


def _IOC_TYPE(request: int) -> int:
    """The type byte of a request code."""
    return (request >> _IOC_TYPESHIFT) & ((1 << _IOC_TYPEBITS) - 1)


def _IOC_NR(request: int) -> int:
    """The number byte of a request code."""
    return (request >> _IOC_NRSHIFT) & ((1 << _IOC_NRBITS) - 1)


def _IOC_SIZE(request: int) -> int:
    """The argument size encoded in a request code."""
    return (request >> _IOC_SIZESHIFT) & ((1 << _IOC_SIZEBITS) - 1)


def ioctl(
    fd: int,
    request: int,
    arg: CData | None = None,
) -> int:
    """Issue ``ioctl(fd, request, &arg)`` and return the call's result.

    ``arg`` is a mutable ctypes object; the kernel's answer is written back into
    it in place. Its size must be the one the request code encodes, which is
    checked here before the call (a mismatch is a programming error, reported
    as ``ValueError``, since the kernel would only answer ENOTTY or, worse,
    read past the object). ``arg=None`` passes 0, for requests without one.

    The call is retried when a signal interrupts it (EINTR); any other failure
    raises ``OSError`` carrying the errno (so ``PermissionError``,
    ``BlockingIOError`` and friends work as expected).
    """
    if arg is not None:
        size = ctypes.sizeof(arg)
        if _IOC_DIR(request) != _IOC_NONE and size != _IOC_SIZE(request):
            raise ValueError(
                f"ioctl 0x{request:08x} expects a {_IOC_SIZE(request)}-byte argument, "
                f"got {type(arg).__name__} of {size} bytes"
            )
    while True:
        try:
            if arg is None:
                return fcntl.ioctl(fd, request, 0)
            # A mutable buffer with mutate_flag set: the call's int result
            # (typeshed says Any, as it cannot tell mutable buffers apart).
            result: int = fcntl.ioctl(fd, request, arg, True)
            return result
        except InterruptedError:  # EINTR: a signal handler ran; ask again
            continue
