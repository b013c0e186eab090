"""The summary every ops notebook prints as its last cell: the verdict in five lines.

Each procedure's module builds its `Summary` from its result object (`<module>.summary_of(...)`); the
notebook's last cell (tagged `summary`) only calls `.show()`, so a papermill run read in a terminal and
the executed example on the site open the same way: symptom, diagnosis, evidence in one line, the next
step as the exact command, and the outcome. The printed text round-trips through `Summary.parse`, which
the site uses to draw the box at the top of the page.
"""

from __future__ import annotations

import re
import shlex
import textwrap
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Summary", "Status", "command", "as_parameters", "of_change", "one_line"]

Status = Literal["HELD", "DID NOT HOLD", "DRY RUN", "DIAGNOSED", "NOTHING TO DO"]
STATUSES: tuple[str, ...] = ("HELD", "DID NOT HOLD", "DRY RUN", "DIAGNOSED", "NOTHING TO DO")
LABELS: tuple[str, ...] = ("SYMPTOM", "DIAGNOSIS", "EVIDENCE", "NEXT STEP", "OUTCOME")
WIDTH = 110  # printed line width; longer text wraps between words, never inside one
EVIDENCE_CHARS = 400  # the evidence is one line: cut at a word boundary past this
_INDENT = " " * 11
_HEADER = re.compile(r"^=+ SUMMARY of (?P<procedure>[a-z0-9_]+): (?P<status>[A-Z ]+?) =+$")
_LABEL = re.compile(r"^(?P<label>SYMPTOM|DIAGNOSIS|EVIDENCE|NEXT STEP|OUTCOME) +(?P<text>.*)$")


def one_line(text: Any, limit: int = EVIDENCE_CHARS) -> str:
    """`text` on one line (whitespace collapsed), cut at a word boundary past `limit` characters."""
    flat = " ".join(str(text or "").split())
    if len(flat) <= limit:
        return flat
    return textwrap.shorten(flat, width=limit, placeholder=" ...")


def _shell(value: Any) -> str:
    text = str(value)
    if re.fullmatch(r"<[A-Z0-9_.-]+>", text):
        return text
    return shlex.quote(text)


def command(notebook: str, output: str = "out.ipynb", **parameters: Any) -> str:
    """The papermill command that runs ops notebook `notebook`, one parameter a line.

    Empty values are left out (the notebook's default applies); placeholders such as `<JOB_RUN_ID>`
    stay unquoted. Example: ``command("restore", env="prod", table="gold.fact_sales")``.
    """
    lines = [f"papermill ops_notebooks/{notebook}.ipynb {shlex.quote(output)}"]
    lines += [f"  -p {name} {_shell(value)}" for name, value in parameters.items() if str(value) != ""]
    return " \\\n".join(lines)


@dataclass(frozen=True)
class Summary:
    """The verdict of one ops run, printed first thing a reader needs.

    Attributes:
        procedure: the ops notebook's name.
        status: HELD / DID NOT HOLD (a change was made and checked), DRY RUN (nothing changed),
            DIAGNOSED (a read-only diagnosis), NOTHING TO DO.
        symptom: what was seen (the question the run answered).
        diagnosis: the cause, in a sentence or two.
        evidence: the numbers that show it, on one line.
        next_step: the exact command to run next (or a plain instruction when no command applies).
        outcome: what this run did and how it ended.
    """

    procedure: str
    status: Status
    symptom: str
    diagnosis: str
    evidence: str
    next_step: str
    outcome: str

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r}: use one of {', '.join(STATUSES)}")
        object.__setattr__(self, "evidence", one_line(self.evidence))
        for name in ("symptom", "diagnosis", "outcome"):  # prose: whitespace collapsed, wrapped when printed
            object.__setattr__(self, name, " ".join(str(getattr(self, name) or "").split()))
        object.__setattr__(self, "next_step", str(self.next_step).strip())

    @property
    def fields(self) -> dict[str, str]:
        return {
            "SYMPTOM": self.symptom,
            "DIAGNOSIS": self.diagnosis,
            "EVIDENCE": self.evidence,
            "NEXT STEP": self.next_step,
            "OUTCOME": self.outcome,
        }

    def text(self) -> str:
        """The summary as printed: a header, one labelled block per field, wrapped between words."""
        header = f"===== SUMMARY of {self.procedure}: {self.status} ====="
        out = [header]
        for label, value in self.fields.items():
            if label == "NEXT STEP":
                lines = str(value).strip().splitlines() or ["-"]
            elif label == "EVIDENCE":
                lines = [value or "-"]
            else:
                lines = textwrap.wrap(
                    " ".join(str(value).split()) or "-",
                    width=WIDTH - len(_INDENT),
                    break_long_words=False,
                    break_on_hyphens=False,
                )
            out.append(f"{label:<10} {lines[0]}")
            out += [f"{_INDENT}{line}" for line in lines[1:]]
        out.append("=" * len(header))
        return "\n".join(out)

    def show(self) -> Summary:
        """Print the summary (the notebook's last cell); returns it for chaining."""
        print(self.text())
        return self

    @classmethod
    def parse(cls, text: str) -> Summary | None:
        """The summary printed in `text` (e.g. a cell's output), or None when there is none."""
        lines = text.splitlines()
        start = next((i for i, line in enumerate(lines) if _HEADER.match(line.strip())), None)
        if start is None:
            return None
        head = _HEADER.match(lines[start].strip())
        assert head is not None
        parts: dict[str, list[str]] = {}
        current = None
        for line in lines[start + 1 :]:
            if re.fullmatch(r"=+", line.strip()):
                break
            m = _LABEL.match(line)
            if m:
                current = m.group("label")
                parts[current] = [m.group("text")]
            elif current is not None:
                parts[current].append(line[len(_INDENT) :] if line.startswith(_INDENT) else line.strip())
        if set(parts) != set(LABELS) or head.group("status") not in STATUSES:
            return None

        def joined(label: str) -> str:
            return " ".join(x.strip() for x in parts[label])

        return cls(
            procedure=head.group("procedure"),
            status=head.group("status"),  # type: ignore[arg-type]
            symptom=joined("SYMPTOM"),
            diagnosis=joined("DIAGNOSIS"),
            evidence=joined("EVIDENCE"),
            next_step="\n".join(parts["NEXT STEP"]),
            outcome=joined("OUTCOME"),
        )

    def markdown(self) -> str:
        """The summary as a MyST admonition (the box at the top of an executed example page)."""
        kind = {"HELD": "tip", "DID NOT HOLD": "danger", "DRY RUN": "note", "DIAGNOSED": "important"}.get(
            self.status, "note"
        )
        step = self.next_step.strip()
        if step.startswith(("papermill ", "lakehouse ", "databricks ", "airflow ")) or "\n" in step:
            step_md = f"\n```bash\n{step}\n```\n"
        else:
            step_md = f" {_escape(step)}\n"
        return (
            f"````{{admonition}} Summary: {self.status.lower()}\n:class: {kind} summary-box\n"
            f"**Symptom:** {_escape(self.symptom)}\n\n"
            f"**Diagnosis:** {_escape(self.diagnosis)}\n\n"
            f"**Evidence:** {_escape(self.evidence)}\n\n"
            f"**Next step:**{step_md}\n"
            f"**Outcome:** {_escape(self.outcome)}\n"
            f"````\n"
        )


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|~$])")


def _escape(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text)


def of_change(
    procedure: str,
    *,
    env: str,
    dry_run: bool,
    held: bool,
    symptom: str,
    diagnosis: str,
    evidence: str,
    message: str,
    parameters: dict[str, Any],
    after: str,
) -> Summary:
    """The summary of a procedure that changes tables (restore, backfill, optimize, ...).

    A dry run's next step is the same command for real (`dry_run False`, `confirm True` in qa and prod);
    a change that held gives `after` (what to check next); one that did not, its own command to read again.
    """
    if dry_run:
        real = {**parameters, "dry_run": False, **({"confirm": True} if env in ("qa", "prod") else {})}
        return Summary(procedure, "DRY RUN", symptom, diagnosis, evidence,
                       "# nothing changed yet; run it for real:\n" + command(procedure, env=env, **real),
                       f"Dry run: {message}")
    if held:
        return Summary(procedure, "HELD", symptom, diagnosis, evidence, after, message)
    return Summary(procedure, "DID NOT HOLD", symptom, diagnosis, evidence,
                   command(procedure, env=env, **parameters), message)


def as_parameters(values: Any) -> dict[str, Any]:
    """A notebook's parameter values (`ParameterValues.audit`, or a mapping) as command-line values:
    env, dry_run and confirm left out (`of_change` sets them), lists comma-joined, dates ISO."""
    out: dict[str, Any] = {}
    values = getattr(values, "audit", values)  # ParameterValues: tables as layer.name
    for name, value in dict(values).items():
        if name in ("env", "dry_run", "confirm") or value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        elif hasattr(value, "isoformat"):
            value = value.isoformat()
        elif name == "ops_run_id" and value in ("", "manual"):
            value = "<OPS_RUN_ID>"  # the next run names the incident in its audit row
        out[name] = value
    return out
