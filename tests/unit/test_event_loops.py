"""`kernels.closing_event_loop`: a worker thread's asyncio loop is closed when its target returns, even
with a task that ignores cancellation, and the main thread's loop is left alone."""

from __future__ import annotations

import asyncio
import threading
import time

from retail_lakehouse.jobs.kernels import closing_event_loop


def _in_thread(target) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join(timeout=30)
    assert not t.is_alive(), "the thread did not end"
    assert not errors, errors


def test_the_thread_loop_is_closed_with_a_stubborn_task_in_bounded_time():
    seen: dict[str, object] = {}

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue  # ignores its cancellation

    @closing_event_loop
    def work() -> str:
        loop = asyncio.new_event_loop()  # as jupyter_core's run_sync does in a thread
        asyncio.set_event_loop(loop)
        task = loop.create_task(stubborn())
        task._log_destroy_pending = False  # noqa: SLF001 - left pending on purpose: no warning at exit
        loop.run_until_complete(asyncio.sleep(0))
        seen["loop"] = loop
        return "done"

    def target() -> None:
        started = time.monotonic()
        assert work() == "done"
        seen["seconds"] = time.monotonic() - started
        try:
            asyncio.get_event_loop_policy().get_event_loop()
        except RuntimeError:
            seen["unset"] = True

    _in_thread(target)
    assert seen["loop"].is_closed()
    assert seen["seconds"] < 5
    assert seen.get("unset"), "the closed loop is still the thread's current loop"


def test_a_thread_without_a_loop_and_the_main_thread_are_left_alone():
    _in_thread(closing_event_loop(lambda: None))  # no loop made: nothing to close, no error

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        assert closing_event_loop(lambda: 1)() == 1
        assert not loop.is_closed()
    finally:
        asyncio.set_event_loop(None)
        loop.close()
