"""Generated parts of the runbook site's pages, made from the ops notebooks themselves.

`book/_generated/params/<notebook>.md` is the parameter table (papermill's inspection of the
notebook's `parameters` cell: name, type, default, help), `book/_generated/procedures/<notebook>.md`
what a chapter includes for a procedure (parameters, commands, links to the executed runs) and
`book/_generated/procedures/_index.md` the list of every procedure with its drills and runs.
Files are rewritten only when their text changes, so Sphinx's incremental build stays incremental.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from retail_lakehouse.site._book_runs import GENERATED, OPS_DIR, RunRecord, command_line, machine_paths, scrub

PARAMS_DIR = GENERATED / "params"
PROCEDURES_DIR = GENERATED / "procedures"

# Parameters that say how to run rather than what to work on: left out of the example command.
_RUN_FLAGS = {"env", "dry_run", "confirm", "ops_run_id"}
# Parameters that choose what the procedure does (a mode, never incident data): kept as the drill sets them.
_MODES = {"action"}


def write_if_changed(path: Path, text: str) -> bool:
    """Write `text` to `path` unless it already holds it; True when written."""
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def inspect(notebook: str) -> dict[str, dict[str, Any]]:
    """Papermill's view of a notebook's parameters: name -> {inferred_type_name, default, help}."""
    import papermill

    return dict(papermill.inspect_notebook(str(OPS_DIR / f"{notebook}.ipynb")))


def _cell(text: Any) -> str:
    text = "" if text is None else str(text)
    return text.replace("|", "\\|").replace("\n", " ").strip()


def params_table(parameters: Mapping[str, Mapping[str, Any]]) -> str:
    """A markdown table of a notebook's parameters."""
    if not parameters:
        return "The notebook has no `parameters` cell.\n"
    rows = ["| parameter | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, p in parameters.items():
        default = p.get("default")
        rows.append(
            f"| `{_cell(name)}` | {_cell(p.get('inferred_type_name')) or '-'} | "
            f"{'`' + _cell(default) + '`' if default not in (None, '') else '-'} | {_cell(p.get('help')) or '-'} |"
        )
    return "\n".join(rows) + "\n"


def _default_value(raw: Any) -> str:
    text = str(raw).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1]
    return text


def production_parameters(
    parameters: Mapping[str, Mapping[str, Any]], runs: Iterable[RunRecord], env: str = "prod"
) -> dict[str, str]:
    """Parameters for the production command: the ones the first drill sets (else every non-bool
    parameter with a default), each as a placeholder such as `<TABLE>`; never a drill's value."""
    values = {
        key: value if key == "env" or key in _MODES else f"<{key.upper()}>"
        for key, value in example_parameters(parameters, runs, env).items()
    }
    if "ops_run_id" in parameters:  # the audit row names the incident, not "manual"
        values = {"env": values.pop("env", env), "ops_run_id": "<OPS_RUN_ID>", **values}
    return values


def example_parameters(
    parameters: Mapping[str, Mapping[str, Any]], runs: Iterable[RunRecord], env: str = "prod"
) -> dict[str, str]:
    """Parameters for the documented command: the first drill's values (else the defaults), env `env`."""
    run = next(iter(runs), None)
    values: dict[str, str] = {}
    if "env" in parameters or run is None:
        values["env"] = env
    source: Mapping[str, Any]
    if run is not None:
        source = run.parameters
    else:
        source = {
            k: _default_value(p.get("default"))
            for k, p in parameters.items()
            if p.get("inferred_type_name") != "bool"
        }
    for key, value in source.items():
        if key in _RUN_FLAGS or str(value) in ("", "None"):
            continue
        values[key] = str(value)
    return values


def procedure_page(
    notebook: str,
    parameters: Mapping[str, Mapping[str, Any]] | None,
    runs: list[RunRecord],
    drills: Iterable[str] = (),
) -> str:
    """The include for one procedure: where it is, its parameters, how to run it, its example runs."""
    path = f"ops_notebooks/{notebook}.ipynb"
    if parameters is None:
        return f"```{{note}}\nThe notebook `{path}` is not written yet: this procedure is run by hand for now.\n```\n"
    example = example_parameters(parameters, runs)
    production = production_parameters(parameters, runs)
    local = {**example, "env": "local"}
    out = [
        f"**Notebook** `{path}`. Its parameters, read from the notebook's `parameters` cell "
        f"(`papermill --help-notebook {path}`):\n",
        params_table(parameters),
        "**Run it** against production (Databricks auth comes from the SDK's standard chain: the "
        "`retail-prod` profile of `params/prod.yaml` or `DATABRICKS_HOST`/`DATABRICKS_TOKEN`; never pass a "
        "token as a parameter), keeping the executed notebook as the incident record:\n",
        "```bash\n"
        + command_line(notebook, production, f"runs/{notebook}-$(date +%Y%m%dT%H%M).ipynb")
        + "\n```\n",
    ]
    if "dry_run" in parameters:
        out.append(
            "It changes nothing until you say so: read the dry run first, then add "
            "`-p dry_run False -p confirm True` (qa and prod refuse a real change without `confirm`).\n"
        )
    out.append("Rehearse it on the local lakehouse:\n")
    if runs:
        out.append(
            f"```bash\nlakehouse drill {runs[0].drill}\n{command_line(notebook, runs[0].parameters)}\n```\n"
        )
    else:
        out.append("```bash\n" + command_line(notebook, local) + "\n```\n")
    if runs:
        out.append("**Executed example runs** (papermill, during the site build, on the drill's incident):\n")
        for run in runs:
            out.append(f"- {{doc}}`drill {run.drill} </book/_generated/runs/{run.stem}>`: {run.summary}")
        out.append("")
    elif list(drills):
        names = ", ".join(f"`{d}`" for d in drills)
        out.append(
            f"**Executed example run**: the run on drill {names} failed in this build (see the build log).\n"
        )
    else:
        out.append("**Executed example run**: no executed example yet (no drill creates this incident).\n")
    # A drill's values may name this machine's folders (a project copy under the temporary folder).
    return scrub("\n".join(out) + "\n", machine_paths())


def index_page(notebooks: list[str], runs: Mapping[str, list[RunRecord]], chapters: Mapping[str, str]) -> str:
    """Every ops notebook, the chapter that documents it and its executed example runs."""
    rows = ["| procedure | chapter | executed example |", "| --- | --- | --- |"]
    for notebook in notebooks:
        chapter = chapters.get(notebook)
        where = f"{{doc}}`/book/{chapter}`" if chapter else "{doc}`/book/appendix`"
        links = ", ".join(
            f"{{doc}}`{r.drill} </book/_generated/runs/{r.stem}>`" for r in runs.get(notebook, [])
        )
        rows.append(f"| `{notebook}` | {where} | {links or 'no executed example yet'} |")
    return "\n".join(rows) + "\n"
