"""A stand-in for picamera2 (checked against picamera2 0.3.36): exactly the
calls framebus's libcamera source makes, over a simulated camera whose
buffers are memfds. See README.md. The framebus library never imports it;
tests put its parent directory on the producer process's PYTHONPATH."""

from .picamera2 import Picamera2
from .request import CompletedRequest

__all__ = ["Picamera2", "CompletedRequest"]
