"""The Spark Connect client of a local session, without round trips it does not need.

Measured on a daily increment (about 600 requests over 20 task sessions):
- reattachable execution sends a ReleaseExecute call per response, each from a thread pool: about
  25 % of a small query's CPU (15 -> 11 ms per query, client and engine together). It guards long
  streams against dropped connections, which a server on this machine does not have.
- every `collect()` asks the server for `spark.sql.execution.pyspark.binaryAsBytes`, and each
  session once for a few client settings: about 80 config requests. Their answers are kept per
  client until the client sets or unsets any configuration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Settings pyspark reads on its own and this project never changes.
_KEPT = frozenset(
    {
        "spark.sql.execution.pyspark.binaryAsBytes",
        "spark.python.sql.dataFrameDebugging.enabled",
        "spark.connect.session.planCompression.threshold",
        "spark.connect.session.planCompression.defaultAlgorithm",
    }
)


def tune(spark: SparkSession) -> None:
    """Turn off reattachable execution and keep the answers to pyspark's own config reads."""
    from pyspark.sql.connect.client.core import ConfigResult

    client = spark.client
    client.disable_reattachable_execute()
    config = client.config
    kept: dict[tuple[str, tuple[tuple[str, Any], ...]], ConfigResult] = {}

    def cached_config(operation: Any) -> ConfigResult:
        kind = operation.WhichOneof("op_type")
        if kind in ("get", "get_with_default"):
            if kind == "get":
                key = (kind, tuple((k, None) for k in operation.get.keys))
            else:
                key = (kind, tuple((p.key, p.value) for p in operation.get_with_default.pairs))
            if all(name in _KEPT for name, _ in key[1]):
                if key not in kept:
                    kept[key] = config(operation)
                return kept[key]
        elif kind in ("set", "unset"):
            kept.clear()
        return config(operation)

    client.config = cached_config  # type: ignore[method-assign]
