"""``<linux/dma-buf.h>``: bracketing CPU access to a DMA-BUF.

A DMA-BUF exported by a V4L2 driver (``VIDIOC_EXPBUF``) may live in memory
that the CPU caches do not see coherently. Before reading (or writing) its
mapping, call :func:`sync_start`; afterwards, :func:`sync_end` with the same
access flags. On coherent hardware these are cheap no-ops; on the rest they
make the pixels right.
"""

from __future__ import annotations

import ctypes

from framebus.linux.ioctl import _IOW, ioctl

__all__ = [
    "dma_buf_sync",
    "DMA_BUF_BASE",
    "DMA_BUF_SYNC_READ",
    "DMA_BUF_SYNC_WRITE",
    "DMA_BUF_SYNC_RW",
    "DMA_BUF_SYNC_START",
    "DMA_BUF_SYNC_END",
    "DMA_BUF_SYNC_VALID_FLAGS_MASK",
    "DMA_BUF_IOCTL_SYNC",
    "STRUCTS",
    "sync_start",
    "sync_end",
]

DMA_BUF_SYNC_READ = 1 << 0
DMA_BUF_SYNC_WRITE = 2 << 0
DMA_BUF_SYNC_RW = DMA_BUF_SYNC_READ | DMA_BUF_SYNC_WRITE
DMA_BUF_SYNC_START = 0 << 2
DMA_BUF_SYNC_END = 1 << 2
DMA_BUF_SYNC_VALID_FLAGS_MASK = DMA_BUF_SYNC_RW | DMA_BUF_SYNC_END

DMA_BUF_BASE = ord("b")


class dma_buf_sync(ctypes.Structure):
    """The argument of ``DMA_BUF_IOCTL_SYNC``."""

    _fields_ = [("flags", ctypes.c_uint64)]


#: The structs named as in the kernel header, each checked against it.
STRUCTS: tuple[type[ctypes.Structure], ...] = (dma_buf_sync,)

DMA_BUF_IOCTL_SYNC = _IOW(DMA_BUF_BASE, 0, dma_buf_sync)


def _access(read: bool, write: bool) -> int:
    flags = (DMA_BUF_SYNC_READ if read else 0) | (DMA_BUF_SYNC_WRITE if write else 0)
    if not flags:
        raise ValueError("a DMA-BUF sync needs read, write or both")
    return flags


def sync_start(fd: int, read: bool = True, write: bool = False) -> None:
    """Begin CPU access to the DMA-BUF ``fd`` (``DMA_BUF_SYNC_START``).

    Raises ``OSError`` (ENOTTY when ``fd`` is not a DMA-BUF).
    """
    ioctl(fd, DMA_BUF_IOCTL_SYNC, dma_buf_sync(DMA_BUF_SYNC_START | _access(read, write)))


def sync_end(fd: int, read: bool = True, write: bool = False) -> None:
    """End CPU access to the DMA-BUF ``fd`` begun by :func:`sync_start`.

    Pass the same ``read``/``write`` flags as to :func:`sync_start`.
    """
    ioctl(fd, DMA_BUF_IOCTL_SYNC, dma_buf_sync(DMA_BUF_SYNC_END | _access(read, write)))
