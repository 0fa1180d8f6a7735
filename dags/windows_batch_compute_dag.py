"""
### Windows batch compute: a bit-error-rate study of BPSK over AWGN

Trigger it with **Trigger DAG w/ config** and fill in the form (the defaults run the full study).

1. **plan_tasks** checks the form and splits the study into `num_tasks` simulations
   (refusing bad input with a message that names the field, before anything starts on AWS).
   It prints the estimated time and cost, and picks the cluster size if `cluster_size` is auto.
2. **scale_out** starts `cluster_size` Windows instances and waits until they are ready.
3. **simulate** runs one GNU Octave Monte Carlo simulation per task, each writing
   `<task results folder>/<run id>/task-<index>.json`.
4. **aggregate** sums them into `results.csv`, `results.json` and the plot `results.png`
   under `<aggregate folder>/<run id>/`, even if some simulations failed (those are listed, and
   the run is marked failed). Its **Results plot** link and the run's note lead to the plot.
5. **scale_in** stops the instances again, whatever happened before, and logs where the time
   and money went (instance-hours, cost, boot, pull and compute time), also in the run's note.
6. **finish** gives the verdict: the run is green only if no task failed and scale_in
   brought the cluster back to zero (also when a person marked the run failed).

Backend (set by the deployment, `AIRFLOW__WINDOWS_BATCH__BACKEND`): `ecs` runs the tasks as ECS
tasks on Windows instances; `local` runs the same commands on this machine (`make run`/`make ui`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

# The Amazon provider and the task decorators are imported here, not only where they are used:
# the DAG processor pre-imports a DAG file's `airflow.*` imports once, before it forks a parser
# ([dag_processor] parsing_pre_import_modules), so each parse does not pay for them again.
import airflow.providers.amazon.aws.operators.ecs
import airflow.providers.standard.triggers.temporal
import airflow.sdk.definitions.decorators  # noqa: F401
from airflow.sdk import DAG, TriggerRule, chain, task
from airflow.sdk.exceptions import AirflowFailException

from windows_batch import capacity, cost_report, task_result, verdict
from windows_batch import settings as settings_mod
from windows_batch.params import StudyError, form, validate_study
from windows_batch.plan import plan_study

DAG_ID = "windows-batch-compute-dag"
SETTINGS = settings_mod.load()

if SETTINGS.backend == "local":
    from windows_batch import local as backend
else:
    from windows_batch import ecs as backend  # type: ignore[no-redef]


with DAG(
    dag_id=DAG_ID,
    dag_display_name="Windows batch compute: BER study",
    description="BER of BPSK over AWGN, simulated in GNU Octave on Windows ECS tasks",
    doc_md=__doc__,
    schedule=None,
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    # One study at a time: runs share the cluster and its Auto Scaling group.
    max_active_runs=1,
    tags=["windows-batch", "bersim", SETTINGS.backend],
    default_args={
        "owner": "windows-batch",
        "retries": SETTINGS.retries,
        "retry_delay": timedelta(seconds=SETTINGS.retry_delay_s),
    },
    params=form(SETTINGS),
) as dag:

    @task(retries=0)
    def plan_tasks(
        params: Any = None, dag_run: Any = None, run_id: Any = None, ti: Any = None
    ) -> list[list[str]]:
        """Check the form and plan one bersim command line per task (nothing touches AWS)."""
        try:
            study, cluster_size = validate_study(
                params,
                conf=dag_run.conf if dag_run is not None else None,
                max_cluster_size=SETTINGS.max_cluster_size,
                results_bucket_only=SETTINGS.results_bucket_only,
            )
        except StudyError as exc:
            raise AirflowFailException(f"Invalid input: {exc}") from None
        if SETTINGS.backend == "ecs":
            refusal = capacity.plan_refusal(
                task=SETTINGS.task_size,
                instance_types=SETTINGS.cost.instance_types,
                reserved_memory_mib=SETTINGS.reserved_memory_mib,
            )
            if refusal:
                raise AirflowFailException(f"The cluster cannot run this study: {refusal}")
        plan = plan_study(study, str(run_id))
        rate = SETTINGS.cost
        sizing = cost_report.plan_estimate(
            SETTINGS,
            task_s=[rate.task_start_s + b / rate.task_bits_per_s for b in plan.expected_task_bits],
            requested=cluster_size,
        )
        summary = (
            f"{len(plan.tasks)} tasks over {len(study.ebn0_db)} Eb/N0 points "
            f"({study.allocation} allocation), about {plan.expected_bits:.3g} bits, "
            f"cluster of {sizing.size}; results under {plan.output_prefix_uri}"
        )
        print(summary)
        print(sizing.line())
        ti.xcom_push(key=cost_report.CLUSTER_SIZE_KEY, value=sizing.size)
        ti.xcom_push(key=cost_report.ESTIMATE_KEY, value=sizing.line())
        ti.xcom_push(key="aggregate_command", value=plan.aggregate_command)
        return plan.simulate_commands

    planned: Any = plan_tasks()
    scale_out = backend.scale_out(SETTINGS)
    # On ECS a retry whose result already exists reports it instead of simulating again.
    simulate_task = (
        backend.simulate(SETTINGS, result_check=task_result)  # type: ignore[call-arg]
        if SETTINGS.backend == "ecs"
        else backend.simulate(SETTINGS)
    )
    simulate = simulate_task.expand(command=planned)
    aggregate = backend.aggregate(SETTINGS, command=planned["aggregate_command"])
    scale_in = backend.scale_in(SETTINGS)

    @task(retries=0)
    def finish(**context: Any) -> str:
        """The run's verdict: fail unless every task succeeded and the cluster is at zero."""
        return verdict.check_run(context)

    finish_task: Any = finish()

    chain(planned, scale_out, simulate, aggregate, scale_in, finish_task)
    # ALL_DONE runs scale_in even when scale_out failed half-way; as a teardown it also runs
    # when a person marks the run failed (Airflow leaves pending teardowns to finish).
    scale_in.as_teardown(setups=scale_out)
    scale_in.trigger_rule = TriggerRule.ALL_DONE
    # The only leaf (verdict.py): a teardown too, so marking the run failed cannot skip it, and
    # on_failure_fail_dagrun makes its failure the run's. A successful scale_in alone never
    # turns a failed run green: the verdict also counts the failed tasks.
    finish_task.as_teardown(on_failure_fail_dagrun=True)
    finish_task.operator.trigger_rule = TriggerRule.ALL_DONE
