"""One error root for the project; subclasses grouped by what the caller should do."""

from __future__ import annotations


class LakehouseError(Exception):
    """Root of every error the library raises on purpose.

    Messages say what was wrong and how to fix it; subclasses carry context.
    """


class ConfigError(LakehouseError):
    """The environment or a parameter file is wrong: fix `params/<env>.yaml` or the environment."""


class CredentialsError(ConfigError):
    """A Databricks environment has no usable credentials: configure its profile or DATABRICKS_* variables."""


class ParameterError(LakehouseError):
    """A notebook or CLI parameter has a bad value: change the parameter."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"parameter {name!r}: {message}")
        self.name = name


class TableNotFoundError(LakehouseError):
    """A table name is not in the registry or has no data yet."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.table = name


class SchemaMismatchError(LakehouseError):
    """A write's DataFrame does not match the table's schema; nothing was written."""

    def __init__(self, table: str, message: str) -> None:
        super().__init__(message)
        self.table = table


class SqlError(LakehouseError):
    """A SQL statement could not be parsed or executed; the message names the statement."""


class VersionNotFoundError(SqlError):
    """A time-travel or RESTORE target version/timestamp does not exist in the table's history."""


class RetentionTooShortError(SqlError):
    """VACUUM with a retention below the runbook's 168 hours, without an explicit override."""


class UnsupportedLocallyError(SqlError):
    """A Databricks-only feature the local engine cannot provide; nothing was changed.

    Run the statement on a Databricks target, or use the local alternative the message names.
    """


class JobNotFoundError(LakehouseError):
    """A job name is not declared in databricks.yml."""


class JobFailedError(LakehouseError):
    """A job run ended in failure; carries the run id and the failed tasks."""

    def __init__(self, message: str, *, run_id: str, failed_tasks: list[str]) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.failed_tasks = failed_tasks


class ProcedureFailedError(LakehouseError):
    """An ops procedure ran to its end but its outcome did not hold: read the message, fix the cause, re-run.

    Raised by the outcome objects' `raise_for_status()`; the message is the outcome's own.

    Attributes:
        procedure: the ops procedure (its notebook's name), e.g. ``backfill``.
        run_id: the job run the procedure launched or repaired, if any.
    """

    def __init__(self, message: str, *, procedure: str, run_id: int | str | None = None) -> None:
        super().__init__(message)
        self.procedure = procedure
        self.run_id = run_id


class CheckFailedError(LakehouseError):
    """A data-quality check with criticality `error` failed (results were written first)."""


class ConfirmationRequired(LakehouseError):
    """A destructive operation in qa/prod needs `confirm=True` (or `--yes`)."""


class SourceError(LakehouseError):
    """A source system is unreachable or sent data that cannot be read; bronze was left unchanged."""


class KernelError(LakehouseError):
    """A notebook kernel could not be started or warmed (callers fall back to a plain kernel)."""


class TaskNotFoundError(LakehouseError):
    """A job run has no task of that key; the message lists the tasks it has."""


class BookBuildError(LakehouseError):
    """The site could not be built: an example run failed or Sphinx reported a warning."""


class DrillError(LakehouseError):
    """A drill could not break the lakehouse as it should (its set-up job failed)."""


class TableOrViewNotFoundError(TableNotFoundError, SqlError):
    """A SQL statement named a table or view that does not exist (Databricks' TABLE_OR_VIEW_NOT_FOUND)."""



class AlertDeliveryError(LakehouseError):
    """A notification could not be delivered to one destination (recorded in `monitoring.alerts`; never
    raised out of `alerts.send` / `alerts.resolve`).

    Attributes:
        destination: the destination's name in `params/<env>.yaml` `alerts.destinations`.
        retryable: a later attempt may succeed (network error, timeout, HTTP 429/5xx).
    """

    def __init__(self, destination: str, message: str, *, retryable: bool) -> None:
        super().__init__(f"alert destination {destination!r}: {message}")
        self.destination = destination
        self.retryable = retryable
