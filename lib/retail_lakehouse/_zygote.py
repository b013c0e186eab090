"""A fork server for Jupyter kernels: one process imports the kernel and the library once, then
forks a kernel per request, so a new kernel costs a fork (milliseconds) instead of a fresh
interpreter importing ipykernel, pandas, pyspark and the library (about 2 s of CPU on 2 cores).

The server is single-threaded and opens no connection before forking (no gRPC channel, no ZeroMQ
context): each child starts its own, as a freshly launched kernel would. The child runs
`ipykernel_launcher` with the kernel manager's arguments, environment and working directory.

Protocol, one JSON line each way on stdin/stdout:
    {"argv": [...], "cwd": "...", "env": {...}}  ->  {"pid": 1234}   (or {"error": "..."})

`ForkProvisioner` is a jupyter_client provisioner that asks the server instead of `Popen`; the
kernel manager drives the child (signals, kill, liveness) by its pid.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Any

from jupyter_client.provisioning import LocalProvisioner

__all__ = ["ForkProvisioner", "ZygoteError", "server"]

log = logging.getLogger(__name__)

# What a kernel running a pipeline or ops notebook imports anyway (the heavy part of its start).
PRELOAD = (
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    "IPython",
    "pandas",
    "pyarrow",
    "pyspark.sql.connect.session",
    "pyspark.sql.functions",
    "retail_lakehouse.engine",
    "retail_lakehouse.params",
    "retail_lakehouse.ingest",
    "retail_lakehouse.silver",
    "retail_lakehouse.gold",
    "retail_lakehouse.quality",
    "plotly.graph_objects",
    "plotly.io",
    "databricks.sdk",
    "retail_lakehouse.workspace",
)
_LAUNCHER = "ipykernel_launcher"


class ZygoteError(RuntimeError):
    """The fork server could not start or fork (callers fall back to launching a process)."""


# ----------------------------------------------------------------------------- client side


class _Server:
    """The fork server of this process (started on first use, restarted if it died)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._python: str | None = None
        self._lock = threading.Lock()

    def spawn(self, python: str, argv: list[str], cwd: str, env: dict[str, str]) -> int:
        with self._lock:
            proc = self._ensure(python)
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(json.dumps({"argv": argv, "cwd": cwd, "env": env}) + "\n")
                proc.stdin.flush()
                line = proc.stdout.readline()
            except OSError as exc:
                self._stop_locked()
                raise ZygoteError(f"fork server died: {exc}") from exc
            if not line:
                self._stop_locked()
                raise ZygoteError("fork server exited")
            reply = json.loads(line)
            if "pid" not in reply:
                raise ZygoteError(f"fork server refused: {reply.get('error')}")
            return int(reply["pid"])

    @property
    def running(self) -> bool:
        """Whether this process has a live fork server."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        with self._lock:
            self._stop_locked()

    def _ensure(self, python: str) -> subprocess.Popen[str]:
        if self._proc is not None and (self._proc.poll() is not None or self._python != python):
            self._stop_locked()
        if self._proc is None:
            proc = subprocess.Popen(
                [python, "-m", __name__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            assert proc.stdout is not None
            ready = proc.stdout.readline()
            if json.loads(ready or "{}").get("ready") is not True:
                proc.kill()
                raise ZygoteError(f"fork server did not start: {ready!r}")
            self._proc, self._python = proc, python
        return self._proc

    def _stop_locked(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()


server = _Server()


class _ForkedKernel:
    """The `Popen` surface jupyter_client uses, for a kernel forked by the server (not our child:
    the server reaps it, so liveness is whether the pid still exists)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.stdin = self.stdout = self.stderr = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                self.returncode = 0
            except PermissionError:  # the pid was reused by someone else's process
                self.returncode = 0
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:  # noqa: ARG002 - Popen's signature
        while self.poll() is None:
            threading.Event().wait(0.05)
        return self.returncode or 0

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                self.returncode = 0

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class ForkProvisioner(LocalProvisioner):  # type: ignore[misc]
    """Launches `python -m ipykernel_launcher ...` as a fork of the warm server."""

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        if _LAUNCHER not in cmd:
            return await super().launch_kernel(cmd, **kwargs)
        argv = cmd[cmd.index(_LAUNCHER) + 1 :]
        cwd = str(kwargs.get("cwd") or os.getcwd())
        env = {str(k): str(v) for k, v in (kwargs.get("env") or os.environ).items()}
        pid = server.spawn(cmd[0], argv, cwd, env)
        self.process = _ForkedKernel(pid)
        self.pid = self.pgid = pid  # the child is its own session and process group leader
        self.cwd = cwd
        return self.connection_info


# ----------------------------------------------------------------------------- server side


def _serve() -> None:
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)

    def reap(*_: object) -> None:
        while True:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    signal.signal(signal.SIGCHLD, reap)
    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
            argv, cwd, env = list(request["argv"]), str(request["cwd"]), dict(request["env"])
        except (ValueError, KeyError, TypeError) as exc:
            out.write(json.dumps({"error": f"bad request: {exc}"}) + "\n")
            out.flush()
            continue
        pid = os.fork()
        if pid == 0:
            _child(argv, cwd, env)  # never returns
        out.write(json.dumps({"pid": pid}) + "\n")
        out.flush()


def _child(argv: list[str], cwd: str, env: dict[str, str]) -> None:
    code = 1
    try:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(2, 1)  # stdout is the server's reply pipe: the kernel's own output goes to stderr
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        # The kernel exits when its parent, this server, does (and the server exits when the
        # process that started it does: its stdin closes), as a launched kernel does.
        sys.argv = [_LAUNCHER, *argv, f"--IPKernelApp.parent_handle={os.getppid()}"]
        from ipykernel import kernelapp

        kernelapp.launch_new_instance()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    except BaseException:  # noqa: BLE001 - report and exit: a forked child must never return
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


if __name__ == "__main__":
    _serve()
