"""Safety rails of destructive ops: dry run by default, confirmation in qa/prod."""

from __future__ import annotations

from retail_lakehouse.core.errors import ConfirmationRequired

PROTECTED_ENVS = ("qa", "prod")


def require_confirmation(env: str, *, dry_run: bool, confirm: bool, action: str) -> None:
    """Refuse a real (not dry) change in qa/prod unless confirmed.

    Raises:
        ConfirmationRequired: names the action and how to confirm it.
    """
    if not dry_run and env in PROTECTED_ENVS and not confirm:
        raise ConfirmationRequired(
            f"{action} in {env} changes data: re-run with -p confirm True (after reading the dry run), "
            "or keep -p dry_run True to only see what it would do. Nothing was changed."
        )
