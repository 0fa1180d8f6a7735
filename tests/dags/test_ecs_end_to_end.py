"""The ECS backend end to end: dag.test() against our stacks in a moto server on 127.0.0.1.

tests/dags/ecs_harness.py deploys storage, network, ecs, a study stack per test workload
(tests/workloads/studies) and mwaa.yaml's execution role into tests/dags/moto_ecs_server.py,
whose ECS runs each task's container as a process: the base image's entrypoint, the engine's
task runner (`wbrun run --manifest s3://... --chunk N ...`), against moto's S3 with the study's
task role's credentials. The DAG runs unchanged with mwaa.yaml's settings and the execution
role's credentials; every call is authorized against the role's policy as the templates define
it (see moto_ecs_server.py). The workloads (`tiny`, `sweep`) say exactly what happened: each
work item writes one file, fails with a chosen exit code when asked, and a combine step counts
the files.

Failures come from the runner and the workload themselves: an output the task role may not
write (the runner's exit 74, retried), the study's final exit code (not retried), a container
stopped from outside after it published, or half-way through its chunk; and the failure budget
(max_failed_tasks) decides whether the run goes on past them.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from scipy.stats import norm

from wbrun.cli import build_parser
from windows_batch.runs import ChunkRef

from . import ecs_harness, iam_policy
from .conftest import DAG_ID, STUDY, RunDag
from .ecs_harness import REPO, EcsDeployment, chunk_of

pytestmark = pytest.mark.airflow

# dag.test() has no API server, and moto has no MWAA API for RUN_NOTE=mwaa: the note is not
# sent anywhere, but its parts are still pushed to XCom (tests/dags/test_ecs_standalone.py sets
# one through the real REST API).
TEST_SETTINGS = {
    "AIRFLOW__WINDOWS_BATCH__WAITER_DELAY_S": "1",
    "AIRFLOW__WINDOWS_BATCH__SCALE_POKE_INTERVAL_S": "1",
    "AIRFLOW__WINDOWS_BATCH__CAPACITY_RETRY_S": "1",
    # dag.test() runs triggers inline, with no executor whose late report DEFER_SETTLE_S waits for.
    "AIRFLOW__WINDOWS_BATCH__DEFER_SETTLE_S": "0",
    "AIRFLOW__WINDOWS_BATCH__TASK_TIMEOUT_S": "120",
    "AIRFLOW__WINDOWS_BATCH__RETRIES": "1",
    "AIRFLOW__WINDOWS_BATCH__RETRY_DELAY_S": "0",
    "AIRFLOW__WINDOWS_BATCH__RUN_NOTE": "off",
}
LOGICAL_DATE = "2026-01-02T03:04:05+00:00"
RUN_ID = f"manual__{LOGICAL_DATE}"
SWEEP = "work"
"""The fan-out's task id in the test workloads (their sweep step is named Work)."""
# The calls the DAG and the task runner make on a successful run, by role (the IAM check's
# coverage): a call missing here was not checked against its role's policy at all.
MWAA_ACTIONS = {
    "autoscaling:SetDesiredCapacity",
    "autoscaling:DescribeAutoScalingGroups",
    "ecs:ListContainerInstances",
    "ecs:DescribeContainerInstances",
    "ecs:ListTasks",
    "ecs:RunTask",
    "iam:PassRole",
    "ecs:DescribeTasks",
    "logs:GetLogEvents",
    "s3:GetObject",
    "s3:PutObject",
    "s3:ListBucket",
    "cloudwatch:PutMetricData",  # scale_out's heartbeat for the idle alarm
}
# s3:PutObjectTagging: the runner tags each item record with the expiry tag in its PutObject.
TASK_ROLE_ACTIONS = {"s3:ListBucket", "s3:PutObject", "s3:PutObjectTagging", "s3:GetObject"}
STOPPED_BY_A_PERSON = "Stopped by a person in the ECS console"
_ITEM_STARTED = re.compile(r"wbrun: item (\d+) \(")
"""The runner's line as it starts a sweep item (`item 4 (Item=5): python ...`)."""

Deploy = Callable[..., EcsDeployment]


def dag_env(
    base: dict[str, str], deployment: EcsDeployment, *, dag_id: str = DAG_ID, **extra: str
) -> dict[str, str]:
    return {**deployment.airflow_env(base), **TEST_SETTINGS, "WB_DAG_ID": dag_id, **extra}


@pytest.fixture(scope="module")
def shared_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EcsDeployment]:
    """One deployment for the tests that change nothing in it (no policy, no server fault):
    each of their runs has its own run id, and they check only their own run's events."""
    with ecs_harness.moto_ecs(tmp_path_factory.mktemp("ecs-shared")) as deployment:
        yield deployment


def study(**changes: Any) -> dict[str, Any]:
    return {**STUDY, **changes}


def run_of(outcome: dict[str, Any]) -> dict[str, Any]:
    """plan_tasks' results location: the run's outputs and engine prefixes, chunks, items."""
    return dict(json.loads(outcome["xcom"]["plan_tasks.results_location"]))


def manifest_uri(outcome: dict[str, Any]) -> str:
    return str(run_of(outcome)["engine"]) + "manifest/"


def run_calls(deployment: EcsDeployment, outcome: dict[str, Any]) -> list[dict[str, Any]]:
    """This run's RunTask calls (their command names its manifest)."""
    uri = manifest_uri(outcome)
    return [c for c in deployment.events("run_task") if uri in c["command"]]


def run_containers(deployment: EcsDeployment, outcome: dict[str, Any]) -> list[dict[str, Any]]:
    return deployment.containers(manifest_uri(outcome))


def exit_codes(deployment: EcsDeployment, outcome: dict[str, Any]) -> list[int]:
    """The exit codes of this run's containers, sorted."""
    arns = {c["task_arn"] for c in run_containers(deployment, outcome)}
    return sorted(
        e["exit_code"] for e in deployment.events("container_exited") if e["task_arn"] in arns
    )


def output_names(deployment: EcsDeployment, outcome: dict[str, Any]) -> list[str]:
    """The run's published outputs, relative to its outputs folder."""
    outputs = str(run_of(outcome)["outputs"])
    prefix = outputs.removeprefix(f"s3://{deployment.bucket}/")
    return sorted(key.removeprefix(prefix) for key in deployment.keys(outputs))


def combined(deployment: EcsDeployment, outcome: dict[str, Any]) -> dict[str, Any]:
    """The combine step's results.json (its rows: one per item file it found)."""
    return dict(json.loads(deployment.read(str(run_of(outcome)["outputs"]) + "Out/results.json")))


def group_at_zero(deployment: EcsDeployment) -> bool:
    group = deployment.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[deployment.outputs["ecs"]["AutoScalingGroupName"]]
    )["AutoScalingGroups"][0]
    return bool(group["DesiredCapacity"] == 0 and group["Instances"] == [])


def role_of(principal: str) -> str:
    """assumed-role/<role name>/<session> -> role name."""
    return principal.split("/")[1] if ":assumed-role/" in principal else principal


def check_iam(deployment: EcsDeployment, study_name: str = DAG_ID) -> dict[str, set[str]]:
    """No call of the DAG or the task runner was denied or unmapped; the actions per role."""
    mwaa_role = deployment.role_name("mwaa", "ExecutionRoleArn")
    task_role = deployment.role_name(f"study:{study_name}", "TaskRoleArn")
    actions: dict[str, set[str]] = {mwaa_role: set(), task_role: set()}
    for decision in deployment.iam_decisions():
        role = role_of(decision["principal"])
        if role not in actions:
            continue
        assert decision["mapped"], decision
        assert decision["decision"] == iam_policy.ALLOW, decision
        actions[role].add(decision["action"])
    return {"mwaa": actions[mwaa_role], "task": actions[task_role]}


def role_statements(deployment: EcsDeployment, stack: str, output: str) -> list[dict[str, Any]]:
    iam = deployment.client("iam")
    role = deployment.role_name(stack, output)
    documents = [
        deployment.role_policy(role, name)
        for name in iam.list_role_policies(RoleName=role)["PolicyNames"]
    ]
    return iam_policy.statements_of(documents)


def check_run_tasks(
    deployment: EcsDeployment, outcome: dict[str, Any], *, placement_failures: int
) -> None:
    """Every RunTask: our cluster, the study's task definition and container, EC2; the command
    is the runner's, for a chunk plan_tasks planned (read back by the runner's own parser)."""
    family = deployment.outputs[f"study:{DAG_ID}"]["TaskDefinitionFamily"]
    definition = deployment.client("ecs").describe_task_definition(taskDefinition=family)
    container = definition["taskDefinition"]["containerDefinitions"][0]["name"]
    calls = deployment.events("run_task")
    for call in calls:
        assert call["cluster"] == deployment.outputs["ecs"]["ClusterName"]
        assert call["taskDefinition"] == family
        assert call["launchType"] == "EC2"
        assert call["container"] == container
        assert build_parser().parse_args(call["command"]).command in {"run", "aggregate"}
    assert sum(not c["placed"] for c in calls) == placement_failures
    uri = manifest_uri(outcome)
    planned = outcome["xcom"]["plan_tasks.return_value"]
    assert len(planned) == outcome["xcom"]["plan_tasks.chunk_count"] == 3
    chunks = [c["command"] for c in calls if c["placed"] and c["command"][0] == "run"]
    assert sorted(map(json.dumps, chunks)) == sorted(
        json.dumps(ChunkRef.parse(ref).command(uri)) for ref in planned
    )
    aggregate = [c["command"] for c in calls if c["command"][0] == "aggregate"]
    assert aggregate == [["aggregate", "--manifest", uri]]
    assert exit_codes(deployment, outcome) == [0, 0, 0, 0]


def check_iam_coverage(deployment: EcsDeployment) -> None:
    """Every call was allowed by its role's policy, and the check saw them all."""
    actions = check_iam(deployment)
    assert actions["mwaa"] >= MWAA_ACTIONS, MWAA_ACTIONS - actions["mwaa"]
    assert actions["task"] >= TASK_ROLE_ACTIONS, TASK_ROLE_ACTIONS - actions["task"]
    # The same calls against the execution role without its ListTasks statement: denied.
    narrowed = [
        s
        for s in role_statements(deployment, "mwaa", "ExecutionRoleArn")
        if s.get("Sid") != "ListTasksOnOurCluster"
    ]
    list_tasks = [
        d
        for d in deployment.iam_decisions()
        if d["action"] == "ecs:ListTasks" and "assumed-role" in d["principal"]
    ]
    assert list_tasks
    for decision in list_tasks:
        request = iam_policy.Request(decision["action"], decision["resource"], decision["context"])
        assert iam_policy.evaluate(narrowed, request) == iam_policy.IMPLICIT_DENY


def test_runs_every_chunk_in_its_container_combines_and_scales_in(
    airflow_env: dict[str, str], run_dag: RunDag, ecs_deployment: Deploy
) -> None:
    # Two RunTask calls find the cluster full: they must wait, not fail or use a retry.
    deployment = ecs_deployment(MOTO_RESOURCE_FAILURES="2")
    outcome = run_dag(dag_env(airflow_env, deployment), STUDY)
    assert outcome["state"] == "success", outcome["log"][-5000:]
    assert set(outcome["tasks"].values()) == {"success"}
    assert all(tries == 1 for tries in outcome["tries"].values()), outcome["tries"]

    # scale_out waited (rescheduled) while the instances joined one by one ...
    assert "1 of 2 container instances ACTIVE" in outcome["log"]
    assert "2 of 2 container instances ACTIVE" in outcome["log"]
    # ... and the two placement failures waited in the triggerer instead of failing.
    assert outcome["log"].count("The cluster has no room for this task now (RESOURCE:CPU)") == 2
    desired = deployment.desired_capacities()
    assert desired[0] == 2
    assert desired[-1] == 0
    assert desired.index(0) > max(i for i, v in enumerate(desired) if v == 2)
    # scale_out told the idle alarm at its checks that the group was scaling out (ecs.yaml's
    # IdleClusterAlarm reads that heartbeat).
    group = deployment.outputs["ecs"]["AutoScalingGroupName"]
    metrics = deployment.client("cloudwatch").list_metrics(
        Namespace="WindowsBatch", MetricName="ScalingOut"
    )["Metrics"]
    assert [m["Dimensions"] for m in metrics] == [
        [{"Name": "AutoScalingGroupName", "Value": group}]
    ]

    check_run_tasks(deployment, outcome, placement_failures=2)
    # The containers' real outputs in moto's S3: one file per work item, and the combination.
    assert output_names(deployment, outcome) == [
        *(f"Out/item-{i:05d}.txt" for i in range(1, 7)),
        "Out/results.json",
    ]
    results = combined(deployment, outcome)
    assert [(row["item"], row["text"]) for row in results["rows"]] == [
        (i, f"item {i}") for i in range(1, 7)
    ]
    # The runner recorded each chunk as done, with the work items it holds.
    engine = str(run_of(outcome)["engine"])
    records = sorted(k.rsplit("/", 1)[-1] for k in deployment.keys(engine + "chunks/done/"))
    assert records == ["00000-2.json", "00001-2.json", "00002-2.json", "aggregate.json"]
    # The summary comes from the results.json the combine step wrote.
    assert results["summary"] == "6 items combined"
    assert outcome["xcom"]["combine.return_value"] == results["summary"]
    assert f"Summary: {results['summary']}" in outcome["log"]
    link = outcome["xcom"]["combine._link_ResultsLink"]
    assert link.startswith(
        f"https://s3.console.aws.amazon.com/s3/object/{deployment.bucket}?region="
    )
    # The run note's parts, in XCom: results (where, what, the summary), progress, cost, verdict.
    note = outcome["xcom"]["combine.note_results"]
    assert "7 output files" in note
    assert f"`{run_of(outcome)['outputs']}`" in note
    assert note.endswith(results["summary"])
    assert outcome["xcom"]["scale_in.note_progress"] == (
        "6 of 6 work items done, 0 failed, 0 pending (3 of 3 tasks done)"
    )
    assert outcome["xcom"]["finish.note_verdict"] == (
        "**Verdict:** every task succeeded and the cluster was released"
    )
    # plan_tasks estimated the run; scale_in read its instances and tasks back and logged where
    # the time went.
    assert "cluster_size 2; estimate: 2 instances, about " in outcome["log"]
    # The note's cost part: the cluster's line and the time to the first task, each logged.
    cost, first = outcome["xcom"]["scale_in.note_cost"].split("\n")
    assert cost.startswith("cluster: ")
    assert "instance-hours (on-demand c5.xlarge), about $" in cost
    assert "; 2 instances, 4 tasks, " in cost
    assert first.startswith("first task: ")
    assert cost in outcome["log"]
    assert first in outcome["log"]

    check_iam_coverage(deployment)


def test_an_output_the_task_role_may_not_write_fails_that_chunk_after_a_retry(
    airflow_env: dict[str, str], run_dag: RunDag, ecs_deployment: Deploy
) -> None:
    """The runner's exit 74 (storage) may pass on a retry: it gets one, and fails again; the
    combine step still runs and sees what exists; the verdict names the chunk."""
    deployment = ecs_deployment()
    denied_key = f"studies/{DAG_ID}/runs/{RUN_ID}/Out/item-00003.txt"
    deployment.client("iam").put_role_policy(
        RoleName=deployment.role_name(f"study:{DAG_ID}", "TaskRoleArn"),
        PolicyName="deny-one-output",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Deny",
                        "Action": "s3:PutObject",
                        "Resource": f"arn:aws:s3:::{deployment.bucket}/{denied_key}",
                    }
                ],
            }
        ),
    )
    outcome = run_dag(dag_env(airflow_env, deployment), STUDY, logical_date=LOGICAL_DATE)
    tasks, tries = outcome["tasks"], outcome["tries"]
    assert outcome["run_id"] == RUN_ID
    assert outcome["state"] == "failed"
    assert tasks[f"{SWEEP}[1]"] == "failed"
    assert tries[f"{SWEEP}[1]"] == 2  # exit 74 may be transient: one retry, a new ECS task
    assert tasks[f"{SWEEP}[0]"] == tasks[f"{SWEEP}[2]"] == "success"
    assert (
        "exited with 74 (the task runner could not read or write the run's objects)"
        in (outcome["log"])
    )
    assert "cannot publish item-00003.txt" in outcome["log"]  # the runner's line, from CloudWatch
    # The runner recorded the chunk as failed although no item exited non-zero: its items count
    # as failed, not pending, in the run's progress.
    assert outcome["xcom"]["scale_in.note_progress"] == (
        f"4 of 6 work items done, 2 failed, 0 pending (2 of 3 tasks done; failed: {SWEEP}[1])"
    )
    assert tasks["combine"] == "success"
    assert combined(deployment, outcome)["summary"] == "4 items combined"
    assert tasks["scale_in"] == "success"
    assert tasks["finish"] == "failed"
    assert f"The run failed: 1 task(s) failed: {SWEEP}[1]" in outcome["log"]
    assert deployment.desired_capacities()[-1] == 0

    chunks = [chunk_of(c["command"]) for c in run_calls(deployment, outcome) if c["placed"]]
    assert Counter(chunks) == {0: 1, 1: 2, 2: 1, None: 1}
    assert exit_codes(deployment, outcome) == [0, 0, 0, 74, 74]
    # Nothing of the failed item was published: its first file was refused, so no other.
    assert "Out/item-00003.txt" not in output_names(deployment, outcome)
    assert "Out/item-00004.txt" not in output_names(deployment, outcome)
    denials = [
        d
        for d in deployment.iam_decisions()
        if d["decision"] == iam_policy.DENY and d["action"] == "s3:PutObject"
    ]
    assert {d["resource"] for d in denials} == {f"arn:aws:s3:::{deployment.bucket}/{denied_key}"}
    assert len(denials) == 2


def test_a_failure_budget_lets_the_run_finish_green_naming_the_failed_task(
    airflow_env: dict[str, str], run_dag: RunDag, shared_deployment: EcsDeployment
) -> None:
    """Item 3 exits 3, the tiny study's final exit code (study.yaml final_exit_codes): its chunk
    fails without using its retry (RETRIES=1), the runner records it failed, and the budget of
    one failed task keeps the run green."""
    deployment = shared_deployment
    conf = study(FailItems="3", FailCode=3, cluster_size=1, max_failed_tasks="1")
    outcome = run_dag(dag_env(airflow_env, deployment), conf)
    tasks, tries = outcome["tasks"], outcome["tries"]
    assert outcome["state"] == "success", outcome["log"][-5000:]
    assert tasks[f"{SWEEP}[1]"] == "failed"
    assert tries[f"{SWEEP}[1]"] == 1
    assert "exited with 3 (final: the study says a retry would not help)" in outcome["log"]
    assert "item 3: failing with 3" in outcome["log"]  # the workload's own line
    assert tasks[f"{SWEEP}[0]"] == tasks[f"{SWEEP}[2]"] == "success"
    assert tasks["combine"] == tasks["scale_in"] == tasks["finish"] == "success"
    assert combined(deployment, outcome)["summary"] == "4 items combined"
    engine = str(run_of(outcome)["engine"])
    failed = json.loads(deployment.read(engine + "chunks/failed/00001.json"))
    assert (failed["status"], failed["exit_code"], failed["failed"]) == ("failed", 3, 2)
    assert outcome["xcom"]["scale_in.note_progress"] == (
        f"4 of 6 work items done, 2 failed, 0 pending (2 of 3 tasks done; failed: {SWEEP}[1])"
    )
    verdict = (
        f"green within its failure budget: 1 of 3 {SWEEP} tasks failed (max_failed_tasks 1): "
        f"{SWEEP}[1]; the cluster was released"
    )
    assert outcome["xcom"]["finish.return_value"] == verdict
    assert outcome["xcom"]["finish.note_verdict"] == f"**Verdict:** {verdict}"
    assert exit_codes(deployment, outcome) == [0, 0, 0, 3]
    assert group_at_zero(deployment)


def test_a_spent_failure_budget_skips_the_chunks_not_started_and_fails_the_run(
    airflow_env: dict[str, str], run_dag: RunDag, shared_deployment: EcsDeployment
) -> None:
    """Every chunk would fail; the budget allows 1: after the second failure the other chunks
    are not started (dag.test runs the chunks one at a time)."""
    deployment = shared_deployment
    conf = study(Items=8, FailItems="1,3,5,7", FailCode=3, cluster_size=1, max_failed_tasks="1")
    outcome = run_dag(dag_env(airflow_env, deployment), conf)
    tasks = outcome["tasks"]
    chunk_states = Counter(tasks[f"{SWEEP}[{i}]"] for i in range(4))
    assert chunk_states == {"failed": 2, "skipped": 2}, tasks
    assert outcome["state"] == "failed"
    assert (
        outcome["log"].count(
            f"the run's failure budget is spent: 2 {SWEEP} tasks failed, max_failed_tasks 1 "
            "allows 1 of 4; this task is not started"
        )
        == 2
    )
    # Only the two failed chunks ever had a container (and the combine step, which runs).
    started = [chunk_of(c["command"]) for c in run_containers(deployment, outcome)]
    assert sorted(started, key=str) == sorted(
        [i for i in range(4) if tasks[f"{SWEEP}[{i}]"] == "failed"] + [None], key=str
    )
    assert tasks["combine"] == "success"
    assert combined(deployment, outcome)["summary"] == "0 items combined"
    failed = sorted(f"{SWEEP}[{i}]" for i in range(4) if tasks[f"{SWEEP}[{i}]"] == "failed")
    assert (
        f"The run failed: 2 task(s) failed (2 of 4 {SWEEP} tasks; the budget max_failed_tasks 1 "
        f"allows 1): {', '.join(failed)}; 2 {SWEEP} tasks were not started once the budget was "
        "spent"
    ) in outcome["log"]
    assert tasks["scale_in"] == "success"
    assert group_at_zero(deployment)


def test_scale_out_failing_half_way_skips_the_study_and_still_scales_in(
    airflow_env: dict[str, str], run_dag: RunDag, ecs_deployment: Deploy
) -> None:
    """The group grew, then a call the role may not make failed scale_out (twice: one retry)."""
    deployment = ecs_deployment()
    iam = deployment.client("iam")
    role = deployment.role_name("mwaa", "ExecutionRoleArn")
    document = deployment.role_policy(role, "windows-batch-dag")
    document["Statement"] = [
        s for s in document["Statement"] if s.get("Sid") != "DescribeOurContainerInstances"
    ]
    iam.put_role_policy(
        RoleName=role, PolicyName="windows-batch-dag", PolicyDocument=json.dumps(document)
    )
    outcome = run_dag(dag_env(airflow_env, deployment), STUDY)
    tasks = outcome["tasks"]
    assert outcome["state"] == "failed"
    assert tasks["scale_out"] == "failed"
    assert outcome["tries"]["scale_out"] == 2
    assert "ecs:DescribeContainerInstances" in outcome["log"]
    assert tasks["combine"] != "success"
    assert not deployment.events("run_task")  # neither a chunk nor the combine step ran
    assert tasks["scale_in"] == "success"
    desired = deployment.desired_capacities()
    assert desired[0] == 2
    assert desired[-1] == 0
    assert group_at_zero(deployment)


def stop_task_when_frozen(deployment: EcsDeployment, key: str, stop: threading.Event) -> None:
    """Once the container writing `key` has written it (and is frozen: MOTO_FREEZE_ON_PUT),
    stop its ECS task from outside Airflow, as a person in the ECS console would."""
    s3, ecs = deployment.client("s3"), deployment.client("ecs")
    while not stop.wait(0.1):
        frozen = deployment.events("container_frozen")
        if not frozen:
            continue
        try:
            s3.head_object(Bucket=deployment.bucket, Key=key)
        except s3.exceptions.ClientError:
            continue
        cluster = deployment.outputs["ecs"]["ClusterName"]
        ecs.stop_task(cluster=cluster, task=frozen[0]["task_arn"], reason=STOPPED_BY_A_PERSON)
        return


def run_with_a_stop(
    run_dag: RunDag, deployment: EcsDeployment, key: str, env: dict[str, str], conf: Any
) -> dict[str, Any]:
    stop = threading.Event()
    watcher = threading.Thread(target=stop_task_when_frozen, args=(deployment, key, stop))
    watcher.start()
    try:
        return run_dag(env, conf, logical_date=LOGICAL_DATE)
    finally:
        stop.set()
        watcher.join(timeout=30)


def test_a_chunk_stopped_half_way_runs_only_its_unfinished_items_again(
    airflow_env: dict[str, str], run_dag: RunDag, ecs_deployment: Deploy
) -> None:
    """Issue 19: a 2,000-item study (`sweep`: one cheap command per item; the engine groups the
    items into chunks, as many per chunk as max_map_length 4 needs: 4 chunks of 500). Chunk 1's
    container is stopped once it has finished 250 of its 500 items; the retry skips those (the
    runner's item records), runs the other 250, and the run counts every item exactly once."""
    dag_id, items, per_chunk, done_before_stop = "sweep", 2000, 500, 250
    last_done = per_chunk + done_before_stop - 1  # the item record the container freezes on
    key = f"studies/{dag_id}/_engine/{RUN_ID}/items/{SWEEP}-{last_done:07d}.json"
    deployment = ecs_deployment(MOTO_FREEZE_ON_PUT=key, MOTO_CONTAINER_STOP_TIMEOUT_S="2")
    env = dag_env(airflow_env, deployment, dag_id=dag_id, AIRFLOW__CORE__MAX_MAP_LENGTH="4")
    conf = {"Items": items, "cluster_size": 1, "scale_out_timeout_s": 120}
    outcome = run_with_a_stop(run_dag, deployment, key, env, conf)
    assert outcome["state"] == "success", outcome["log"][-5000:]
    refs = [ChunkRef.parse(r) for r in outcome["xcom"]["plan_tasks.return_value"]]
    assert [ref.items for ref in refs] == [per_chunk] * 4
    tries = outcome["tries"]
    assert [tries[f"{SWEEP}[{n}]"] for n in range(4)] == [1, 2, 1, 1]
    assert STOPPED_BY_A_PERSON in outcome["log"]
    assert exit_codes(deployment, outcome) == [0, 0, 0, 0, 0, 143]  # 4 chunks, a retry, combine

    # What each container's runner did, from its CloudWatch stream: every item started once.
    containers = run_containers(deployment, outcome)
    logs = {c["task_arn"]: deployment.container_log(c["task_arn"], dag_id) for c in containers}
    started = Counter(
        int(m.group(1))
        for lines in logs.values()
        for line in lines
        if (m := _ITEM_STARTED.search(line))
    )
    assert started == dict.fromkeys(range(items), 1), sorted(
        i for i in range(items) if started.get(i) != 1
    )
    retry = [c for c in containers if chunk_of(c["command"]) == 1][-1]
    skipped = [line for line in logs[retry["task_arn"]] if "already done: skipped" in line]
    assert [line.split("wbrun: ", 1)[1] for line in skipped] == [
        f"item {i} already done: skipped" for i in range(per_chunk, last_done + 1)
    ]
    # The runner's record of the chunk says the same.
    engine = str(run_of(outcome)["engine"])
    record = json.loads(deployment.read(engine + f"chunks/done/00001-{per_chunk}.json"))
    assert [(i["index"], i.get("skipped", False)) for i in record["items"]] == [
        (i, i <= last_done) for i in range(per_chunk, 2 * per_chunk)
    ]
    assert output_names(deployment, outcome) == sorted(
        [*(f"Out/item-{i}" for i in range(1, items + 1)), "Out/results.json"]
    )
    assert combined(deployment, outcome)["summary"] == f"{items} items combined"
    assert outcome["xcom"]["scale_in.note_progress"] == (
        f"{items} of {items} work items done, 0 failed, 0 pending (4 of 4 tasks done)"
    )


def black_scholes_call(*, spot: float, strike: float, rate: float, vol: float, t: float) -> float:
    """The closed form, computed here independently of the study's kernel."""
    d1 = (math.log(spot / strike) + (rate + vol * vol / 2) * t) / (vol * math.sqrt(t))
    return float(spot * norm.cdf(d1) - strike * math.exp(-rate * t) * norm.cdf(d1 - vol * t**0.5))


def test_the_option_pricing_example_stages_its_bundle_and_summarizes_its_outputs(
    airflow_env: dict[str, str], run_dag: RunDag, ecs_deployment: Deploy
) -> None:
    """The shipped example (dags/studies/option_pricing, docker/option_pricing's image ENV)
    on the harness: its kernel is a file of its bundle, staged from the run's copy in S3;
    the Price chunks publish their batches, and the Summarize step reads them all."""
    studies = REPO / "dags" / "studies"
    deployment = ecs_deployment(studies_dir=studies)
    dag_id, name = "option-pricing", "option_pricing"
    strikes = [90, 100, 110]
    conf = {
        "StrikeLow": strikes[0],
        "StrikeHigh": strikes[-1],
        "StrikeStep": 10,
        "Batches": 4,
        "BatchesPerTask": 2,
        "PathsPerBatch": 200,
        "Spot": 100.0,
        "Volatility": 0.2,
        "Rate": 0.03,
        "Maturity": 1.0,
        "cluster_size": 1,
    }
    outcome = run_dag(dag_env(airflow_env, deployment, dag_id=dag_id), conf)
    assert outcome["state"] == "success", outcome["log"][-5000:]
    chunks = [k for k in outcome["tasks"] if k.startswith("price[")]
    assert len(chunks) == len(strikes) * 2  # 4 batches in chunks of 2, per strike
    assert set(outcome["tasks"].values()) == {"success"}

    # The bundle went to S3 once for the run, and the containers ran the kernel from there.
    engine = str(run_of(outcome)["engine"])
    kernel = studies / name / "scripts" / "price_batches.py"
    assert deployment.read(engine + "bundle/scripts/price_batches.py") == kernel.read_bytes()
    containers = run_containers(deployment, outcome)
    assert len(containers) == len(chunks) + 1
    commands = [
        line
        for c in containers
        for line in deployment.container_log(c["task_arn"], name)
        if "wbrun: item " in line and "price_batches.py" in line
    ]
    assert len(commands) == len(chunks) + 1, commands
    assert all("/bundle/scripts/price_batches.py" in line for line in commands), commands
    assert not [line for line in commands if str(REPO) in line], commands

    # The Price chunks published their batches; Summarize read every one of them.
    names = output_names(deployment, outcome)
    batches = [f"Results/strike-{k}/batches-{a}-{a + 1}.json" for k in strikes for a in (1, 3)]
    assert set(batches) <= set(names)
    for produced in ("results.json", "results.csv", "results.png"):
        assert f"Results/{produced}" in names
    outputs = str(run_of(outcome)["outputs"])
    assert deployment.read(outputs + "Results/results.png").startswith(b"\x89PNG\r\n\x1a\n")
    results = json.loads(deployment.read(outputs + "Results/results.json"))
    assert [row["strike"] for row in results["rows"]] == strikes
    for row in results["rows"]:
        assert (row["batches"], row["missing_batches"]) == (conf["Batches"], 0)
        assert row["paths"] == conf["Batches"] * conf["PathsPerBatch"]
        exact = black_scholes_call(
            spot=conf["Spot"],
            strike=row["strike"],
            rate=conf["Rate"],
            vol=conf["Volatility"],
            t=conf["Maturity"],
        )
        assert row["black_scholes"] == pytest.approx(exact, rel=1e-9)
        assert row["price_ci_low"] < row["price"] < row["price_ci_high"]
    paths = len(strikes) * conf["Batches"] * conf["PathsPerBatch"]
    assert results["summary"].startswith(f"{len(strikes)} strikes, {paths:,} paths; ")
    assert outcome["xcom"]["summarize.return_value"] == results["summary"]
    # The results view's link points at the plot.
    assert outcome["xcom"]["summarize._link_ResultsLink"].endswith("results.png")
