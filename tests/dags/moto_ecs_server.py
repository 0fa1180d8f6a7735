"""A moto server on 127.0.0.1 that behaves enough like ECS + Auto Scaling for the DAG's tests.

moto alone never lets an ECS task finish, has no ECS agent joining the cluster when the Auto
Scaling group grows, and answers a RunTask it cannot place with an empty list. This launcher
patches moto IN THE SERVER PROCESS and then serves:

- Tasks run for MOTO_TASK_RUN_S seconds (RUNNING, desired RUNNING), then stop like a finished
  container: task and container STOPPED, desired STOPPED, resources released, and an exit code
  taken from the container command: `simulate ... --task-index I` exits 1 when I is in
  MOTO_FAIL_TASK_INDEXES (comma-separated), `aggregate` exits 3 when that set is not empty
  (or MOTO_AGGREGATE_EXIT if set).
- Each RunTask writes one log line to `<MOTO_LOG_GROUP>/<prefix>/<container>/<task id>` (the
  awslogs stream name), with the prefix from MOTO_LOG_STREAM_PREFIX.
- The container instances of MOTO_CLUSTER follow the desired capacity of MOTO_ASG_NAME like
  booting instances: each ListContainerInstances call registers at most one more instance;
  scaling to 0 deregisters them all.
- The first MOTO_RESOURCE_FAILURES RunTask calls place nothing and answer RESOURCE:CPU, like a
  momentarily full cluster; a RunTask that finds no room also answers RESOURCE:CPU.
- Every SetDesiredCapacity and RunTask is appended as a JSON line to MOTO_EVENT_LOG.

    python tests/dags/moto_ecs_server.py PORT      # prints "READY <port>" when serving
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

from moto.autoscaling.models import AutoScalingBackend
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ecs.models import EC2ContainerServiceBackend
from moto.ecs.responses import EC2ContainerServiceResponse
from moto.logs.models import logs_backends
from moto.moto_api import state_manager
from moto.server import ThreadedMotoServer

REGION = os.environ.get("MOTO_REGION", "us-east-1")
CLUSTER = os.environ.get("MOTO_CLUSTER", "windows-batch")
ASG_NAME = os.environ.get("MOTO_ASG_NAME", "windows-batch")
RUN_S = float(os.environ.get("MOTO_TASK_RUN_S", "1"))
FAIL = {int(x) for x in os.environ.get("MOTO_FAIL_TASK_INDEXES", "").split(",") if x.strip()}
LOG_GROUP = os.environ.get("MOTO_LOG_GROUP", "")
LOG_STREAM_PREFIX = os.environ.get("MOTO_LOG_STREAM_PREFIX", "bersim")
EVENT_LOG = os.environ.get("MOTO_EVENT_LOG", "")
_lock = threading.Lock()
_state: dict[str, Any] = {"resource_failures": int(os.environ.get("MOTO_RESOURCE_FAILURES", "0"))}
_finished: set[str] = set()

# Tasks stay where they are put (RUNNING, then STOPPED by us), never advanced by reads.
state_manager.set_transition(
    model_name="ecs::task", transition={"progression": "manual", "times": 10**9}
)


def record(event: dict[str, Any]) -> None:
    if EVENT_LOG:
        with _lock, open(EVENT_LOG, "a") as out:
            out.write(json.dumps(event) + "\n")


def exit_code(command: list[str]) -> int:
    if command and command[0] == "simulate" and "--task-index" in command:
        return 1 if int(command[command.index("--task-index") + 1]) in FAIL else 0
    if command and command[0] == "aggregate":
        return int(os.environ.get("MOTO_AGGREGATE_EXIT", "3" if FAIL else "0"))
    return 0


def command_of(task: Any) -> list[str]:
    for override in (task.overrides or {}).get("containerOverrides", []):
        if override.get("command"):
            return list(override["command"])
    return []


_original_run_task = EC2ContainerServiceBackend.run_task


def run_task(self: EC2ContainerServiceBackend, *args: Any, **kwargs: Any) -> list[Any]:
    with _lock:
        if _state["resource_failures"] > 0:
            _state["resource_failures"] -= 1
            return []
    tasks = _original_run_task(self, *args, **kwargs)
    for task in tasks:
        task._bersim_stop_at = time.monotonic() + RUN_S  # type: ignore[attr-defined]
        for container in task.containers:
            container.last_status = "RUNNING"
        if LOG_GROUP:
            logs = logs_backends[DEFAULT_ACCOUNT_ID][REGION]
            if LOG_GROUP not in logs.groups:
                logs.create_log_group(LOG_GROUP, tags={})
            name = task.containers[0].name
            stream = f"{LOG_STREAM_PREFIX}/{name}/{task.task_arn.split('/')[-1]}"
            logs.create_log_stream(LOG_GROUP, stream)
            line = f"bersim (moto): {' '.join(command_of(task))}"
            logs.put_log_events(
                LOG_GROUP, stream, [{"timestamp": int(time.time() * 1000), "message": line}]
            )
    return tasks


def finish_due_tasks(backend: EC2ContainerServiceBackend) -> None:
    now = time.monotonic()
    for cluster_tasks in backend.tasks.values():
        for arn, task in list(cluster_tasks.items()):
            stop_at = getattr(task, "_bersim_stop_at", None)
            if stop_at is None or arn in _finished or now < stop_at:
                continue
            _finished.add(arn)
            backend.stop_task(task.cluster_arn, arn, "Essential container in task exited")
            code = exit_code(command_of(task))
            for container in task.containers:
                container.last_status = "STOPPED"
                container.exitCode = code
                container.exit_code = code  # type: ignore[attr-defined]


_original_describe_tasks = EC2ContainerServiceBackend.describe_tasks


def describe_tasks(self: EC2ContainerServiceBackend, cluster_str: str, tasks: list[str]) -> Any:
    with _lock:
        finish_due_tasks(self)
    return _original_describe_tasks(self, cluster_str, tasks)


_original_list_tasks = EC2ContainerServiceBackend.list_tasks


def list_tasks(self: EC2ContainerServiceBackend, *args: Any, **kwargs: Any) -> Any:
    with _lock:
        finish_due_tasks(self)
    return _original_list_tasks(self, *args, **kwargs)


def response_run_task(self: EC2ContainerServiceResponse) -> Any:
    command: list[str] = []
    container = None
    for override in (self._get_param("overrides") or {}).get("containerOverrides", []):
        command = list(override.get("command") or [])
        container = override.get("name")
    tasks = self.ecs_backend.run_task(
        self._get_param("cluster", "default"),
        self._get_param("taskDefinition"),
        self._get_int_param("count", 1),
        self._get_param("overrides"),
        self._get_param("startedBy"),
        self._get_param("tags"),
        self._get_param("launchType"),
        self._get_param("networkConfiguration"),
        self._get_param("group"),
        self._get_param("platformVersion"),
        self._get_param("capacityProviderStrategy"),
    )
    record(
        {
            "op": "run_task",
            "cluster": self._get_param("cluster"),
            "taskDefinition": self._get_param("taskDefinition"),
            "launchType": self._get_param("launchType"),
            "startedBy": self._get_param("startedBy"),
            "container": container,
            "command": command,
            "placed": bool(tasks),
        }
    )
    failures = [] if tasks else [{"arn": CLUSTER, "reason": "RESOURCE:CPU"}]
    from moto.core.responses import ActionResult

    return ActionResult({"tasks": tasks, "failures": failures})


_original_list_ci = EC2ContainerServiceBackend.list_container_instances


def list_container_instances(
    self: EC2ContainerServiceBackend, cluster_str: str, status: str | None = None
) -> list[str]:
    """The ECS agent's part: instances join (one per call) or leave as the group changes."""
    from moto.autoscaling.models import autoscaling_backends

    group = autoscaling_backends[DEFAULT_ACCOUNT_ID][REGION].autoscaling_groups.get(ASG_NAME)
    cluster_name = cluster_str.rsplit("/", maxsplit=1)[-1]
    if group is not None and cluster_name == CLUSTER:
        with _lock:
            registered = self.container_instances.get(cluster_name, {})
            active = [ci for ci in registered.values() if ci.status == "ACTIVE"]
            desired = int(group.desired_capacity or 0)
            if len(active) > desired:
                for ci in active[desired:]:
                    self.deregister_container_instance(
                        cluster_name, ci.container_instance_arn, True
                    )
            elif len(active) < desired:
                known = {ci.ec2_instance_id for ci in registered.values()}
                for state in group.instance_states:
                    if state.instance.id not in known:
                        self.register_container_instance(cluster_name, state.instance.id)
                        break
    return _original_list_ci(self, cluster_str, status)


_original_set_desired = AutoScalingBackend.set_desired_capacity


def set_desired_capacity(self: AutoScalingBackend, group_name: str, desired: int | None) -> None:
    record({"op": "set_desired_capacity", "group": group_name, "value": desired})
    _original_set_desired(self, group_name, desired)


EC2ContainerServiceBackend.run_task = run_task  # type: ignore[method-assign]
EC2ContainerServiceBackend.describe_tasks = describe_tasks  # type: ignore[method-assign]
EC2ContainerServiceBackend.list_tasks = list_tasks  # type: ignore[method-assign]
EC2ContainerServiceBackend.list_container_instances = list_container_instances  # type: ignore[method-assign]
EC2ContainerServiceResponse.run_task = response_run_task  # type: ignore[method-assign]
AutoScalingBackend.set_desired_capacity = set_desired_capacity  # type: ignore[method-assign,assignment]


def main() -> int:
    port = int(sys.argv[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    print(f"READY {port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
