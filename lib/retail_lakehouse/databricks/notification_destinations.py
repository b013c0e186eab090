"""Job notification destinations: the bundle names them, a deploy sends their ids.

`webhook_notifications` in the Jobs API take the id (a UUID) of a notification destination an admin
created once per workspace (Settings > Notifications, or `databricks notification-destinations
create`); the destination holds the Slack/PagerDuty/webhook URL, so no secret is in the bundle.
`databricks.yml` may give either that id or the destination's display name (readable, the same in
every workspace of a target). `resolve` turns names into ids before a deploy plans anything, and a
name the workspace does not know stops the deploy with a message saying how to create it, instead
of a Jobs API error half way through an apply.
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

from retail_lakehouse.core.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from databricks.sdk import WorkspaceClient

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def is_destination_id(value: str) -> bool:
    """True when `value` has the shape of a notification destination id (a UUID)."""
    return bool(_UUID.match(value))


def _references(settings: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every `{id: ...}` entry of a job's (and its tasks') webhook_notifications."""
    holders = [settings, *(settings.get("tasks") or [])]
    for holder in holders:
        for entries in (holder.get("webhook_notifications") or {}).values():
            for entry in entries or []:
                if isinstance(entry, dict) and "id" in entry:
                    yield entry


def names_in(settings: list[dict[str, Any]]) -> list[str]:
    """The destination references of jobs' settings that are names, not ids (sorted, unique)."""
    return sorted({str(e["id"]) for s in settings for e in _references(s) if not is_destination_id(str(e["id"]))})


def destinations(w: WorkspaceClient) -> dict[str, str]:
    """Display name -> id of the workspace's notification destinations."""
    return {d.display_name: d.id for d in w.notification_destinations.list() if d.display_name and d.id}


def resolve(w: WorkspaceClient, settings: list[dict[str, Any]], *, env: str) -> list[dict[str, Any]]:
    """Jobs' settings with every destination name replaced by its id (copies; ids left as they are).

    Args:
        w: workspace client of the target.
        settings: Jobs API settings of the bundle's jobs.
        env: the target, for the message.

    Returns:
        The settings, destination names replaced by ids. No request is made when none is a name.

    Raises:
        ConfigError: a name no destination of the workspace has (all of them listed at once).
    """
    names = names_in(settings)
    if not names:
        return settings
    known = destinations(w)
    missing = [n for n in names if n not in known]
    if missing:
        have = ", ".join(sorted(known)) or "none"
        raise ConfigError(
            f"target {env!r}: notification destination(s) {', '.join(repr(n) for n in missing)} named in "
            f"databricks.yml (webhook_notifications) do not exist in the workspace (it has: {have}). "
            "Create them (workspace Settings > Notifications, or `databricks notification-destinations "
            "create`), or set the target's variables failure_destination_id / warning_destination_id to "
            "existing names or ids; nothing was deployed."
        )
    out = copy.deepcopy(settings)
    for s in out:
        for entry in _references(s):
            entry["id"] = known.get(str(entry["id"]), entry["id"])
    return out
