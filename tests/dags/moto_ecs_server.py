"""A moto server on 127.0.0.1 that runs what ECS would run, for the DAG's end-to-end tests.

It serves the project's stacks as CloudFormation creates them (tests/cloudformation/moto_server.py
corrects moto where our templates need it; this module adds what ECS, its agent and IAM do and
moto does not), patched IN THE SERVER PROCESS:

- Containers run. RunTask places the task as moto does, then starts its container as a process
  on this machine: the Linux base image's entrypoint (docker/base/entrypoint.sh, `python -m
  wbrun <args>`, the engine's task runner) with the container command override, the image's
  ENV (docker/base/Dockerfile.linux, then the study's docker/<study>/Dockerfile.linux, the
  study named by the image's tag `<study>-linux-test`), the container
  definition's environment, AWS_ENDPOINT_URL pointing at this server, and credentials of the task
  definition's task role (assumed like ECS's credential endpoint does). The task stays RUNNING
  while the process runs; when it exits, the task and container are STOPPED with the process's
  exit code (128 + signal when killed, as Docker reports it) and the task's resources are freed.
  stdout and stderr go to the awslogs stream `<prefix>/<container>/<task id>` of the container's
  log group. StopTask sends SIGTERM to the container's process group, then SIGKILL after
  MOTO_CONTAINER_STOP_TIMEOUT_S (ECS_CONTAINER_STOP_TIMEOUT, 30 s by default on ECS).
  Terminating an instance kills the containers on it and stops their tasks with ECS's reason
  "Host EC2 (instance <id>) terminated.". MOTO_FREEZE_ON_PUT=<key suffix> pauses the container
  that writes that key right after the write (a test's breakpoint, see freeze_caller).
- The ECS agent: each Auto Scaling group whose launch template user data names a cluster
  (`Initialize-ECSAgent -Cluster "<name>"`) gets container instances like booting instances:
  each ListContainerInstances registers at most one more of the group's InService instances;
  an instance that leaves the group is deregistered (moto forgets it), and one terminated
  while still in it disconnects its agent first.
- Auto Scaling's health check (moto never replaces an instance): an InService instance that is
  Unhealthy (SetInstanceHealth, or a fault) or no longer running (terminated from outside, as
  EC2 reclaims a Spot instance) is replaced one step per ListContainerInstances: it becomes
  Terminating while a replacement launches (its agent is still connected: the host shuts
  down), then EC2 terminates it (its tasks stop, its agent disconnects), then it leaves the
  group and ECS deregisters it ("Health checks for instances in an Auto Scaling group",
  "View the reason for health check failures"; DeregisterContainerInstance: a terminated
  container instance is deregistered automatically).
- Placement: RunTask also takes one step of the agent and health check above (an instance
  EC2 terminated under a running study is replaced, and its replacement joins, while the DAG
  keeps calling RunTask), and places nothing on an instance whose agent is disconnected (moto
  would; ECS API reference, ContainerInstance.agentConnected: "Only instances connected to an
  agent can accept task placement requests."); a RunTask that finds no room answers
  RESOURCE:CPU (moto answers an empty list); MOTO_RESOURCE_FAILURES makes the first N RunTask
  calls answer so, like a momentarily full cluster.
- CloudFormation's AWS::ECS::TaskDefinition keeps TaskRoleArn, ExecutionRoleArn, NetworkMode and
  RequiresCompatibilities (moto drops them).
- IAM. Once enforcement is on (POST /moto-api/reset-auth with 0, moto's own switch), moto checks
  each request's signature and finds its identity (IAM user or assumed role); the permission check
  is then tests/dags/iam_policy.py on the request's real resource ARNs and condition keys (moto
  would compare every non-S3 call against "*" and ignore conditions), plus the iam:PassRole that
  RunTask implies for the task definition's roles. A call without a resource mapping here is
  judged on Resource "*" (so only a statement that allows every resource allows it) and logged
  with "mapped": false. Every decision is appended as a JSON line to MOTO_IAM_LOG. Not evaluated:
  bucket policies (moto's CloudFormation does not create AWS::S3::BucketPolicy; the calls are
  taken as HTTPS, aws:SecureTransport true, as on AWS), the ECS agent's own calls, trust policies.

Every SetDesiredCapacity, RunTask, StopTask, container start and exit, and each answer of
ListContainerInstances (with the state of each host in its group) is appended as a JSON line to
MOTO_EVENT_LOG (with a wall-clock "t").

    python tests/dags/moto_ecs_server.py PORT      # prints "READY <port>" when serving
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ENTRYPOINT = REPO / "docker" / "base" / "entrypoint.sh"
BASE_DOCKERFILE = REPO / "docker" / "base" / "Dockerfile.linux"
IMAGE_SUFFIX = "-linux-test"
REGION = os.environ.get("MOTO_REGION", "us-east-1")
ACCOUNT = "123456789012"
EVENT_LOG = os.environ.get("MOTO_EVENT_LOG", "")
IAM_LOG = os.environ.get("MOTO_IAM_LOG", "")
STOP_TIMEOUT_S = float(os.environ.get("MOTO_CONTAINER_STOP_TIMEOUT_S", "30"))
FREEZE_ON_PUT = os.environ.get("MOTO_FREEZE_ON_PUT", "")
# The container's PATH: the interpreter with the runner and the studies' packages installed
# (the image's python) comes first.
CONTAINER_PATH = os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])
_CLUSTER_IN_USER_DATA = re.compile(r'Initialize-ECSAgent\b[^\n]*-Cluster\s+"?([A-Za-z0-9_-]+)')
_lock = threading.RLock()
_state: dict[str, Any] = {
    "resource_failures": int(os.environ.get("MOTO_RESOURCE_FAILURES", "0")),
    "endpoint": "",
}


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


cfn_moto = _load("moto_server", REPO / "tests" / "cloudformation" / "moto_server.py")
iam_policy = _load("iam_policy", HERE / "iam_policy.py")

from moto.autoscaling.models import AutoScalingBackend, autoscaling_backends  # noqa: E402
from moto.core.responses import ActionResult  # noqa: E402
from moto.core.utils import pascal_to_camelcase, remap_nested_keys  # noqa: E402
from moto.ec2.models.instances import InstanceBackend  # noqa: E402
from moto.ecs.models import EC2ContainerServiceBackend, TaskDefinition, ecs_backends  # noqa: E402
from moto.ecs.responses import EC2ContainerServiceResponse  # noqa: E402
from moto.iam.access_control import IAMPolicy, IAMRequestBase  # noqa: E402
from moto.logs.models import logs_backends  # noqa: E402
from moto.moto_api import state_manager  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402
from moto.sts.models import sts_backends  # noqa: E402

# Tasks stay where they are put (RUNNING, then STOPPED when their process ends), never advanced
# by reads.
state_manager.set_transition(
    model_name="ecs::task", transition={"progression": "manual", "times": 10**9}
)


def record(path: str, event: dict[str, Any]) -> None:
    if path:
        with _lock, open(path, "a") as out:
            out.write(json.dumps({"t": time.time(), **event}, default=str) + "\n")


def image_env(image: str) -> dict[str, str]:
    """The ENV instructions of the Linux images: the base's, then the study's own (the image
    `<repository>:<study>-linux-test` is built from docker/<study>/Dockerfile.linux)."""
    tag = image.rsplit(":", 1)[-1]
    study = tag.removesuffix(IMAGE_SUFFIX) if tag.endswith(IMAGE_SUFFIX) else ""
    env: dict[str, str] = {}
    dockerfiles = [BASE_DOCKERFILE] + (
        [REPO / "docker" / study / "Dockerfile.linux"] if study else []
    )
    for dockerfile in (d for d in dockerfiles if d.is_file()):
        text = dockerfile.read_text().replace("\\\n", " ")
        for line in text.splitlines():
            if line.startswith("ENV "):
                for token in shlex.split(line[4:]):
                    key, _, value = token.partition("=")
                    env[key] = value
    return env


class Container:
    """The process standing in for one task's (only) container."""

    def __init__(self, backend: EC2ContainerServiceBackend, task: Any) -> None:
        self.backend = backend
        self.task = task
        task_definition = backend.describe_task_definition(task.task_definition_arn)
        definition = task_definition.container_definitions[0]
        self.name = str(definition["name"])
        override = next(
            (
                o
                for o in (task.overrides or {}).get("containerOverrides", [])
                if o.get("name") == self.name
            ),
            {},
        )
        self.command = [
            str(a) for a in (override.get("command") or definition.get("command") or [])
        ]
        self.workdir = tempfile.mkdtemp(prefix="moto-container-")
        env = {
            "PATH": CONTAINER_PATH,
            "LANG": "C.UTF-8",
            **image_env(str(definition.get("image", ""))),
            "HOME": self.workdir,
        }
        for item in [*definition.get("environment", []), *override.get("environment", [])]:
            env[item["name"]] = item["value"]
        env["AWS_ENDPOINT_URL"] = _state["endpoint"]
        env.update(task_role_credentials(task_definition.task_role_arn, task.id))
        options = (definition.get("logConfiguration") or {}).get("options") or {}
        self.log_group = options.get("awslogs-group")
        self.stream = f"{options.get('awslogs-stream-prefix')}/{self.name}/{task.id}"
        if self.log_group:
            logs = logs_backends[ACCOUNT][REGION]
            # The awslogs driver creates the stream, not the group (awslogs-create-group: false).
            if self.log_group in logs.groups:
                logs.create_log_stream(self.log_group, self.stream)
            else:
                self.log_group = None
        self.process = subprocess.Popen(
            ["bash", str(ENTRYPOINT), *self.command],
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for container in task.containers:
            container.last_status = "RUNNING"
        record(
            EVENT_LOG,
            {
                "op": "container_started",
                "task_arn": task.task_arn,
                "started_by": task.started_by,
                "pid": self.process.pid,
                "command": self.command,
            },
        )
        threading.Thread(target=self._pump, name=f"container-{task.id}", daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            message = raw.decode(errors="replace").rstrip("\r\n")
            if message and self.log_group:
                event = {"timestamp": int(time.time() * 1000), "message": message}
                with _lock:
                    logs_backends[ACCOUNT][REGION].put_log_events(
                        self.log_group, self.stream, [event]
                    )
        code = self.process.wait()
        exit_code = code if code >= 0 else 128 - code
        with _lock:
            reason = self.task.stopped_reason or "Essential container in task exited"
            _original_stop_task(self.backend, self.task.cluster_arn, self.task.task_arn, reason)
            for container in self.task.containers:
                container.last_status = "STOPPED"
                container.exitCode = exit_code
            _containers.pop(self.task.task_arn, None)
        record(
            EVENT_LOG,
            {"op": "container_exited", "task_arn": self.task.task_arn, "exit_code": exit_code},
        )
        shutil.rmtree(self.workdir, ignore_errors=True)

    def signal(self, signum: int) -> None:
        try:
            if signum != signal.SIGKILL:
                os.killpg(self.process.pid, signal.SIGCONT)  # a paused container stops too
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass


_containers: dict[str, Container] = {}


def task_role_credentials(role_arn: str | None, session: str) -> dict[str, str]:
    """What ECS's credential endpoint gives a task: temporary credentials of its task role."""
    if not role_arn:
        return {}
    assumed = sts_backends[ACCOUNT]["global"].assume_role(
        region_name=REGION,
        role_session_name=session,
        role_arn=role_arn,
        policy="",
        duration=3600,
        external_id="",
    )
    return {
        "AWS_ACCESS_KEY_ID": assumed.access_key_id,
        "AWS_SECRET_ACCESS_KEY": assumed.secret_access_key,
        "AWS_SESSION_TOKEN": assumed.session_token,
    }


_original_run_task = EC2ContainerServiceBackend.run_task
_original_stop_task = EC2ContainerServiceBackend.stop_task


def run_task(self: EC2ContainerServiceBackend, *args: Any, **kwargs: Any) -> list[Any]:
    with _lock:
        if _state["resource_failures"] > 0:
            _state["resource_failures"] -= 1
            return []
        cluster_str = kwargs.get("cluster_str", args[0] if args else "default")
        cluster_name = str(cluster_str).rsplit("/", maxsplit=1)[-1]
        agent_step(self, cluster_name)
        # ECS places no task on an instance whose agent is disconnected (moto would).
        hidden = [
            ci
            for ci in self.container_instances.get(cluster_name, {}).values()
            if ci.status == "ACTIVE" and not ci.agent_connected
        ]
        for ci in hidden:
            ci.status = "DISCONNECTED"
        try:
            tasks = _original_run_task(self, *args, **kwargs)
        finally:
            for ci in hidden:
                ci.status = "ACTIVE"
        for task in tasks:
            _containers[task.task_arn] = Container(self, task)
        return tasks


def stop_task(
    self: EC2ContainerServiceBackend, cluster_str: str, task_str: str, reason: str
) -> Any:
    """Like ECS: desired STOPPED now, SIGTERM, SIGKILL after the stop timeout; STOPPED on exit."""
    with _lock:
        task_id = task_str.rsplit("/", maxsplit=1)[-1]
        container = next((c for arn, c in _containers.items() if arn.endswith(task_id)), None)
        record(EVENT_LOG, {"op": "stop_task", "task": task_str, "reason": reason})
        if container is None or container.process.poll() is not None:
            return _original_stop_task(self, cluster_str, task_str, reason)
        container.task.desired_status = "STOPPED"
        container.task.stopped_reason = reason
        container.signal(signal.SIGTERM)
        timer = threading.Timer(STOP_TIMEOUT_S, container.signal, args=(signal.SIGKILL,))
        timer.daemon = True
        timer.start()
        return container.task


def response_run_task(self: EC2ContainerServiceResponse) -> Any:
    """RunTask's response with the RESOURCE:CPU failure ECS gives when nothing could be placed."""
    overrides = self._get_param("overrides") or {}
    tasks = self.ecs_backend.run_task(
        self._get_param("cluster", "default"),
        self._get_param("taskDefinition"),
        self._get_int_param("count", 1),
        overrides,
        self._get_param("startedBy"),
        self._get_param("tags"),
        self._get_param("launchType"),
        self._get_param("networkConfiguration"),
        self._get_param("group"),
        self._get_param("platformVersion"),
        self._get_param("capacityProviderStrategy"),
    )
    override = next(iter(overrides.get("containerOverrides", [])), {})
    record(
        EVENT_LOG,
        {
            "op": "run_task",
            "cluster": self._get_param("cluster"),
            "taskDefinition": self._get_param("taskDefinition"),
            "launchType": self._get_param("launchType"),
            "startedBy": self._get_param("startedBy"),
            "container": override.get("name"),
            "command": list(override.get("command") or []),
            "placed": bool(tasks),
            "task_arns": [t.task_arn for t in tasks],
        },
    )
    cluster_arn = self.ecs_backend._get_cluster(self._get_param("cluster", "default")).arn
    failures = [] if tasks else [{"arn": cluster_arn, "reason": "RESOURCE:CPU"}]
    return ActionResult({"tasks": tasks, "failures": failures})


def cluster_of_group(group: Any) -> str | None:
    """The cluster an Auto Scaling group's instances join: the one their user data names."""
    user_data = group.user_data
    if not user_data:
        return None
    text = (
        user_data.decode() if hasattr(user_data, "decode") else base64.b64decode(user_data).decode()
    )
    found = _CLUSTER_IN_USER_DATA.search(text)
    return found.group(1) if found else None


_original_list_ci = EC2ContainerServiceBackend.list_container_instances


def _running(instance: Any) -> bool:
    return str(instance.state) in {"pending", "running"}


def replace_unhealthy(group: Any) -> None:
    """One step of Auto Scaling's replacement of unhealthy instances (module docstring)."""
    for state in list(group.instance_states):
        if state.lifecycle_state == "InService" and (
            state.health_status == "Unhealthy" or not _running(state.instance)
        ):
            state.health_status = "Unhealthy"
            state.lifecycle_state = "Terminating"
            record(EVENT_LOG, {"op": "replace_instance", "instance": state.instance.id})
            group.replace_autoscaling_group_instances(1, group.get_propagated_tags())
        elif state.lifecycle_state == "Terminating":
            if _running(state.instance):
                group.autoscaling_backend.ec2_backend.terminate_instances([state.instance.id])
            else:
                group.instance_states.remove(state)


def agent_step(backend: EC2ContainerServiceBackend, cluster_name: str) -> dict[str, Any]:
    """One step of the agent and the group's health check for a cluster; its hosts' states.

    ListContainerInstances and RunTask take it: Auto Scaling and the agents act on their own
    clock on AWS, and these are the calls through which a caller can see what they did.
    """
    hosts: dict[str, Any] = {}
    for group in autoscaling_backends[ACCOUNT][REGION].autoscaling_groups.values():
        if cluster_of_group(group) != cluster_name:
            continue
        with _lock:
            replace_unhealthy(group)
            hosts.update({state.instance.id: state for state in group.instance_states})
            registered = backend.container_instances.get(cluster_name, {})
            in_group = {state.instance.id: state for state in group.instance_states}
            for ci in list(registered.values()):
                if ci.status != "ACTIVE":
                    continue
                state = in_group.get(ci.ec2_instance_id)
                if state is None:
                    backend.deregister_container_instance(
                        cluster_name, ci.container_instance_arn, True
                    )
                elif not _running(state.instance):
                    ci.agent_connected = False
            known = {ci.ec2_instance_id for ci in registered.values()}
            for state in group.instance_states:
                if (
                    state.instance.id not in known
                    and state.lifecycle_state == "InService"
                    and _running(state.instance)
                ):
                    backend.register_container_instance(cluster_name, state.instance.id)
                    break
    return hosts


def list_container_instances(
    self: EC2ContainerServiceBackend, cluster_str: str, status: str | None = None
) -> list[str]:
    """The ECS agent's part: instances join (one per call) or leave as their group changes."""
    cluster_name = cluster_str.rsplit("/", maxsplit=1)[-1]
    hosts = agent_step(self, cluster_name)
    answer = _original_list_ci(self, cluster_str, status)
    if hosts:  # what the caller is told, and the state of each host at that moment
        listed = []
        for ci in self.container_instances.get(cluster_name, {}).values():
            if ci.container_instance_arn in answer:
                host = hosts.get(ci.ec2_instance_id)
                listed.append(
                    {
                        "instance": ci.ec2_instance_id,
                        "connected": ci.agent_connected,
                        "lifecycle": host.lifecycle_state if host else None,
                        "health": host.health_status if host else None,
                    }
                )
        record(EVENT_LOG, {"op": "list_container_instances", "status": status, "listed": listed})
    return answer


_original_terminate = InstanceBackend.terminate_instances


def terminate_instances(self: Any, instance_ids: list[str]) -> Any:
    """A container instance's host going away stops its tasks, as ECS reports it."""
    result = _original_terminate(self, instance_ids)
    with _lock:
        for container in list(_containers.values()):
            task = container.task
            registered = container.backend.container_instances.get(task.cluster_name, {})
            host = registered.get(str(task.container_instance_arn).rsplit("/", maxsplit=1)[-1])
            if host is not None and host.ec2_instance_id in instance_ids:
                task.desired_status = "STOPPED"
                task.stopped_reason = f"Host EC2 (instance {host.ec2_instance_id}) terminated."
                container.signal(signal.SIGKILL)
    return result


_original_set_desired = AutoScalingBackend.set_desired_capacity


def set_desired_capacity(self: AutoScalingBackend, group_name: str, desired: int | None) -> None:
    record(EVENT_LOG, {"op": "set_desired_capacity", "group": group_name, "value": desired})
    _original_set_desired(self, group_name, desired)


def task_definition_from_cloudformation(
    cls: Any,
    resource_name: str,
    cloudformation_json: Any,
    account_id: str,
    region_name: str,
    **_: Any,
) -> Any:
    """AWS::ECS::TaskDefinition with the properties moto drops (roles, network mode)."""
    properties = cloudformation_json["Properties"]
    return ecs_backends[account_id][region_name].register_task_definition(
        family=properties["Family"],
        container_definitions=remap_nested_keys(
            properties.get("ContainerDefinitions", []), pascal_to_camelcase
        ),
        network_mode=properties.get("NetworkMode"),
        requires_compatibilities=properties.get("RequiresCompatibilities"),
        cpu=properties.get("Cpu"),
        memory=properties.get("Memory"),
        task_role_arn=properties.get("TaskRoleArn"),
        execution_role_arn=properties.get("ExecutionRoleArn"),
    )


def _arn(service: str, resource: str) -> str:
    return f"arn:aws:{service}:{REGION}:{ACCOUNT}:{resource}"


def _ecs_cluster_arn(cluster: str | None) -> str:
    name = (cluster or "default").rsplit("/", maxsplit=1)[-1]
    return _arn("ecs", f"cluster/{name}")


def _ecs_child_arn(kind: str, cluster: str | None, ref: str) -> str:
    if ref.startswith("arn:"):
        return ref
    name = (cluster or "default").rsplit("/", maxsplit=1)[-1]
    return _arn("ecs", f"{kind}/{name}/{ref}")


def _requests_ecs(action: str, body: dict[str, Any]) -> list[Any]:  # noqa: PLR0911 (one per call)
    """ECS: resources and condition keys per the Service Authorization Reference."""
    Request = iam_policy.Request
    cluster = body.get("cluster")
    context = {"ecs:cluster": _ecs_cluster_arn(cluster)}
    if action == "RunTask":
        backend = ecs_backends[ACCOUNT][REGION]
        task_definition = backend.describe_task_definition(body["taskDefinition"])
        found = [Request("ecs:RunTask", task_definition.arn, context)]
        for role in (task_definition.task_role_arn, task_definition.execution_role_arn):
            if role:
                found.append(
                    Request(
                        "iam:PassRole", role, {"iam:PassedToService": "ecs-tasks.amazonaws.com"}
                    )
                )
        if body.get("tags"):
            found.append(
                Request(
                    "ecs:TagResource",
                    _ecs_child_arn("task", cluster, "*"),
                    {"ecs:CreateAction": "RunTask"},
                )
            )
        return found
    if action == "DescribeTasks":
        return [
            Request("ecs:DescribeTasks", _ecs_child_arn("task", cluster, t), context)
            for t in body["tasks"]
        ]
    if action == "StopTask":
        return [Request("ecs:StopTask", _ecs_child_arn("task", cluster, body["task"]), context)]
    if action == "ListTasks":
        return [Request("ecs:ListTasks", "*", context)]
    if action == "ListContainerInstances":
        return [Request("ecs:ListContainerInstances", _ecs_cluster_arn(cluster))]
    if action == "DescribeContainerInstances":
        return [
            Request(
                "ecs:DescribeContainerInstances",
                _ecs_child_arn("container-instance", cluster, ci),
                context,
            )
            for ci in body["containerInstances"]
        ]
    return []


def _requests_autoscaling(action: str, form: dict[str, list[str]]) -> list[Any]:
    Request = iam_policy.Request
    if action in {"DescribeAutoScalingGroups", "DescribeScalingActivities"}:
        return [Request(f"autoscaling:{action}", "*")]
    if action in {"SetDesiredCapacity", "UpdateAutoScalingGroup"}:
        name = form["AutoScalingGroupName"][0]
        group = autoscaling_backends[ACCOUNT][REGION].autoscaling_groups.get(name)
        arn = (
            group.arn
            if group is not None
            else _arn("autoscaling", f"autoScalingGroup:*:autoScalingGroupName/{name}")
        )
        return [Request(f"autoscaling:{action}", arn)]
    return []


def _requests_logs(action: str, body: dict[str, Any]) -> list[Any]:
    Request = iam_policy.Request
    group = body.get("logGroupName", "")
    if action == "GetLogEvents":
        stream = body.get("logStreamName", "")
        return [
            Request("logs:GetLogEvents", _arn("logs", f"log-group:{group}:log-stream:{stream}"))
        ]
    if action in {"FilterLogEvents", "DescribeLogStreams"}:
        return [Request(f"logs:{action}", _arn("logs", f"log-group:{group}:*"))]
    return []


def _requests_s3(method: str, path: str) -> list[Any]:
    """S3 REST calls (path-style, as boto3 addresses an IP endpoint) -> actions and ARNs."""
    Request = iam_policy.Request
    parsed = urllib.parse.urlparse(path)
    query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
    bucket, _, key = urllib.parse.unquote(parsed.path.lstrip("/")).partition("/")
    if not bucket:
        return []
    if key:
        if method in {"GET", "HEAD"} and not (set(query) - {"versionId", "partNumber"}):
            return [Request("s3:GetObject", f"arn:aws:s3:::{bucket}/{key}")]
        if method == "PUT" and not query:
            return [Request("s3:PutObject", f"arn:aws:s3:::{bucket}/{key}")]
        return []
    context: dict[str, str] = {}
    if "prefix" in query:
        context["s3:prefix"] = query["prefix"][0]
    if method == "HEAD" or (
        method == "GET"
        and set(query)
        <= {
            "list-type",
            "prefix",
            "max-keys",
            "continuation-token",
            "delimiter",
            "start-after",
            "encoding-type",
        }
    ):
        return [Request("s3:ListBucket", f"arn:aws:s3:::{bucket}", context)]
    return []


def requests_of(iam_request: Any) -> list[Any]:
    """The authorizations one request needs; [] when this module does not map the call."""
    service, _, action = iam_request._action.partition(":")
    body = iam_request._body or b""
    if isinstance(body, str):
        body = body.encode()
    if service == "s3":
        return _requests_s3(iam_request._method, iam_request._path)
    if service == "ecs":
        return _requests_ecs(action, json.loads(body or b"{}"))
    if service == "logs":
        return _requests_logs(action, json.loads(body or b"{}"))
    if service == "autoscaling":
        form = urllib.parse.parse_qs(body.decode()) or {
            k: [str(x) for x in v] if isinstance(v, list) else [str(v)]
            for k, v in (iam_request._data or {}).items()
        }
        return _requests_autoscaling(action, form)
    if service == "ec2" and action.startswith("Describe"):
        # EC2's Describe* actions have no resource-level permissions: only "*" grants them.
        return [iam_policy.Request(f"ec2:{action}", "*")]
    return []


def _document(policy: Any) -> Any:
    """A policy as collect_policies returns it: a managed Policy, JSON text or a parsed dict."""
    if isinstance(policy, dict) and "Statement" in policy:
        return policy
    return IAMPolicy(policy)._policy_json


def check_action_permitted(self: Any, resource: str) -> None:
    """moto found the caller; now decide as IAM would (see the module docstring)."""
    if self._action == "sts:GetCallerIdentity":  # AWS never denies it
        return
    statements = iam_policy.statements_of(_document(p) for p in self._access_key.collect_policies())
    needed = requests_of(self)
    mapped = bool(needed)
    if not mapped:  # judged on "*": allowed only by a statement that allows any resource
        needed = [iam_policy.Request(self._action, "*")]
    allowed = True
    for request in needed:
        context = {"aws:SecureTransport": "true", **request.context}  # AWS callers use HTTPS
        decision = iam_policy.evaluate(
            statements, iam_policy.Request(request.action, request.resource, context)
        )
        allowed = allowed and decision == iam_policy.ALLOW
        record(
            IAM_LOG,
            {
                "principal": self._access_key.arn,
                "call": self._action,
                "action": request.action,
                "resource": request.resource,
                "context": request.context,
                "mapped": mapped,
                "decision": decision,
            },
        )
    if not allowed:
        self._raise_access_denied()
    if FREEZE_ON_PUT and any(
        r.action == "s3:PutObject" and r.resource.endswith(FREEZE_ON_PUT) for r in needed
    ):
        freeze_caller(self._access_key.arn)


def freeze_caller(principal: str) -> None:
    """Pause the container whose task role session made this call (its session is the task id).

    The request itself completes: the container stays frozen before it sees the answer, so a test
    can act between "the result is written" and "the container exits".
    """
    session = principal.rsplit("/", maxsplit=1)[-1]
    with _lock:
        for arn, container in _containers.items():
            if arn.endswith(session):
                os.killpg(container.process.pid, signal.SIGSTOP)
                record(EVENT_LOG, {"op": "container_frozen", "task_arn": arn})


InstanceBackend.terminate_instances = terminate_instances  # type: ignore[method-assign]
EC2ContainerServiceBackend.run_task = run_task  # type: ignore[method-assign]
EC2ContainerServiceBackend.stop_task = stop_task  # type: ignore[method-assign]
EC2ContainerServiceBackend.list_container_instances = list_container_instances  # type: ignore[method-assign]
EC2ContainerServiceResponse.run_task = response_run_task  # type: ignore[method-assign]
AutoScalingBackend.set_desired_capacity = set_desired_capacity  # type: ignore[method-assign,assignment]
TaskDefinition.create_from_cloudformation_json = classmethod(task_definition_from_cloudformation)  # type: ignore[method-assign,assignment]
IAMRequestBase.check_action_permitted = check_action_permitted  # type: ignore[method-assign]


def main() -> int:
    port = int(sys.argv[1])
    _state["endpoint"] = f"http://127.0.0.1:{port}"
    cfn_moto.apply_patches()
    cfn_moto.seed_windows_ami(REGION)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    print(f"READY {port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    with _lock:
        for container in list(_containers.values()):
            container.signal(signal.SIGKILL)
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
