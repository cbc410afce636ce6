"""The transports compared by ``framebus bench``, one module each.

:func:`load` imports a transport's module on demand, so a missing optional
dependency (iceoryx2) only skips that transport.
"""

from __future__ import annotations

import importlib

from benchmarks.transports.base import Transport

#: name -> (module, optional)
REGISTRY: dict[str, tuple[str, bool]] = {
    "framebus": ("benchmarks.transports.framebus_bus", False),
    "pyzmq": ("benchmarks.transports.zmq_copy", False),
    "mpqueue": ("benchmarks.transports.mp_queue", False),
    "shmring": ("benchmarks.transports.shm_ring", False),
    "iceoryx2": ("benchmarks.transports.iox2", True),
}
NAMES: tuple[str, ...] = tuple(REGISTRY)


def is_optional(name: str) -> bool:
    return REGISTRY[name][1]


def load(name: str) -> type[Transport]:
    """The transport class; raises ImportError (with the reason) if it cannot run here."""
    module = importlib.import_module(REGISTRY[name][0])
    cls: type[Transport] = module.TRANSPORT
    return cls
