"""Drill: POS landing files arrive faster than micro-batches of one file each can take them."""

from __future__ import annotations

import json

from retail_lakehouse.sandbox.drills import DrillResult, register

ARRIVALS = (3, 5, 7)  # files landing before each of three stream runs: the backlog grows run after run


@register("stream_lag", notebook="diagnose_streaming_lag", summary="landing files outpace max_files_per_trigger=1 -> growing backlog")
def stream_lag() -> DrillResult:
    """Land new POS files in bursts and ingest them with max_files_per_trigger=1."""
    from retail_lakehouse.core.config import load_settings
    from retail_lakehouse.jobs import runner
    from retail_lakehouse.pipeline import ingest

    landing = load_settings("local").local_path("landing")
    sample = sorted(p for p in landing.rglob("*.jsonl") if "lag-drill" not in str(p))[0]
    lines = [json.loads(x) for x in sample.read_text().splitlines() if x.strip()][:20]
    folder = landing / "lag-drill"
    folder.mkdir(parents=True, exist_ok=True)
    n = len(list(folder.glob("*.jsonl")))
    run_ids = []
    for burst in ARRIVALS:
        for _ in range(burst):
            out = [{**rec, "event_id": f"{rec['event_id'][:-6]}{n:06d}"[-36:]} for rec in lines]
            (folder / f"pos_lag_{n:04d}.jsonl").write_text("\n".join(json.dumps(r) for r in out) + "\n")
            n += 1
        run_id = runner.new_run_id()
        ingest.ingest_pos(run_id=run_id, env="local", max_files_per_trigger=1, trigger_interval_seconds=60)
        run_ids.append(run_id)
    return DrillResult(
        name="stream_lag",
        notebook="diagnose_streaming_lag",
        description=f"{sum(ARRIVALS)} POS files landed in bursts of {ARRIVALS}; the stream took one file per "
        "micro-batch, so the backlog at each start grew.",
        parameters={"env": "local", "stream": "pos_events", "last_runs": len(ARRIVALS)},
        facts={"run_ids": run_ids, "max_files_per_trigger": 1, "peak_backlog": max(ARRIVALS) - 1, "cause": "backlog_growing"},
    )
