"""Warm Jupyter kernels for the job runner: started ahead, library imported, engine session open.

A fresh kernel per notebook is what papermill and Databricks give a task, and costs about 2 s
before the notebook's first line runs (process start, imports, a Spark session with every table
registered). The pool starts those kernels while earlier tasks still run, so a task gets one that
is ready. Each kernel still runs one notebook only and is shut down after it: nothing leaks from
one task to the next.

    with KernelPool(size=2, budget=20) as pool:
        km = pool.acquire(cwd=notebook.parent)   # a started kernel, cwd set, tables registered
        try:
            papermill.execute_notebook(..., km=km)
        finally:
            pool.release(km)

`lakehouse kernels install` (run by `make`) installs the `lakehouse-warm` kernel spec (the `python3`
kernel, launched by forking), which any Jupyter client can name, e.g.
`pytest --nbmake --nbmake-kernel=lakehouse-warm`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from retail_lakehouse.core.errors import KernelError

if TYPE_CHECKING:
    from jupyter_client.manager import KernelManager

__all__ = [
    "KernelPool",
    "WarmKernelError",
    "closing_event_loop",
    "import_notebook_machinery",
    "install_kernel_spec",
    "kernel_cpu_seconds",
]

log = logging.getLogger(__name__)

KERNEL_NAME = "python3"
START_TIMEOUT = 60.0
_IPC_PREFIX = "lakehouse-kernel-"
# What a pipeline notebook imports; run silently (no history, no execution count) in a new kernel.
_WARM_UP = """\
import os as __os
import retail_lakehouse.jobs.kernels as __k
__k.warm_up(__os.environ.get("LAKEHOUSE_ENV") or "local", {modules!r}, lazy_tables={lazy_tables!r})
del __os, __k
"""
_ON_ACQUIRE = """\
import os as __os
import retail_lakehouse.jobs.kernels as __k
__os.chdir({cwd!r})
__os.environ.update({environ!r})
__k.refresh(__os.environ.get("LAKEHOUSE_ENV") or "local")
del __os, __k
"""


class WarmKernelError(KernelError):
    """A kernel could not be started or warmed (the runner then starts a cold one)."""


# Packages whose first import must not happen in two threads at once: jupyter_client's modules
# import each other in a cycle, and a second thread that arrives mid-import sees a partially
# initialized module ("cannot import name 'AsyncKernelManager'"). Imported once, up front, by
# every caller that then starts threads (the pool, the runner, the book, the workspace's jobs).
_MACHINERY_LOCK = threading.Lock()
NOTEBOOK_MACHINERY = (
    "zmq",
    "jupyter_client",
    "jupyter_client.manager",
    "jupyter_client.provisioning",
    "jupyter_client.kernelspec",
    "nbformat",
    "nbclient",
    "papermill",
    "papermill.exceptions",
    "retail_lakehouse.jobs._zygote",
)


def import_notebook_machinery() -> None:
    """Import what executing a notebook needs, in the calling thread, before threads start.

    Call it before starting threads that run notebooks: Python's import lock does not protect a
    package whose modules import each other from a second thread importing it at the same time.
    """
    import importlib

    with _MACHINERY_LOCK:  # two threads calling this at once: one imports, the other waits
        for name in NOTEBOOK_MACHINERY:
            importlib.import_module(name)


_LOOP_CLOSE_TIMEOUT = 1.0
_P = ParamSpec("_P")
_T = TypeVar("_T")


def closing_event_loop(fn: Callable[_P, _T]) -> Callable[_P, _T]:
    """`fn`, closing on return the asyncio event loop that jupyter_client left in its worker thread.

    jupyter_client's blocking calls (start a kernel, shut it down, papermill's execution) run on an
    event loop that jupyter_core makes for each thread and never closes: an epoll and a socket pair
    held until garbage collection finds the loop, about 80 descriptors per job run. A process that
    runs jobs for long (the local workspace, a test session) then nears its open-files limit.
    Wrap the targets of short-lived threads and thread-pool tasks with this; the main thread's loop
    is left alone.
    """

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return fn(*args, **kwargs)
        finally:
            _close_thread_event_loop()

    return wrapper


def _close_thread_event_loop() -> None:
    if threading.current_thread() is threading.main_thread():
        return
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:  # this thread has no loop
        return
    if loop.is_running() or loop.is_closed():
        return
    try:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:  # bounded: a task that ignores its cancellation must not hang the thread
            loop.run_until_complete(asyncio.wait(pending, timeout=_LOOP_CLOSE_TIMEOUT))
        loop.run_until_complete(asyncio.wait_for(loop.shutdown_asyncgens(), _LOOP_CLOSE_TIMEOUT))
    except Exception as exc:  # a loop in a bad state: still close it
        log.debug("closing a thread's event loop: %s", exc)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


class KernelPool:
    """Kernels started ahead of demand, each used by one notebook.

    Args:
        size: kernels kept ready or warming, besides those in use (the runner: its parallelism plus
            `runner.SPARE_KERNELS`).
        budget: kernels started in total at most (the notebook tasks the run has): no kernel is
            warmed for a task that will never come. A retry past the budget still gets one.
        extra_arguments: kernel command-line arguments (nbclient's in-memory history by default).
        preload: modules the notebooks import (e.g. the pipeline's), imported while the kernel warms.
        lazy_tables: the kernels' sessions register a table when a request first names it, not
            every table of the warehouse up front (`engine.register_lazily`).
        environ: environment variables a kernel gets when a task takes it (e.g. the run's
            monitoring journal, `engine.journal`).
    """

    def __init__(
        self,
        size: int,
        budget: int,
        *,
        extra_arguments: list[str] | None = None,
        preload: Sequence[str] = (),
        lazy_tables: bool = False,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        import_notebook_machinery()  # before the first warm-kernel thread, and the caller's papermill
        self.size, self.budget = max(0, size), max(0, budget)
        self.extra_arguments = extra_arguments or ["--HistoryManager.hist_file=:memory:"]
        self.preload = tuple(preload)
        self.lazy_tables = lazy_tables
        self.environ = dict(environ or {})
        self._ready: list[KernelManager] = []
        self._starting = 0
        self._started = 0
        self._closed = False
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> KernelPool:
        self._fill()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public

    def acquire(self, cwd: str | Path, timeout: float = START_TIMEOUT) -> KernelManager:
        """A started kernel whose working directory is `cwd` (warm if one is ready or starting).

        Raises:
            WarmKernelError: no kernel could be started.
        """
        waited = time.monotonic()
        with self._cond:
            if not self._ready and not self._starting:
                self._reserve_locked(force=True)
            while not self._ready and self._starting and not self._closed:
                self._cond.wait(timeout)
            km = self._ready.pop(0) if self._ready else None
        self._fill()
        if km is None:  # every warm start failed: one cold try, errors to the caller
            km = _start_kernel(self.extra_arguments, self.preload)
        try:
            _execute_silently(km, _ON_ACQUIRE.format(cwd=str(cwd), environ=self.environ))
        except Exception:
            _shutdown(km)
            raise
        log.debug("kernel ready for %s after %.2fs", cwd, time.monotonic() - waited)
        return km

    def release(self, km: KernelManager) -> None:
        """Shut down a kernel a notebook has used, in the background (`close` waits for it): the
        task that used it is done, and the next one need not wait for its end."""
        t = threading.Thread(
            target=closing_event_loop(_shutdown), args=(km,), name="kernel-shutdown", daemon=True
        )
        with self._cond:
            self._threads.append(t)
        t.start()

    def close(self) -> None:
        """Shut down the kernels nobody took; wait for those still starting."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(START_TIMEOUT)
        with self._cond:
            spare, self._ready = self._ready, []
        for km in spare:
            _shutdown(km)

    # -- filling

    def _fill(self) -> None:
        with self._cond:
            while (
                not self._closed
                and len(self._ready) + self._starting < self.size
                and self._started < self.budget
            ):
                self._reserve_locked()

    def _reserve_locked(self, *, force: bool = False) -> None:
        if self._closed and not force:
            return
        self._starting += 1
        self._started += 1
        t = threading.Thread(target=closing_event_loop(self._start_one), name="warm-kernel", daemon=True)
        self._threads.append(t)
        t.start()

    def _start_one(self) -> None:
        km: KernelManager | None = None
        try:
            km = _start_kernel(self.extra_arguments, self.preload)
            _execute_silently(km, _WARM_UP.format(modules=list(self.preload), lazy_tables=self.lazy_tables))
        except Exception as exc:  # the caller falls back to a cold kernel
            log.warning("warm kernel failed to start: %s", exc)
            if km is not None:
                _shutdown(km)
            km = None
        with self._cond:
            self._starting -= 1
            if km is not None and not self._closed:
                self._ready.append(km)
                km = None
            self._cond.notify_all()
        if km is not None:  # closed meanwhile
            _shutdown(km)


# ----------------------------------------------------------------------------- kernel plumbing


def _new_manager() -> KernelManager:
    """A kernel manager on unix sockets (local only, no TCP port) in a private folder: the
    default `kernel-ipc-N` paths are relative to the working directory and collide."""
    from jupyter_client.manager import KernelManager

    sockets = tempfile.mkdtemp(prefix=_IPC_PREFIX)
    km = KernelManager(kernel_name=KERNEL_NAME, transport="ipc", ip=os.path.join(sockets, "k"))
    # papermill (nbclient) leaves the channels of the client it makes open when it does not own the
    # kernel manager; their garbage collection then warns "Could not destroy zmq context". Keep
    # every client made here, so that _shutdown closes them with the kernel.
    clients: list[Any] = []
    make_client = km.client

    def client(**kwargs: Any) -> Any:
        kc = make_client(**kwargs)
        kc.wait_for_ready = functools.partial(_wait_for_ready, kc)  # papermill's client too
        clients.append(kc)
        return kc

    km.client = client  # type: ignore[method-assign]
    km.lakehouse_clients = clients  # type: ignore[attr-defined]
    return km


def _start_kernel(extra_arguments: list[str], preload: Sequence[str] = ()) -> KernelManager:
    """A started kernel, forked from the user's shared fork server (see _zygote; the provisioner
    launches a plain process when forking is off or the server cannot be had)."""
    from retail_lakehouse.jobs._zygote import ForkProvisioner

    km = _new_manager()
    km.kernel_id = str(uuid.uuid4())
    km.provisioner = ForkProvisioner(
        kernel_id=km.kernel_id, kernel_spec=km.kernel_spec, parent=km, preload=list(preload)
    )
    try:
        km.start_kernel(extra_arguments=list(extra_arguments))
    except Exception as exc:
        raise WarmKernelError(f"could not start a {KERNEL_NAME!r} kernel: {exc}") from exc
    return km


def _wait_for_ready(kc: Any, timeout: float | None = None) -> None:
    """`KernelClient.wait_for_ready` without its fixed wait: that one ends by reading IOPub until
    0.2 s pass without a message, paid twice per task (the hand-over and papermill's client).

    Ready means, as there: a `kernel_info` reply on the shell channel and IOPub connected. Here the
    proof of IOPub is the request's own `idle` status, after which nothing of it is still due.

    Raises:
        RuntimeError: the kernel died or did not answer within `timeout` seconds (as upstream).
    """
    from queue import Empty

    deadline = time.monotonic() + (START_TIMEOUT if timeout is None else timeout)
    while True:
        msg_id = kc.kernel_info()
        reply = None
        while reply is None and time.monotonic() < deadline:
            try:
                msg = kc.get_shell_msg(timeout=1)
            except Empty:
                break
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "kernel_info_reply":
                reply = msg
        if reply is not None:
            kc._handle_kernel_info_reply(reply)  # noqa: SLF001 - what upstream does with the reply
            while True:  # this request's busy/idle on IOPub (a slow subscription loses them: ask again)
                try:
                    msg = kc.get_iopub_msg(timeout=0.2)
                except Empty:
                    break
                if (
                    msg["parent_header"].get("msg_id") == msg_id
                    and msg["msg_type"] == "status"
                    and msg["content"].get("execution_state") == "idle"
                ):
                    return
        if not kc.is_alive():
            raise RuntimeError("Kernel died before replying to kernel_info")
        if time.monotonic() > deadline:
            raise RuntimeError(f"Kernel didn't respond in {timeout} seconds")


def _execute_silently(km: KernelManager, code: str, timeout: float = START_TIMEOUT) -> None:
    """Run `code` without history or execution count; raise if it fails."""
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=timeout)
        reply = kc.execute_interactive(
            code, silent=True, store_history=False, timeout=timeout, output_hook=lambda _msg: None
        )
    except Exception as exc:
        raise WarmKernelError(f"warming a kernel failed: {exc}") from exc
    finally:
        kc.stop_channels()
    content = reply.get("content", {})
    if content.get("status") != "ok":
        raise WarmKernelError(f"warming a kernel failed: {content.get('ename')}: {content.get('evalue')}")


def _shutdown(km: KernelManager) -> None:
    for kc in getattr(km, "lakehouse_clients", ()):
        try:
            kc.stop_channels()
        except Exception as exc:  # a client already closed
            log.debug("client stop: %s", exc)
    try:
        if km.has_kernel:
            km.shutdown_kernel(now=True)
        km.cleanup_resources()
    except Exception as exc:  # a kernel that already died
        log.debug("kernel shutdown: %s", exc)
    sockets = Path(km.ip).parent
    if km.transport == "ipc" and sockets.name.startswith(_IPC_PREFIX):
        shutil.rmtree(sockets, ignore_errors=True)


def kernel_cpu_seconds(km: KernelManager) -> float | None:
    """CPU seconds (user + system) a running kernel has used since it started (a forked one: since
    the fork), read from /proc; None where there is no /proc or the kernel is gone."""
    pid = getattr(getattr(km, "provisioner", None), "pid", None)
    if not pid:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


# ----------------------------------------------------------------------------- inside the kernel


def warm_up(env: str, modules: Sequence[str] = (), *, lazy_tables: bool = False) -> None:
    """Import what the notebooks use (`modules`, named by the pool's caller) and open the engine
    session (locally only; with `lazy_tables`, tables are registered when first named)."""
    import importlib

    import pandas  # noqa: F401
    import pyspark.sql.functions  # noqa: F401

    from retail_lakehouse import engine
    from retail_lakehouse.core.config import load_settings

    for name in modules:
        importlib.import_module(name)

    if load_settings(env).is_local and os.environ.get("SPARK_REMOTE"):
        engine.get_spark(env, lazy_tables=lazy_tables)


def refresh(env: str) -> None:
    """Register the tables created since the session opened (by the tasks that ran meanwhile)."""
    from retail_lakehouse import engine
    from retail_lakehouse.core.config import load_settings

    if load_settings(env).is_local and os.environ.get("SPARK_REMOTE"):
        engine.refresh_tables(env)


# ----------------------------------------------------------------------------- kernel spec

WARM_SPEC = "lakehouse-warm"


def install_kernel_spec(prefix: str | None = None, *, preload: Sequence[str] = ()) -> str:
    """Install the `lakehouse-warm` kernel spec into `prefix` (default: this environment).

    Args:
        prefix: the environment's prefix (default: this interpreter's).
        preload: modules its kernels import; the fork server imports them once, before forking.

    Returns:
        The folder of the installed spec.
    """
    import json
    import sys

    from jupyter_client.kernelspec import KernelSpecManager

    python = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    spec = {
        "argv": python.argv,
        "display_name": "Python 3 (lakehouse, warm)",
        "language": "python",
        "metadata": {
            "kernel_provisioner": {
                "provisioner_name": "lakehouse-fork-provisioner",
                "config": {"preload": list(preload)},
            }
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "kernel.json").write_text(json.dumps(spec, indent=1))
        return KernelSpecManager().install_kernel_spec(tmp, WARM_SPEC, prefix=prefix or sys.prefix)
