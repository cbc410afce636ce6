"""The V4L2 camera source: device discovery and capture into the bus.

Built on the raw kernel layer in ``framebus.linux`` (``ioctl``, ``videodev2``,
``dma_buf``). `V4L2Source` is imported on demand (``producer.v4l2.source``) so
that listing devices stays light.
"""

from .devices import DeviceInfo, format_devices, list_devices

__all__ = ["DeviceInfo", "format_devices", "list_devices"]
