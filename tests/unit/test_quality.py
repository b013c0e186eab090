"""Quality checks: every check kind passing and failing on tiny frames, rule-set validation, run_checks I/O."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest

from retail_lakehouse import engine
from retail_lakehouse.core.errors import CheckFailedError, ConfigError, ParameterError
from retail_lakehouse.engine import writes
from retail_lakehouse.pipeline import quality, quality_model, quality_rules

UTC = dt.UTC


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAKEHOUSE_HOME", str(tmp_path_factory.mktemp("quality_home")))
        mp.delenv("SPARK_REMOTE", raising=False)
        mp.setenv("LAKEHOUSE_ENV", "local")
        yield engine.get_spark()
        engine.stop_local_server()


def spec(
    check: str, arguments: dict, criticality: str = "error", table: str = "silver.orders"
) -> quality_model.CheckSpec:
    sets = quality_rules.parse_rule_sets(
        [
            (
                "test",
                {
                    "table": table,
                    "checks": [
                        {"name": "c", "check": check, "arguments": arguments, "criticality": criticality}
                    ],
                },
            )
        ]
    )
    return sets[table][0]


def run(
    df,
    check: str,
    arguments: dict,
    *,
    criticality: str = "error",
    frames: dict | None = None,
    business_date=None,
    run_id: str = "r1",
) -> quality_model.CheckResult:
    ctx = quality_model.CheckContext(
        table="silver.orders",
        df=df,
        run_id=run_id,
        business_date=quality._business_datetime(business_date),
        read=lambda ref: (frames or {})[ref],
        full_name=lambda ref: f"cat.{ref}",
    )
    return quality.evaluate(spec(check, arguments, criticality), ctx)


@pytest.fixture(scope="module")
def keys(spark):
    return spark.createDataFrame([(1, 10), (2, 10), (2, None), (3, 99)], "id bigint, ref bigint")


# ----------------------------------------------------------------------------- each kind, pass and fail


def test_not_null(keys):
    failed = run(keys, "not_null", {"columns": ["id", "ref"]})
    assert (failed.check_status, failed.metric_value, failed.threshold) == ("FAILED", 0.25, 0.0)
    assert "1 of 4 rows" in failed.details
    assert run(keys, "not_null", {"columns": "id"}).check_status == "PASSED"
    assert run(keys, "not_null", {"columns": ["ref"], "max_violation_ratio": 0.3}).check_status == "PASSED"


def test_unique_and_where(keys):
    failed = run(keys, "unique", {"columns": ["id"]})
    assert (failed.check_status, failed.metric_value) == ("FAILED", 0.25)
    assert run(keys, "unique", {"columns": ["id"]}, criticality="warn").check_status == "WARN"
    # one current row per customer: duplicates outside the filter do not count
    assert run(keys, "unique", {"columns": ["id"], "where": "ref IS NOT NULL"}).check_status == "PASSED"


def test_referential_integrity(spark):
    fact = spark.createDataFrame([(10,), (20,), (-1,), (99,), (None,)], "sk bigint")
    dim = spark.createDataFrame([(10,), (20,)], "customer_sk bigint")
    frames = {"gold.dim_customer": dim}
    ref = {"column": "sk", "references": "gold.dim_customer.customer_sk"}
    strict = run(fact, "referential_integrity", ref, frames=frames)
    assert (strict.check_status, strict.metric_value) == ("FAILED", 0.4)  # -1 and 99 of 5
    allowed = run(fact, "referential_integrity", {**ref, "unknown_value": -1}, frames=frames)
    assert allowed.metric_value == pytest.approx(0.2)  # only 99
    counted = run(
        fact,
        "referential_integrity",
        {**ref, "unknown_value": -1, "unknown_is_violation": True},
        frames=frames,
    )
    assert counted.metric_value == pytest.approx(0.4)
    ok = run(fact.filter("sk <> 99"), "referential_integrity", {**ref, "unknown_value": -1}, frames=frames)
    assert (ok.check_status, ok.metric_value) == ("PASSED", 0.0)


def test_value_range(spark):
    df = spark.createDataFrame([(1,), (5,), (-2,), (None,)], "q bigint")
    failed = run(df, "value_range", {"column": "q", "min": 0, "max": 4})
    assert (failed.check_status, failed.metric_value) == ("FAILED", 0.5)
    assert run(df, "value_range", {"column": "q", "min": -5, "max": 5}).check_status == "PASSED"
    assert (
        run(df, "value_range", {"column": "q", "min": 0, "max_violation_ratio": 0.25}).check_status
        == "PASSED"
    )


def test_freshness_uses_business_date_not_wall_clock(spark):
    df = spark.createDataFrame(
        [(ts("2024-01-10 12:00:00"),), (ts("2024-01-09 08:00:00"),)], "order_ts timestamp"
    )
    # The data is ~3 years older than the wall clock; against its business date it is 12 h behind.
    fresh = run(df, "freshness", {"column": "order_ts", "max_lag_hours": 24}, business_date="2024-01-10")
    assert (fresh.check_status, fresh.metric_value, fresh.threshold) == ("PASSED", 12.0, 24.0)
    stale = run(
        df, "freshness", {"column": "order_ts", "max_lag_hours": 6}, business_date=dt.date(2024, 1, 10)
    )
    assert (stale.check_status, stale.metric_value) == ("FAILED", 12.0)
    upstream = spark.createDataFrame([("2024-01-12 00:00:00",), ("N/A",)], "order_ts string")
    behind = run(
        df,
        "freshness",
        {"column": "order_ts", "max_lag_hours": 24, "reference": "bronze.orders.order_ts"},
        frames={"bronze.orders": upstream},
    )
    assert (behind.check_status, behind.metric_value) == ("FAILED", 36.0)
    assert "max(bronze.orders.order_ts)" in behind.details
    nothing = run(df, "freshness", {"column": "order_ts", "max_lag_hours": 24})
    assert nothing.check_status == "FAILED" and "business_date" in nothing.details


def test_row_count_reconciliation_between_layers(spark):
    fact = spark.createDataFrame([(1,), (2,), (3,)], "order_item_id bigint")
    items = spark.createDataFrame(
        [(1, 100), (2, 100), (3, 101), (4, 999)], "order_item_id bigint, order_id bigint"
    )
    orders = spark.createDataFrame([(100,), (101,)], "order_id bigint")
    frames = {"silver.order_items": items, "silver.orders": orders}
    args = {
        "source": "silver.order_items",
        "exists_in": {"column": "order_id", "references": "silver.orders.order_id"},
    }
    ok = run(fact, "row_count_reconciliation", args, frames=frames)
    assert (ok.check_status, ok.metric_value) == ("PASSED", 0.0)
    off = run(fact, "row_count_reconciliation", {"source": "silver.order_items"}, frames=frames)
    assert (off.check_status, off.metric_value) == ("FAILED", 0.25)
    assert "3 rows vs 4" in off.details


RECON = (
    "run_id string, table_name string, processed_at timestamp, bronze_rows bigint, silver_rows bigint, "
    "quarantined_rows bigint, duplicates_removed bigint, balanced boolean"
)


def test_reconciliation_table_and_quarantine_rate(spark):
    name = "cat.silver.orders"
    recon = spark.createDataFrame(
        [
            ("r1", name, ts("2024-01-01 01:00:00"), 1000, 980, 10, 10, True),  # normal day: 1% quarantined
            ("r2", name, ts("2024-01-02 01:00:00"), 1000, 690, 300, 5, False),  # burst: 30%, and unbalanced
            ("r2", "cat.silver.customers", ts("2024-01-02 01:00:00"), 10, 10, 0, 0, True),
        ],
        RECON,
    )
    frames = {"monitoring.reconciliation": recon}
    normal = run(None, "quarantine_rate", {"max_ratio": 0.05}, frames=frames, run_id="r1")
    assert (normal.check_status, normal.metric_value) == ("PASSED", 0.01)
    burst = run(None, "quarantine_rate", {"max_ratio": 0.05}, frames=frames, run_id="r2")
    assert (burst.check_status, burst.metric_value) == ("FAILED", 0.3)
    assert "300 of 1000" in burst.details
    latest = run(None, "quarantine_rate", {"max_ratio": 0.05}, frames=frames, run_id="unknown-run")
    assert latest.metric_value == 0.3  # no rows of this run: the latest run is judged
    assert (
        run(
            None, "row_count_reconciliation", {"from_monitoring": True}, frames=frames, run_id="r1"
        ).check_status
        == "PASSED"
    )
    unbalanced = run(None, "row_count_reconciliation", {"from_monitoring": True}, frames=frames, run_id="r2")
    assert unbalanced.check_status == "FAILED" and "NOT balanced" in unbalanced.details


def test_broken_check_is_a_failed_result(keys):
    result = run(keys, "not_null", {"columns": ["no_such_column"]}, criticality="warn")
    assert result.check_status == "WARN" and "could not run" in result.details


# ----------------------------------------------------------------------------- rule-set validation


def test_unknown_check_lists_known_ones():
    with pytest.raises(ConfigError) as err:
        quality_model.get_check("not_nul")
    for known in (
        "not_null",
        "unique",
        "referential_integrity",
        "value_range",
        "freshness",
        "row_count_reconciliation",
        "quarantine_rate",
    ):
        assert known in str(err.value)


def test_invalid_rule_sets_report_every_problem():
    bad = [
        (
            "a.yaml",
            {
                "table": "silver.orders",
                "checks": [
                    {"name": "x", "check": "not_nul", "arguments": {"columns": ["id"]}},
                    {"name": "y", "check": "unique", "arguments": {}, "criticality": "fatal"},
                    {"name": "y", "check": "value_range", "arguments": {"column": "q"}},
                    {
                        "name": "w",
                        "check": "value_range",
                        "arguments": {"column": "q", "min": 0, "colour": "red"},
                    },
                ],
            },
        ),
        (
            "b.yaml",
            {
                "table": "silver.no_such_table",
                "checks": [
                    {
                        "name": "z",
                        "check": "freshness",
                        "arguments": {"column": "ts", "max_lag_hours": "soon"},
                    },
                ],
            },
        ),
        ("c.yaml", ["not", "a", "mapping"]),
    ]
    with pytest.raises(ConfigError) as err:
        quality_rules.parse_rule_sets(bad)
    text = str(err.value)
    for fragment in (
        "unknown check 'not_nul'",
        "missing argument 'columns'",
        "criticality must be one of",
        "duplicate check name 'y'",
        "unknown argument 'colour'",
        "needs `min`, `max`",
        "no_such_table",
        "'max_lag_hours' must be a number",
        "c.yaml",
    ):
        assert fragment in text, fragment
    assert text.startswith("9 problem(s)")


def test_packaged_rule_sets_are_valid():
    sets = quality_rules.load_rule_sets()
    assert {
        "silver.orders",
        "silver.order_items",
        "silver.customers",
        "silver.products",
        "silver.stores",
        "silver.pos_transactions",
        "gold.dim_customer",
        "gold.fact_sales",
        "gold.agg_daily_sales",
    } <= set(sets)
    kinds = {c.check for checks in sets.values() for c in checks}
    assert kinds == set(quality_model.known_checks())


def test_load_rule_sets_reports_bad_yaml(tmp_path):
    (tmp_path / "broken.yaml").write_text("table: [unclosed\n")
    (tmp_path / "wrong.yaml").write_text("table: silver.orders\nchecks: []\n")
    with pytest.raises(ConfigError) as err:
        quality_rules.load_rule_sets(tmp_path)
    assert "broken.yaml: not valid YAML" in str(err.value) and "wrong.yaml" in str(err.value)


# ----------------------------------------------------------------------------- run_checks: I/O


ORDERS = (
    "order_id bigint, customer_id bigint, store_id bigint, order_ts timestamp, order_date date, "
    "status string, channel string, total_amount decimal(12,2), promo_code string, updated_at timestamp, "
    "_run_id string, _processed_at timestamp"
)


@pytest.fixture(scope="module")
def silver(spark):
    """Clean tiny silver.orders with its parents, bronze.orders, and a normal and a burst reconciliation."""

    def order(oid, when):
        t = ts(when)
        return (oid, 1, 1, t, t.date(), "completed", "store", Decimal("5.00"), None, t, "r", t)

    writes.write_table(
        spark.createDataFrame([order(1, "2024-01-10 09:00:00"), order(2, "2024-01-10 18:00:00")], ORDERS),
        "silver.orders",
        mode="overwrite",
    )
    customers = spark.createDataFrame([(1,)], "customer_id bigint")
    writes.write_table(customers, "silver.customers", mode="overwrite")
    writes.write_table(spark.createDataFrame([(1,)], "store_id bigint"), "silver.stores", mode="overwrite")
    bronze = spark.createDataFrame(
        [(1, "2024-01-10 09:00:00"), (2, "2024-01-10 18:00:00"), (3, "N/A")],
        "order_id bigint, order_ts string",
    )
    writes.write_table(bronze, "bronze.orders", mode="overwrite")
    full = "retail_datalake.local_silver.orders"
    recon = spark.createDataFrame(
        [
            ("normal", full, ts("2024-01-10 23:00:00"), 1000, 985, 10, 5, True),
            ("burst", full, ts("2024-01-11 23:00:00"), 1000, 695, 300, 5, True),
        ],
        RECON,
    )
    writes.write_table(recon, "monitoring.reconciliation", mode="append")
    return full


def _metrics(spark, run_id: str) -> dict[str, str]:
    rows = (
        spark.table("retail_datalake.local_monitoring.quality_metrics")
        .filter(f"run_id = '{run_id}'")
        .collect()
    )
    return {r.check_name: r.check_status for r in rows}


def test_packaged_checks_pass_on_normal_data(spark, silver):
    report = quality.run_checks(["orders"], run_id="normal")
    # 9 rule-set checks + the registry's has_rows, volume, schema_drift
    assert report.summary() == {"PASSED": 12, "WARN": 0, "FAILED": 0, "ERROR": 0}, report.frame.to_string()
    report.raise_for_errors()
    written = _metrics(spark, "normal")
    assert len(written) == 12 and set(written.values()) == {"PASSED"}
    row = (
        spark.table("retail_datalake.local_monitoring.quality_metrics")
        .filter("run_id = 'normal' AND check_name = 'quarantine_rate'")
        .collect()[0]
    )
    assert (row.table_name, row.check_type, row.criticality, row.metric_value, row.threshold) == (
        silver,
        "quarantine_rate",
        "error",
        0.01,
        0.05,
    )


def test_quarantine_burst_fails_after_results_are_written(spark, silver):
    report = quality.run_checks(["silver.orders"], run_id="burst")
    assert [r.check_name for r in report.failed_errors] == ["quarantine_rate"]
    assert _metrics(spark, "burst")["quarantine_rate"] == "FAILED"  # written before anything raises
    with pytest.raises(CheckFailedError, match=r"silver\.orders\.quarantine_rate"):
        report.raise_for_errors()


def test_run_checks_custom_rules_warn_and_fail(spark, silver):
    rules = quality_rules.parse_rule_sets(
        [
            (
                "t",
                {
                    "table": "silver.orders",
                    "checks": [
                        {
                            "name": "total_small",
                            "check": "value_range",
                            "arguments": {"column": "total_amount", "max": 1},
                            "criticality": "warn",
                        },
                        {
                            "name": "ts_fresh",
                            "check": "freshness",
                            "arguments": {"column": "order_ts", "max_lag_hours": 1},
                            "criticality": "error",
                        },
                    ],
                },
            )
        ]
    )
    report = quality.run_checks(
        ["silver.orders"], run_id="custom", business_date="2024-01-10", rule_sets=rules
    )
    assert _metrics(spark, "custom") == {"total_small": "WARN", "ts_fresh": "FAILED"}
    assert report.frame.loc[report.frame.check_name == "ts_fresh", "metric_value"].item() == 6.0


def test_run_checks_rejects_table_without_checks(spark):
    with pytest.raises(ParameterError, match="tables with checks"):
        quality.run_checks(["bronze.orders"], run_id="x")


# ----------------------------------------------------------------------------- verdicts that mean something


def test_status_override_and_evidence(keys):
    failed = run(keys, "not_null", {"columns": ["ref"]})
    evidence = json.loads(failed.evidence)
    assert (evidence["violations"], evidence["rows"], evidence["threshold"]) == (1, 4, 0.0)
    outcome = quality_model.CheckOutcome(False, 1.0, 0.0, "x", status="ERROR")
    assert quality._status(outcome, "warn") == "ERROR"
    assert quality._status(quality_model.CheckOutcome(False, 1.0, 0.0, "x", status="FAILED"), "warn") == "WARN"
    assert quality._status(quality_model.CheckOutcome(True, 1.0, 0.0, "x", status="WARN"), "error") == "WARN"


def test_row_count_fails_an_empty_table(spark):
    empty = spark.createDataFrame([], "id bigint")
    failed = run(empty, "row_count", {"min_rows": 1})
    assert failed.check_status == "FAILED" and "expected to have rows" in failed.details
    assert json.loads(failed.evidence)["rows"] == 0
    assert run(spark.createDataFrame([(1,)], "id bigint"), "row_count", {"min_rows": 1}).check_status == "PASSED"


SLA = {"hours": 26, "time": "order_ts", "upstream": "silver.orders", "upstream_time": "order_ts"}


def test_sla_freshness_says_how_late(spark):
    gold = spark.createDataFrame([(ts("2024-01-02 12:00:00"),)], "order_ts timestamp")
    silver = spark.createDataFrame([(ts("2024-01-04 12:00:00"),)], "order_ts timestamp")
    late = run(gold, "sla_freshness", SLA, frames={"silver.orders": silver})
    assert (late.check_status, late.metric_value, late.threshold) == ("FAILED", 48.0, 26.0)
    assert "22.0 h late" in late.details and json.loads(late.evidence)["late_hours"] == 22.0
    on_time = run(silver, "sla_freshness", SLA, frames={"silver.orders": silver})
    assert on_time.check_status == "PASSED" and "within SLA" in on_time.details
    # business date given: judged against the end of that day, not the wall clock
    dated = run(gold, "sla_freshness", SLA, frames={}, business_date="2024-01-02")
    assert (dated.check_status, dated.metric_value) == ("PASSED", 12.0)
    nothing = run(gold, "sla_freshness", SLA, frames={"silver.orders": silver.limit(0)})
    assert nothing.check_status == "ERROR"


def _daily(spark, counts: dict[str, int]):
    rows = [(dt.date.fromisoformat(day),) for day, n in counts.items() for _ in range(n)]
    return spark.createDataFrame(rows, "order_date date")


def test_volume_against_trailing_median(spark):
    history = {"2024-01-01": 100, "2024-01-02": 110, "2024-01-03": 90}
    normal = run(_daily(spark, {**history, "2024-01-04": 95}), "volume", {"date": "order_date"})
    assert normal.check_status == "PASSED" and "median 100" in normal.details
    low = run(_daily(spark, {**history, "2024-01-04": 40}), "volume", {"date": "order_date"})
    assert (low.check_status, low.metric_value) == ("WARN", 0.4)
    drop = run(_daily(spark, {**history, "2024-01-04": 10}), "volume", {"date": "order_date"})
    assert drop.check_status == "FAILED"
    evidence = json.loads(drop.evidence)
    assert (evidence["median"], evidence["mad"], evidence["rows"]) == (100, 10, 10)
    # the business date's day: none of its rows arrived
    empty_day = run(_daily(spark, history), "volume", {"date": "order_date"}, business_date="2024-01-04")
    assert (empty_day.check_status, empty_day.metric_value) == ("FAILED", 0.0)
    young = run(_daily(spark, {"2024-01-01": 100, "2024-01-02": 5}), "volume", {"date": "order_date"})
    assert young.check_status == "PASSED" and "nothing to compare" in young.details


def test_schema_drift_against_registry_and_last_run(spark):
    columns = [c for c in ORDERS.split(", ") if not c.startswith("promo_code")]
    dropped = spark.createDataFrame([], ", ".join(columns) + ", coupon string")
    previous = spark.createDataFrame(
        [("cat.silver.orders", "r0", ts("2024-01-01 00:00:00"), "schema_drift",
          json.dumps({"columns": {"order_id": "bigint", "promo_code": "string"}}))],
        "table_name string, run_id string, check_timestamp timestamp, check_type string, evidence string",
    )
    result = run(dropped, "schema_drift", {}, frames={"monitoring.quality_metrics": previous})
    assert result.check_status == "FAILED"
    assert "vs registry: added coupon; removed promo_code" in result.details and "since run r0" in result.details
    evidence = json.loads(result.evidence)
    assert evidence["vs_registry"]["removed"] == ["promo_code"] and evidence["previous_run"] == "r0"
    added = spark.createDataFrame([], ORDERS + ", coupon string")
    warned = run(added, "schema_drift", {}, frames={"monitoring.quality_metrics": previous.limit(0)})
    assert warned.check_status == "WARN" and "first recorded schema" in warned.details


def test_registry_declarations_become_checks():
    from retail_lakehouse.core.tables import registry

    assert registry().get("silver.orders").expect_rows
    assert not registry().get("silver.orders_quarantine").expect_rows
    assert registry().get("gold.fact_sales").sla.hours == 26
    sets = quality_rules.load_rule_sets()
    assert [c.name for c in sets["gold.fact_sales"][:4]] == ["has_rows", "sla_freshness", "volume", "schema_drift"]
    assert "gold.dim_date" in sets and not any(r.endswith("_quarantine") for r in sets)
    assert "has_rows" not in {c.name for c in quality_rules.load_rule_sets(declared=False)["silver.orders"]}


def test_missing_table_is_an_error_naming_the_job(spark, silver):
    report = quality.run_checks(["gold.fact_sales"], run_id="missing")
    assert report.summary()["ERROR"] == 1 and len(report.results) == 1
    result = report.errors[0]
    assert result.check_name == "table_exists" and "retail_transformation" in result.details
    assert "local_gold.fact_sales does not exist" in result.details
    assert _metrics(spark, "missing") == {"table_exists": "ERROR"}
    with pytest.raises(CheckFailedError, match="ERROR"):
        report.raise_for_errors()


def test_sample_keys_of_failed_checks(spark, keys):
    from retail_lakehouse.pipeline.quality_table_checks import sample_keys

    dim = spark.createDataFrame([(10,)], "customer_sk bigint")
    ctx = quality_model.CheckContext("silver.orders", keys, "r", None, lambda ref: dim, lambda ref: ref)
    assert sample_keys(spec("not_null", {"columns": ["ref"]}), ctx, ["id"]) == [{"id": 2}]
    assert sample_keys(spec("unique", {"columns": ["id"]}), ctx, ["id"]) == [{"id": 2, "count": 2}]
    orphans = spec("referential_integrity", {"column": "ref", "references": "gold.dim_customer.customer_sk"})
    assert sample_keys(orphans, ctx, ["id"]) == [{"id": 3, "ref": 99}]
    assert sample_keys(spec("value_range", {"column": "ref", "max": 50}), ctx, ["id"]) == [{"id": 3}]


def test_run_checks_records_sample_keys(spark, silver):
    rules = quality_rules.parse_rule_sets(
        [("t", {"table": "silver.orders", "checks": [
            {"name": "total_small", "check": "value_range", "arguments": {"column": "total_amount", "max": 1}}]})]
    )
    report = quality.run_checks(["silver.orders"], run_id="samples", rule_sets=rules)
    evidence = json.loads(report.results[0].evidence)
    assert sorted(k["order_id"] for k in evidence["sample_keys"]) == [1, 2]


def test_overview_lists_checks_to_act_on_first():
    def result(table: str, name: str, status: str) -> quality_model.CheckResult:
        return quality_model.CheckResult(table, name, "not_null", "error", status, 0.0, 0.0, f"{name} details", "{}")

    report = quality.QualityReport(
        run_id="r",
        results=[
            result("retail_datalake.local_silver.orders", "a", "PASSED"),
            result("retail_datalake.prod_silver.order_items", "b", "WARN"),
            result("retail_datalake.silver.stores", "c", "PASSED"),
            result("retail_datalake.local_gold.fact_sales", "d", "FAILED"),
            result("retail_datalake.local_silver.customers", "e", "ERROR"),
        ],
    )
    view = report.overview()
    assert list(view.columns) == ["table", "check", "status", "criticality", "metric", "threshold", "details"]
    assert list(view["check"]) == ["e", "d", "b", "a", "c"]  # ERROR, FAILED, WARN, then PASSED in run order
    assert list(view["table"]) == [
        "silver.customers", "gold.fact_sales", "silver.order_items", "silver.orders", "silver.stores"
    ]  # fmt: skip
    assert len(report.frame) == 5 and "evidence" in report.frame.columns  # the full rows stay in `frame`
