"""The snapshot writer: every --every seconds, writes the current frame to a file.

RGB3 frames become a PPM, GREY frames and the Y plane of YUV formats a PGM;
other formats are written raw. The file is written straight from the shared
view and renamed into place, so a reader never sees half a snapshot.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from numpy.typing import NDArray

from framebus import Frame

from .runner import add_common_arguments, run


class SnapshotWriter:
    def __init__(self, directory: str, every: float) -> None:
        self.directory = directory
        self.every = every
        self.next_at = 0.0
        self.written = 0
        os.makedirs(directory, exist_ok=True)

    def __call__(self, frame: Frame) -> dict[str, object]:
        now = time.monotonic()
        if now >= self.next_at:
            self.next_at = now + self.every
            self.write(frame)
        return {"snapshots": self.written}

    def write(self, frame: Frame) -> str:
        header, pixels, suffix = _encode(frame)
        path = os.path.join(self.directory, f"latest{suffix}")
        tmp = f"{path}.tmp"
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(np.ascontiguousarray(pixels).data)  # a copy only if rows are padded
        if frame.valid():  # pixels still the announced ones: publish the file
            os.replace(tmp, path)
            self.written += 1
        else:
            os.unlink(tmp)
        return path


def _encode(frame: Frame) -> tuple[bytes, NDArray[np.uint8], str]:
    view = frame.planes[0]
    if view.ndim == 3 and view.shape[2] == 3:
        height, width = view.shape[:2]
        return f"P6\n{width} {height}\n255\n".encode(), view, ".ppm"
    if view.ndim == 2:
        height, width = view.shape
        return f"P5\n{width} {height}\n255\n".encode(), view, ".pgm"
    return b"", frame.array, ".raw"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_common_arguments(parser)
    parser.add_argument("--dir", default="snapshots", help="where to write (default ./snapshots)")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between snapshots")
    args = parser.parse_args(argv)
    return run(args, "snapshot", SnapshotWriter(args.dir, args.every))


if __name__ == "__main__":
    sys.exit(main())
