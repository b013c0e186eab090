"""Recording job and task runs in the monitoring table `job_runs` (what ops notebooks read).

The runner adds one row per task attempt and one per job run; a background thread appends them in
batches, so recording never delays a task.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from datetime import UTC, datetime
from typing import Any

__all__ = ["JOB_RUNS_SCHEMA", "Recorder", "row"]

log = logging.getLogger(__name__)

JOB_RUNS_SCHEMA = (
    "run_id string, job_name string, task_key string, attempt int, state string, start_time timestamp, "
    "end_time timestamp, duration_seconds double, error_class string, error_message string, "
    "parameters string, output_path string, compute string, recorded_at timestamp"
)


def row(
    run_id: str,
    job_name: str,
    task_key: str | None,
    attempt: int | None,
    state: str,
    start: datetime,
    end: datetime | None,
    error_class: str | None,
    error_message: str | None,
    parameters: dict[str, str],
    output_path: str | None,
    compute: dict[str, Any],
) -> tuple[Any, ...]:
    """One job_runs row (without `recorded_at`, which the recorder adds)."""
    duration = (end - start).total_seconds() if end else None
    return (
        run_id,
        job_name,
        task_key,
        attempt,
        state,
        start,
        end,
        duration,
        error_class,
        error_message,
        json.dumps(parameters, sort_keys=True),
        output_path,
        json.dumps(compute, sort_keys=True),
    )


class Recorder:
    """Appends job_runs rows from a background thread, in batches, so recording never delays tasks.

    A failed write is logged and kept as a warning of the run; it never replaces a task's error.
    """

    def __init__(self, env: str) -> None:
        self.env = env
        self.problems: list[str] = []
        self._queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="job-runs-recorder", daemon=True)
        self._thread.start()

    def add(self, row: tuple[Any, ...]) -> None:
        self._queue.put(row)

    def close(self) -> list[str]:
        """Write what is queued, stop, and return the recording problems."""
        self._queue.put(None)
        self._thread.join()
        return self.problems

    def _loop(self) -> None:
        stop = False
        while not stop:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = None in batch
            rows = [r for r in batch if r is not None]
            if rows:
                self._write(rows)

    def _write(self, rows: list[tuple[Any, ...]]) -> None:
        try:
            from retail_lakehouse import engine, writes

            spark = engine.get_spark(self.env)
            recorded = datetime.now(UTC)
            df = spark.createDataFrame([(*r, recorded) for r in rows], JOB_RUNS_SCHEMA)
            writes.write_table(df, "monitoring.job_runs", mode="append", env=self.env)
        except (Exception, SystemExit) as exc:  # pyspark may sys.exit() on import; keep the thread alive
            problem = (
                f"could not record {len(rows)} row(s) in job_runs: {type(exc).__name__}: {str(exc)[:500]}"
            )
            log.warning(problem)
            self.problems.append(problem)
