"""Deployment settings, read once at parse time from `AIRFLOW__WINDOWS_BATCH__<KEY>` variables.

On MWAA they are Airflow configuration options in the section `windows_batch` (for example
`windows_batch.cluster_name`), which MWAA exposes to the DAG as environment variables; the
CloudFormation stack sets them. Locally, scripts/local_airflow.py sets the local backend's.
Only `os.environ` is read: no Airflow Variable, no AWS call, nothing slow.

Keys (AIRFLOW__WINDOWS_BATCH__<KEY>; default in brackets):
- BACKEND [ecs]: `ecs` (AWS) or `local` (subprocesses on this machine).
- CLUSTER_NAME [windows-batch]: ECS cluster the tasks run on.
- ASG_NAME [windows-batch]: Auto Scaling group behind the cluster.
- TASK_DEFINITION [bersim]: task definition family (or family:revision, or ARN).
- CONTAINER_NAME [bersim]: the container in the task definition.
- LOG_GROUP [empty: logs not fetched]: CloudWatch log group of the container.
- LOG_STREAM_PREFIX [bersim]: the container's awslogs-stream-prefix.
- S3_BUCKET [empty; local: bersim-local]: the form's default bucket; on the ECS backend the only
  bucket a study may use (the task role may write nothing else), under RESULTS_PREFIX.
- SLOTS_PER_INSTANCE [3]: tasks that fit on one instance at once (ecs.yaml's default for c5.xlarge).
- MAX_CLUSTER_SIZE [10]: the largest cluster_size the form allows (the group's MaxSize).
- MAX_PARALLEL_TASKS [MAX_CLUSTER_SIZE x SLOTS_PER_INSTANCE]: simulations started at once.
- AWS_CONN_ID [aws_default]: the Airflow connection for AWS.
- REGION [the connection's]: AWS region.
- LOCAL_ROOT [<repo>/.local/buckets]: local backend: the directory standing in for S3.
- WAITER_DELAY_S [15]: seconds between two status polls of an ECS task.
- SCALE_POKE_INTERVAL_S [30]: seconds between two checks of the cluster size, at most 300: each
  check of scale_out keeps the idle alarm quiet for its minute, and the alarm fires after
  IdleScaleInMinutes (at least 10) minutes without one.
- CAPACITY_RETRY_S [30]: wait before calling RunTask again when the cluster had no room.
- DEFER_SETTLE_S [10]: the least time a task stays off its worker slot (deferred, or rescheduled
  by a sensor) before it may resume. Airflow 3.3.1 can fail a task whose trigger fires before
  the scheduler has read the worker's report of the deferral ("state mismatch", apache/airflow
  #72716); seconds of waiting avoid it (see windows_batch_triggers/deadline.py).
- TASK_CPU [1024], TASK_MEMORY_MIB [1536]: what one task's container reserves (ecs.yaml's TaskCpu,
  TaskMemoryInMiB); RESERVED_MEMORY_MIB [2048]: ECS_RESERVED_MEMORY of the instances. A task
  no instance type of the group can hold is refused before anything scales (capacity.py).
- TASK_TIMEOUT_S [7200]: deadline of each try of simulate/aggregate, from the try's start, across
  every deferral (its waits for room included); the ECS task is stopped at it.
- RETRIES [2], RETRY_DELAY_S [60]: Airflow retries per task and the wait before one.
- RUN_NOTE [off; local: api]: how `aggregate` sets the run note: `api` (this Airflow's REST
  API at AIRFLOW__API__BASE_URL), `mwaa` (mwaa:InvokeRestApi), `off`.
- MWAA_ENVIRONMENT [empty]: the MWAA environment's name, for RUN_NOTE=mwaa.
- Cost and estimate (INSTANCE_TYPES, PURCHASE_OPTION, PRICES, BOOT_S, PULL_S, ...): see
  windows_batch/cost.py, which reads them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from windows_batch.capacity import Size
from windows_batch.cost import CostSettings, CostSettingsError, load_cost_settings

PREFIX = "AIRFLOW__WINDOWS_BATCH__"
BACKENDS = ("ecs", "local")
# The key prefix the ECS task role may read and write (cloudformation/ecs.yaml, TaskRole).
RESULTS_PREFIX = "sim"
RUN_NOTE_MODES = ("off", "api", "mwaa")
# dags/windows_batch/settings.py -> the repository root (only meaningful in a checkout).
_REPO = Path(__file__).resolve().parent.parent.parent


class SettingsError(ValueError):
    """A deployment setting has a value the DAG cannot use."""


@dataclass(frozen=True)
class Settings:
    """The deployment settings (see the module docstring for keys and defaults)."""

    backend: str
    cluster_name: str
    asg_name: str
    task_definition: str
    container_name: str
    log_group: str
    log_stream_prefix: str
    s3_bucket: str
    slots_per_instance: int
    max_cluster_size: int
    max_parallel_tasks: int
    aws_conn_id: str
    region: str | None
    local_root: Path
    waiter_delay_s: int
    scale_poke_interval_s: int
    capacity_retry_s: int
    defer_settle_s: int
    task_cpu: int
    task_memory_mib: int
    reserved_memory_mib: int
    task_timeout_s: int
    retries: int
    retry_delay_s: int
    run_note: str
    mwaa_environment: str
    cost: CostSettings

    @property
    def results_bucket_only(self) -> str | None:
        """The one bucket a study may write on this backend: ECS tasks run with a task role
        that may write only the deployment's results bucket under RESULTS_PREFIX; None (any
        bucket) for the local backend."""
        return self.s3_bucket if self.backend == "ecs" else None

    @property
    def task_size(self) -> Size:
        """What one task's container reserves on an instance."""
        return Size(self.task_cpu, self.task_memory_mib)

    @property
    def log_stream_prefix_for_operator(self) -> str:
        """`awslogs_stream_prefix` as EcsRunTaskOperator wants it: `<prefix>/<container>`.

        ECS names a container's stream `<prefix>/<container>/<task id>`; the operator appends
        `/<task id>` (and the container name only when the prefix does not already end with it).
        """
        return f"{self.log_stream_prefix}/{self.container_name}"


def _int(env: Mapping[str, str], key: str, default: int, *, low: int, high: int) -> int:
    raw = env.get(PREFIX + key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{PREFIX}{key}={raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise SettingsError(f"{PREFIX}{key}={value} is outside [{low}, {high}]")
    return value


def _str(env: Mapping[str, str], key: str, default: str) -> str:
    return env.get(PREFIX + key, "").strip() or default


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from `environ` (default: os.environ); raise SettingsError if invalid."""
    env = os.environ if environ is None else environ
    backend = _str(env, "BACKEND", "ecs").lower()
    if backend not in BACKENDS:
        raise SettingsError(f"{PREFIX}BACKEND={backend!r}: use one of {', '.join(BACKENDS)}")
    local = backend == "local"
    slots = _int(env, "SLOTS_PER_INSTANCE", 3, low=1, high=256)
    max_cluster = _int(env, "MAX_CLUSTER_SIZE", 10, low=1, high=1000)
    run_note = _str(env, "RUN_NOTE", "api" if local else "off").lower()
    if run_note not in RUN_NOTE_MODES:
        raise SettingsError(
            f"{PREFIX}RUN_NOTE={run_note!r}: use one of {', '.join(RUN_NOTE_MODES)}"
        )
    return Settings(
        backend=backend,
        cluster_name=_str(env, "CLUSTER_NAME", "windows-batch"),
        asg_name=_str(env, "ASG_NAME", "windows-batch"),
        task_definition=_str(env, "TASK_DEFINITION", "bersim"),
        container_name=_str(env, "CONTAINER_NAME", "bersim"),
        log_group=_str(env, "LOG_GROUP", ""),
        log_stream_prefix=_str(env, "LOG_STREAM_PREFIX", "bersim"),
        s3_bucket=_str(env, "S3_BUCKET", "bersim-local" if local else ""),
        slots_per_instance=slots,
        max_cluster_size=max_cluster,
        max_parallel_tasks=_int(
            env, "MAX_PARALLEL_TASKS", max_cluster * slots, low=1, high=100_000
        ),
        aws_conn_id=_str(env, "AWS_CONN_ID", "aws_default"),
        region=_str(env, "REGION", "") or None,
        local_root=Path(_str(env, "LOCAL_ROOT", str(_REPO / ".local" / "buckets"))),
        waiter_delay_s=_int(env, "WAITER_DELAY_S", 15, low=1, high=3600),
        scale_poke_interval_s=_int(env, "SCALE_POKE_INTERVAL_S", 30, low=1, high=300),
        capacity_retry_s=_int(env, "CAPACITY_RETRY_S", 30, low=1, high=3600),
        defer_settle_s=_int(env, "DEFER_SETTLE_S", 10, low=0, high=600),
        # ecs.yaml's TaskCpu, TaskMemoryInMiB and ReservedMemoryInMiB bounds.
        task_cpu=_int(env, "TASK_CPU", 1024, low=128, high=16384),
        task_memory_mib=_int(env, "TASK_MEMORY_MIB", 1536, low=512, high=65536),
        reserved_memory_mib=_int(env, "RESERVED_MEMORY_MIB", 2048, low=0, high=16384),
        task_timeout_s=_int(env, "TASK_TIMEOUT_S", 7200, low=10, high=7 * 24 * 3600),
        retries=_int(env, "RETRIES", 2, low=0, high=20),
        retry_delay_s=_int(env, "RETRY_DELAY_S", 60, low=0, high=24 * 3600),
        run_note=run_note,
        mwaa_environment=_str(env, "MWAA_ENVIRONMENT", ""),
        cost=_cost(env, backend),
    )


def _cost(env: Mapping[str, str], backend: str) -> CostSettings:
    try:
        return load_cost_settings(env, backend=backend)
    except CostSettingsError as exc:
        raise SettingsError(str(exc)) from None
