"""`lakehouse deploy`: upload the notebooks and the library, create or update the jobs of `databricks.yml`.

A deploy is a plan, then its application. `plan()` only reads the workspace: each source file is
UPLOAD (not in the workspace), UPDATE (its content or the workspace copy changed) or UNCHANGED, and
each job of the bundle's target is CREATE (no job of that name), UPDATE (settings differ) or
UNCHANGED. `apply()` carries the plan out; a deploy right after changes nothing.

Files go under the target's `workspace.root_path` (default `/Workspace/Shared/retail_lakehouse/<env>`)
in `files/`, mirroring the repository; the bundle's notebook paths are rewritten to those workspace
notebooks. Content is compared through a manifest, `<root>/state/deploy_manifest.json`, holding each
file's sha256 and the `modified_at` the workspace reported after the upload: exporting a notebook
does not give back the imported bytes on Databricks, and a copy edited in the workspace UI shows up
as a changed `modified_at`, so the next deploy restores it.
"""

from __future__ import annotations

import base64
import copy
import glob
import hashlib
import inspect
import json
import posixpath
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from retail_lakehouse.core.errors import ConfigError, ConfirmationRequired, LakehouseError
from retail_lakehouse.databricks import bundle as bundle_mod
from retail_lakehouse.databricks import notification_destinations
from retail_lakehouse.databricks.job_settings import settings_diff, settings_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from databricks.sdk import WorkspaceClient

    from retail_lakehouse.databricks.bundle import Bundle, JobSpec

__all__ = ["DeployPlan", "DeployResult", "FileAction", "JobAction", "apply", "deploy", "plan", "run_cli"]

Action = Literal["UPLOAD", "UPDATE", "UNCHANGED", "DELETE", "CREATE"]
Kind = Literal["notebook", "file", "job"]

DEFAULT_ROOT = "/Workspace/Shared/retail_lakehouse/{env}"
MANIFEST = "state/deploy_manifest.json"
NOTEBOOK_DIRS = ("pipeline_notebooks", "ops_notebooks")
LIBRARY_DIR = "lib/retail_lakehouse"
LIBRARY_SUFFIXES = (".py", ".yaml", ".yml")
PARAMS_DIR = "params"  # the library reads params/<env>.yaml next to lib/ (config.PROJECT_ROOT)
PROTECTED_ENVS = ("qa", "prod")
TAGS = {"deployed_by": "retail_lakehouse"}



@dataclass(frozen=True)
class FileAction:
    """One file or notebook of the deploy.

    Attributes:
        action: UPLOAD, UPDATE, UNCHANGED or DELETE (a file deployed before, gone from the sources).
        kind: ``notebook`` (imported as JUPYTER) or ``file`` (imported as AUTO, a workspace file).
        workspace_path: where it goes (a notebook without `.ipynb`, as Databricks names it).
        local_path: the source (None for DELETE).
        sha256: hash of the source bytes.
        reason: why it is not UNCHANGED.
    """

    action: Action
    kind: Kind
    workspace_path: str
    local_path: Path | None = None
    sha256: str = ""
    reason: str = ""


@dataclass(frozen=True)
class JobAction:
    """One job of the deploy.

    Attributes:
        action: CREATE, UPDATE (`jobs/reset`) or UNCHANGED.
        key: the job's key under `resources.jobs`.
        name: the job's name.
        job_id: the existing job (None for CREATE).
        settings: the Jobs API settings to send (`JobSettings.as_dict()`); the id of a job to be
            created is 0 until `apply` creates it.
        reason: the settings that differ, for UPDATE.
    """

    action: Action
    key: str
    name: str
    job_id: int | None
    settings: dict[str, Any]
    reason: str = ""


@dataclass(frozen=True)
class DeployPlan:
    """What a deploy would do; built by `plan()`, carried out by `apply()`.

    Attributes:
        env: the environment (= the bundle target).
        root_path: the workspace folder of the deploy.
        files: file actions, sorted by workspace path.
        jobs: job actions, referenced jobs before the jobs that run them.
        bundle: the bundle the plan was made from.
        manifest: the manifest found in the workspace (empty if none).
    """

    env: str
    root_path: str
    files: tuple[FileAction, ...]
    jobs: tuple[JobAction, ...]
    bundle: Bundle = field(repr=False)
    manifest: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def changes(self) -> list[FileAction | JobAction]:
        """Every action that is not UNCHANGED."""
        return [a for a in (*self.files, *self.jobs) if a.action != "UNCHANGED"]

    @property
    def is_noop(self) -> bool:
        return not self.changes

    def rows(self) -> list[tuple[str, str, str]]:
        """(action, kind, path or job name) for every action."""
        out = [(f.action, f.kind, f.workspace_path) for f in self.files]
        return out + [(j.action, "job", j.name) for j in self.jobs]

    def table(self, *, unchanged: bool = False) -> str:
        """The plan as text: one line per change (and per unchanged item if asked), then counts."""
        lines = [f"deploy plan for target {self.env!r} -> {self.root_path}"]
        for action, kind, name in self.rows():
            if unchanged or action != "UNCHANGED":
                lines.append(f"  {action:<10} {kind:<9} {name}")
        counts: dict[str, int] = {}
        for action, _, _ in self.rows():
            counts[action] = counts.get(action, 0) + 1
        lines.append(
            "  " + ", ".join(f"{n} {a.lower()}" for a, n in sorted(counts.items())) if counts else "  nothing"
        )
        return "\n".join(lines)


@dataclass(frozen=True)
class DeployResult:
    """What a deploy did.

    Attributes:
        plan: the plan.
        applied: False for a dry run.
        job_ids: job key -> job id after the deploy (ids of jobs still to create are absent in a dry run).
        changed: workspace paths and job names written, in order.
    """

    plan: DeployPlan
    applied: bool
    job_ids: dict[str, int]
    changed: tuple[str, ...] = ()


# ----------------------------------------------------------------------------- plan


def plan(w: WorkspaceClient, env: str, *, bundle_path: str | Path | None = None) -> DeployPlan:
    """Compute the deploy of a target without changing anything.

    Args:
        w: workspace client.
        env: environment, also the bundle target (`local`, `dev`, `qa`, `prod`).
        bundle_path: the bundle's main YAML (default `databricks.yml` of the project).

    Returns:
        The plan; `plan.table()` shows it.

    Raises:
        ConfigError: invalid bundle, or a task notebook outside the bundle folder.
    """
    b = bundle_mod.load_bundle(bundle_path, env)
    raw_jobs, root_tmpl = _raw(b)
    root = _root_path(w, root_tmpl, b, env)
    manifest = _read_manifest(w, root)
    files = _plan_files(w, b, root, manifest)
    jobs = _plan_jobs(w, b, env, root, raw_jobs)
    return DeployPlan(env=env, root_path=root, files=files, jobs=jobs, bundle=b, manifest=manifest)


def _raw(b: Bundle) -> tuple[dict[str, Any], str | None]:
    """The target's job mappings as written (variables substituted) and its `workspace.root_path`.

    The bundle's JobSpec keeps what the local runner needs; a deploy also sends the rest
    (max_concurrent_runs, timeouts, notifications...), so the YAML is read again here.
    """
    raw = bundle_mod._read(b.path)
    for pattern in raw.get("include") or []:
        for inc in sorted(glob.glob(str(b.path.parent / pattern))):
            extra = bundle_mod._read(Path(inc))
            for section in ("resources", "targets", "variables", "workspace"):
                if section in extra:
                    raw[section] = bundle_mod._merge(raw.get(section) or {}, extra[section])
    tdef = (raw.get("targets") or {}).get(b.target) or {} if b.target else {}
    resources = raw.get("resources") or {}
    if tdef.get("resources"):
        resources = bundle_mod._merge(resources, tdef["resources"])
    workspace = bundle_mod._merge(raw.get("workspace") or {}, tdef.get("workspace") or {})
    context = {"bundle.target": b.target or "", "bundle.name": b.name}
    problems: list[str] = []
    jobs = bundle_mod._substitute((resources or {}).get("jobs") or {}, b.variables, context, problems, "jobs")
    root = workspace.get("root_path")
    if root is not None:
        root = bundle_mod._substitute(str(root), b.variables, context, problems, "workspace.root_path")
    return jobs, root


def _root_path(w: WorkspaceClient, template: str | None, b: Bundle, env: str) -> str:
    root = template or DEFAULT_ROOT.format(env=env)
    if "${workspace.current_user.userName}" in root:
        root = root.replace("${workspace.current_user.userName}", str(w.current_user.me().user_name))
    if "${" in root or not root.startswith("/"):
        raise ConfigError(
            f"{b.path}: workspace.root_path {root!r} of target {env!r} must be an absolute workspace path "
            "(only ${bundle.name}, ${bundle.target}, ${var.x} and ${workspace.current_user.userName} are substituted)"
        )
    return posixpath.normpath(root)


def _norm(path: str) -> str:
    """A workspace path without the `/Workspace` prefix (the API answers either form)."""
    return path[len("/Workspace") :] if path.startswith("/Workspace/") else path


def _sources(b: Bundle, root: str) -> list[tuple[Kind, Path, str]]:
    """(kind, local file, workspace path) of everything the deploy uploads."""
    base = b.root
    files_root = f"{root}/files"
    found: dict[Path, Kind] = {}
    for folder in NOTEBOOK_DIRS:
        for p in sorted((base / folder).rglob("*.ipynb")):
            if ".ipynb_checkpoints" not in p.parts:
                found[p] = "notebook"
    for job in b.jobs.values():
        for t in job.tasks:
            if t.notebook_path is not None:
                found.setdefault(Path(t.notebook_path), "notebook")
    for folder, suffixes in ((LIBRARY_DIR, LIBRARY_SUFFIXES), (PARAMS_DIR, (".yaml", ".yml"))):
        for p in sorted((base / folder).rglob("*")):
            if p.is_file() and p.suffix in suffixes and "__pycache__" not in p.parts:
                found[p] = "file"
    out = []
    for p, kind in found.items():
        rel = _relative(p, base)
        if kind == "notebook":
            rel = rel[: -len(".ipynb")]
        out.append((kind, p, f"{files_root}/{rel}"))
    return sorted(out, key=lambda item: item[2])


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(path).relative_to(base).as_posix()
    except ValueError:
        try:
            return Path(path).resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            raise ConfigError(
                f"{path} is outside the bundle folder {base}; a deploy uploads only files under it"
            ) from None


def _read_manifest(w: WorkspaceClient, root: str) -> dict[str, Any]:
    from databricks.sdk.errors import NotFound
    from databricks.sdk.service.workspace import ExportFormat

    try:
        exported = w.workspace.export(f"{root}/{MANIFEST}", format=ExportFormat.AUTO)
    except NotFound:
        return {}
    try:
        manifest = json.loads(base64.b64decode(exported.content or ""))
    except ValueError:
        return {}  # unreadable: every file is uploaded again and the manifest rewritten
    return manifest if isinstance(manifest, dict) else {}


def _listing(w: WorkspaceClient, folder: str) -> dict[str, Any]:
    """Workspace path (without /Workspace) -> ObjectInfo of every object under a folder."""
    from databricks.sdk.errors import NotFound

    try:
        return {_norm(str(o.path)): o for o in w.workspace.list(folder, recursive=True) if o.path}
    except NotFound:
        return {}


def _plan_files(w: WorkspaceClient, b: Bundle, root: str, manifest: dict[str, Any]) -> tuple[FileAction, ...]:
    recorded: dict[str, Any] = manifest.get("files") or {}
    existing = _listing(w, f"{root}/files")
    actions: list[FileAction] = []
    planned: set[str] = set()
    for kind, local, wpath in _sources(b, root):
        digest = hashlib.sha256(local.read_bytes()).hexdigest()
        key = _norm(wpath)
        planned.add(key)
        info = existing.get(key)
        entry = recorded.get(key) or {}
        if info is None:
            action, reason = "UPLOAD", "new"
        elif entry.get("sha256") != digest:
            action, reason = "UPDATE", "content changed" if entry else "not deployed by `lakehouse deploy`"
        elif (
            entry.get("modified_at") is not None
            and info.modified_at is not None
            and entry["modified_at"] != info.modified_at
        ):
            action, reason = "UPDATE", "changed in the workspace since the last deploy"
        else:
            action, reason = "UNCHANGED", ""
        actions.append(FileAction(action, kind, wpath, local, digest, reason))  # type: ignore[arg-type]
    for key, entry in sorted(recorded.items()):
        if key not in planned and key in existing:
            kind = entry.get("kind", "file")
            wpath = f"/Workspace{key}" if root.startswith("/Workspace/") else key
            actions.append(FileAction("DELETE", kind, wpath, None, "", "no longer in the sources"))
    return tuple(sorted(actions, key=lambda a: a.workspace_path))


def _order(b: Bundle) -> list[JobSpec]:
    """Jobs so that a job comes after the jobs its run_job tasks run (declaration order otherwise)."""
    done: set[str] = set()
    out: list[JobSpec] = []

    def visit(job: JobSpec) -> None:
        if job.key in done:
            return
        done.add(job.key)
        for t in job.tasks:
            if t.run_job and t.run_job in b.jobs:
                visit(b.jobs[t.run_job])
        out.append(job)

    for job in b.jobs.values():
        visit(job)
    return out


def _existing_jobs(w: WorkspaceClient, env: str) -> dict[str, int]:
    """Job name -> id; among jobs of the same name, the one this deploy tagged for `env` wins."""
    by_name: dict[str, list[tuple[int, dict[str, str]]]] = {}
    for j in w.jobs.list():
        if j.job_id is None or j.settings is None or not j.settings.name:
            continue
        by_name.setdefault(j.settings.name, []).append((int(j.job_id), dict(j.settings.tags or {})))
    out = {}
    for name, jobs in by_name.items():
        ours = [
            jid
            for jid, tags in jobs
            if tags.get("deployed_by") == TAGS["deployed_by"] and tags.get("target") == env
        ]
        out[name] = min(ours) if ours else min(jid for jid, _ in jobs)
    return out


def _plan_jobs(
    w: WorkspaceClient, b: Bundle, env: str, root: str, raw_jobs: dict[str, Any]
) -> tuple[JobAction, ...]:
    existing = _existing_jobs(w, env)
    ids = {job.key: existing.get(job.name) for job in b.jobs.values()}
    ordered = _order(b)
    # Destination names -> ids before anything is compared: an unknown name stops the plan.
    all_settings = notification_destinations.resolve(
        w,
        [job_settings(job, env, root, b.root, lambda key: ids.get(key) or 0, raw_jobs.get(job.key)) for job in ordered],
        env=env,
    )
    actions = []
    for job, settings in zip(ordered, all_settings, strict=True):
        jid = ids[job.key]
        if jid is None:
            actions.append(JobAction("CREATE", job.key, job.name, None, settings, "new"))
            continue
        current = w.jobs.get(jid).settings
        diffs = settings_diff(settings, current.as_dict() if current else {}, "")
        action: Action = "UPDATE" if diffs else "UNCHANGED"
        reason = ", ".join(diffs[:3]) + (f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else "")
        actions.append(JobAction(action, job.key, job.name, jid, settings, reason))
    return tuple(actions)


def job_settings(
    job: JobSpec,
    env: str,
    root: str,
    bundle_root: Path,
    job_id_of: Callable[[str], int],
    raw: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A bundle job as Jobs API settings for a deploy to `root` (see `job_settings.settings_of`).

    Notebook paths point at `<root>/files/...`; the job is tagged with `deployed_by` and the target.
    """

    def notebook_path(path: Path) -> str:
        rel = _relative(path, bundle_root)
        return f"{root}/files/{rel[: -len('.ipynb')] if rel.endswith('.ipynb') else rel}"

    return settings_of(job, job_id_of, notebook_path=notebook_path, raw=raw, tags={**TAGS, "target": env})


# ----------------------------------------------------------------------------- apply


def apply(w: WorkspaceClient, p: DeployPlan, *, echo: Callable[[str], None] | None = None) -> DeployResult:
    """Carry out a plan: folders, imports (overwrite), deletions, the manifest, jobs create / reset.

    Args:
        w: workspace client (the one the plan was made with).
        p: the plan.
        echo: called with progress lines: one for the files, one per job changed (default: nothing).

    Returns:
        The result, with the id of every job of the bundle.
    """
    from databricks.sdk.service.jobs import JobSettings
    from databricks.sdk.service.workspace import ImportFormat, Language

    say = echo or (lambda _line: None)
    changed: list[str] = []
    writes = [f for f in p.files if f.action in ("UPLOAD", "UPDATE")]
    for folder in sorted({posixpath.dirname(f.workspace_path) for f in writes}):
        w.workspace.mkdirs(folder)
    for f in writes:
        assert f.local_path is not None
        content = base64.b64encode(f.local_path.read_bytes()).decode()
        if f.kind == "notebook":
            w.workspace.import_(
                f.workspace_path,
                content=content,
                format=ImportFormat.JUPYTER,
                language=Language.PYTHON,
                overwrite=True,
            )
        else:
            w.workspace.import_(f.workspace_path, content=content, format=ImportFormat.AUTO, overwrite=True)
        changed.append(f.workspace_path)
    deletes = [f for f in p.files if f.action == "DELETE"]
    for f in deletes:
        w.workspace.delete(f.workspace_path)
        changed.append(f.workspace_path)
    if writes or deletes:
        say(f"  wrote {len(writes)} file(s), deleted {len(deletes)} under {p.root_path}/files")
    if changed or not p.manifest:
        _write_manifest(w, p)

    ids = {j.key: j.job_id for j in p.jobs if j.job_id is not None}
    create_params = set(inspect.signature(w.jobs.create).parameters)
    for j in p.jobs:  # referenced jobs come first (see _order)
        if j.action == "UNCHANGED":
            continue
        typed = JobSettings.from_dict(_with_job_ids(j.settings, p.bundle.jobs[j.key], ids))
        if j.action == "CREATE":
            kwargs = {k: v for k, v in vars(typed).items() if v is not None and k in create_params}
            ids[j.key] = int(w.jobs.create(**kwargs).job_id)  # type: ignore[arg-type]
            say(f"  created job {j.name} ({ids[j.key]})")
        else:
            assert j.job_id is not None
            w.jobs.reset(j.job_id, typed)
            say(f"  updated job {j.name} ({j.job_id})")
        changed.append(j.name)
    return DeployResult(
        plan=p,
        applied=True,
        job_ids={k: int(v) for k, v in ids.items() if v is not None},
        changed=tuple(changed),
    )


def _with_job_ids(settings: dict[str, Any], job: JobSpec, ids: dict[str, int | None]) -> dict[str, Any]:
    """The planned settings with the ids of jobs created since the plan in their run_job tasks."""
    out = copy.deepcopy(settings)
    for task in out.get("tasks") or []:
        run_job = job.task(task["task_key"]).run_job
        if run_job and "run_job_task" in task:
            task["run_job_task"]["job_id"] = ids[run_job]
    return out


def _write_manifest(w: WorkspaceClient, p: DeployPlan) -> None:
    from databricks.sdk.service.workspace import ImportFormat

    after = _listing(w, f"{p.root_path}/files")
    files = {}
    for f in p.files:
        if f.action == "DELETE":
            continue
        key = _norm(f.workspace_path)
        info = after.get(key)
        files[key] = {"sha256": f.sha256, "kind": f.kind, "modified_at": info.modified_at if info else None}
    manifest = {"version": 1, "bundle": p.bundle.name, "target": p.env, "files": files}
    path = f"{p.root_path}/{MANIFEST}"
    w.workspace.mkdirs(posixpath.dirname(path))
    body = base64.b64encode(json.dumps(manifest, indent=1, sort_keys=True).encode()).decode()
    w.workspace.import_(path, content=body, format=ImportFormat.AUTO, overwrite=True)


# ----------------------------------------------------------------------------- entry points


def deploy(
    env: str,
    *,
    dry_run: bool = False,
    confirm: bool = False,
    bundle_path: str | Path | None = None,
    echo: Callable[[str], None] = print,
) -> DeployResult:
    """Deploy the bundle's target `env` to its workspace: plan, print the plan, apply it.

    Args:
        env: environment and bundle target.
        dry_run: print the plan only.
        confirm: required to change qa or prod (`--yes`).
        bundle_path: the bundle's main YAML (default `databricks.yml`).
        echo: where the plan and progress lines go.

    Returns:
        The result (`applied` False for a dry run).

    Raises:
        ConfirmationRequired: qa/prod without `confirm`, unless `dry_run`.
        ConfigError: invalid bundle or environment.
        CredentialsError: no usable Databricks credentials for `env` (a dry run too: the plan reads
            the workspace's manifest, files and jobs).
    """
    from retail_lakehouse.databricks.workspace import connect

    if env in PROTECTED_ENVS and not dry_run and not confirm:
        raise ConfirmationRequired(
            f"deploying to {env} changes its jobs: review `lakehouse deploy --env {env} --dry-run`, "
            f"then run `lakehouse deploy --env {env} --yes` (confirm=True)"
        )
    w = connect(env)
    p = plan(w, env, bundle_path=bundle_path)
    host = getattr(w.config, "host", None)  # the host only: credentials are never printed
    echo(p.table() + (f"\n  workspace {host}" if host else ""))
    if dry_run:
        existing = {j.key: j.job_id for j in p.jobs if j.job_id is not None}
        echo("dry run: nothing changed")
        return DeployResult(
            plan=p, applied=False, job_ids={k: int(v) for k, v in existing.items() if v is not None}
        )
    if p.is_noop:
        echo("up to date: nothing to change")
    result = apply(w, p, echo=echo)
    if result.changed:
        echo(f"deployed {len(result.changed)} change(s) to {env}")
    return result


def run_cli(env: str, dry_run: bool = False, yes: bool = False, *, bundle_path: str | None = None) -> int:
    """`lakehouse deploy --env ENV [--dry-run] [--yes]`.

    Returns:
        0 deployed (or planned); 1 the workspace refused a change (message on stderr);
        2 refused or misconfigured (qa/prod without --yes, invalid bundle or environment, no
        Databricks credentials): one `error:` line on stderr.
    """
    from databricks.sdk.errors import DatabricksError

    try:
        deploy(env, dry_run=dry_run, confirm=yes, bundle_path=bundle_path)
    except LakehouseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DatabricksError as exc:
        print(f"error: the workspace refused the deploy: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
