"""``picamera2.job.Job``: functions run by the camera's event loop until done;
the caller waits on a future (``get_result(timeout)`` raises TimeoutError,
``cancel()`` makes it raise CancelledError)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from typing import Any

__all__ = ["Job"]

Step = Callable[[], tuple[bool, Any]]


class Job:
    def __init__(self, functions: list[Step]) -> None:
        self._functions = list(functions)
        self._future: Future[Any] = Future()
        self._future.set_running_or_notify_cancel()
        self._result: Any = None

    def execute(self) -> bool:
        """Run the functions in turn; True once all are done (as picamera2's)."""
        try:
            while self._functions:
                done, result = self._functions[0]()
                if not done:
                    break
                self._functions.pop(0)
                self._result = result
        except Exception as exc:
            self._future.set_exception(exc)
            self._functions = []
            return True
        return not self._functions

    def signal(self) -> None:
        if not self._future.done():
            self._future.set_result(self._result)

    def fail(self, exc: BaseException) -> None:
        if not self._future.done():
            self._future.set_exception(exc)
        self._functions = []

    def get_result(self, timeout: float | None = None) -> Any:
        return self._future.result(timeout=timeout)

    def cancel(self) -> None:
        self.fail(CancelledError())
