"""The `lakehouse` command."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as dt
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence

from retail_lakehouse.core.errors import LakehouseError, ParameterError


def _kv(items: Sequence[str] | None, flag: str = "--param") -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise ParameterError(flag, f"{item!r} is not KEY=VALUE")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


def cmd_sql(args: argparse.Namespace) -> int:
    import pandas as pd

    from retail_lakehouse import engine

    df = engine.sql(args.statement, _kv(args.param) or None, env=args.env)
    frame = df.limit(args.limit).toPandas()
    with pd.option_context("display.max_columns", 50, "display.width", 200, "display.max_colwidth", 60):
        print(frame.to_string(index=False) if len(frame.columns) else "OK")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from retail_lakehouse.jobs.runner import run_job
    from retail_lakehouse.ops import KERNEL_PRELOAD

    run = run_job(args.job, _kv(args.param), env=args.env, preload=KERNEL_PRELOAD)
    for task in run.tasks:
        line = f"  {task.task_key:<32} attempt {task.attempt}  {task.state:<15} {task.duration:6.1f}s"
        if task.error_class:
            line += f"  {task.error_class}: {(task.error_message or '').splitlines()[0][:120]}"
        print(line)
    print(f"job {run.job} run {run.run_id}: {run.state}")
    print(f"executed notebooks: {run.output_dir}")
    return 0 if run.state == "SUCCESS" else 1


def cmd_generate(args: argparse.Namespace) -> int:
    from retail_lakehouse.core.config import load_settings
    from retail_lakehouse.sandbox.generate import generate

    settings = load_settings("local")
    started = time.perf_counter()
    result = generate(
        settings.home,
        scale_factor=args.scale_factor,
        days=args.days,
        start_date=args.start_date,
        seed=args.seed,
        oltp_path=settings.sqlite_path(),
        landing_dir=settings.local_path("landing"),
    )
    print(f"generated {result.days} day(s) from {result.start_date} in {time.perf_counter() - started:.1f}s")
    print(f"  OLTP database: {result.oltp_path}")
    print(f"  POS landing:   {result.landing_dir} ({result.pos_files} files)")
    for table, rows in result.rows.items():
        print(f"  {table:<12} {rows:>10,} rows")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from retail_lakehouse.sandbox.demo import run_demo

    return run_demo(scale_factor=args.scale_factor, days=args.days, increments=args.increments)


def cmd_tables(args: argparse.Namespace) -> int:
    from retail_lakehouse.core.config import load_settings
    from retail_lakehouse.core.tables import registry

    settings = load_settings(args.env)
    for t in registry():
        print(f"{t.full_name(settings):<55} {len(t.columns):>3} cols  keys={','.join(t.keys)}")
    return 0


def cmd_workspace(args: argparse.Namespace) -> int:
    from retail_lakehouse.local import cli as ws

    if args.action == "start":
        return ws.cmd_start(args.port)
    if args.action == "stop":
        return ws.cmd_stop()
    return ws.cmd_status()


def cmd_kernels(args: argparse.Namespace) -> int:
    from retail_lakehouse.jobs import _zygote

    if args.action == "install":
        from retail_lakehouse.jobs.kernels import install_kernel_spec
        from retail_lakehouse.ops import KERNEL_PRELOAD

        print(install_kernel_spec(preload=KERNEL_PRELOAD))
        return 0
    if args.action == "stop":
        stopped = _zygote.stop_servers()
        print(f"stopped {len(stopped)} kernel fork server(s)" + (f": pids {', '.join(map(str, stopped))}" if stopped else ""))
        return 0
    servers = _zygote.running_servers()
    if not servers:
        print("no kernel fork server running (the next warm kernel starts one)")
    for server in servers:
        print(f"kernel fork server pid {server['pid']} on {server['socket']}")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from retail_lakehouse.databricks.deploy import run_cli

    return run_cli(args.env, args.dry_run, args.yes)


def cmd_book(args: argparse.Namespace) -> int:
    from retail_lakehouse.site.book import build_book

    build_book(clean=args.clean)
    return 0


def cmd_drill(args: argparse.Namespace) -> int:
    from retail_lakehouse.sandbox import drills

    if args.list or not args.name:
        for drill in drills.drills().values():
            print(f"  {drill.name:<24} -> ops_notebooks/{drill.notebook}.ipynb  {drill.summary}")
        return 0
    result = drills.run(args.name)
    print(f"drill {result.name}: {result.description}")
    params = " ".join(f"-p {k} {v}" for k, v in result.parameters.items())
    print(f"diagnose / fix it with:\n  papermill ops_notebooks/{result.notebook}.ipynb out.ipynb {params}")
    return 0


def _alerts_listen(args: argparse.Namespace) -> int:
    from retail_lakehouse.alerts import load_config
    from retail_lakehouse.sandbox.alert_receivers import Receivers

    config = load_config("local")
    http_port = config.http_port if args.http_port is None else args.http_port
    smtp_port = config.smtp_port if args.smtp_port is None else args.smtp_port
    with Receivers(http_port, smtp_port) as receivers:
        for name, url in receivers.urls.items():
            print(f"  {name:<10} {url}")
        print(f"storing what arrives in {receivers.directory}; Ctrl-C stops", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopped")
    return 0


def _alerts_list(args: argparse.Namespace) -> int:
    from retail_lakehouse.alerts import store

    rows = store.recent(args.env or "local", args.limit)
    if not rows:
        print("no alerts recorded yet")
    for r in rows:
        resolved = f"resolved {r['resolved_at']:%Y-%m-%d %H:%M:%S}" if r["resolved_at"] else "open"
        print(f"{r['created_at']:%Y-%m-%d %H:%M:%S}  {r['severity']:<8} {r['source']:<10} {r['alert_key']}")
        print(f"    {r['summary'][:100]}")
        print(f"    {r['delivery_status']}, {r['attempts']} attempt(s), {r['suppressed_count']} suppressed, {resolved}")
        for name, d in json.loads(r["delivery"] or "{}").items():
            detail = d.get("detail", "") if isinstance(d, dict) else d
            status = d.get("status", "") if isinstance(d, dict) else "FAILED"
            print(f"      {name:<10} {status:<9} {str(detail)[:100]}")
    return 0


def _alerts_send_test(args: argparse.Namespace) -> int:
    from retail_lakehouse import alerts

    env = args.env or "local"
    config = alerts.load_config(env)
    alert = alerts.Alert(
        key=f"test:{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}",
        severity=args.severity,
        source="job",
        summary=f"Test alert from `lakehouse alerts send-test` ({env})",
        link="",
        runbook="book/alerts.md",
        command="lakehouse alerts list",
    )
    names = args.destination or list(config.destinations)
    outcome = alerts.send(alert, env=env, destinations=names, wait=args.wait)
    print(f"{outcome.key}: {outcome.action}, {outcome.status}")
    for d in outcome.deliveries:
        print(f"  {d.destination:<10} {d.status:<9} {d.attempts} attempt(s)  {d.detail[:100]}")
    for problem in outcome.problems:
        print(f"  problem: {problem}")
    return 0 if outcome.delivered else 1


def cmd_alerts(args: argparse.Namespace) -> int:
    return {"listen": _alerts_listen, "list": _alerts_list, "send-test": _alerts_send_test}[args.action](args)


def cmd_onboard(args: argparse.Namespace) -> int:
    from retail_lakehouse.onboarding import check_project, plan_source

    if args.check:
        problems = check_project(args.project)
        for problem in problems:
            print(f"  {problem}")
        print(f"onboard --check: {len(problems)} problem(s)" if problems else "onboard --check: every source is consistent")
        return 1 if problems else 0
    if not args.name:
        raise ParameterError("name", "give the new source's name, e.g. `lakehouse onboard returns --jdbc-table returns`")
    plan = plan_source(args.name, jdbc_table=args.jdbc_table, landing=args.landing, key=args.key,
                       watermark=args.watermark, types=_kv(args.type, "--type"), project=args.project,
                       env=args.env, force=args.force)
    print(plan.describe())
    if args.dry_run:
        print("\n" + plan.diff() + "\ndry run: nothing written")
        return 0
    if not args.yes and sys.stdin.isatty() and input(f"write these {len(plan.changes)} files? [y/N] ").strip().lower() != "y":
        print("nothing written (re-run with --key / --watermark / --type to change the inferred choices)")
        return 1
    plan.write(force=args.force)
    print(f"wrote {len(plan.changes)} files: review them (git diff), run `make test`, open a PR to dev")
    return 0


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; use YYYY-MM-DD") from None


def _add_onboard(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("onboard", help="onboard a new source (registry, notebooks, rules, checks, job tasks, test); --check")
    p.add_argument("name", nargs="?", help="the new table's name, e.g. returns")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--jdbc-table", help="a table of the environment's OLTP database (params oltp_url)")
    src.add_argument("--landing", metavar="PATH", help="a folder of JSON-lines files")
    p.add_argument("--key", help="business key column (default: inferred)")
    p.add_argument("--watermark", help="incremental column of a JDBC source (default: inferred, e.g. updated_at)")
    p.add_argument("--type", action="append", metavar="COLUMN=TYPE", help="silver type of a column (default: inferred)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the diffs, write nothing")
    p.add_argument("--force", action="store_true", help="overwrite the source's files if they exist")
    p.add_argument("--yes", action="store_true", help="write without asking")
    p.add_argument("--check", action="store_true", help="check every source is consistent across the project")
    p.add_argument("--project", default=None, help="project directory (default: this checkout)")
    p.add_argument("--env", default="local", help="environment whose source is read")
    p.set_defaults(func=cmd_onboard)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lakehouse", description="Retail lakehouse runbook: local engine and ops.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sql", help="run one Databricks SQL statement on the environment's engine")
    p.add_argument("statement")
    p.add_argument("--param", "-p", action="append", metavar="NAME=VALUE", help="named parameter :NAME")
    p.add_argument("--env", default=None)
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=cmd_sql)

    p = sub.add_parser("run", help="run a job from databricks.yml locally (papermill, retries, run records)")
    p.add_argument("job")
    p.add_argument("--param", "-p", action="append", metavar="NAME=VALUE", help="job parameter")
    p.add_argument("--env", default="local")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("generate", help="generate the retail source systems (OLTP SQLite + POS landing files)")
    p.add_argument("--scale-factor", type=float, default=1.0)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--start-date", type=_date, default=dt.date(2024, 1, 1))
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("demo", help="generate sources and run the pipeline with daily increments")
    p.add_argument("--scale-factor", type=float, default=0.2)
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--increments", type=int, default=2)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("workspace", help="the local Databricks workspace (REST API on 127.0.0.1)")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    p.set_defaults(func=cmd_workspace)

    p = sub.add_parser("kernels", help="warm notebook kernels: install the `lakehouse-warm` spec, fork server status, stop")
    p.add_argument("action", choices=["install", "status", "stop"])
    p.set_defaults(func=cmd_kernels)

    p = sub.add_parser("deploy", help="upload notebooks and library, create or update the jobs of databricks.yml")
    p.add_argument("--env", required=True, choices=["local", "dev", "qa", "prod"])
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument("--yes", action="store_true", help="confirm a deploy to qa or prod")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("drill", help="break the local lakehouse the way production breaks (incident drills)")
    p.add_argument("name", nargs="?")
    p.add_argument("--list", action="store_true", help="list the drills")
    p.set_defaults(func=cmd_drill)

    p = sub.add_parser("book", help="build the runbook site into _build/html (executed ops runs, offline charts)")
    p.add_argument("--clean", action="store_true", help="re-execute every example run and rebuild every page")
    p.set_defaults(func=cmd_book)

    p = sub.add_parser("alerts", help="alerts: local receivers (listen), recent alerts (list), a test alert (send-test)")
    p.add_argument("action", choices=["listen", "list", "send-test"])
    p.add_argument("--env", default=None, help="environment of the config and the table (default local)")
    p.add_argument("--limit", type=int, default=20, help="list: how many alerts")
    p.add_argument("--http-port", type=int, default=None, help="listen: webhook port (default alerts.receivers)")
    p.add_argument("--smtp-port", type=int, default=None, help="listen: SMTP port (default alerts.receivers)")
    p.add_argument("--severity", default="info", choices=["critical", "error", "warning", "info"], help="send-test")
    p.add_argument("--destination", action="append", help="send-test: only this destination (repeatable)")
    p.add_argument("--wait", type=float, default=30.0, help="send-test: seconds to wait for delivery")
    p.set_defaults(func=cmd_alerts)

    _add_onboard(sub)

    p = sub.add_parser("tables", help="list the table registry")
    p.add_argument("--env", default=None)
    p.set_defaults(func=cmd_tables)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LakehouseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(json.dumps({"interrupted": True}), file=sys.stderr)
        return 130


def entry() -> None:
    """The `lakehouse` command: `main`, then exit without the interpreter's module teardown.

    Tearing down what a run imported (pyspark, the embedded engine, papermill) took ~0.25 s of every
    command. What an exit must do still happens first: non-daemon threads are joined, exit handlers
    run (the embedded engine stops, sessions close), logs and output streams are flushed.
    """
    code = main()
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # noqa: SLF001 - what the interpreter runs at exit, before its teardown
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
