"""One bounded ``multiprocessing.Queue`` per consumer, shared by the stdlib transports."""

from __future__ import annotations

import multiprocessing as mp
import queue
from typing import Any

from framebus_bench.transports.base import QUEUE_DEPTH

#: lossless mode: a consumer that takes no frame for this long is stuck
PUT_TIMEOUT = 5.0


class QueueFanout:
    """Made in the parent before the fork; the processes inherit the queues."""

    def __init__(self, consumers: int, lossless: bool, depth: int = QUEUE_DEPTH) -> None:
        ctx = mp.get_context("fork")
        self.queues = [ctx.Queue(maxsize=depth) for _ in range(consumers)]
        self.lossless = lossless

    def put_all(self, item: Any) -> int:
        """Queue ``item`` for every consumer; returns for how many it was dropped."""
        dropped = 0
        for q in self.queues:
            try:
                q.put(item, self.lossless, PUT_TIMEOUT)
            except queue.Full:
                if self.lossless:
                    raise TimeoutError("a consumer took no frame for 5 s") from None
                dropped += 1
        return dropped

    def get(self, index: int, timeout: float) -> Any | None:
        try:
            return self.queues[index].get(timeout=timeout)
        except queue.Empty:
            return None

    def close_producer(self) -> None:
        # Do not let the feeder threads hold the process at exit when nobody reads.
        for q in self.queues:
            q.cancel_join_thread()

    def close(self) -> None:
        for q in self.queues:
            q.cancel_join_thread()
            q.close()
