"""schema_evolution: the comparison on small inputs; the new_source_column drill carried into silver."""

from __future__ import annotations

import pandas as pd
import pytest

from retail_lakehouse.core.errors import ConfirmationRequired, LakehouseError, ParameterError, SqlError
from retail_lakehouse.core.tables import registry
from retail_lakehouse.ops import schema_evolution as se
from retail_lakehouse.pipeline.silver import RuleSet

RULES = RuleSet(table="t", source="bronze.t", columns={"id": "id", "a": "a"}, rules=(), order_by=("_ingested_at",),
                optional_columns={"b": "string"})


def test_new_source_columns_are_bronze_columns_the_registry_lacks():
    bronze = {"_ingested_at": "timestamp", "_run_id": "string", "id": "bigint", "a": "string", "c": "int"}
    assert se.new_source_columns(bronze, {"id": "bigint", "a": "string"}) == {"c": "int"}


def test_compare_columns():
    frame = se.compare_columns({"id": "bigint", "c": "int"}, {"id": "bigint"}, ["id", "a"], {"id": "bigint", "a": "string"},
                               RULES).set_index("column")
    assert frame.loc["c", "bronze_table"] and not frame.loc["c", "bronze_registry"] and not frame.loc["c", "silver_table"]
    assert frame.loc["a", "rule_set"] and not frame.loc["a", "bronze_table"]


def _plan(findings):
    ref = se.TableRef(registry().get("silver.orders"), "retail_datalake.local_silver.orders", "local")
    p = se.EvolutionPlan("orders", ref, ref, pd.DataFrame(), findings, pd.DataFrame())
    p.alter = se.alter_statements(ref, findings)
    p.reprocess = {} if p.alter else None
    return p


def test_column_silver_lacks_gets_alter_and_code_changes():
    f = se.ColumnFinding("c", "int", in_silver_table=False, in_silver_registry=False, in_rule_set=False)
    p = _plan([f])
    assert p.alter == ["ALTER TABLE retail_datalake.local_silver.orders ADD COLUMNS (`c` int)"]
    assert p.actions[-1] == "run job retail_transformation (incremental)"
    changes = se.code_changes("orders", "bronze.orders", [f])
    assert any("silver.orders" in c for c in changes) and any("rules/orders.yaml" in c for c in changes)


def test_refused_alter_names_the_statement(monkeypatch):
    f = se.ColumnFinding("c", "int", in_silver_table=False, in_silver_registry=False, in_rule_set=False)

    def fake_sql(_w, statement, params=None, *, env):  # noqa: ARG001
        if statement.startswith("ALTER"):
            raise SqlError("statement FAILED: unsupported ALTER TABLE operation")
        return pd.DataFrame({"version": [3]})

    monkeypatch.setattr(se._delta, "sql", fake_sql)
    with pytest.raises(LakehouseError, match=r"refused `ALTER TABLE .* ADD COLUMNS \(`c` int\)`"):
        se.apply(None, _plan([f]), dry_run=False, confirm=False)  # type: ignore[arg-type]


def test_apply_in_prod_needs_confirm_before_any_call():
    p = _plan([])
    p.silver = se.TableRef(None, "retail_datalake.prod_silver.orders", "prod")  # type: ignore[arg-type]
    with pytest.raises(ConfirmationRequired):
        se.apply(None, p, dry_run=False, confirm=False)  # type: ignore[arg-type]


@pytest.mark.parametrize("ref", ["silver.orders_quarantine", "gold.fact_sales", "bronze.orders"])
def test_check_table_refuses_tables_without_rules(ref):
    with pytest.raises(ParameterError, match="not a silver table built by rules"):
        se.check_table(registry().get(ref))


def test_new_source_column_carried(demo_lakehouse, tmp_path):
    from retail_lakehouse.sandbox import drills
    from retail_lakehouse.sandbox.drills import _local
    from tests.ops._helpers import audit_rows, run_notebook

    result = drills.run("new_source_column")
    facts = result.facts
    silver_version = _local.version("silver.orders")
    # dry run first: the diagnosis names the column, nothing changes
    text = run_notebook("schema_evolution", tmp_path, **{**result.parameters, "dry_run": True})
    assert "new source column promo_code (string)" in text and f"arrived {facts['arrival_day']}" in text
    assert "DRY RUN" in text and "run job retail_transformation" in text
    assert _local.version("silver.orders") == silver_version
    with pytest.raises(Exception, match="is not a table name"):
        run_notebook("schema_evolution", tmp_path, **{**result.parameters, "table": "orders; DROP TABLE x"})
    assert _local.version("silver.orders") == silver_version
    text = run_notebook("schema_evolution", tmp_path, **result.parameters)
    assert "OUTCOME HELD" in text and "carries every new source column: promo_code" in text
    assert _local.count("silver.orders", "promo_code IS NOT NULL") > 0
    assert _local.table("silver.orders").select("order_date").distinct().count() == facts["days"]
    audit = audit_rows("schema_evolution")
    assert list(audit["outcome"]) == ["DRY_RUN", "SUCCESS"]  # bad parameters stopped before the audited run
    assert "local_silver.orders" in audit[audit["outcome"] == "SUCCESS"]["tables_changed"].iloc[-1]
