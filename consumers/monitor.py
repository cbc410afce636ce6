"""The monitor: takes every frame it can, checks it, reports fps, latency and drops.

With the synthetic source it also checks each frame's stamped sequence number
against the announced one (`bad` counts mismatches: there should be none).
"""

from __future__ import annotations

import argparse
import sys

from framebus import Frame
from framebus.pattern import read_stamp

from .runner import add_common_arguments, run


class Monitor:
    def __init__(self, verify: bool) -> None:
        self.verify = verify
        self.bad = 0

    def __call__(self, frame: Frame) -> dict[str, object]:
        if self.verify and read_stamp(frame.planes[0]) != frame.seq and frame.valid():
            self.bad += 1
        return {"bad": self.bad}


def run_cli(args: argparse.Namespace) -> int:
    """`framebus consume`."""
    return run(args, "consume", Monitor(verify=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_common_arguments(parser)
    parser.add_argument("--verify", action="store_true",
                        help="check the synthetic source's stamped sequence numbers")
    args = parser.parse_args(argv)
    return run(args, "monitor", Monitor(args.verify))


if __name__ == "__main__":
    sys.exit(main())
