"""The V4L2 camera source: device discovery now, capture on top of it next.

Built on the raw kernel layer in ``framebus.linux`` (``ioctl``, ``videodev2``,
``dma_buf``).
"""

from producer.v4l2.devices import DeviceInfo, format_devices, list_devices

__all__ = ["DeviceInfo", "format_devices", "list_devices"]
