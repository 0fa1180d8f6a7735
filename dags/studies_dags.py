"""
### Windows batch studies: one DAG per study folder

Every folder under `dags/studies/` is a study (a job template or a Python study) and becomes its
own DAG, built by the engine (`windows_batch.dag_factory.build_dag`): plan_tasks, scale_out, the
fan-out, an optional aggregate, scale_in and finish. Adding a study adds a folder; nothing in
this file or in `windows_batch/` changes.

Backend (set by the deployment, `AIRFLOW__WINDOWS_BATCH__BACKEND`): `ecs` runs the tasks as ECS
tasks on Windows instances; `local` runs the same commands on this machine (`make run`/`make ui`).
"""

from __future__ import annotations

# The Amazon provider and the task decorators are imported here, not only where they are used:
# the DAG processor pre-imports a DAG file's `airflow.*` imports once, before it forks a parser
# ([dag_processor] parsing_pre_import_modules), so each parse does not pay for them again.
import airflow.providers.amazon.aws.operators.ecs
import airflow.providers.amazon.aws.sensors.base_aws
import airflow.providers.standard.triggers.temporal
import airflow.sdk.definitions.decorators  # noqa: F401
from airflow.sdk import DAG

from windows_batch import dag_factory
from windows_batch import settings as settings_mod

SETTINGS = settings_mod.load()
DAGS: dict[str, DAG] = dag_factory.build_all(SETTINGS)
globals().update({f"dag_{i}": dag for i, dag in enumerate(DAGS.values())})
