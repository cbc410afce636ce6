"""What libcamera's Python bindings hand picamera2's users, as far as the
source reads them: ``Stream``, ``FrameBuffer`` (``planes``: ``fd``,
``offset``, ``length``; ``metadata``: ``sequence``, ``timestamp``,
``status``) and ``Request`` (``buffers``: stream -> FrameBuffer)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

__all__ = ["Stream", "Plane", "FrameStatus", "FrameMetadata", "FrameBuffer", "Request"]


class Stream:
    """A libcamera stream (only its identity matters: a dict key)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<Stream {self.name}>"


@dataclass(frozen=True)
class Plane:
    """``libcamera.FrameBuffer.Plane``."""

    fd: int
    offset: int
    length: int


class FrameStatus(Enum):
    """``libcamera.FrameMetadata.Status``."""

    Success = 0
    Error = 1
    Cancelled = 2


@dataclass
class FrameMetadata:
    """``libcamera.FrameMetadata``."""

    sequence: int = 0
    timestamp: int = 0
    status: FrameStatus = FrameStatus.Success


@dataclass(eq=False)
class FrameBuffer:
    """``libcamera.FrameBuffer``: its planes and the metadata of its last frame."""

    planes: list[Plane]
    metadata: FrameMetadata = field(default_factory=FrameMetadata)


@dataclass(eq=False)
class Request:
    """``libcamera.Request``: one buffer per stream."""

    buffers: dict[Stream, FrameBuffer]
    index: int  #: which of the camera's requests (the stand-in's bookkeeping)
