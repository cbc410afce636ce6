"""The transports compared by ``framebus bench``, one module each.

:func:`load` imports a transport's module on demand, so a missing optional
dependency (iceoryx2) only skips that transport.
"""

from __future__ import annotations

import importlib

from framebus_bench.transports.base import Transport

#: name -> ("module:class", optional)
REGISTRY: dict[str, tuple[str, bool]] = {
    "framebus": ("framebus_bench.transports.framebus_bus:Framebus", False),
    "framebus-socket": ("framebus_bench.transports.framebus_bus:FramebusSocket", True),
    "pyzmq": ("framebus_bench.transports.zmq_copy:PyZmq", False),
    "mpqueue": ("framebus_bench.transports.mp_queue:MpQueue", False),
    "shmring": ("framebus_bench.transports.shm_ring:ShmRing", False),
    "iceoryx2": ("framebus_bench.transports.iox2:Iceoryx2", True),
    # the lean references: framebus's job with nothing else, for the ratios in the report
    "pipe-floor": ("framebus_bench.transports.lean:PipeFloor", False),
    "lean-seqpacket": ("framebus_bench.transports.lean:LeanSeqpacket", False),
    "lean-zmq": ("framebus_bench.transports.lean:LeanZmq", False),
}
#: the references the report divides framebus's figures by
FLOOR = "pipe-floor"
LEAN_SEQPACKET = "lean-seqpacket"
LEAN_ZMQ = "lean-zmq"
NAMES: tuple[str, ...] = tuple(REGISTRY)


def is_optional(name: str) -> bool:
    return REGISTRY[name][1]


def load(name: str) -> type[Transport]:
    """The transport class; raises ImportError (with the reason) if it cannot run here."""
    module_name, _, class_name = REGISTRY[name][0].partition(":")
    cls: type[Transport] = getattr(importlib.import_module(module_name), class_name)
    cls.check()
    return cls
