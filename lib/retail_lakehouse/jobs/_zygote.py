"""A fork server for Jupyter kernels: one process imports the kernel and the library once, then
forks a kernel per request, so a new kernel costs a fork (milliseconds) instead of a fresh
interpreter importing ipykernel, pandas, pyspark, plotly, databricks-sdk and the library (about
5 s on 2 cores).

The server is shared by every process of the user that runs kernels on the same Python with the
same library code (the runner, papermill, nbmake, the book): the first one starts it in the
background, later ones fork from it. It listens on a unix socket in a folder only the user can
enter (`$TMPDIR/lakehouse-kernels-<uid>/`), refuses peers of another uid, stops after
`LAKEHOUSE_KERNEL_IDLE_MINUTES` (default 20) without a request, and is replaced when the library
changes. `LAKEHOUSE_FORK_KERNELS=0` launches kernels as plain processes instead.

The server is single-threaded and opens no connection before forking (no gRPC channel, no ZeroMQ
context): each child starts its own, as a freshly launched kernel would. The child runs
`ipykernel_launcher` with the requester's arguments, environment, working directory, stdout and
stderr (passed over the socket), and exits when the requesting process does.

Protocol: one JSON line each way, with the requester's stdout/stderr descriptors attached:
    {"argv": [...], "cwd": "...", "env": {...}, "client_pid": 123}  ->  {"pid": 1234}   (or {"error": "..."})

`ForkProvisioner` is a jupyter_client provisioner (the `lakehouse-warm` kernel spec) that asks the
server instead of `Popen`; the kernel manager drives the child (signals, kill, liveness) by its pid.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from jupyter_client.provisioning import LocalProvisioner
from traitlets import List, Unicode

from retail_lakehouse.core.config import env_flag, files_stamp, library_files
from retail_lakehouse.core.errors import KernelError

__all__ = ["ForkProvisioner", "ZygoteError", "enabled", "running_servers", "spawn", "stop_servers"]

log = logging.getLogger(__name__)

# What any kernel of this project imports anyway (the heavy part of its start). The modules of the
# layers above (pipeline, ops) come with each request: its caller names them (`preload`), the server
# imports them once, before forking, so later kernels have them too.
PRELOAD = (
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    # Every kernel's start imports it (and debugpy, pydevd: 140 modules, about 0.25 s of CPU of the
    # 0.3 s a forked kernel costs); importing it starts no thread.
    "ipykernel.debugger",
    "IPython",
    "pandas",
    "pyarrow",
    "retail_lakehouse.engine",  # first: it points SPARK_HOME at the package for pyspark's client
    "pyspark.sql.connect.session",
    "pyspark.sql.functions",
    "retail_lakehouse.core.params",
    "plotly.graph_objects",
    "plotly.express",
    "plotly.io",
    "databricks.sdk",
    "databricks.sdk.service.sql",
    "databricks.sdk.service.jobs",
    "databricks.sdk.service.compute",
    "retail_lakehouse.databricks.workspace",
    "IPython.display",
    "pysail.spark.datasource.jdbc",
    # Not deltalake: importing it starts a native thread, and a fork copies no threads.
)
_LAUNCHER = "ipykernel_launcher"
DEFAULT_IDLE_MINUTES = 20.0
START_TIMEOUT = 90.0
_MAX_REQUEST = 1 << 20


class ZygoteError(KernelError):
    """The fork server could not start or fork (callers fall back to launching a process)."""


def enabled() -> bool:
    """Whether kernels may be forked (`LAKEHOUSE_FORK_KERNELS=0` turns it off)."""
    return env_flag("LAKEHOUSE_FORK_KERNELS")


# ----------------------------------------------------------------------------- where it lives


def _socket_dir() -> Path:
    """`$TMPDIR/lakehouse-kernels-<uid>`, mode 0700 and ours (anything else is refused)."""
    path = Path(tempfile.gettempdir()) / f"lakehouse-kernels-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = path.lstat()
    if not path.is_dir() or path.is_symlink() or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ZygoteError(f"{path} is not a private folder of this user (mode {info.st_mode & 0o777:o}): "
                          "remove it, or set LAKEHOUSE_FORK_KERNELS=0")
    return path


def _code_stamp(python: str) -> tuple[str, str]:
    """(python key, code key): a server serves one interpreter and one version of the library, its
    YAML included (the registry, rules and checks its preloaded modules read at import, which
    `lakehouse onboard` edits)."""
    py = hashlib.sha1(os.path.realpath(python).encode() + python.encode()).hexdigest()[:10]
    return py, files_stamp(library_files((".py", ".yaml")), py)[:10]


def _paths(python: str) -> tuple[Path, str]:
    """(socket path, python key) of the server for `python` and the library as it is now."""
    py, code = _code_stamp(python)
    return _socket_dir() / f"{py}-{code}.sock", py


# ----------------------------------------------------------------------------- client side


def spawn(
    python: str, argv: list[str], cwd: str, env: dict[str, str], preload: list[str] | tuple[str, ...] = ()
) -> int:
    """Fork a kernel `python -m ipykernel_launcher *argv` from the shared server (started if needed).

    `preload`: modules the kernel will import, imported by the server first (once) if it has not.

    Raises:
        ZygoteError: no server could be started or it refused; launch the kernel as a process.
    """
    sock_path, py = _paths(python)
    try:
        return _request(sock_path, argv, cwd, env, preload)
    except (FileNotFoundError, ConnectionRefusedError):
        pass  # not running (or it just stopped): start one
    _start(python, sock_path, py)
    try:
        return _request(sock_path, argv, cwd, env, preload)
    except OSError as exc:
        raise ZygoteError(f"fork server {sock_path} did not answer: {exc}") from exc


def _request(
    sock_path: Path, argv: list[str], cwd: str, env: dict[str, str], preload: list[str] | tuple[str, ...] = ()
) -> int:
    request = {"argv": argv, "cwd": cwd, "env": env, "client_pid": os.getpid(), "preload": list(preload)}
    payload = json.dumps(request).encode() + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(30)
        conn.connect(str(sock_path))
        sent = socket.send_fds(conn, [payload], [1, 2])
        conn.sendall(payload[sent:])
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = conn.recv(4096)
            if not chunk:
                raise ZygoteError("fork server closed the connection")
            reply += chunk
    answer = json.loads(reply)
    if "pid" not in answer:
        raise ZygoteError(f"fork server refused: {answer.get('error')}")
    return int(answer["pid"])


def _start(python: str, sock_path: Path, py: str) -> None:
    """Start the server for `sock_path` in the background (one at a time) and wait until it listens."""
    import fcntl

    with open(sock_path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be starting it: wait, then use it
        if _answers(sock_path) is not None:
            return
        _stop_others(sock_path, py)
        sock_path.unlink(missing_ok=True)
        idle = os.environ.get("LAKEHOUSE_KERNEL_IDLE_MINUTES") or str(DEFAULT_IDLE_MINUTES)
        with open(sock_path.with_suffix(".log"), "ab") as out:
            proc = subprocess.Popen(  # noqa: S603 - our own module on the kernel's interpreter
                [python, "-m", __name__, "--socket", str(sock_path), "--idle-minutes", idle],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd="/", start_new_session=True, close_fds=True,
                env={k: v for k, v in os.environ.items() if k != "SPARK_REMOTE"},
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ZygoteError(f"fork server exited with code {proc.returncode} (see {sock_path.with_suffix('.log')})")
            if _answers(sock_path) is not None:
                return
            time.sleep(0.05)
        proc.kill()
        raise ZygoteError(f"fork server did not listen within {START_TIMEOUT:.0f} s")


def _answers(sock_path: Path) -> int | None:
    """The pid of the server listening on `sock_path`, if it answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(5)
        try:
            conn.connect(str(sock_path))
            conn.sendall(b"{}\n")  # an empty request: the server names itself and forks nothing
            return int(json.loads(conn.recv(256))["server"])
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _stop_others(keep: Path, py: str) -> None:
    """Stop servers of the same interpreter running older library code; remove their files."""
    for stem in {p.stem for p in keep.parent.glob(f"{py}-*")} - {keep.stem}:
        _stop(keep.parent / f"{stem}.pid")
        for suffix in (".lock", ".log"):
            (keep.parent / f"{stem}{suffix}").unlink(missing_ok=True)


def _stop(pid_file: Path) -> int | None:
    """SIGTERM the server of `pid_file` (kernels it forked keep running); its pid if one was running."""
    try:
        pid: int | None = int(pid_file.read_text())
    except (OSError, ValueError):
        pid = _answers(pid_file.with_suffix(".sock"))
    if pid is not None and _is_server(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    else:
        pid = None
    for suffix in (".pid", ".sock"):
        pid_file.with_suffix(suffix).unlink(missing_ok=True)
    return pid


def _is_server(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return __name__.encode() in cmdline


def running_servers() -> list[dict[str, Any]]:
    """The fork servers of this user that answer: socket, pid."""
    try:
        folder = _socket_dir()
    except ZygoteError:
        return []
    found = []
    for sock in sorted(folder.glob("*.sock")):
        if (pid := _answers(sock)) is not None:
            found.append({"socket": str(sock), "pid": pid})
    return found


def stop_servers() -> list[int]:
    """Stop every fork server of this user; their pids (kernels already forked keep running)."""
    try:
        folder = _socket_dir()
    except ZygoteError:
        return []
    stems = {p.stem for p in folder.glob("*.sock")} | {p.stem for p in folder.glob("*.pid")}
    return [pid for stem in sorted(stems) if (pid := _stop(folder / f"{stem}.pid")) is not None]


class _ForkedKernel:
    """The `Popen` surface jupyter_client uses, for a kernel forked by the server (not our child:
    the server reaps it, so liveness is whether the pid still exists)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.stdin = self.stdout = self.stderr = None

    def poll(self) -> int | None:
        # A killed kernel stays a zombie until the server reaps it, which can take seconds (the
        # server learns of it when SIGCHLD reaches its main thread): a zombie has exited, so it
        # counts as gone, as a reaped pid does. Else every shutdown waits for the reaping.
        if self.returncode is None and _gone(self.pid):
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
    """Launches `python -m ipykernel_launcher ...` as a fork of the shared warm server; launches a
    plain process when forking is off or the server cannot be had.

    Its kernels talk over unix sockets in a private folder rather than TCP on 127.0.0.1: nothing
    else on the machine can connect, and ipykernel draws no "running over TCP without encryption"
    warning into every papermill run.
    """

    preload = List(Unicode(), help="modules the kernel imports: the fork server imports them first").tag(
        config=True
    )
    _sockets: str | None = None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        km = self.parent
        if km is not None and km.transport == "tcp" and km.ip in ("127.0.0.1", "localhost", ""):
            self._sockets = tempfile.mkdtemp(prefix="lakehouse-kernel-")
            km.cache_ports = False
            km.transport = "ipc"
            km.ip = os.path.join(self._sockets, "k")
        return await super().pre_launch(**kwargs)

    async def cleanup(self, restart: bool = False) -> None:
        await super().cleanup(restart=restart)
        if not restart and self._sockets:
            import shutil

            shutil.rmtree(self._sockets, ignore_errors=True)
            self._sockets = None

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        if _LAUNCHER not in cmd or not enabled():
            return await super().launch_kernel(cmd, **kwargs)
        argv = cmd[cmd.index(_LAUNCHER) + 1 :]
        cwd = str(kwargs.get("cwd") or os.getcwd())
        env = {str(k): str(v) for k, v in (kwargs.get("env") or os.environ).items()}
        try:
            pid = spawn(cmd[0], argv, cwd, env, list(self.preload))
        except (ZygoteError, OSError, ValueError) as exc:
            log.warning("fork server unavailable (%s): launching the kernel as a new process", exc)
            return await super().launch_kernel(cmd, **kwargs)
        self.process = _ForkedKernel(pid)
        self.pid = self.pgid = pid  # the child is its own session and process group leader
        self.cwd = cwd
        return self.connection_info


# ----------------------------------------------------------------------------- server side


def _serve(sock_path: Path, idle_minutes: float) -> None:
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    _exercise()

    def reap(*_: object) -> None:
        while True:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    signal.signal(signal.SIGCHLD, reap)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_mask = os.umask(0o177)
    try:
        listener.bind(str(sock_path))
    finally:
        os.umask(old_mask)
    listener.listen(16)
    listener.settimeout(min(30.0, idle_minutes * 60) if idle_minutes > 0 else 30.0)
    inode = sock_path.stat().st_ino
    sock_path.with_suffix(".pid").write_text(str(os.getpid()))
    print(f"fork server {os.getpid()} listening on {sock_path}", flush=True)
    last = time.monotonic()
    try:
        while True:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                if idle_minutes > 0 and time.monotonic() - last > idle_minutes * 60:
                    print(f"no request for {idle_minutes:g} minutes: stopping", flush=True)
                    return
                try:
                    if sock_path.stat().st_ino != inode:
                        return  # replaced or stopped
                except FileNotFoundError:
                    return
                continue
            except InterruptedError:
                continue
            with conn:
                if _handle(conn, listener):
                    last = time.monotonic()
    finally:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            if sock_path.stat().st_ino == inode:
                sock_path.unlink()


def _exercise() -> None:
    """First calls whose caches every kernel would fill again: plotly's templates and validators,
    pandas' Styler templates (about 0.3 s of a notebook with charts and styled tables)."""
    import pandas as pd
    import plotly.express as px
    import plotly.io as pio

    frame = pd.DataFrame({"x": ["a", "b"], "y": [1, 2], "c": ["k", "l"]})
    for chart in (px.bar, px.line, px.scatter):
        pio.to_json(chart(frame, x="x", y="y", color="c", title="t"))
    frame.style.apply(lambda row: [""] * len(row), axis=1).to_html()


def _handle(conn: socket.socket, listener: socket.socket) -> bool:
    """Serve one request; True if a kernel was forked."""
    conn.settimeout(10)
    fds: list[int] = []
    try:
        uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
        if uid != os.getuid():
            conn.sendall(json.dumps({"error": "peer of another user"}).encode() + b"\n")
            return False
        data = b""
        while not data.endswith(b"\n") and len(data) < _MAX_REQUEST:
            chunk, got, _flags, _addr = socket.recv_fds(conn, 65536, 4)
            fds += got
            if not chunk:
                break
            data += chunk
        request = json.loads(data or b"{}")
        if not request:
            conn.sendall(json.dumps({"server": os.getpid()}).encode() + b"\n")  # a liveness probe
            return False
        argv, cwd, env = list(request["argv"]), str(request["cwd"]), dict(request["env"])
        client = int(request.get("client_pid") or 0)
        _preload([str(m) for m in request.get("preload") or []])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps({"error": f"bad request: {exc}"}).encode() + b"\n")
        for fd in fds:
            os.close(fd)
        return False
    # Everything imported so far is shared with the kernel copy-on-write: frozen, the kernel's garbage
    # collector never walks (so never writes to, so never copies) those pages.
    gc.collect()
    gc.freeze()
    pid = os.fork()
    if pid == 0:
        listener.close()
        _child(argv, cwd, env, client, fds[:2])  # never returns
    for fd in fds:
        os.close(fd)
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    return True


def _preload(modules: list[str]) -> None:
    """Import what a request names, once, before forking (a module that fails is the kernel's to report)."""
    import importlib

    for name in modules:
        if name not in sys.modules:
            try:
                importlib.import_module(name)
            except Exception as exc:  # the kernel imports it again and shows the error to its user
                print(f"preload {name}: {type(exc).__name__}: {exc}", flush=True)


def _child(argv: list[str], cwd: str, env: dict[str, str], client: int, fds: list[int]) -> None:
    code = 1
    try:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        out, err = (fds + [2, 2])[:2] if fds else (2, 2)
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        # The kernel lives as long as the process that asked for it (not as long as this server:
        # a server replaced after a library change leaves the kernels it forked running).
        if client:
            threading.Thread(target=_exit_with, args=(client,), daemon=True).start()
        # parent_handle=1: no parent poller (see above) and no "connect another client" banner,
        # which ipykernel prints to the terminal of a kernel without a parent handle.
        sys.argv = [_LAUNCHER, *argv, "--IPKernelApp.parent_handle=1"]
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


def _exit_with(pid: int) -> None:
    """End this kernel when the process that asked for it is gone (killed without shutting it down)."""
    while not _gone(pid):
        time.sleep(1.0)
    os._exit(1)


def _gone(pid: int) -> bool:
    """Whether `pid` has exited (a zombie its parent has not reaped yet counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # the pid now belongs to another user's process: ours is gone
            return True
        return False
    return state in ("Z", "X")


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog=f"python -m {__name__}", description="fork server for kernels")
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--idle-minutes", type=float, default=DEFAULT_IDLE_MINUTES)
    args = parser.parse_args(argv)
    _serve(args.socket, args.idle_minutes)


if __name__ == "__main__":
    main()
