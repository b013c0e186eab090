"""Onboarding as one reviewable change: the files a new source needs, shown as diffs, written all
together or not at all.

`plan_source` reads the source, infers its schema and renders every artifact against a project
directory (default: the checkout the library is installed from); nothing is written until
`Plan.write`, which refuses to overwrite without `force` and writes every file atomically only once
all of them are rendered.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from retail_lakehouse.core.config import PROJECT_ROOT, load_settings
from retail_lakehouse.core.errors import ConfigError, ParameterError
from retail_lakehouse.core.tables import load_registry
from retail_lakehouse.onboarding import render
from retail_lakehouse.onboarding.infer import SourceSchema, infer
from retail_lakehouse.onboarding.inspect import SourceSample, sample_jdbc, sample_landing

REGISTRY_PATH = "lib/retail_lakehouse/core/schema_definitions.yaml"
BUNDLE_PATH = "databricks.yml"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class FileChange:
    """One file of the change: its path in the project, the text before (None: new file) and after."""

    path: str
    before: str | None
    after: str

    def diff(self) -> str:
        """A unified diff (``a/path`` -> ``b/path``; ``/dev/null`` for a new file)."""
        before = (self.before or "").splitlines(keepends=True)
        return "".join(difflib.unified_diff(
            before, self.after.splitlines(keepends=True),
            "/dev/null" if self.before is None else f"a/{self.path}", f"b/{self.path}",
        ))  # fmt: skip


@dataclass
class Plan:
    """What onboarding a source writes into a project."""

    name: str
    project: Path
    schema: SourceSchema
    changes: list[FileChange] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return [c.path for c in self.changes]

    def describe(self) -> str:
        new = [c.path for c in self.changes if c.before is None]
        edited = [c.path for c in self.changes if c.before is not None]
        lines = [self.schema.describe(), "", f"files ({len(new)} new, {len(edited)} edited) in {self.project}:"]
        lines += [f"  new    {p}" for p in new] + [f"  edit   {p}" for p in edited]
        return "\n".join(lines)

    def diff(self) -> str:
        return "".join(c.diff() for c in self.changes)

    def write(self, *, force: bool = False) -> list[str]:
        """Write every file (each through a temporary file and a rename; all temporaries are written
        before the first rename, so a failure while writing leaves the project unchanged).

        Raises:
            ParameterError: a new file of the plan exists already and `force` is not set.
        """
        shared = (REGISTRY_PATH, BUNDLE_PATH)  # edited, never replaced wholesale
        existing = [c.path for c in self.changes if c.path not in shared and (self.project / c.path).exists()]
        if existing and not force:
            raise ParameterError("--force", f"these files exist already: {', '.join(existing)}; nothing was written. "
                                 "Pass --force to overwrite them")
        temps: list[tuple[Path, Path]] = []
        try:
            for change in self.changes:
                target = self.project / change.path
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.onboard-tmp")
                tmp.write_text(change.after, encoding="utf-8")
                temps.append((tmp, target))
        except OSError:
            for tmp, _ in temps:
                tmp.unlink(missing_ok=True)
            raise
        for tmp, target in temps:
            os.replace(tmp, target)
        return self.paths


def _read(project: Path, path: str) -> str | None:
    p = project / path
    return p.read_text(encoding="utf-8") if p.is_file() else None


def _refuse_existing(name: str, project: Path, registry_text: str, force: bool) -> None:
    registry = load_registry(registry_text)
    known = [t.ref for t in registry if t.name == name and t.layer in ("bronze", "silver")]
    if known:
        # --force re-renders files, it does not rewrite the registry: remove the entries to start over.
        raise ParameterError(name, f"{name!r} is already onboarded ({', '.join(known)} in {REGISTRY_PATH}); "
                             "nothing was written. Edit its files, or remove its registry entries to onboard it again")
    if not force:
        own = (render.rules_path(name), render.checks_path(name), render.clean_notebook_path(name),
               render.test_path(name), f"pipeline_notebooks/ingestion/batch/ingest_{name}.ipynb",
               f"pipeline_notebooks/ingestion/streaming/ingest_{name}.ipynb")
        present = [p for p in own if (project / p).exists()]
        if present:
            raise ParameterError(name, f"files of {name!r} exist already: {', '.join(present)}; nothing was written. "
                                 "Pass --force to overwrite them")


def plan_source(
    name: str,
    *,
    jdbc_table: str | None = None,
    landing: str | None = None,
    key: str | None = None,
    watermark: str | None = None,
    types: dict[str, str] | None = None,
    project: str | Path | None = None,
    env: str = "local",
    force: bool = False,
    sample: SourceSample | None = None,
) -> Plan:
    """Read the source, infer its schema and render every file onboarding `name` writes.

    Args:
        name: the new table's short name (bronze, silver and `<name>_quarantine`).
        jdbc_table: a table of the environment's OLTP database (params `oltp_url`).
        landing: a folder of JSON-lines files.
        key / watermark: override the inferred business key / incremental column.
        types: column -> silver type, overriding the inferred ones (e.g. ``{"refund_amount": "double"}``).
        project: the project directory written to (default: this checkout).
        env: environment whose source is read.
        force: allow re-rendering files that exist (never a registered table).
        sample: a sample already read (tests, notebooks); else the source is read.

    Raises:
        ParameterError: bad name, not exactly one source, the name exists, no key / watermark.
        SourceError: the source cannot be read.
        ConfigError: an unsupported column type, or a project file that cannot be extended.
    """
    if not _NAME.match(name or ""):
        raise ParameterError("name", f"{name!r} is not a table name: lower-case letters, digits and _, e.g. returns")
    if (jdbc_table is None) == (landing is None):
        raise ParameterError("--jdbc-table", "give exactly one source: --jdbc-table TABLE or --landing PATH")
    root = Path(project) if project is not None else PROJECT_ROOT
    registry_text, bundle_text = _read(root, REGISTRY_PATH), _read(root, BUNDLE_PATH)
    if registry_text is None or bundle_text is None:
        raise ConfigError(f"{root} is not a lakehouse project: it lacks {REGISTRY_PATH} or {BUNDLE_PATH}")
    _refuse_existing(name, root, registry_text, force)
    if sample is None:
        if jdbc_table is not None:
            sample = sample_jdbc(jdbc_table, env=env)
        else:  # relative: under LAKEHOUSE_HOME, where ingestion will look (`ingest.landing_dir`)
            from retail_lakehouse.pipeline.ingest import landing_dir

            found = sample_landing(landing_dir(str(landing), load_settings(env)))
            sample = dataclasses.replace(found, location=str(landing))  # the registry keeps it as given
    schema = infer(sample, name, load_registry(registry_text), key=key, watermark=watermark, types=types)
    new_registry = render.add_registry_entries(registry_text, schema)
    load_registry(new_registry)  # the registry as written must load: fail here, before any file is touched
    files = {
        REGISTRY_PATH: new_registry,
        BUNDLE_PATH: render.add_bundle_tasks(bundle_text, schema),
        render.ingest_notebook_path(schema): render.ingest_notebook(schema),
        render.clean_notebook_path(name): render.clean_notebook(schema),
        render.rules_path(name): render.rules_yaml(schema),
        render.checks_path(name): render.checks_yaml(schema),
        render.test_path(name): render.test_module(schema),
    }
    changes = [FileChange(path, _read(root, path), text) for path, text in files.items()]
    return Plan(name, root, schema, changes)
