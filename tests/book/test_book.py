"""The pure parts of the site build: parameter tables, cache keys, outputs made renderable offline."""

from __future__ import annotations

import json
import re

import nbformat
import plotly.graph_objects as go
import pytest

from retail_lakehouse.core.config import PROJECT_ROOT
from retail_lakehouse.site import _book_pages as pages
from retail_lakehouse.site import _book_readable as readable
from retail_lakehouse.site import _book_runs as runs
from retail_lakehouse.site import book

INSPECTED = {
    "env": {
        "name": "env",
        "inferred_type_name": "str",
        "default": '"local"',
        "help": "environment: local, dev, qa or prod",
    },
    "table": {
        "name": "table",
        "inferred_type_name": "str",
        "default": '"gold.fact_sales"',
        "help": "table | to restore",
    },
    "dry_run": {"name": "dry_run", "inferred_type_name": "bool", "default": "True", "help": ""},
}


def test_params_table_escapes_and_lists_every_parameter():
    table = pages.params_table(INSPECTED)
    lines = table.strip().splitlines()
    assert lines[0] == "| parameter | type | default | meaning |"
    assert len(lines) == 2 + len(INSPECTED)
    assert "table \\| to restore" in table
    assert "| `dry_run` | bool | `True` | - |" in table


def test_procedure_page_without_runs_says_so():
    text = pages.procedure_page("restore", INSPECTED, [])
    assert "no executed example yet" in text
    assert "papermill ops_notebooks/restore.ipynb" in text and "-p env prod" in text
    assert "-p table <TABLE>" in text and "dry_run False -p confirm True" in text


def test_procedure_page_links_runs_and_uses_drill_parameters():
    record = runs.RunRecord(
        drill="bad_write",
        notebook="restore",
        key="k",
        summary="a bad overwrite",
        parameters={"env": "local", "table": "gold.fact_sales", "version": 3, "dry_run": False},
    )
    text = pages.procedure_page("restore", INSPECTED, [record])
    assert "{doc}`drill bad_write </book/_generated/runs/restore--bad_write>`" in text
    assert "lakehouse drill bad_write" in text
    prod = re.search(r"papermill ops_notebooks/restore.ipynb runs/restore-.*?\.ipynb \\\n(.*?)\n```", text, re.S)
    assert prod.group(1).splitlines() == ["  -p env prod \\", "  -p table <TABLE> \\", "  -p version <VERSION>"]
    assert "-p version 3" in text  # the local rehearsal keeps the drill's values


def test_missing_notebook_page():
    assert "not written yet" in pages.procedure_page("rebuild_from_source", None, [])


def test_every_chapter_procedure_is_included_and_globbed():
    toc = (PROJECT_ROOT / "_toc.yml").read_text()
    for notebook, chapter in book.CHAPTERS.items():
        text = (PROJECT_ROOT / "book" / f"{chapter}.md").read_text()
        assert f"_generated/procedures/{notebook}.md" in text, (notebook, chapter)
        assert f"book/_generated/runs/{notebook}--*" in toc, notebook


def test_run_key_changes_with_notebook_library_and_drill(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "OPS_DIR", tmp_path)
    (tmp_path / "restore.ipynb").write_text("{}")
    key = runs.run_key("restore", "bad_write", "lib1")
    assert key == runs.run_key("restore", "bad_write", "lib1")
    assert key != runs.run_key("restore", "bad_write", "lib2")
    assert key != runs.run_key("restore", "other_drill", "lib1")
    (tmp_path / "restore.ipynb").write_text('{"changed": 1}')
    assert key != runs.run_key("restore", "bad_write", "lib1")


def test_library_hash_ignores_page_only_modules():
    assert len(runs.library_hash()) == 64
    assert "book.py" in runs._PAGE_ONLY and "_book_pages.py" in runs._PAGE_ONLY


def _plotly_output() -> dict:
    fig = go.Figure(go.Bar(x=[1, 2], y=[3, 4]))
    return {
        "output_type": "display_data",
        "metadata": {},
        "data": {"application/vnd.plotly.v1+json": json.loads(fig.to_json())},
    }


def test_plotly_json_becomes_an_offline_chart():
    (out,) = runs.site_outputs([_plotly_output()])
    html = out["data"]["text/html"]
    assert "plotly-graph-div" in html and "Plotly.newPlot" in html
    assert "application/vnd.plotly.v1+json" not in out["data"]
    assert "http" not in re.sub(r'"[^"]*plotly[^"]*"', "", html.split("Plotly.newPlot")[0])


def test_embedded_plotly_js_and_cdn_scripts_are_dropped():
    bundle = {
        "output_type": "display_data",
        "metadata": {},
        "data": {"text/html": "<script>/* plotly.js v3 */ window.Plotly = Plotly;</script>"},
    }
    cdn = {
        "output_type": "display_data",
        "metadata": {},
        "data": {
            "text/html": '<div><script src="https://cdnjs.cloudflare.com/mathjax.js"></script><div class="plotly-graph-div"></div></div>'
        },
    }
    stream = {"output_type": "stream", "name": "stdout", "text": "hello"}
    kept = runs.site_outputs([bundle, cdn, stream])
    assert len(kept) == 2
    assert "cdnjs" not in kept[0]["data"]["text/html"] and "plotly-graph-div" in kept[0]["data"]["text/html"]
    assert kept[1] == stream


def test_prepare_for_site_titles_the_run_and_demotes_headings():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Restore\n```\n# not a heading\n```\n## Verify"),
        nbformat.v4.new_code_cell("fig", outputs=[nbformat.from_dict(_plotly_output())]),
    ]
    nb.metadata["widgets"] = {"state": {}}
    record = runs.RunRecord(
        drill="bad_write",
        notebook="restore",
        key="k",
        description="bad overwrite",
        parameters={"table": "gold.fact_sales"},
    )
    out = runs.prepare_for_site(nb, record)
    assert out.cells[0].source.startswith("# Example run: `restore` on drill `bad_write`")
    assert "papermill ops_notebooks/restore.ipynb out.ipynb \\\n      -p table gold.fact_sales" in out.cells[0].source
    assert out.cells[1].source == "## Restore\n```\n# not a heading\n```\n### Verify"
    assert "text/html" in out.cells[2].outputs[0]["data"]
    assert "widgets" not in out.metadata


def test_command_line_quotes_what_the_shell_would_split():
    assert runs.command_line("optimize", {"where": "date_key > 20231231"}) == (
        "papermill ops_notebooks/optimize.ipynb out.ipynb \\\n  -p where 'date_key > 20231231'"
    )


@pytest.mark.parametrize("name", ["restore", "unknown_notebook"])
def test_run_stems(name):
    stem = runs.run_stem(name, "d")
    assert stem == (f"{name}--d" if name in book.CHAPTERS else f"other/{name}--d")


def test_failed_drill_run_is_not_called_missing():
    text = pages.procedure_page("restore", INSPECTED, [], ["bad_write"])
    assert "failed in this build" in text and "no drill" not in text


def test_execute_runs_the_drill_then_the_notebook(tmp_path, monkeypatch):
    """The run stage end to end on a stand-in drill and notebook: papermill outputs made site-ready."""
    from retail_lakehouse.sandbox import drills

    ops, out = tmp_path / "ops", tmp_path / "runs"
    ops.mkdir()
    monkeypatch.setattr(runs, "OPS_DIR", ops)
    monkeypatch.setattr(runs, "RUNS_DIR", out)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Stand-in procedure"),
        nbformat.v4.new_code_cell(
            'env = "local"  # environment\nbars = 1  # how many bars', metadata={"tags": ["parameters"]}
        ),
        nbformat.v4.new_code_cell(
            "import plotly.express as px\npx.bar(x=list(range(bars)), y=list(range(bars)))"
        ),
    ]
    nbformat.write(nb, ops / "stand_in.ipynb")
    broken = []

    def drill() -> drills.DrillResult:
        broken.append(True)
        return drills.DrillResult("fake", "stand_in", "broke it", {"env": "local", "bars": 3})

    monkeypatch.setattr(drills, "_load_all", lambda: None)
    monkeypatch.setitem(
        drills._DRILLS, "fake", drills.Drill("fake", "stand_in", "a stand-in incident", drill)
    )

    record = runs._execute("stand_in", "fake", "key-1")
    assert broken and record.parameters == {"env": "local", "bars": 3} and record.key == "key-1"
    assert record.stem == "other/stand_in--fake"
    assert runs.load_record(record.stem) == record
    executed = nbformat.read(out / f"{record.stem}.ipynb", as_version=4)
    assert executed.cells[0].source.startswith("# Example run: `stand_in` on drill `fake`")
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    chart = executed.cells[-1].outputs[0]["data"]
    assert "plotly-graph-div" in chart["text/html"] and "application/vnd.plotly.v1+json" not in chart


def test_scrub_replaces_machine_paths_longest_first():
    from retail_lakehouse.site._book_runs import scrub

    paths = [("/work/repo/.venv", "<venv>"), ("/work/repo", "<repo>")]
    out = scrub({"a": ["File /work/repo/.venv/lib/x.py", "see /work/repo/ops"], "n": 3}, paths)
    assert out == {"a": ["File <venv>/lib/x.py", "see <repo>/ops"], "n": 3}


def test_a_chart_draws_after_the_deferred_plotly_js():
    from retail_lakehouse.site._book_runs import _plotly_html

    html = _plotly_html({"data": [{"type": "bar", "x": [1], "y": [2]}], "layout": {}})
    script = html[html.index("<script"):]
    assert 'document.addEventListener("DOMContentLoaded", function () {' in script
    assert script.index("DOMContentLoaded") < script.index("Plotly.newPlot") < script.index("});</script>")


def test_home_page_commands_use_declared_parameters_and_placeholders():
    """The home page's first commands: each names a procedure, every `-p` is a parameter its
    notebook declares, and every value but the environment is a placeholder, never drill data."""
    import re

    import papermill

    from retail_lakehouse.core.config import PROJECT_ROOT

    text = (PROJECT_ROOT / "book" / "intro.md").read_text()
    section = text[text.index("## What is wrong? Start here") :]
    blocks = re.findall(r"```bash\n(papermill .*?)```", section, re.S)
    linked = set(re.findall(r"\{ref\}`(\w+) <symptom-", section))
    named = set()
    for block in blocks:
        command = block.replace("\\\n", " ")
        notebook = re.search(r"ops_notebooks/(\w+)\.ipynb", command).group(1)
        named.add(notebook)
        declared = papermill.inspect_notebook(str(PROJECT_ROOT / "ops_notebooks" / f"{notebook}.ipynb"))
        for name, value in re.findall(r"-p (\w+) (\S+)", command):
            assert name in declared, f"{notebook}: -p {name} is not a parameter"
            assert (name, value) == ("env", "prod") or re.fullmatch(r"<[A-Z_.-]+>", value), (notebook, name, value)
        assert all(line.rstrip().endswith("\\") for line in block.strip().splitlines()[:-1])  # one -p a line
    assert linked == named and len(named) == 12


def test_prepare_for_site_folds_code_under_toggles():
    import nbformat

    from retail_lakehouse.site._book_runs import RunRecord, prepare_for_site

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_markdown_cell("# T")])
    record = RunRecord(drill="d", notebook="restore", key="k", description="", summary="s", parameters={})
    out = prepare_for_site(nb, record)
    code = [c for c in out.cells if c.cell_type == "code"]
    assert code and all("hide-input" in c.metadata["tags"] for c in code)


def test_notebook_renderer_charts_draw_after_the_deferred_plotly_js():
    """The `notebook` renderer's chart HTML (what papermill keeps) waits for DOMContentLoaded too."""
    import plotly.graph_objects as go
    import plotly.io as pio

    html = pio.to_html(go.Figure(go.Bar(x=[1], y=[2])), include_plotlyjs=False, full_html=False)
    out = runs.site_outputs([{"output_type": "display_data", "data": {"text/html": html}, "metadata": {}}])
    shown = out[0]["data"]["text/html"]
    script = shown[shown.index("<script"):]
    assert script.index("DOMContentLoaded") < script.index("Plotly.newPlot") < script.index("});</script>")


def _summary():
    from retail_lakehouse.ops.summary import Summary, command

    return Summary(
        "job_failure_triage", "HELD", "Job retail_ingestion run 7 ended FAILED",
        "source unreachable: " + "the store database could not be opened by ingest_orders " * 4,
        "failed tasks ingest_orders, ingest_items;\n  unable to open database file",
        command("data_freshness", env="local", ops_run_id="<OPS_RUN_ID>"),
        "Repair 3 of run 7 reran ingest_orders: the run now ended SUCCESS - the fix held.",
    )


def test_summary_prints_wrapped_between_words_and_parses_back():
    from retail_lakehouse.ops.summary import WIDTH, Summary

    s = _summary()
    text = s.text()
    assert text.splitlines()[0] == "===== SUMMARY of job_failure_triage: HELD ====="
    assert [line.split()[0] for line in text.splitlines()[1:] if line[:1].isupper()][:3] == [
        "SYMPTOM", "DIAGNOSIS", "EVIDENCE"]
    assert all(len(line) <= WIDTH for line in text.splitlines() if not line.startswith(("EVIDENCE", "=")))
    words = set(s.diagnosis.split())
    for line in text.splitlines():  # never a word cut in two by the wrapping
        if line.startswith(("DIAGNOSIS", " ")) and "-p" not in line:
            assert set(line.replace("DIAGNOSIS", "").split()) <= words | {"\\"}, line
    assert "\n" not in s.evidence  # evidence in one line
    assert Summary.parse("noise before\n" + text + "\nnoise after") == s
    assert Summary.parse("no summary here") is None


def test_summary_evidence_is_cut_at_a_word_boundary():
    from retail_lakehouse.ops.summary import EVIDENCE_CHARS, one_line

    text = " ".join(["quarantined"] * 100)
    cut = one_line(text)
    assert len(cut) <= EVIDENCE_CHARS and cut.endswith(" ...")
    assert set(cut.removesuffix(" ...").split()) == {"quarantined"}


def test_prepare_for_site_puts_the_summary_box_first():
    s = _summary()
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("x = 1", outputs=[nbformat.v4.new_output("stream", name="stdout", text="early\n")]),
        nbformat.v4.new_code_cell(
            "jft.summary_of(outcome, env=params.env).show()",
            metadata={"tags": ["summary"]},
            outputs=[nbformat.v4.new_output("stream", name="stdout", text=s.text() + "\n")],
        ),
    ]
    record = runs.RunRecord(drill="failed_job", notebook="job_failure_triage", key="k", parameters={})
    first = runs.prepare_for_site(nb, record).cells[0].source
    assert first.startswith("# Example run:")
    box, note = first.index("````{admonition} Summary: held"), first.index("How this run was made")
    assert box < note
    assert ":class: tip summary-box" in first and "**Next step:**\n```bash\npapermill ops_notebooks/data_freshness" in first
    assert "\\<OPS\\_RUN\\_ID\\>" not in first  # commands stay verbatim in their code block
    assert "<OPS_RUN_ID>" in first


TRACE = (
    "Traceback (most recent call last):\n"
    '  File "<repo>/lib/retail_lakehouse/pipeline/ingest.py", line 10, in ingest\n'
    "    con = sqlite3.connect(path)\n"
    '  File "<venv>/lib/python3.11/site-packages/pyspark/sql/session.py", line 99, in sql\n'
    "    return self._call(x)\n"
    '  File "<venv>/lib/python3.11/site-packages/pyspark/sql/utils.py", line 12, in deco\n'
    "    raise converted\n"
    "sqlite3.OperationalError: unable to open database file\n"
)


def test_tracebacks_are_shown_once_with_installed_frames_collapsed():
    text = "--- ingest_orders\n" + TRACE + "--- ingest_items\n" + TRACE
    out = readable.dedupe_tracebacks(text)
    assert out.count("Traceback (most recent call last):") == 1
    assert "(the same traceback as above: sqlite3.OperationalError: unable to open database file)" in out
    assert "site-packages" not in out and "... 2 frame(s) in installed packages ..." in out
    assert "pipeline/ingest.py" in out and "--- ingest_items" in out
    # across outputs of one page too
    seen: set[str] = set()
    outputs = [{"output_type": "stream", "name": "stdout", "text": TRACE}] * 2
    shown = readable.readable_outputs(outputs, seen)
    assert "Traceback" in shown[0]["text"] and "Traceback" not in shown[1]["text"]
    error = {"output_type": "error", "ename": "E", "evalue": "v",
             "traceback": ["\x1b[0;31mE\x1b[0m", 'File <venv>/lib/python3.11/site-packages/x.py:3, in f', "E: v"]}
    assert readable.readable_outputs([error])[0]["traceback"] == [
        "\x1b[0;31mE\x1b[0m", "  ... 1 frame(s) in installed packages ...", "E: v"]


def test_wide_tables_keep_their_first_columns_with_a_caption():
    import pandas as pd

    wide = pd.DataFrame([{"_run_id": "r1"} | {f"c{i}": i for i in range(12)} | {"note": "word " * 80}])
    html = readable.trim_table(wide.to_html(), max_columns=8)
    assert "<caption>1 row(s); 8 of 14 columns (left out: c8, c9, c10, c11, note, _run_id;" in html
    assert "<th>c0</th>" in html and "<th>c7</th>" in html and "<th>c8</th>" not in html
    assert "_run_id</th>" not in html and html.count("<td>") == 8
    narrow = readable.trim_table(pd.DataFrame({"a": [1, 2], "text": ["x " * 150, "y"]}).to_html())
    assert "<caption>2 row(s), 2 column(s)</caption>" in narrow
    cell = re.search(r"<td>(x [^<]*)</td>", narrow).group(1)
    assert cell.endswith(" ...") and len(cell) <= readable.MAX_CELL_CHARS and "x x" in cell


def test_production_commands_name_the_ops_run_and_the_failed_job_run():
    inspected = {
        "env": INSPECTED["env"],
        "ops_run_id": {"name": "ops_run_id", "inferred_type_name": "str", "default": '"manual"', "help": "ops run"},
        "job_run_id": {"name": "job_run_id", "inferred_type_name": "str", "default": '""', "help": "failed run"},
    }
    record = runs.RunRecord(drill="failed_job", notebook="job_failure_triage", key="k",
                            parameters={"env": "local", "job_run_id": "17", "action": "retry", "dry_run": False})
    prod = pages.production_parameters(inspected, [record])
    assert prod == {"env": "prod", "ops_run_id": "<OPS_RUN_ID>", "job_run_id": "<JOB_RUN_ID>", "action": "retry"}


def test_procedure_page_names_no_folder_of_this_machine(tmp_path):
    import tempfile

    record = runs.RunRecord(drill="new_source", notebook="restore", key="k",
                            parameters={"env": "local", "table": str(tmp_path / "copy")})
    text = pages.procedure_page("restore", INSPECTED, [record])
    assert str(tmp_path) not in text and tempfile.gettempdir() not in text
    assert "-p table <tmp>/" in text
