"""The issue's "done when", on a throwaway copy of the project: sources generated through the day
`returns` appears (drill `new_source`), then, as the site's example run does it (ops `onboard_source`,
which runs these commands in the copy): `lakehouse onboard returns --jdbc-table returns`,
`lakehouse onboard --check`, `lakehouse run retail_daily`; silver, quarantine, reconciliation and
quality include returns, and the test onboarding wrote passes in the copy. The checkout itself is not
changed. Also: a table the source does not have yet is refused, and a landing source end to end."""

from __future__ import annotations

import hashlib
import json
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


def test_onboarding_a_table_the_source_does_not_have_yet_is_refused(tmp_path):
    with ProjectCopy.create(tmp_path / "c") as copy:
        generated = copy.cli("generate", "--scale-factor", "0.05", "--days", "3")  # returns appear on day 10
        assert generated.returncode == 0 and "returns" not in generated.stdout
        registry_before = (copy.project / WATCHED[1]).read_text()
        too_early = copy.cli("onboard", "returns", "--jdbc-table", "returns")
        assert too_early.returncode == 2 and "cannot onboard 'returns'" in too_early.stderr, too_early.stderr
        assert "no such table: returns" in too_early.stderr
        assert (copy.project / WATCHED[1]).read_text() == registry_before


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
    assert set(outcome.quality.loc[outcome.quality["table_name"].str.endswith(".local_silver.returns"), "check_name"]) >= {
        "has_rows", "sla_freshness", "return_id_unique", "return_id_not_null", "quarantine_rate"}
    assert "FAILED" not in set(outcome.quality["check_status"])
    (recon,) = outcome.reconciliation.to_dict("records")
    assert recon["balanced"] and recon["duplicates_removed"] == defects["duplicate_records"]
    with ProjectCopy(result.parameters["project_dir"]) as copy:  # the test onboarding wrote passes there
        generated_test = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit/test_source_returns.py"],
            cwd=copy.project, env=copy.env(), capture_output=True, text=True, timeout=300, check=False)
        assert generated_test.returncode == 0, generated_test.stdout[-2000:]
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
        checkpoint = json.loads((copy.home / "checkpoints" / "events" / "files.json").read_text())
        assert set(checkpoint["files"]) == {"2024-01-01/part-0.jsonl", "2024-01-02/part-0.jsonl"}  # not read again
