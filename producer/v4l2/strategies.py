"""Which memory strategy a capture uses, and why.

``producer.v4l2.devices`` probes what the driver offers (REQBUFS with
``count = 0`` and its ``V4L2_BUF_CAP_SUPPORTS_*`` bits, and one real EXPBUF).
`choose()` turns that, and ``--memory``, into one strategy and a sentence
saying why, which the source logs:

``userptr``      the driver writes into the bus's memfd buffers: zero copies.
``mmap+expbuf``  the driver's own buffers, exported as DMA-BUFs, are the bus's
                 buffers: zero copies.
``mmap+copy``    the driver's buffers are copied into the bus's memfds: one
                 copy per frame, and it works with every streaming driver.
"""

from __future__ import annotations

from framebus import FramebusError

from .devices import MMAP_COPY, MMAP_EXPBUF, USERPTR, DeviceInfo

__all__ = ["choose", "FLAG_VALUES", "USERPTR", "MMAP_EXPBUF", "MMAP_COPY", "ZERO_COPY"]

#: ``--memory`` values and the strategy each forces (``auto``: the best offered)
FLAG_VALUES = {"userptr": USERPTR, "dmabuf": MMAP_EXPBUF, "copy": MMAP_COPY}
#: the strategies that copy no pixel in the producer
ZERO_COPY = (USERPTR, MMAP_EXPBUF)

_ORDER = (USERPTR, MMAP_EXPBUF, MMAP_COPY)  # best first, as devices.py lists them
_WHY_NOT = {
    USERPTR: "REQBUFS refuses V4L2_MEMORY_USERPTR (no V4L2_BUF_CAP_SUPPORTS_USERPTR)",
    MMAP_EXPBUF: "VIDIOC_EXPBUF does not export its MMAP buffers",
    MMAP_COPY: "REQBUFS refuses V4L2_MEMORY_MMAP",
}


def choose(info: DeviceInfo, memory: str) -> tuple[str, str]:
    """(strategy, reason) for a device and a ``--memory`` value.

    Raises `FramebusError` when the forced strategy is not offered, or none is.
    """
    offered = info.strategies
    caps = f"REQBUFS capabilities 0x{info.buf_caps:x}" if info.buf_caps else \
        "REQBUFS reports no capabilities (kernel < 4.20): probed by trying"
    if memory == "auto":
        if not offered:
            raise FramebusError(f"{info.path}: the driver offers no streaming memory type "
                                f"framebus can use ({caps})")
        best = offered[0]
        skipped = [f"not {s}: {_WHY_NOT[s]}" for s in _ORDER[:_ORDER.index(best)]]
        return best, "; ".join([f"auto: the driver offers {', '.join(offered)} ({caps})",
                                *skipped, f"using {best}"])
    if memory not in FLAG_VALUES:
        raise FramebusError(f"unknown --memory {memory!r}: auto, {', '.join(FLAG_VALUES)}")
    forced = FLAG_VALUES[memory]
    if forced not in offered:
        raise FramebusError(f"--memory {memory}: {info.path} cannot do {forced}: {_WHY_NOT[forced]} "
                            f"(it offers: {', '.join(offered) or 'nothing usable'}; {caps})")
    return forced, f"--memory {memory}: using {forced} ({caps})"
