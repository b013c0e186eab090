"""Onboarding a new source: `lakehouse onboard NAME` and `lakehouse onboard --check`.

`plan_source` inspects the source (a JDBC table or JSON-lines landing files), infers its schema and
renders the registry entries, notebooks, rules, quality checks, job tasks and a test as one change;
`Plan.write` writes it. `check_project` holds every source to the same wiring.
"""

from retail_lakehouse.onboarding.check import check_project
from retail_lakehouse.onboarding.infer import SourceSchema, infer
from retail_lakehouse.onboarding.inspect import SourceSample, sample_jdbc, sample_landing
from retail_lakehouse.onboarding.plan import FileChange, Plan, plan_source

__all__ = [
    "FileChange",
    "Plan",
    "SourceSample",
    "SourceSchema",
    "check_project",
    "infer",
    "plan_source",
    "sample_jdbc",
    "sample_landing",
]
