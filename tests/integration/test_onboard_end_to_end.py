"""The issue's "done when", on a throwaway copy of the project: generate through the day `returns`
appears, `lakehouse onboard returns --jdbc-table returns`, `lakehouse onboard --check`, `lakehouse run
retail_daily`: silver, quarantine, reconciliation and quality include returns; the generated test
passes in the copy. The checkout itself is not changed. And the drill `new_source` sets that stage."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from types import SimpleNamespace

import pytest

from retail_lakehouse.core.config import PROJECT_ROOT
from retail_lakehouse.onboarding.project_copy import ProjectCopy
from retail_lakehouse.ops import onboard_source
from retail_lakehouse.sandbox import drills

pytestmark = pytest.mark.slow
WATCHED = ("databricks.yml", "lib/retail_lakehouse/core/schema_definitions.yaml")


def _digest() -> str:
    return hashlib.sha1(b"".join((PROJECT_ROOT / p).read_bytes() for p in WATCHED)).hexdigest()


def test_generate_onboard_check_run_on_a_copy(tmp_path):
    before = _digest()
    with ProjectCopy.create(tmp_path / "c") as copy:
        assert copy.cli("generate", "--scale-factor", "0.05", "--days", "3").returncode == 0
        registry_before = (copy.project / WATCHED[1]).read_text()
        too_early = copy.cli("onboard", "returns", "--jdbc-table", "returns")  # no such table before day 10
        assert too_early.returncode == 2 and "cannot onboard 'returns'" in too_early.stderr, too_early.stderr
        assert "no such table: returns" in too_early.stderr
        assert (copy.project / WATCHED[1]).read_text() == registry_before
        generated = copy.cli("generate", "--scale-factor", "0.2", "--days", "12")
        assert generated.returncode == 0 and "returns" in generated.stdout, generated.stderr
        onboarded = copy.cli("onboard", "returns", "--jdbc-table", "returns")
        assert onboarded.returncode == 0, onboarded.stderr
        assert "wrote 7 files" in onboarded.stdout
        checked = copy.cli("onboard", "--check")
        assert checked.returncode == 0 and "every source is consistent" in checked.stdout, checked.stdout
        run = copy.cli("run", "retail_daily")
        assert run.returncode == 0, run.stdout + run.stderr
        counts, recon, quality = onboard_source._results(copy, "returns")
        with sqlite3.connect(copy.home / "sources" / "store_oltp.sqlite") as conn:
            source_rows = conn.execute("SELECT count(*) FROM returns").fetchone()[0]
        assert counts["bronze"] == source_rows > 0 and counts["silver"] > 0
        (row,) = recon.to_dict("records")
        assert row["balanced"] and row["bronze_rows"] == row["silver_rows"] + row["quarantined_rows"] + row["duplicates_removed"]
        assert row["quarantined_rows"] == counts["quarantine"]
        checks = set(quality.loc[quality["table_name"].str.endswith(".local_silver.returns"), "check_name"])
        assert {"has_rows", "sla_freshness", "return_id_unique", "return_id_not_null", "quarantine_rate"} <= checks
        assert "FAILED" not in set(quality["check_status"])
        generated_test = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit/test_source_returns.py"],
            cwd=copy.project, env=copy.env(), capture_output=True, text=True, timeout=300, check=False)
        assert generated_test.returncode == 0, generated_test.stdout[-2000:]
    assert _digest() == before  # the checkout was never written


def test_new_source_drill_and_the_procedure_account_for_every_generated_row():
    """The drill's copy, onboarded and run by the ops procedure (the site's example run): bronze holds the
    source's rows; silver = bronze - NULL keys (quarantined) - re-sent copies (deduplicated)."""
    before = _digest()
    result = drills.run("new_source")
    assert result.notebook == "onboard_source" and result.parameters["dry_run"] is False
    defects, source_rows = result.facts["defects"], result.facts["source_rows"]
    assert defects["null_keys"] > 0 and defects["duplicate_records"] > 0
    params = SimpleNamespace(**{**result.parameters, "landing": "", "key": "", "watermark": ""})
    outcome = onboard_source.run(params)
    assert outcome.held, outcome.message
    assert outcome.counts == {"bronze": source_rows, "quarantine": defects["null_keys"],
                              "silver": source_rows - defects["null_keys"] - defects["duplicate_records"]}
    assert outcome.check == [] and outcome.job_state == "SUCCESS"
    warned = outcome.quality.loc[outcome.quality["check_name"] == "quarantine_rate", "check_status"].tolist()
    assert warned == ["PASSED"]
    assert _digest() == before and not (PROJECT_ROOT / "lib/retail_lakehouse/pipeline/rules/returns.yaml").exists()


def test_a_landing_source_end_to_end(tmp_path):
    """`--landing`: JSON-lines files under the lakehouse home, ingested by checkpoint into bronze, then silver."""
    with ProjectCopy.create(tmp_path / "c") as copy:
        assert copy.cli("generate", "--scale-factor", "0.05", "--days", "2").returncode == 0
        for day in ("2024-01-01", "2024-01-02"):
            folder = copy.home / "landing" / "events" / day
            folder.mkdir(parents=True)
            lines = [f'{{"event_id": "{day}-{i}", "kind": "view", "amount": {i}.5, "event_at": "{day} 10:{i:02d}:00"}}'
                     for i in range(20)]
            if day == "2024-01-01":  # one row without its key: quarantined (1 of 41, under the 5% rate)
                lines.append(f'{{"event_id": null, "kind": "view", "amount": 1.0, "event_at": "{day} 11:00:00"}}')
            (folder / "part-0.jsonl").write_text("\n".join(lines) + "\n")
        onboarded = copy.cli("onboard", "events", "--landing", "landing/events", "--key", "event_id", "--yes")
        assert onboarded.returncode == 0, onboarded.stderr
        registry_text = (copy.project / "lib/retail_lakehouse/core/schema_definitions.yaml").read_text()
        assert "source_path: landing/events" in registry_text and str(copy.home) not in registry_text
        assert copy.cli("onboard", "--check").returncode == 0
        run = copy.cli("run", "retail_daily")
        assert run.returncode == 0, run.stdout + run.stderr
        bronze, silver_rows, quarantined = (r[0]["n"] for r in copy.queries([
            f"SELECT count(*) AS n FROM retail_datalake.local_{t}" for t in
            ("bronze.events", "silver.events", "silver.events_quarantine")]))
        assert (bronze, silver_rows, quarantined) == (41, 40, 1)
        again = copy.cli("run", "retail_ingestion")  # the checkpoint: nothing is ingested twice
        assert again.returncode == 0
        assert copy.query("SELECT count(*) AS n FROM retail_datalake.local_bronze.events")[0]["n"] == 41
