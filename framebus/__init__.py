"""framebus: a zero-copy shared-memory frame bus for Linux.

One producer process owns the frame buffers; any number of consumer processes
see each frame as a read-only numpy array in shared memory. See docs/DESIGN.md.
"""

from importlib.metadata import version as _version

from .buffers import Buffer, BufferPool, BufferTable, Plane
from .consumer import Consumer
from .errors import (BusClosed, FramebusError, NoProducer, PermissionDenied, ProducerGone,
                     ProducerRefusedConnection, ProtocolError, Refused, Timeout)
from .formats import PIXEL_FORMATS, FrameFormat, PixelFormat
from .frame import Frame
from .producer import Producer
from .recorder import Recorder
from .remote import RemoteConsumer, RemoteFrame

__all__ = [
    "Buffer", "BufferPool", "BusClosed", "BufferTable", "Consumer", "Frame", "FrameFormat", "FramebusError",
    "NoProducer", "PIXEL_FORMATS", "PermissionDenied", "PixelFormat", "Plane", "Producer", "ProducerGone",
    "ProducerRefusedConnection", "ProtocolError", "Recorder", "Refused", "RemoteConsumer",
    "RemoteFrame", "Timeout",
]
__version__ = _version("framebus")
