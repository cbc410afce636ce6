"""asyncio and threads: aget(), async for, fileno(), and release() from another thread."""

from __future__ import annotations

import asyncio
import select
import threading

import pytest

import framebus
from framebus.testing import synthetic_producer


@pytest.fixture(scope="module")
def slow_producer():
    """10 fps: a consumer waits ~100 ms for each frame."""
    with synthetic_producer(width=64, height=48, pixel_format="GREY", fps=10) as path:
        yield path


def test_aget_waits_without_blocking_the_loop(slow_producer):
    ticks: list[int] = []

    async def ticker(stop: asyncio.Event) -> None:
        while not stop.is_set():
            ticks.append(1)
            await asyncio.sleep(0.005)

    async def main() -> list[int]:
        stop = asyncio.Event()
        tick = asyncio.create_task(ticker(stop))
        seqs = []
        with framebus.Consumer(slow_producer) as cam:
            for _ in range(3):
                frame = await cam.aget(timeout=5)
                seqs.append(frame.seq)
                frame.release()
        stop.set()
        await tick
        return seqs

    seqs = asyncio.run(asyncio.wait_for(main(), 30))
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    # Three frames at 10 fps take ~0.2 s of waiting: the loop ran meanwhile.
    assert len(ticks) > 3


def test_async_for_releases_each_frame_when_the_next_is_taken(slow_producer):
    async def main() -> list[framebus.Frame]:
        seen = []
        with framebus.Consumer(slow_producer, max_held=1) as cam:
            async for frame in cam:
                seen.append(frame)
                assert cam.held == 1
                if len(seen) == 3:
                    break
        return seen

    seen = asyncio.run(asyncio.wait_for(main(), 30))
    assert all(f.released for f in seen)


def test_aget_times_out(sock):
    with framebus.Producer(sock, framebus.FrameFormat(64, 48, "GREY")):
        async def main() -> None:
            with framebus.Consumer(sock) as cam:
                with pytest.raises(framebus.Timeout):
                    await cam.aget(timeout=0.2)
        asyncio.run(asyncio.wait_for(main(), 10))


def test_fileno_turns_readable_when_a_frame_is_published(sock):
    with framebus.Producer(sock, framebus.FrameFormat(64, 48, "GREY")) as bus, \
            framebus.Consumer(sock, policy="queue", depth=2) as cam:
        with pytest.raises(framebus.Timeout):
            cam.get(timeout=0.05)  # nothing yet
        bus.publish(bus.acquire(timeout=1))
        assert select.select([cam.fileno()], [], [], 5)[0]
        cam.get(timeout=1).release()


def test_frames_may_be_released_from_another_thread(slow_producer):
    """The stated rule: one thread drives the consumer; release() from any."""
    with framebus.Consumer(slow_producer, max_held=2) as cam:
        handed = []
        for _ in range(6):
            frame = cam.get(timeout=5)
            worker = threading.Thread(target=frame.release)
            worker.start()
            handed.append(worker)
            if len(handed) >= 2:
                handed.pop(0).join(5)
        for worker in handed:
            worker.join(5)
        assert cam.held == 0
