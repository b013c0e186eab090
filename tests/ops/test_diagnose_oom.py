"""diagnose_oom: classification and sizing on small inputs; the oom drill diagnosed by the notebook."""

from __future__ import annotations

import pytest

from retail_lakehouse.ops import cluster_sizing, diagnose_oom
from tests.ops._helpers import audit_rows, run_notebook


@pytest.mark.parametrize(
    ("error", "skew", "kind"),
    [
        ("MemoryError\n----> 9 rows = df.collect()", None, "collect_to_driver"),
        ("Total size of serialized results of 12 tasks is bigger than spark.driver.maxResultSize", None,
         "collect_to_driver"),
        ("MemoryError: cannot allocate", None, "driver"),
        ("ExecutorLostFailure: Container killed by YARN for exceeding memory limits", None, "executor"),
        ("ExecutorLostFailure: Container killed by YARN for exceeding memory limits", 12.0, "skew"),
    ],
)
def test_classify_oom(error, skew, kind):
    assert diagnose_oom.classify_oom(error, skew_ratio=skew)[0] == kind


def test_sizing_table():
    assert cluster_sizing.size_for(10e9).name == "small"
    assert cluster_sizing.size_for(100e9).name == "medium"
    assert cluster_sizing.size_for(2e12).name == "large"
    assert cluster_sizing.size_named("large").node_type == "r5.4xlarge"
    assert cluster_sizing.driver_upgrade("i3.xlarge") == "r5.2xlarge"
    assert cluster_sizing.shuffle_partitions(128e6 * 100, cores=8) == 104


def test_remedies_are_sized():
    settings = {"driver_node_type_id": "i3.xlarge", "driver_memory_gb": 30.5, "node_type_id": "i3.xlarge",
                "workers": 2}
    r = diagnose_oom.remedies("collect_to_driver", settings, int(80e9))
    text = " ".join(r["remedy"])
    assert "r5.2xlarge" in text and "medium" in text
    assert list(r["rank"]) == list(range(1, len(r) + 1))


def test_cluster_settings_from_run():
    run = {"job_clusters": [{"job_cluster_key": "k", "new_cluster": {
        "node_type_id": "i3.xlarge", "num_workers": 2, "spark_conf": {"spark.driver.memory": "2g"}}}]}
    s = diagnose_oom.cluster_settings(run, {"job_cluster_key": "k"})
    assert s["workers"] == 2 and s["spark.driver.memory"] == "2g" and s["worker_memory_gb"] == 30.5


def test_oom_drill_diagnosed(demo_lakehouse, tmp_path):
    from retail_lakehouse.sandbox import drills

    result = drills.run("oom")
    assert result.facts["result_state"] == "FAILED"
    with pytest.raises(Exception, match="job_run_id"):
        run_notebook("diagnose_oom", tmp_path, env="local", job_run_id="1; DROP TABLE x")
    text = run_notebook("diagnose_oom", tmp_path, **result.parameters)
    assert "DIAGNOSIS (collect_to_driver)" in text
    assert "collect_order_items" in text and "r5.2xlarge" in text
    # By job name only, as an engineer paged about the job would run it.
    text = run_notebook("diagnose_oom", tmp_path, env="local", job=result.parameters["job"])
    assert "DIAGNOSIS (collect_to_driver)" in text
    assert "DRY_RUN" in set(audit_rows("diagnose_oom")["outcome"])
