"""MERGE with partition pruning gives the rows of the plain MERGE; batched quality checks give the
results of each check run alone, and a broken check does not hide the others'."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal

import pytest

from retail_lakehouse import engine
from retail_lakehouse.core.tables import TableDef
from retail_lakehouse.engine import writes
from retail_lakehouse.pipeline import quality, quality_model, quality_rules

pytestmark = pytest.mark.usefixtures("isolated_home")

D1, D2, D3, D4, D5 = (dt.date(2024, 1, day) for day in range(1, 6))
COLUMNS = {"id": "bigint", "day": "date", "val": "string"}
SCHEMA = "id bigint, day date, val string"


# ----------------------------------------------------------------------------- MERGE pruning


def _tdef(name: str, columns: dict[str, str] = COLUMNS, partition_by: tuple[str, ...] = ("day",)) -> TableDef:
    return TableDef(name=name, layer="silver", columns=columns, keys=("id",), partition_by=partition_by)


def _rows(spark, tdef: TableDef) -> list[tuple]:
    return sorted((tuple(r) for r in spark.table(tdef.full_name()).collect()), key=repr)


def _files(tdef: TableDef, partition: str) -> list[str]:
    from deltalake import DeltaTable

    uris = DeltaTable(str(engine.table_dir(tdef.full_name()))).file_uris()
    return sorted(u for u in uris if f"/{partition}/" in u)


def _predicate(spark, tdef: TableDef, source) -> str:
    """The clause the pruned MERGE adds (computed as merge_into does, before it runs)."""
    full = tdef.full_name()
    columns = writes._table_columns(spark, full)
    conformed, _ = writes.conform(source, full, columns, evolve_schema=False)
    return writes._touched_partitions(
        spark, full, conformed, list(tdef.keys), list(tdef.partition_by), columns
    ).predicate


def _merge_both(
    spark,
    name,
    base,
    source_rows,
    *,
    schema=SCHEMA,
    source_schema=None,
    columns=COLUMNS,
    partition_by=("day",),
    **kwargs,
):
    """MERGE the same source into two identical tables, pruned and plain.

    Returns:
        (pruned table's rows, plain table's rows, the predicate the pruned MERGE added).
    """
    out, predicate = {}, ""
    for prune in (True, False):
        tdef = _tdef(f"{name}_{'pruned' if prune else 'plain'}", columns, partition_by)
        writes.write_table(spark.createDataFrame(base, schema), tdef, mode="overwrite")
        source = spark.createDataFrame(source_rows, source_schema or schema)
        if prune:
            predicate = _predicate(spark, tdef, source)
        writes.merge_into(source, tdef, prune_partitions=prune, **kwargs)
        out[prune] = _rows(spark, tdef)
    return out[True], out[False], predicate


def test_a_row_moving_partition_leaves_no_duplicate(spark):
    base = [(1, D1, "a1"), (2, D1, "a2"), (3, D2, "b3"), (4, D3, "c4")]
    source = [(1, D2, "moved"), (3, D2, "b3x")]
    pruned, plain, predicate = _merge_both(spark, "mv", base, source)
    # The old partition of key 1 (D1) is in the predicate, found through the target's keys.
    assert (
        predicate.startswith(" AND (") and "DATE'2024-01-01'" in predicate and "DATE'2024-01-02'" in predicate
    )
    assert "2024-01-03" not in predicate
    assert pruned == plain == [(1, D2, "moved"), (2, D1, "a2"), (3, D2, "b3x"), (4, D3, "c4")]


def test_untouched_partitions_keep_their_rows_and_files(spark):
    base = [(1, D1, "a1"), (2, D2, "b2"), (3, D3, "c3"), (4, D3, "c4")]
    tdef = _tdef("untouched")
    writes.write_table(spark.createDataFrame(base, SCHEMA), tdef, mode="overwrite")
    before = {p: _files(tdef, p) for p in ("day=2024-01-02", "day=2024-01-03")}
    assert all(before.values())
    source = spark.createDataFrame([(1, D1, "a1x")], SCHEMA)
    assert _predicate(spark, tdef, source) == " AND (t.`day` IN (DATE'2024-01-01'))"
    writes.merge_into(source, tdef, prune_partitions=True)
    assert _rows(spark, tdef) == [(1, D1, "a1x"), (2, D2, "b2"), (3, D3, "c3"), (4, D3, "c4")]
    assert {p: _files(tdef, p) for p in before} == before


def test_new_keys_are_inserted_into_new_partitions(spark):
    base = [(1, D1, "a1"), (2, D2, "b2")]
    source = [(5, D5, "new5"), (6, D5, "new6"), (7, None, "new-null-day"), (2, D2, "b2x")]
    pruned, plain, predicate = _merge_both(spark, "ins", base, source)
    assert "DATE'2024-01-05'" in predicate and "IS NULL" in predicate and "2024-01-01" not in predicate
    assert (
        pruned
        == plain
        == [(1, D1, "a1"), (2, D2, "b2x"), (5, D5, "new5"), (6, D5, "new6"), (7, None, "new-null-day")]
    )


@pytest.mark.parametrize("target_has_null_key", [True, False], ids=["null-key-in-target", "null-key-new"])
def test_null_keys_and_null_partitions_merge_as_unpruned(spark, target_has_null_key):
    base = [(1, D1, "a1"), (8, None, "null-day"), (3, D3, "c3")]
    if target_has_null_key:
        base.append((None, D1, "null-key"))
    source = [(None, D2, "null-key-moved"), (8, D4, "left-null-day"), (9, None, "new-null-day")]
    pruned, plain, predicate = _merge_both(spark, f"nulls_{target_has_null_key}", base, source)
    assert "IS NULL" in predicate and "DATE'2024-01-04'" in predicate
    assert ("DATE'2024-01-01'" in predicate) == target_has_null_key  # the NULL key's old partition
    expected = [
        (1, D1, "a1"),
        (3, D3, "c3"),
        (8, D4, "left-null-day"),
        (9, None, "new-null-day"),
        (None, D2, "null-key-moved"),
    ]
    assert pruned == plain == expected


def _last_operation(tdef: TableDef) -> str:
    from deltalake import DeltaTable

    return DeltaTable(str(engine.table_dir(tdef.full_name()))).history(1)[0]["operation"]


@pytest.mark.parametrize(
    ("source", "inserts_only"),
    [
        pytest.param([(5, D5, "new5"), (6, D1, "new6"), (7, None, "new-null-day")], True, id="new-keys"),
        pytest.param([(5, D5, "new5"), (2, D2, "b2x")], False, id="one-stored-key"),
        pytest.param([(5, D5, "new5"), (None, D5, "null-key")], False, id="stored-null-key"),
    ],
)
def test_a_merge_of_new_keys_only_appends(spark, source, inserts_only):
    """No stored row has a source key: the pruned MERGE commits an append, with the plain MERGE's rows.

    A stored key (a NULL key too: keys compare null-safely) keeps the MERGE.
    """
    base = [(1, D1, "a1"), (2, D2, "b2"), (None, D3, "null-key")]
    schema = "id bigint, day date, val string"
    name = f"ins_only_{inserts_only}_{len(source)}"
    pruned, plain, _ = _merge_both(spark, name, base, source, schema=schema)
    assert pruned == plain
    assert len(pruned) == len(base) + sum(1 for r in source if r[0] not in {b[0] for b in base})
    assert (_last_operation(_tdef(f"{name}_pruned")) == "WRITE") == inserts_only
    assert _last_operation(_tdef(f"{name}_plain")) == "MERGE"


def test_a_write_waits_for_another_local_writer_of_the_table(spark):
    """The insert-only check and its append run under the table's lock: a writer holding it (another
    process or thread) is waited for, and the keys it added are then seen (no duplicate rows)."""
    import threading

    from retail_lakehouse.core.config import load_settings

    tdef = _tdef("locked")
    writes.write_table(spark.createDataFrame([(1, D1, "a1")], SCHEMA), tdef, mode="overwrite")
    source = spark.createDataFrame([(2, D2, "b2")], SCHEMA)
    errors: list[BaseException] = []

    def merge() -> None:
        try:
            writes.merge_into(source, tdef, prune_partitions=True)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    with writes._table_lock(tdef.full_name(), load_settings()):
        # What another writer commits while holding the lock: the same new key.
        writes._save(source, tdef.full_name(), load_settings(), "append")
        waiting = threading.Thread(target=merge)
        waiting.start()
        waiting.join(1.5)
        assert waiting.is_alive()  # blocked on the lock
        assert _rows(spark, tdef) == [(1, D1, "a1"), (2, D2, "b2")]
    waiting.join(60)
    assert not waiting.is_alive() and not errors
    assert _rows(spark, tdef) == [(1, D1, "a1"), (2, D2, "b2")]  # merged into the stored key, not appended again
    assert _last_operation(tdef) == "MERGE"


def test_string_partitions_with_quotes_and_backslashes(spark):
    columns = {"id": "bigint", "region": "string", "val": "string"}
    schema = "id bigint, region string, val string"
    base = [(1, "O'Brien", "q1"), (2, "back\\slash", "s2"), (3, "plain", "p3")]
    source = [(1, "back\\slash", "moved"), (2, "back\\slash", "s2x"), (4, "O'Brien", "new")]
    pruned, plain, predicate = _merge_both(
        spark, "quotes", base, source, schema=schema, columns=columns, partition_by=("region",)
    )
    assert predicate and "'plain'" not in predicate
    assert (
        pruned
        == plain
        == [(1, "back\\slash", "moved"), (2, "back\\slash", "s2x"), (3, "plain", "p3"), (4, "O'Brien", "new")]
    )


def test_source_without_the_partition_column(spark):
    """Updates keep the rows' partitions; inserts get a NULL partition, as without pruning."""
    base = [(1, D1, "a1"), (2, D2, "b2"), (3, D3, "c3")]
    pruned, plain, predicate = _merge_both(
        spark, "nopart", base, [(1, "a1x"), (7, "new")], source_schema="id bigint, val string"
    )
    assert "DATE'2024-01-01'" in predicate and "IS NULL" in predicate and "2024-01-02" not in predicate
    assert pruned == plain == [(1, D1, "a1x"), (2, D2, "b2"), (3, D3, "c3"), (7, None, "new")]


def test_fallback_over_500_partition_values(spark):
    columns = {"id": "bigint", "part": "int", "val": "string"}
    schema = "id bigint, part int, val string"
    base = [(1, 1, "a"), (2, 2, "b"), (1000, 1000, "untouched")]
    source = [(1, 2, "moved")] + [(i, i, f"v{i}") for i in range(2, 502)]
    pruned, plain, predicate = _merge_both(
        spark, "many", base, source, schema=schema, columns=columns, partition_by=("part",)
    )
    assert predicate == ""  # 501 values: merged without the predicate
    assert len(pruned) == 502 and pruned == plain
    assert (1, 2, "moved") in pruned and (1000, 1000, "untouched") in pruned


@pytest.mark.parametrize(
    ("columns", "partition_by", "base", "source"),
    [
        pytest.param(
            {"id": "bigint", "ts": "timestamp", "val": "string"},
            ("ts",),
            [(1, dt.datetime(2024, 1, 1, 9, tzinfo=dt.UTC), "a")],
            [
                (1, dt.datetime(2024, 1, 2, 9, tzinfo=dt.UTC), "moved"),
                (2, dt.datetime(2024, 1, 3, tzinfo=dt.UTC), "n"),
            ],
            id="timestamp-partition",
        ),
        pytest.param(
            {"id": "bigint", "day": "date", "shop": "string", "val": "string"},
            ("day", "shop"),
            [(1, D1, "x", "a"), (2, D2, "y", "b")],
            [(1, D2, "y", "moved"), (3, D3, "z", "n")],
            id="two-partition-columns",
        ),
    ],
)
def test_fallback_without_a_predicate(spark, columns, partition_by, base, source):
    schema = ", ".join(f"{c} {t}" for c, t in columns.items())
    pruned, plain, predicate = _merge_both(
        spark,
        f"fb_{len(partition_by)}",
        base,
        source,
        schema=schema,
        columns=columns,
        partition_by=partition_by,
    )
    assert predicate == ""
    assert pruned == plain
    assert sorted(r[0] for r in pruned) == sorted({r[0] for r in base + source})  # one row per key
    assert next(r for r in pruned if r[0] == 1)[-1] == "moved"  # moved, not copied


def test_assume_unique_gives_the_default_result(spark):
    base = [(1, D1, "a1"), (2, D1, "a2"), (3, D2, "b3")]
    source_rows = [(1, D2, "moved"), (3, D2, "b3x"), (4, D4, "new")]
    results = {}
    for name, kwargs in {
        "default": {},
        "unique": {"assume_unique": True},
        "unique_pruned": {"assume_unique": True, "prune_partitions": True},
    }.items():
        tdef = _tdef(f"au_{name}")
        writes.write_table(spark.createDataFrame(base, SCHEMA), tdef, mode="overwrite")
        writes.merge_into(spark.createDataFrame(source_rows, SCHEMA), tdef, **kwargs)
        results[name] = _rows(spark, tdef)
    expected = [(1, D2, "moved"), (2, D1, "a2"), (3, D2, "b3x"), (4, D4, "new")]
    assert results == {"default": expected, "unique": expected, "unique_pruned": expected}


# ----------------------------------------------------------------------------- batched quality checks

CHECKS = [
    {"name": "ids_not_null", "check": "not_null", "arguments": {"columns": ["order_id", "customer_id"]}},
    {"name": "id_unique", "check": "unique", "arguments": {"columns": ["order_id"]}},
    {
        "name": "id_unique_completed",
        "check": "unique",
        "arguments": {"columns": ["order_id"], "where": "status = 'completed'"},
    },
    {
        "name": "customer_ri",
        "check": "referential_integrity",
        "arguments": {"column": "customer_id", "references": "silver.customers.customer_id"},
    },
    {
        "name": "qty_range",
        "check": "value_range",
        "arguments": {"column": "quantity", "min": 0, "max": 6},
        "criticality": "warn",
    },
    {
        "name": "qty_range_completed",
        "check": "value_range",
        "arguments": {"column": "quantity", "min": 0, "where": "status = 'completed'"},
    },
    {"name": "fresh", "check": "freshness", "arguments": {"column": "order_ts", "max_lag_hours": 12}},
    {
        "name": "fresh_vs_bronze",
        "check": "freshness",
        "arguments": {"column": "order_ts", "max_lag_hours": 1, "reference": "bronze.orders.order_ts"},
    },
    {
        "name": "recon",
        "check": "row_count_reconciliation",
        "arguments": {"source": "bronze.orders", "tolerance_ratio": 0.1},
    },
]

# (status, metric) of each check on `orders` below: the defects are known.
EXPECTED = {
    "ids_not_null": ("FAILED", 0.2),  # order 4 has no customer
    "id_unique": ("FAILED", 0.2),  # order 2 twice
    "id_unique_completed": ("PASSED", 0.0),  # the second order 2 is cancelled
    "customer_ri": ("FAILED", 0.2),  # customer 99 unknown
    "qty_range": ("WARN", 0.4),  # -1 and 7
    "qty_range_completed": ("FAILED", 0.25),  # -1 of 4 completed
    "fresh": ("PASSED", 6.0),  # newest 18:00 vs end of 2024-01-10
    "fresh_vs_bronze": ("FAILED", 6.0),  # a business date wins over the reference
    "recon": ("FAILED", 1 / 6),  # 5 rows vs 6
}


def _specs(checks: list[dict]) -> list[quality_model.CheckSpec]:
    return quality_rules.parse_rule_sets([("test", {"table": "silver.orders", "checks": checks})])["silver.orders"]


@pytest.fixture
def frames(spark):
    orders = spark.createDataFrame(
        [
            (1, 10, 5, "2024-01-10 09:00:00", "completed"),
            (2, 10, None, "2024-01-10 12:00:00", "completed"),
            (2, 20, 3, "2024-01-09 12:00:00", "cancelled"),
            (3, 99, -1, "2024-01-10 18:00:00", "completed"),
            (4, None, 7, None, "completed"),
        ],
        "order_id bigint, customer_id bigint, quantity bigint, ts string, status string",
    ).selectExpr("order_id", "customer_id", "quantity", "CAST(ts AS timestamp) AS order_ts", "status")
    customers = spark.createDataFrame(
        [(10,), (20,), (20,)], "customer_id bigint"
    )  # 20 twice: joins keep row counts
    bronze = spark.createDataFrame(
        [(i, "2024-01-10 21:00:00" if i == 5 else "2024-01-10 08:00:00") for i in range(6)],
        "order_id bigint, order_ts string",
    )
    return {"silver.orders": orders, "silver.customers": customers, "bronze.orders": bronze}


def _ctx(frames, business_date=None) -> quality_model.CheckContext:
    return quality_model.CheckContext(
        table="silver.orders",
        df=frames["silver.orders"],
        run_id="r1",
        business_date=quality._business_datetime(business_date),
        read=lambda ref: frames[ref],
        full_name=lambda ref: f"cat.{ref}",
    )


@pytest.fixture
def calls(monkeypatch):
    """Counts of `quality.evaluate` calls (a check run alone) and of queries, by check name."""
    counts: dict[str, list[str]] = {"evaluate": [], "query": []}
    evaluate, query = quality.evaluate, quality_model.Scope.query

    def counting_evaluate(spec, ctx):
        counts["evaluate"].append(spec.name)
        return evaluate(spec, ctx)

    def counting_query(self, aggregates):
        counts["query"].append(len(aggregates))
        return query(self, aggregates)

    monkeypatch.setattr(quality, "evaluate", counting_evaluate)
    monkeypatch.setattr(quality_model.Scope, "query", counting_query)
    return counts


def test_batched_checks_give_the_results_of_each_check_alone(frames, calls):
    specs = _specs(CHECKS)
    batched = quality.evaluate_table(specs, _ctx(frames, "2024-01-10"))
    # One query for the whole table, no check run alone.
    assert calls == {"evaluate": [], "query": [len(CHECKS)]}
    alone = [quality.evaluate(s, _ctx(frames, "2024-01-10")) for s in specs]
    assert batched == alone
    got = {r.check_name: (r.check_status, r.metric_value) for r in batched}
    assert got.keys() == EXPECTED.keys()
    for name, (status, metric) in EXPECTED.items():
        assert got[name][0] == status, name
        assert got[name][1] == pytest.approx(metric), name


def test_batched_freshness_uses_the_reference_without_a_business_date(frames, calls):
    specs = _specs(CHECKS)
    batched = quality.evaluate_table(specs, _ctx(frames))
    assert calls["evaluate"] == []
    assert batched == [quality.evaluate(s, _ctx(frames)) for s in specs]
    by_name = {r.check_name: r for r in batched}
    assert (by_name["fresh_vs_bronze"].check_status, by_name["fresh_vs_bronze"].metric_value) == (
        "FAILED",
        3.0,
    )
    assert by_name["fresh"].check_status == "FAILED" and "no business date" in by_name["fresh"].details


@pytest.mark.parametrize(
    ("broken", "status", "missing"),
    [
        pytest.param(
            {"name": "broken", "check": "not_null", "arguments": {"columns": ["no_such_column"]}},
            "FAILED",
            "no_such_column",
            id="missing-column",
        ),
        pytest.param(
            {
                "name": "broken",
                "check": "value_range",
                "arguments": {"column": "quantity", "min": 0, "where": "no_such_flag = 1"},
                "criticality": "warn",
            },
            "WARN",
            "no_such_flag",
            id="missing-where-column",
        ),
    ],
)
def test_a_broken_check_does_not_hide_the_others(frames, calls, caplog, broken, status, missing):
    specs = _specs([*CHECKS[:4], broken, *CHECKS[4:]])
    good = {r.check_name: r for r in quality.evaluate_table(_specs(CHECKS), _ctx(frames, "2024-01-10"))}
    calls["evaluate"].clear()
    with caplog.at_level(logging.DEBUG, logger="retail_lakehouse.pipeline.quality"):
        results = quality.evaluate_table(specs, _ctx(frames, "2024-01-10"))
    # The shared query failed: every check ran alone, in order.
    assert calls["evaluate"] == [s.name for s in specs]
    assert any("the shared query failed" in m for m in caplog.messages)
    assert [r.check_name for r in results] == [s.name for s in specs]
    assert {r.check_name: r for r in results if r.check_name != "broken"} == good
    result = results[4]
    assert (result.check_status, result.metric_value, result.threshold) == (status, None, None)
    assert result.details.startswith("check could not run: AnalysisException") and missing in result.details
    if "where" in broken["arguments"]:
        assert result.details.endswith("[where no_such_flag = 1]")


def test_a_check_that_cannot_be_built_runs_alone_and_the_rest_stay_batched(frames, calls):
    broken = {
        "name": "broken",
        "check": "row_count_reconciliation",
        "arguments": {"source": "bronze.no_such"},
    }
    specs = _specs([*CHECKS, broken])
    results = quality.evaluate_table(specs, _ctx(frames, "2024-01-10"))
    assert calls["evaluate"] == ["broken"] and calls["query"] == [len(CHECKS)]
    by_name = {r.check_name: r for r in results}
    assert by_name["broken"].check_status == "FAILED"
    assert (
        by_name["broken"].details.startswith("check could not run: KeyError")
        and "no_such" in by_name["broken"].details
    )
    for name, (status, metric) in EXPECTED.items():
        assert (by_name[name].check_status, by_name[name].metric_value) == (status, pytest.approx(metric)), (
            name
        )


def test_run_checks_records_every_result_when_one_check_is_broken(spark):
    def order(oid, customer, hour, total):
        t = dt.datetime(2024, 1, 10, hour, tzinfo=dt.UTC)
        return (oid, customer, t, t.date(), "completed", None if total is None else Decimal(total))

    rows = [
        order(1, 1, 9, "5.00"),
        order(2, None, 12, "-1.00"),
        order(2, 2, 18, None),
        order(3, 3, 20, "7.00"),
    ]
    df = spark.createDataFrame(
        rows,
        "order_id bigint, customer_id bigint, order_ts timestamp, order_date date, status string, "
        "total_amount decimal(12,2)",
    )
    writes.write_table(df, "silver.orders", mode="overwrite")
    checks = [
        {"name": "id_unique", "check": "unique", "arguments": {"columns": ["order_id"]}},
        {
            "name": "customer_nn",
            "check": "not_null",
            "arguments": {"columns": ["customer_id"]},
            "criticality": "warn",
        },
        {"name": "broken", "check": "not_null", "arguments": {"columns": ["no_such_column"]}},
        {"name": "total_range", "check": "value_range", "arguments": {"column": "total_amount", "min": 0}},
        {"name": "fresh", "check": "freshness", "arguments": {"column": "order_ts", "max_lag_hours": 6}},
    ]
    rules = {"silver.orders": _specs(checks)}
    report = quality.run_checks(
        ["silver.orders"], run_id="batch-broken", business_date="2024-01-10", rule_sets=rules
    )
    got = {r.check_name: (r.check_status, r.metric_value) for r in report.results}
    assert got == {
        "id_unique": ("FAILED", 0.25),
        "customer_nn": ("WARN", 0.25),
        "broken": ("FAILED", None),
        "total_range": ("FAILED", 0.25),  # -1.00; the NULL total is not out of range
        "fresh": ("PASSED", 4.0),
    }
    full = "retail_datalake.local_silver.orders"
    written = {
        r.check_name: (r.table_name, r.check_status)
        for r in spark.table("retail_datalake.local_monitoring.quality_metrics")
        .filter("run_id = 'batch-broken'")
        .collect()
    }
    assert written == {name: (full, status) for name, (status, _) in got.items()}
