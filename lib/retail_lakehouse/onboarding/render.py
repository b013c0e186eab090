"""The text of each artifact onboarding writes, following the patterns of the sources already there:
registry entries, the bronze ingestion and silver notebooks, the silver rules, the quality checks,
the bundle's job tasks and a test. Pure functions of a `SourceSchema` (and of the files they extend)."""

from __future__ import annotations

import hashlib
import json
import re

from retail_lakehouse.core.errors import ConfigError
from retail_lakehouse.onboarding.infer import SourceSchema

OLTP_SYSTEM = "store_oltp"
LANDING_SYSTEM = "landing"
INGEST_JOB, TRANSFORM_JOB = "retail_ingestion", "retail_transformation"
_ENV = '{env: "${var.env}", run_id: "{{job.run_id}}"}'


def ingest_notebook_path(s: SourceSchema) -> str:
    folder = "batch" if s.kind == "jdbc" else "streaming"
    return f"pipeline_notebooks/ingestion/{folder}/ingest_{s.name}.ipynb"


def clean_notebook_path(name: str) -> str:
    return f"pipeline_notebooks/transformation/bronze_to_silver/clean_{name}.ipynb"


def rules_path(name: str) -> str:
    return f"lib/retail_lakehouse/pipeline/rules/{name}.yaml"


def checks_path(name: str) -> str:
    return f"lib/retail_lakehouse/pipeline/checks/silver_{name}.yaml"


def test_path(name: str) -> str:
    return f"tests/unit/test_source_{name}.py"


# ----------------------------------------------------------------------------- registry


def _silver_columns(s: SourceSchema) -> dict[str, str]:
    cols = {c.name: c.silver_type for c in s.columns}
    if s.date_column:
        cols[s.date_column] = "date"
    return {**cols, "_run_id": "string", "_processed_at": "timestamp"}


def registry_entries(s: SourceSchema) -> tuple[str, str]:
    """(bronze entry, silver entry) as YAML list items of `tables:` in schema_definitions.yaml."""
    origin = f"Store OLTP {s.location}" if s.kind == "jdbc" else f"Landing JSON-lines files ({s.location})"
    bronze = [f"  - name: {s.name}", "    layer: bronze",
              f"    description: {origin}, as landed (onboarded with `lakehouse onboard`).", "    columns:"]
    bronze += [f"      {c.name}: {c.bronze_type}" for c in s.columns]
    bronze += ["      <<: *ingestion", f"    keys: [{s.key}]",
               f"    source_system: {OLTP_SYSTEM if s.kind == 'jdbc' else LANDING_SYSTEM}"]
    if s.kind == "jdbc":
        bronze.append(f"    watermark: {s.watermark}")
    else:
        bronze.append(f"    source_path: {s.location}")
    bronze.append("    change_data_feed: true")
    silver = [f"  - name: {s.name}", "    layer: silver",
              f"    description: bronze.{s.name} typed, validated (rules/{s.name}.yaml), deduplicated on {s.key}.",
              "    columns:"]
    silver += [f"      {c}: {t}" for c, t in _silver_columns(s).items()]
    silver.append(f"    keys: [{s.key}]")
    if s.business_time:
        upstream = s.column(s.business_time).expression
        silver += ["    quality:",
                   "      # Freshness SLA (onboarding's default, review it): newest row within 26 h of bronze's.",
                   f"      sla: {{hours: 26, time: {s.business_time}, upstream: bronze.{s.name}, "
                   f"upstream_time: \"{upstream}\"}}"]
    return "\n".join(bronze) + "\n", "\n".join(silver) + "\n"


_SECTION = re.compile(r"^  # -+ (silver|gold)\b", re.M)


def add_registry_entries(text: str, s: SourceSchema) -> str:
    """schema_definitions.yaml with the bronze entry at the end of the bronze section and the silver
    entry at the end of the silver section (before their `# ---- silver` / `# ---- gold` markers)."""
    bronze, silver = registry_entries(s)
    marks = {m.group(1): m.start() for m in _SECTION.finditer(text)}
    if set(marks) != {"silver", "gold"}:
        raise ConfigError("schema_definitions.yaml lacks its '# ---- silver' / '# ---- gold' section markers")
    out = text[: marks["silver"]].rstrip("\n") + "\n" + bronze + "\n"
    out += text[marks["silver"] : marks["gold"]].rstrip("\n") + "\n" + silver + "\n"
    return out + text[marks["gold"] :]


# ----------------------------------------------------------------------------- notebooks


def _cell_id(*parts: str) -> str:
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:8]


def _notebook(name: str, kind: str, markdown: str, parameters: list[str], code: list[list[str]]) -> str:
    def src(lines: list[str]) -> list[str]:
        return [line + "\n" for line in lines[:-1]] + lines[-1:]

    cells = [{"cell_type": "markdown", "id": _cell_id(name, kind, "md"), "metadata": {}, "source": src(markdown.split("\n"))},
             {"cell_type": "code", "execution_count": None, "id": _cell_id(name, kind, "params"),
              "metadata": {"tags": ["parameters"]}, "outputs": [], "source": src(parameters)}]
    for i, lines in enumerate(code):
        cells.append({"cell_type": "code", "execution_count": None, "id": _cell_id(name, kind, str(i)),
                      "metadata": {}, "outputs": [], "source": src(lines)})
    doc = {"cells": cells,
           "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                        "language_info": {"name": "python"}},
           "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


_PARAMS = [
    'env: str = "local"  # environment: local, dev, qa or prod',
    'run_id: str = "manual"  # job run id; the job runner / Databricks ({{job.run_id}}) injects it',
    'backfill_start_date: str = ""  # YYYY-MM-DD: reprocess from this day (with backfill_end_date); empty for an incremental run',
    'backfill_end_date: str = ""  # YYYY-MM-DD, inclusive; empty for an incremental run',
]
_WIRE = [
    "env = param(\"env\", env, kind=\"env\")",
    "run_id = param(\"run_id\", run_id)",
    "backfill_start_date = param(\"backfill_start_date\", backfill_start_date, kind=\"optional_date\")",
    "backfill_end_date = param(\"backfill_end_date\", backfill_end_date, kind=\"optional_date\")",
]


def ingest_notebook(s: SourceSchema) -> str:
    if s.kind == "jdbc":
        md = (f"# Ingest `{s.name}` into bronze\n\nAppends the rows of the store OLTP table `{s.location}` changed "
              f"since the last watermark (`{s.watermark}`) to `bronze.{s.name}`, with ingestion metadata. Written by "
              "`lakehouse onboard`; the same pattern as the other OLTP sources (schema evolution, backfill by "
              f"`{s.watermark}` range, an unreachable source leaves bronze unchanged).")
        call = [f"result = ingest_oltp(\"{s.name}\", run_id=run_id, env=env,",
                "                     backfill_start_date=backfill_start_date, backfill_end_date=backfill_end_date)",
                "result.as_dict()"]
        imp = "from retail_lakehouse.pipeline.ingest import ingest_oltp"
    else:
        md = (f"# Ingest `{s.name}` into bronze\n\nAppends the JSON-lines files landed under `{s.location}` since the "
              f"last run (a checkpoint of the files seen) to `bronze.{s.name}`, with ingestion metadata. Written by "
              "`lakehouse onboard`.")
        call = [f"result = ingest_landing(\"{s.name}\", run_id=run_id, env=env,",
                "                        backfill_start_date=backfill_start_date, backfill_end_date=backfill_end_date)",
                "result.as_dict()"]
        imp = "from retail_lakehouse.pipeline.ingest import ingest_landing"
    return _notebook(s.name, "ingest", md, _PARAMS, [[imp, "from retail_lakehouse.core.params import param", "", *_WIRE], call])


def clean_notebook(s: SourceSchema) -> str:
    md = (f"# Clean `{s.name}` into silver\n\nStandardizes the new bronze rows, applies the validation rules of "
          f"`rules/{s.name}.yaml` (rows failing an `error` rule go to `silver.{s.name}_quarantine` with the rule "
          f"names), deduplicates by `{s.key}` keeping the latest, MERGEs into silver and records the run's "
          "reconciliation (bronze = silver + quarantine + duplicates). Written by `lakehouse onboard`.")
    call = [f"result = clean_table(\"{s.name}\", run_id=run_id, env=env,",
            "                     backfill_start_date=backfill_start_date, backfill_end_date=backfill_end_date)",
            "assert result.balanced, f\"reconciliation failed: {result.as_dict()}\"",
            "result.as_dict()"]
    wire = ["from retail_lakehouse.core.params import param", "from retail_lakehouse.pipeline.silver import clean_table",
            "", *_WIRE]
    return _notebook(s.name, "clean", md, _PARAMS, [wire, call])


# ----------------------------------------------------------------------------- rules and checks


def rules_yaml(s: SourceSchema) -> str:
    order = [s.watermark] if s.watermark else []
    lines = [f"# Silver rules for {s.name}, written by `lakehouse onboard {s.name}` from a sample of the source.",
             "# Review before merging: the range rules are starters from the sample (warn), the references",
             "# are guesses from column names (warn); promote a rule to `error` to quarantine its rows.",
             f"table: {s.name}", f"source: bronze.{s.name}", f"order_by: [{', '.join([*order, '_ingested_at'])}]"]
    if s.date_column:
        lines.append(f"date_column: {s.date_column}")
    lines.append("columns:")
    for c in s.columns:
        lines.append(f"  {c.name}: {c.expression}")
    if s.date_column and s.business_time:
        lines.append(f"  {s.date_column}: to_date({s.column(s.business_time).expression})")
    lines += ["rules:", f"  - {{name: {s.key}_not_null, expression: {s.key} IS NOT NULL, criticality: error}}"]
    for c in s.columns:
        if c.silver_type in ("timestamp", "date") and c.name in (s.watermark, s.business_time) and c.expression != c.name:
            lines.append(f"  - {{name: {c.name}_parseable, expression: {c.name} IS NOT NULL, criticality: error}}")
    for col, (lo, hi) in s.ranges.items():
        lines.append(f"  - {{name: {col}_in_range, expression: \"{col} IS NULL OR {col} BETWEEN {lo:g} AND {hi:g}\", "
                     "criticality: warn}  # review: starter range")
    for col, ref in s.references.items():
        table = ref.split(".")[1]
        lines.append(f"  - {{name: {_singular(table)}_exists, foreign_key: {{column: {col}, references: {ref}}}, "
                     "criticality: warn}  # review")
    return "\n".join(lines) + "\n"


def _singular(name: str) -> str:
    return name[:-1] if name.endswith("s") else name


def checks_yaml(s: SourceSchema) -> str:
    lines = [f"# Quality checks of silver.{s.name}, written by `lakehouse onboard {s.name}`. Row count (has_rows)",
             "# and the freshness SLA come from the registry entry; key uniqueness and the pipeline's own",
             "# reconciliation and quarantine rate are here.",
             f"table: silver.{s.name}", "checks:",
             f"  - {{name: {s.key}_not_null, check: not_null, arguments: {{columns: [{s.key}]}}, criticality: error}}",
             f"  - {{name: {s.key}_unique, check: unique, arguments: {{columns: [{s.key}]}}, criticality: error}}",
             "  - {name: reconciliation_balanced, check: row_count_reconciliation, arguments: {from_monitoring: true}, "
             "criticality: error}",
             "  - {name: quarantine_rate, check: quarantine_rate, arguments: {max_ratio: 0.05}, criticality: error}"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- bundle


def _task(key: str, cluster: str, notebook: str, depends: list[str], retries: bool) -> list[str]:
    lines = [f"        - task_key: {key}", f"          job_cluster_key: {cluster}"]
    if retries:
        lines += ["          max_retries: 2", "          min_retry_interval_millis: 2000"]
    if depends:
        lines.append("          depends_on: [" + ", ".join(f"{{task_key: {d}}}" for d in depends) + "]")
    lines += ["          notebook_task:", f"            notebook_path: ./{notebook}", f"            base_parameters: {_ENV}"]
    return lines


def _insert_task(text: str, job: str, lines: list[str]) -> str:
    """Insert task lines at the end of `job`'s `tasks:` list (the job block ends at the next line
    indented 4 or less)."""
    rows = text.split("\n")
    try:
        start = rows.index(f"    {job}:")
    except ValueError:
        raise ConfigError(f"databricks.yml declares no job {job!r} under resources.jobs") from None
    end = next((i for i in range(start + 1, len(rows)) if rows[i].strip() and len(rows[i]) - len(rows[i].lstrip()) <= 4),
               len(rows))
    while end > start and not rows[end - 1].strip():
        end -= 1
    return "\n".join(rows[:end] + lines + rows[end:])


def cluster_of(bundle_text: str, job: str) -> str:
    import yaml

    spec = ((yaml.safe_load(bundle_text) or {}).get("resources") or {}).get("jobs", {}).get(job) or {}
    clusters = [c.get("job_cluster_key") for c in spec.get("job_clusters") or []]
    if not clusters:
        raise ConfigError(f"job {job!r} of databricks.yml has no job_clusters to run a new task on")
    return str(clusters[0])


def add_bundle_tasks(text: str, s: SourceSchema) -> str:
    """databricks.yml with `ingest_<name>` in retail_ingestion and `clean_<name>` in retail_transformation
    (after the clean tasks of the silver tables its rules reference)."""
    depends = [f"clean_{ref.split('.')[1]}" for ref in s.references.values()]
    text = _insert_task(text, INGEST_JOB, _task(f"ingest_{s.name}", cluster_of(text, INGEST_JOB),
                                                 ingest_notebook_path(s), [], retries=True))
    return _insert_task(text, TRANSFORM_JOB, _task(f"clean_{s.name}", cluster_of(text, TRANSFORM_JOB),
                                                    clean_notebook_path(s.name), depends, retries=False))


# ----------------------------------------------------------------------------- test


def test_module(s: SourceSchema) -> str:
    return f'''"""Written by `lakehouse onboard {s.name}`: the source is wired through the registry, the rules,
the quality checks, the notebooks and the jobs, and its silver rules standardize a typed row."""

from __future__ import annotations

from retail_lakehouse.core.tables import registry
from retail_lakehouse.onboarding import check_project
from retail_lakehouse.pipeline.silver import SILVER_TABLES, rule_set


def test_{s.name}_is_consistent_across_the_project():
    assert [p for p in check_project() if "{s.name}" in p] == []


def test_{s.name}_rules_cover_the_silver_columns():
    assert "{s.name}" in SILVER_TABLES
    rules = rule_set("{s.name}")
    silver = registry().get("{s.name}", layer="silver")
    assert set(rules.columns) == set(silver.columns) - {{"_run_id", "_processed_at"}}
    assert silver.keys == ("{s.key}",) and registry().get("{s.name}_quarantine", layer="silver")
    assert registry().get("{s.name}", layer="bronze").change_data_feed
'''
