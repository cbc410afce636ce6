"""The stand-in's settings, from ``PICAMERA2_STANDIN`` (``key=value,...``),
and its log (``log=FILE``: one JSON object a line, appended)."""

from __future__ import annotations

import json
import os
import sys
import threading
from dataclasses import dataclass, fields

__all__ = ["Settings", "settings", "record"]


@dataclass(frozen=True)
class Settings:
    cameras: int = 1  #: cameras global_camera_info() lists
    fps: float = 30.0  #: frame rate when the configuration sets no FrameRate
    stride_align: int = 64  #: row strides are rounded up to this (libcamera on a Pi: 64)
    frame_pad: int = 0  #: bytes libcamera adds after each frame (framesize > the planes)
    planes: int = 1  #: 1: one plane per buffer (picamera2's DmaAllocator); 3: YUV420's three
    disconnect_after: int = 0  #: the camera disappears after this many frames (once)
    return_after_ms: int = -1  #: ... and comes back this long after (-1: never)
    error_after: int = 0  #: after this many frames, capture jobs fail with RuntimeError
    error_every: int = 0  #: every Nth frame completes with an error status
    log: str = ""  #: append events here (JSON lines)


def _parse(text: str) -> Settings:
    known = {f.name: f.type for f in fields(Settings)}
    values: dict[str, object] = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in known:
            sys.exit(f"PICAMERA2_STANDIN: unknown option {key!r} (known: {', '.join(known)})")
        kind = known[key]
        values[key] = value if kind == "str" else float(value) if kind == "float" else int(value)
    return Settings(**values)  # type: ignore[arg-type]


settings = _parse(os.environ.get("PICAMERA2_STANDIN", ""))
_log_lock = threading.Lock()


def record(event: str, **data: object) -> None:
    """Append one event to the log file (if any)."""
    if not settings.log:
        return
    line = json.dumps({"event": event, **data}) + "\n"
    with _log_lock, open(settings.log, "a") as f:
        f.write(line)
