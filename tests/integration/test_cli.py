"""The `lakehouse` command as a user types it: clear errors with a non-zero exit, results printed."""

from __future__ import annotations

import pytest

from retail_lakehouse.cli import main


def test_sql_prints_a_result(capsys):
    assert main(["sql", "SELECT :x AS answer", "-p", "x=42"]) == 0
    assert "42" in capsys.readouterr().out


def test_malformed_sql_is_a_clear_error(capsys):
    assert main(["sql", "SELEC nothing"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "SELEC nothing" in err


def test_unknown_job_names_the_known_ones(capsys):
    assert main(["run", "no_such_job"]) == 2
    err = capsys.readouterr().err
    assert "no_such_job" in err and "retail_daily" in err


def test_unknown_job_parameter_is_refused(capsys):
    assert main(["run", "retail_transformation", "-p", "start=2024-01-01"]) == 2
    err = capsys.readouterr().err
    assert "start" in err and "backfill_start_date" in err


def test_bad_param_syntax(capsys):
    assert main(["run", "retail_daily", "-p", "novalue"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_tables_lists_the_registry(capsys):
    assert main(["tables"]) == 0
    out = capsys.readouterr().out
    assert "retail_datalake.local_gold.fact_sales" in out and "retail_datalake.local_silver.orders_quarantine" in out


def test_generate_refuses_bad_input(capsys):
    assert main(["generate", "--scale-factor", "0", "--days", "1"]) == 2
    assert "scale_factor" in capsys.readouterr().err


def test_drill_refuses_unknown_names(capsys):
    assert main(["drill", "no_such_drill"]) == 2
    assert "unknown drill" in capsys.readouterr().err


def test_bad_date_is_an_argparse_error():
    with pytest.raises(SystemExit):
        main(["generate", "--start-date", "2024-13-01"])
