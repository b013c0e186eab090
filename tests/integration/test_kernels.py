"""Warm kernels for the runner: forked from the fork server, one notebook each, isolated, current
with tables created after they warmed up, and gone when the process that started them dies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retail_lakehouse.ops import KERNEL_PRELOAD

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(isolated_home):
    from retail_lakehouse import engine
    from retail_lakehouse.core.config import load_settings

    engine.start_local_server(load_settings("local"))  # exports SPARK_REMOTE, as the runner does
    return isolated_home


def run(km, code: str, counts: list[int] | None = None) -> str:
    """Execute `code` in the kernel; its stdout (raises on an error). Appends the cell's count to `counts`."""
    kc = km.client()
    kc.start_channels()
    out: list[str] = []
    try:
        kc.wait_for_ready(timeout=60)
        reply = kc.execute_interactive(
            code, timeout=120, output_hook=lambda m: out.append(m["content"].get("text", ""))
        )
    finally:
        kc.stop_channels()
    assert reply["content"]["status"] == "ok", reply["content"]
    if counts is not None:
        counts.append(reply["content"]["execution_count"])
    return "".join(out)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


PROBE = "import os, sys, json; print(json.dumps({'pid': os.getpid(), 'ppid': os.getppid(), 'cwd': os.getcwd(), "
PROBE += "'preloaded': 'pandas' in sys.modules and 'retail_lakehouse.pipeline.gold' in sys.modules}))"


def warm_spec_probe(cwd: Path) -> dict:
    """PROBE's answer from a kernel started by the `lakehouse-warm` spec in `cwd`."""
    from jupyter_client.manager import KernelManager

    from retail_lakehouse.jobs.kernels import WARM_SPEC

    km = KernelManager(kernel_name=WARM_SPEC)
    km.start_kernel(cwd=str(cwd))
    try:
        return json.loads(run(km, PROBE))
    finally:
        km.shutdown_kernel(now=True)


def test_each_notebook_gets_its_own_forked_warm_kernel(home, tmp_path):
    from retail_lakehouse.jobs.kernels import KernelPool

    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir(), b_dir.mkdir()
    with KernelPool(size=2, budget=3, preload=KERNEL_PRELOAD) as pool:
        a, b = pool.acquire(a_dir), pool.acquire(b_dir)
        try:
            counts: list[int] = []
            pa, pb = json.loads(run(a, PROBE, counts)), json.loads(run(b, PROBE, counts))
            run(a, "secret_of_a = 42")
            assert run(b, "print('secret_of_a' in globals())").strip() == "False"
        finally:
            pool.release(a), pool.release(b)
    assert pa["pid"] != pb["pid"] and os.getpid() not in {pa["pid"], pb["pid"]}
    assert pa["ppid"] == pb["ppid"] != os.getpid(), "kernels are forked from the fork server"
    assert (pa["cwd"], pb["cwd"]) == (str(a_dir), str(b_dir))
    assert pa["preloaded"] and pb["preloaded"]
    assert counts == [1, 1], "the notebook's first cell is In [1]: the warm-up left no history"
    deadline = time.monotonic() + 10
    while (alive(pa["pid"]) or alive(pb["pid"])) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pa["pid"]) and not alive(pb["pid"]), "a released kernel is shut down"
    assert not list(a_dir.iterdir()) and not list(b_dir.iterdir()), "no socket files in the notebook's folder"


def test_tables_created_or_deleted_after_the_warm_up(home):
    import shutil

    from retail_lakehouse import engine
    from retail_lakehouse.jobs.kernels import KernelPool

    engine.sql("CREATE TABLE retail_datalake.local_gold.gone_later (id INT) USING delta")
    with KernelPool(size=1, budget=1) as pool:
        time.sleep(1)  # let the kernel warm up (open its session, register tables) first
        engine.sql("CREATE TABLE retail_datalake.local_gold.made_later (id INT) USING delta")
        engine.sql("INSERT INTO retail_datalake.local_gold.made_later VALUES (1), (2), (3)")
        shutil.rmtree(engine.table_dir("retail_datalake.local_gold.gone_later"))
        km = pool.acquire(home)
        try:
            out = run(km, "from retail_lakehouse.engine import get_spark\n"
                          "spark = get_spark('local')\n"
                          "print(spark.table('retail_datalake.local_gold.made_later').count())\n"
                          "print(sorted(r.tableName for r in spark.sql('SHOW TABLES IN retail_datalake.local_gold').collect()))")
        finally:
            pool.release(km)
    count, tables = out.strip().splitlines()
    assert count == "3"
    assert "made_later" in tables and "gone_later" not in tables


def test_cold_kernels_without_the_fork_server(home, monkeypatch, tmp_path):
    from retail_lakehouse.jobs.kernels import KernelPool

    monkeypatch.setenv("LAKEHOUSE_FORK_KERNELS", "0")
    with KernelPool(size=1, budget=1, preload=KERNEL_PRELOAD) as pool:
        km = pool.acquire(tmp_path)
        try:
            probe = json.loads(run(km, PROBE))
        finally:
            pool.release(km)
    assert probe["ppid"] == os.getpid() and probe["cwd"] == str(tmp_path) and probe["preloaded"]


def test_kernels_exit_when_the_runner_dies_and_the_fork_server_stays(home, tmp_path):
    from retail_lakehouse.jobs import _zygote

    script = tmp_path / "runner.py"
    script.write_text(
        "import json, os, sys\n"
        "from retail_lakehouse.jobs.kernels import KernelPool\n"
        "pool = KernelPool(size=1, budget=3).__enter__()\n"
        "km = pool.acquire(os.getcwd())\n"
        "print(json.dumps({'kernel': km.provisioner.pid}), flush=True)\n"
        "os.kill(os.getpid(), 9)\n"  # killed: no clean-up runs
    )
    # The kernel shares the runner's stdout: run() returning at all shows the kernel let go of it.
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    pids = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "--existing" not in proc.stdout + proc.stderr, "no ipykernel banner on the runner's terminal"
    deadline = time.monotonic() + 15
    while alive(pids["kernel"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(pids["kernel"]), "the kernel outlived the process that started it"
    servers = _zygote.running_servers()
    assert servers and all(alive(s["pid"]) for s in servers), "the shared fork server serves the next process"


def test_the_fork_server_is_shared_between_processes_and_private(home, tmp_path):
    from retail_lakehouse.jobs import _zygote

    code = ("import json, os\n"
            "from retail_lakehouse.jobs.kernels import KernelPool\n"
            "with KernelPool(size=1, budget=1) as pool:\n"
            "    km = pool.acquire(os.getcwd())\n"
            "    kc = km.client(); kc.start_channels(); kc.wait_for_ready(timeout=60)\n"
            "    out = []\n"
            "    kc.execute_interactive('import os; print(os.getppid())', output_hook=lambda m: out.append(m['content'].get('text', '')))\n"
            "    kc.stop_channels(); pool.release(km)\n"
            "print(json.dumps({'ppid': int(''.join(out))}))\n")
    parents = [json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                                         cwd=tmp_path, check=True).stdout.strip().splitlines()[-1])["ppid"]
               for _ in range(2)]
    servers = {s["pid"] for s in _zygote.running_servers()}
    assert parents[0] == parents[1] and parents[0] in servers, "both processes forked from the same server"
    folder = Path(_zygote.running_servers()[0]["socket"]).parent
    assert folder.stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o077 == 0 for p in folder.glob("*.sock"))


def test_the_lakehouse_warm_kernel_spec_forks(home, tmp_path):
    """`make setup` installs it; nbmake in `make test` runs the notebooks on it."""
    probe = warm_spec_probe(tmp_path)
    assert probe["ppid"] != os.getpid() and probe["cwd"] == str(tmp_path) and probe["preloaded"]


def test_a_server_of_older_library_code_is_replaced(home, monkeypatch, tmp_path):
    from retail_lakehouse.jobs import _zygote

    python = sys.executable
    _zygote.spawn(python, ["--version"], "/", {})  # the child prints a version and exits; the server stays
    py, code = _zygote._code_stamp(python)
    old = _zygote._answers(_zygote._socket_dir() / f"{py}-{code}.sock")
    monkeypatch.setattr(_zygote, "_code_stamp", lambda _python: (py, code + "x"))  # as after an edit
    _zygote.spawn(python, ["--version"], "/", {})
    new_sock = _zygote._socket_dir() / f"{py}-{code}x.sock"
    new = _zygote._answers(new_sock)
    try:
        deadline = time.monotonic() + 10
        while alive(old) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert old and new and new != old
        assert not alive(old), "the server of the older code was stopped"
        assert not (_zygote._socket_dir() / f"{py}-{code}.sock").exists()
    finally:
        _zygote._stop(new_sock.with_suffix(".pid"))


def test_a_shared_folder_is_refused_and_kernels_launch_plainly(home, monkeypatch, tmp_path):
    import tempfile

    from retail_lakehouse.jobs import _zygote

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (tmp_path / f"lakehouse-kernels-{os.getuid()}").mkdir(mode=0o777)
    os.chmod(tmp_path / f"lakehouse-kernels-{os.getuid()}", 0o777)
    with pytest.raises(_zygote.ZygoteError, match="not a private folder"):
        _zygote.spawn(sys.executable, ["--version"], "/", {})
    probe = warm_spec_probe(tmp_path)
    assert probe["ppid"] == os.getpid(), "launched as a child of this process, not forked"


def test_lakehouse_kernels_status_and_stop(home, tmp_path):
    from retail_lakehouse.jobs import _zygote

    lakehouse = [sys.executable, "-m", "retail_lakehouse.cli"]
    _zygote.spawn(sys.executable, ["--version"], "/", {})
    status = subprocess.run([*lakehouse, "kernels", "status"], capture_output=True, text=True, check=True).stdout
    pid = _zygote.running_servers()[0]["pid"]
    assert f"pid {pid}" in status
    stop = subprocess.run([*lakehouse, "kernels", "stop"], capture_output=True, text=True, check=True).stdout
    assert str(pid) in stop
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pid) and _zygote.running_servers() == []
    assert "no kernel fork server running" in subprocess.run([*lakehouse, "kernels", "status"], capture_output=True,
                                                             text=True, check=True).stdout


# The cold path of a fresh machine: nothing imported yet, a warm kernel starting in its thread
# while the caller imports papermill (the book's and the runner's order). jupyter_client's modules
# import each other, so two threads importing it first at once failed with "partially initialized
# module" (issue 12). Each case runs in a new interpreter: in this process it is imported already.
_COLD = """
import sys, json
from retail_lakehouse.jobs.kernels import NOTEBOOK_MACHINERY, KernelPool
already = [m for m in NOTEBOOK_MACHINERY if m in sys.modules]
pool = KernelPool(size=1, budget=1)
missing = [m for m in NOTEBOOK_MACHINERY if m not in sys.modules]
import nbformat
with pool:
    import papermill
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    nbformat.write(nb, sys.argv[1] + "/in.ipynb")
    km = pool.acquire(sys.argv[1])
    try:
        papermill.execute_notebook(sys.argv[1] + "/in.ipynb", sys.argv[1] + "/out.ipynb", km=km,
                                   kernel_name="python3", progress_bar=False)
    finally:
        pool.release(km)
out = nbformat.read(sys.argv[1] + "/out.ipynb", as_version=4).cells[0].outputs[0]["text"]
print(json.dumps({"already": already, "missing": missing, "out": out}))
"""


def test_a_cold_interpreter_imports_notebook_machinery_before_any_thread(home, tmp_path):
    proc = subprocess.run([sys.executable, "-c", _COLD, str(tmp_path)], capture_output=True, text=True,
                          timeout=180, env=os.environ)
    assert proc.returncode == 0, proc.stderr[-3000:]
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    assert answer["already"] == [], "the library imported jupyter machinery on import: the test proves nothing"
    assert answer["missing"] == []  # all imported by the pool's constructor, before its thread
    assert answer["out"] == "42\n"
    assert "partially initialized" not in proc.stderr
    assert "warm kernel failed" not in proc.stderr
    assert "without encryption" not in proc.stderr


def test_kernels_import_what_their_caller_names_and_nothing_of_the_layers_above(home, monkeypatch, tmp_path):
    """The job runtime names no pipeline or ops module: a kernel imports what the pool's caller
    names (plain kernels here, so that the shared fork server's earlier imports do not count)."""
    from retail_lakehouse.jobs.kernels import KernelPool

    monkeypatch.setenv("LAKEHOUSE_FORK_KERNELS", "0")
    probe = "import sys; print(sorted(m for m in sys.modules if m.startswith(('retail_lakehouse.ops', " \
            "'retail_lakehouse.pipeline'))))"
    seen = {}
    for preload in ((), ("retail_lakehouse.pipeline.gold",)):
        with KernelPool(size=1, budget=1, preload=preload) as pool:
            km = pool.acquire(tmp_path)
            try:
                seen[preload] = run(km, probe)
            finally:
                pool.release(km)
    assert seen[()].strip() == "[]"
    assert "'retail_lakehouse.pipeline.gold'" in seen[("retail_lakehouse.pipeline.gold",)]
