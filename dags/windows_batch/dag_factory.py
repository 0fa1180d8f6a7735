"""One engine function turns a study into its Airflow DAG: `build_dag(study, settings)`.

    plan_tasks -> scale_out -> <fan-out, one task per chunk> [-> <aggregate>] -> scale_in -> finish

1. **plan_tasks** checks the form (every refusal names its field) and plans the work: chunks
   of work items, written to the run's manifest; it prints the estimate and picks the cluster
   size when `cluster_size` is auto. Nothing has started on AWS before it passed.
2. **scale_out** starts the cluster and waits until the instances are registered.
3. The **fan-out** runs the study's container once per chunk (capacity waits, one deadline per
   try, retries that never run a finished chunk or item again, a failure budget).
4. The optional **aggregate** step combines what exists under the run's own prefix.
5. **scale_in** brings the cluster back to zero (unless another study's run still uses it) and
   reports time and cost; **finish** gives the run's verdict, naming failed tasks.

`build_all` finds every study under STUDIES_DIR (catalog.py) and builds its DAG; a study that
cannot be loaded still gets a DAG of its id, whose description and only task say why it is
refused (so one user's broken template never takes the other studies' DAGs down with it).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, TriggerRule, chain, task
from airflow.sdk.exceptions import AirflowFailException

from windows_batch import capacity, catalog, publish, verdict
from windows_batch.cost_report import CLUSTER_SIZE_TEMPLATE
from windows_batch.study import StudyDefinitionError, StudyError, failure_budget

if TYPE_CHECKING:
    from windows_batch.settings import Settings
    from windows_batch.study import Study

log = logging.getLogger(__name__)

START = datetime(2025, 1, 1, tzinfo=UTC)
PLAN_TIMEOUT_S = 600
"""plan_tasks may take this long (it plans, lists inputs and writes the manifest)."""
CHUNK_COUNT_KEY = "chunk_count"


def _tags(study: Study, settings: Settings) -> list[str]:
    # The Results view finds a DAG's study and its results prefix from these tags (set only
    # by DAG files, so no XCom or API user can change them).
    return [
        "windows-batch",
        f"study:{study.info.name}",
        f"results:{study.info.results_prefix}",
        settings.backend,
    ]


def build_dag(study: Study, settings: Settings, *, other_dag_ids: tuple[str, ...] = ()) -> DAG:
    """The study's DAG (see the module docstring)."""
    info = study.info
    slots = capacity.slots_for(settings, cpu=info.cpu, memory_mib=info.memory_mib)
    budget_default = info.max_failed_tasks
    with DAG(
        dag_id=info.dag_id,
        dag_display_name=study.title or info.name,
        description=(info.description or study.title or info.name)[:200],
        doc_md=study.doc_md,
        schedule=None,
        start_date=START,
        catchup=False,
        # One run of a study at a time: its runs share the cluster and their prefix.
        max_active_runs=1,
        tags=_tags(study, settings),
        default_args={
            "owner": "windows-batch",
            "retries": settings.retries,
            "retry_delay": timedelta(seconds=settings.retry_delay_s),
        },
        params=study.form(settings),
    ) as dag:

        @task(task_id="plan_tasks", retries=0, execution_timeout=timedelta(seconds=PLAN_TIMEOUT_S))
        def plan_tasks(
            params: Any = None, dag_run: Any = None, run_id: Any = None, ti: Any = None
        ) -> list[dict[str, Any]]:
            """Check the form and plan the chunks (nothing touches the cluster)."""
            from windows_batch import planning  # noqa: PLC0415 (at run time, not at every parse)

            conf = dag_run.conf if dag_run is not None else None
            try:
                planned = planning.plan_run(
                    study, settings, params=dict(params or {}), conf=conf, run_id=str(run_id)
                )
            except StudyError as exc:
                raise AirflowFailException(f"Invalid input: {exc}") from None
            planning.push_results(ti, planned, settings, requested=planned.engine.cluster_size)
            ti.xcom_push(key=CHUNK_COUNT_KEY, value=len(planned.refs))
            return [ref.to_json() for ref in planned.refs]

        planned: Any = plan_tasks()
        scale_out, fan_out, aggregate, scale_in = _cluster_tasks(
            study, settings, planned=planned, slots=slots, other_dag_ids=other_dag_ids
        )

        @task(task_id="finish", retries=0)
        def finish(**context: Any) -> str:
            """The run's verdict: fail unless no task failed beyond the budget and the cluster
            was released; it names the failed tasks."""
            ti = context["ti"]
            values = dict(context.get("params") or {})
            try:
                run_budget = failure_budget(info, values)
            except ValueError:
                run_budget = budget_default
            chunks = int(ti.xcom_pull(task_ids="plan_tasks", key=CHUNK_COUNT_KEY) or 0)
            try:
                outcome = verdict.check_run(
                    context, sweep_task_id=study.sweep_task_id, budget=run_budget, chunks=chunks
                )
            except AirflowFailException as exc:
                _note_verdict(settings, study, context, f"**Verdict:** {exc}")
                raise
            _note_verdict(settings, study, context, f"**Verdict:** {outcome}")
            return outcome

        finish_task: Any = finish()
        steps = [planned, scale_out, fan_out] + ([aggregate] if aggregate is not None else [])
        chain(*steps, scale_in, finish_task)
        # ALL_DONE runs scale_in even when scale_out failed half-way; as a teardown it also runs
        # when a person marks the run failed (Airflow leaves pending teardowns to finish).
        scale_in.as_teardown(setups=scale_out)
        scale_in.trigger_rule = TriggerRule.ALL_DONE
        # The only leaf (verdict.py): a teardown too, so marking the run failed cannot skip it,
        # and on_failure_fail_dagrun makes its failure the run's.
        finish_task.as_teardown(on_failure_fail_dagrun=True)
        finish_task.operator.trigger_rule = TriggerRule.ALL_DONE
    return dag


def _cluster_tasks(
    study: Study,
    settings: Settings,
    *,
    planned: Any,
    slots: int,
    other_dag_ids: tuple[str, ...],
) -> tuple[Any, Any, Any, Any]:
    """scale_out, the fan-out (mapped over plan_tasks' chunks), the aggregate (or None) and
    scale_in, for the deployment's backend."""
    info = study.info
    budget = info.max_failed_tasks
    run_tasks = tuple(t for t in (study.sweep_task_id, study.aggregate_task_id) if t is not None)
    if settings.local:
        from windows_batch import local  # noqa: PLC0415

        scale_out: Any = local.ScaleNoopOperator(
            task_id="scale_out", desired=CLUSTER_SIZE_TEMPLATE, settings=settings
        )
        fan_out = local.LocalRunnerOperator.partial(
            task_id=study.sweep_task_id,
            study=study,
            settings=settings,
            budget=budget,
            max_active_tis_per_dagrun=settings.parallel_tasks(slots),
        ).expand(chunk=planned)
        aggregate: Any = None
        if study.aggregate_task_id:
            aggregate = local.LocalAggregateOperator(
                task_id=study.aggregate_task_id,
                study=study,
                settings=settings,
                trigger_rule=TriggerRule.ALL_DONE,
            )
        scale_in: Any = local.LocalScaleInOperator(
            task_id="scale_in",
            desired=0,
            settings=settings,
            on_done=publish.scale_in_done(settings, study),
            trigger_rule=TriggerRule.ALL_DONE,
        )
        return scale_out, fan_out, aggregate, scale_in
    from windows_batch import ecs  # noqa: PLC0415
    from windows_batch.cluster import ScaleInSensor, ScaleOutSensor  # noqa: PLC0415

    scale_out = ScaleOutSensor(
        task_id="scale_out",
        desired=CLUSTER_SIZE_TEMPLATE,
        timeout_s="{{ params.scale_out_timeout_s | default(1800) }}",
        settings=settings,
        other_dag_ids=other_dag_ids,
    )
    fan_out = ecs.ChunkEcsOperator.partial(
        task_id=study.sweep_task_id,
        budget=budget,
        max_active_tis_per_dagrun=settings.parallel_tasks(slots),
        **ecs.ecs_kwargs(settings, study),
    ).expand(chunk=planned)
    aggregate = None
    if study.aggregate_task_id:
        aggregate = ecs.AggregateEcsOperator(
            task_id=study.aggregate_task_id,
            trigger_rule=TriggerRule.ALL_DONE,
            **ecs.ecs_kwargs(settings, study),
        )
    scale_in = ScaleInSensor(
        task_id="scale_in",
        desired=0,
        timeout_s="{{ params.scale_in_timeout_s | default(1200) }}",
        settings=settings,
        other_dag_ids=other_dag_ids,
        task_ids=run_tasks,
        on_done=publish.scale_in_done(settings, study),
        trigger_rule=TriggerRule.ALL_DONE,
    )
    return scale_out, fan_out, aggregate, scale_in


def _note_verdict(settings: Settings, study: Study, context: Any, text: str) -> None:
    from windows_batch import notes  # noqa: PLC0415

    try:
        notes.update(
            settings,
            context,
            aggregate_task_id=study.aggregate_task_id,
            part=notes.VERDICT_PART,
            text=text,
        )
    except Exception as exc:  # the note is a convenience, never fatal
        log.warning("Could not update the run note: %s", exc)


def refused_dag(dag_id: str, name: str, error: str, settings: Settings) -> DAG:
    """A DAG for a study that cannot be loaded: it says why, and its only task refuses."""
    with DAG(
        dag_id=dag_id,
        dag_display_name=f"{name} (refused: see its description)",
        description=error[:200],
        doc_md=f"### This study cannot run\n\n```\n{error}\n```\n\nFix its folder and the DAG "
        "comes back as the study's own.",
        schedule=None,
        start_date=START,
        catchup=False,
        tags=["windows-batch", f"study:{name}", "invalid-study", settings.backend],
    ) as dag:

        @task(task_id="plan_tasks", retries=0)
        def plan_tasks() -> None:
            """Refuse: the study's definition has an error (see the DAG's description)."""
            raise AirflowFailException(f"This study cannot run: {error}")

        plan_tasks()
    return dag


def load_study(info: catalog.StudyInfo, settings: Settings) -> Study:
    """A template or Python study from its folder; StudyDefinitionError naming the problem."""
    if info.kind == "template":
        from windows_batch import templates  # noqa: PLC0415

        return templates.load(info, settings)
    from windows_batch import python_study  # noqa: PLC0415

    return python_study.load(info, settings)


def build_all(settings: Settings) -> dict[str, DAG]:
    """Every study's DAG, by DAG id (see the module docstring)."""
    docker = Path(__file__).resolve().parents[2] / "docker"
    dags: dict[str, DAG] = {}
    loaded: list[tuple[catalog.StudyInfo, Study]] = []
    for folder in catalog.study_folders(settings.studies_dir):
        try:
            info = catalog.study_info(folder, docker_dir=docker if docker.is_dir() else None)
        except catalog.CatalogError as exc:
            log.error("Study %s refused: %s", folder.name, exc)
            dags[folder.name] = refused_dag(folder.name, folder.name, str(exc), settings)
            continue
        try:
            loaded.append((info, load_study(info, settings)))
        except (StudyDefinitionError, catalog.CatalogError) as exc:
            log.error("Study %s refused: %s", info.name, exc)
            dags[info.dag_id] = refused_dag(info.dag_id, info.name, str(exc), settings)
    # Two studies with one DAG id or nested prefixes: the later one (by folder) is refused.
    kept: list[tuple[catalog.StudyInfo, Study]] = []
    for info, study in loaded:
        try:
            catalog.check_unique([i for i, _ in kept] + [info])
        except catalog.CatalogError as exc:
            log.error("Study %s refused: %s", info.name, exc)
            taken = set(dags) | {i.dag_id for i, _ in kept}
            refused_id = info.dag_id if info.dag_id not in taken else f"{info.name}-refused"
            dags[refused_id] = refused_dag(refused_id, info.name, str(exc), settings)
            continue
        kept.append((info, study))
    loaded = kept
    ids = tuple(info.dag_id for info, _ in loaded)
    for info, study in loaded:
        others = tuple(d for d in ids if d != info.dag_id)
        dags[info.dag_id] = build_dag(study, settings, other_dag_ids=others)
    return dags
