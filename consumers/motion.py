"""A motion detector working on the shared numpy view, without copying the frame.

It looks at every 8th pixel of the luma (or first) channel, compares it with
the previous frame's sample and reports the mean absolute difference; a score
above --threshold counts as motion.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from framebus import Frame

from .runner import add_common_arguments, run


class MotionDetector:
    def __init__(self, step: int, threshold: float) -> None:
        self.step = step
        self.threshold = threshold
        self.previous: np.ndarray | None = None
        self.events = 0
        self.score = 0.0

    def __call__(self, frame: Frame) -> dict[str, object]:
        luma = frame.planes[0]
        if luma.ndim == 3:
            luma = luma[..., 0]
        # A strided sample of the shared view: 1/64 of the pixels, read in place.
        sample = luma[:: self.step, :: self.step].astype(np.int16)
        if self.previous is not None and self.previous.shape == sample.shape:
            self.score = float(np.abs(sample - self.previous).mean())
            if self.score > self.threshold:
                self.events += 1
        self.previous = sample
        return {"motion_score": round(self.score, 2), "motion_events": self.events}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_common_arguments(parser)
    parser.add_argument("--step", type=int, default=8, help="sample every Nth pixel (default 8)")
    parser.add_argument("--threshold", type=float, default=4.0)
    args = parser.parse_args(argv)
    return run(args, "motion", MotionDetector(args.step, args.threshold))


if __name__ == "__main__":
    sys.exit(main())
