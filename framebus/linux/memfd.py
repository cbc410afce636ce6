"""memfd files and their seals (memfd_create(2), fcntl(2) F_ADD_SEALS).

A frame buffer is a memfd that the producer sizes, maps read-write, then seals
so that nobody else can write, shrink or grow it: after
``F_SEAL_FUTURE_WRITE`` existing writable mappings keep working, but any new
``mmap(PROT_WRITE)``, ``write()`` or ``ftruncate()`` fails with EPERM, and the
read-only mappings of other processes cannot be ``mprotect``-ed writable.
"""

from __future__ import annotations

import fcntl
import mmap
import os

F_SEAL_SEAL = fcntl.F_SEAL_SEAL
F_SEAL_SHRINK = fcntl.F_SEAL_SHRINK
F_SEAL_GROW = fcntl.F_SEAL_GROW
F_SEAL_WRITE = fcntl.F_SEAL_WRITE
F_SEAL_FUTURE_WRITE = 0x10  # linux/fcntl.h; Python 3.11's fcntl lacks the name

#: The seals of a published buffer: read-only for all but the producer's own
#: mapping, fixed in size, and no further seal changes.
READ_ONLY_SEALS = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL

PAGE_SIZE = mmap.PAGESIZE


def page_align(size: int) -> int:
    """`size` rounded up to a whole number of pages."""
    return -(-size // PAGE_SIZE) * PAGE_SIZE


def create(name: str, size: int) -> int:
    """A new close-on-exec, sealable memfd of `size` bytes (zero-filled)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd


def add_seals(fd: int, seals: int) -> None:
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)


def get_seals(fd: int) -> int:
    """The seals set on `fd`; raises OSError(EINVAL) if it is not a memfd."""
    return fcntl.fcntl(fd, fcntl.F_GET_SEALS)


def map_shared(fd: int, length: int, *, writable: bool) -> mmap.mmap:
    """Map `length` bytes of `fd` shared, read-write or read-only.

    Python's mmap keeps a duplicate of `fd`; the caller may close its own.
    """
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    return mmap.mmap(fd, length, flags=mmap.MAP_SHARED, prot=prot)


def file_size(fd: int) -> int:
    return os.fstat(fd).st_size


def unmap(m: mmap.mmap) -> None:
    """Close a mapping; if numpy views of it are still alive, leave it to be
    unmapped when the last one goes (mmap refuses to close under them)."""
    try:
        m.close()
    except BufferError:
        pass
