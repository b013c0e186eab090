"""Clusters API (list/get/events) of the local workspace: the job clusters the local runs used.

Each local job run "uses" the job clusters its tasks name (`_runs.cluster_uses`); they are shown as
terminated job clusters, with the create/running/terminate events of the run.
"""

from __future__ import annotations

from typing import Any

from databricks.sdk.service import compute as dbcompute

from retail_lakehouse.local import _runs
from retail_lakehouse.local._common import LOCAL_USER, as_int, invalid, ms, page_offset, paginate

__all__ = ["ClustersService", "cluster_details", "cluster_events"]


class ClustersService:
    """The clusters of the runs recorded under `LAKEHOUSE_HOME/runs` for `env`."""

    def __init__(self, env: str) -> None:
        self.env = env

    def _uses(self) -> list[_runs.ClusterUse]:
        return _runs.cluster_uses(_runs.load_runs(self.env))

    def list_clusters(self, q: dict[str, Any]) -> dict[str, Any]:
        limit = as_int(q.get("page_size"), "page_size", 100)
        offset = page_offset(q.get("page_token"))
        uses = self._uses()
        page, token = paginate(uses, limit=max(1, limit), offset=offset)
        return dbcompute.ListClustersResponse(
            clusters=[cluster_details(u) for u in page], next_page_token=token
        ).as_dict()

    def get_cluster(self, q: dict[str, Any]) -> dict[str, Any]:
        return cluster_details(self._use(q.get("cluster_id"))).as_dict()

    def _use(self, cluster_id: Any) -> _runs.ClusterUse:
        for u in self._uses():
            if u.cluster_id == cluster_id:
                return u
        raise invalid(f"Cluster {cluster_id} does not exist")

    def events(self, body: dict[str, Any]) -> dict[str, Any]:
        use = self._use(body.get("cluster_id"))
        events = cluster_events(use)
        if body.get("event_types"):
            events = [e for e in events if e.type is not None and e.type.value in body["event_types"]]
        if body.get("start_time"):
            events = [e for e in events if (e.timestamp or 0) >= int(body["start_time"])]
        if body.get("end_time"):
            events = [e for e in events if (e.timestamp or 0) <= int(body["end_time"])]
        if (body.get("order") or "DESC") == "DESC":
            events.reverse()
        limit = as_int(body.get("limit") or body.get("page_size"), "limit", 50)
        offset = as_int(body.get("offset"), "offset", 0)
        page = events[offset : offset + limit]
        next_page = None
        if offset + limit < len(events):
            next_page = {k: v for k, v in body.items() if k not in ("page_token",)}
            next_page.update(offset=offset + limit, limit=limit)
        return dbcompute.GetEventsResponse(
            events=page, total_count=len(events), next_page=dbcompute.GetEvents.from_dict(next_page) if next_page else None
        ).as_dict()


def cluster_details(u: _runs.ClusterUse) -> dbcompute.ClusterDetails:
    job_id = _runs.job_id_for(u.job_key)
    auto = u.autoscale
    spec = {k: v for k, v in u.spec.items() if k != "job_cluster_key"}
    details: dict[str, Any] = {
        "cluster_id": u.cluster_id,
        "cluster_name": _runs.cluster_name(u),
        "spark_version": u.spec.get("spark_version"),
        "node_type_id": u.node_type_id,
        "driver_node_type_id": u.driver_node_type_id,
        "autotermination_minutes": u.spec.get("autotermination_minutes"),
        "cluster_source": "JOB",
        "creator_user_name": LOCAL_USER,
        "state": "RUNNING" if u.running else "TERMINATED",
        "state_message": "" if u.running else "Job finished",
        "start_time": ms(u.start),
        "custom_tags": u.spec.get("custom_tags") or None,
        "default_tags": {
            "Vendor": "Databricks",
            "Creator": LOCAL_USER,
            "ClusterName": _runs.cluster_name(u),
            "ClusterId": u.cluster_id,
            "JobId": str(job_id) if job_id is not None else "",
            "RunName": u.job_name,
        },
        "spec": spec,
    }
    if auto:
        details["autoscale"] = {"min_workers": auto[0], "max_workers": auto[1]}
    else:
        details["num_workers"] = u.workers
    if not u.running:
        details["terminated_time"] = ms(u.end)
        details["termination_reason"] = {"code": "JOB_FINISHED", "type": "SUCCESS"}
    return dbcompute.ClusterDetails.from_dict(details)


def cluster_events(u: _runs.ClusterUse) -> list[dbcompute.ClusterEvent]:
    """Lifecycle events of a job cluster, oldest first, timed by the run's tasks."""
    start, end = ms(u.start) or 0, ms(u.end) or 0
    size = dbcompute.ClusterSize(
        num_workers=None if u.autoscale else u.workers,
        autoscale=dbcompute.AutoScale(min_workers=u.autoscale[0], max_workers=u.autoscale[1]) if u.autoscale else None,
    )
    events = [
        dbcompute.ClusterEvent(
            cluster_id=u.cluster_id,
            timestamp=start,
            type=dbcompute.EventType.CREATING,
            details=dbcompute.EventDetails(cluster_size=size, user=LOCAL_USER, job_run_name=_runs.cluster_name(u)),
        ),
        dbcompute.ClusterEvent(
            cluster_id=u.cluster_id,
            timestamp=start,
            type=dbcompute.EventType.RUNNING,
            details=dbcompute.EventDetails(current_num_workers=u.workers, target_num_workers=u.workers),
        ),
    ]
    if not u.running:
        reason = dbcompute.TerminationReason(
            code=dbcompute.TerminationReasonCode.JOB_FINISHED, type=dbcompute.TerminationReasonType.SUCCESS
        )
        # The events API has no TERMINATED type: TERMINATING with its reason is the last event.
        events.append(
            dbcompute.ClusterEvent(
                cluster_id=u.cluster_id,
                timestamp=end,
                type=dbcompute.EventType.TERMINATING,
                details=dbcompute.EventDetails(reason=reason),
            )
        )
    return events
