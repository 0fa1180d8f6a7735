"""Pause and resume: delete only what bills while no study runs; a deploy brings it back.

--pause deletes the MWAA environment, the ECS stack and the network (MWAA and the NAT gateway
bill by the hour) and keeps the buckets (results, DAGs), the images, the baked AMI and the
study stacks (task definitions and roles, which bill nothing), so
`./deploy.sh` with the same options resumes without a rebuild. MWAA keeps Airflow's metadata
database inside the environment (DAG runs, task instances, XComs, connections and variables set
in the UI), so it goes with it: a resumed deployment starts with no run history. The resume
itself needs nothing special from the deploy except pointing EC2 Fast Launch at the recreated
network (`ami.refresh_fast_launch`).
"""

from __future__ import annotations

# What bills while idle, in delete order.
LAYERS_PAUSED = ("mwaa", "ecs", "network")

HISTORY_WARNING = (
    "Deleting the MWAA environment deletes Airflow's metadata database with it: the run "
    "history (every DAG run and task instance, their XComs, so the Results tab of past runs) "
    "and Airflow's logs (its CloudWatch log groups) are gone for good. The results themselves "
    "stay in the results bucket."
)


def paused_note(prefix: str) -> str:
    return (
        f"Paused: buckets, images, baked AMI and study stacks of {prefix} kept (the AMI's "
        "snapshots keep billing); ./deploy.sh with the same options resumes, with an empty "
        "Airflow run history"
    )
