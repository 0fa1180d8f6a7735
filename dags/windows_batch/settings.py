"""Deployment settings, read once at parse time from `AIRFLOW__WINDOWS_BATCH__<KEY>` variables.

On MWAA they are Airflow configuration options in the section `windows_batch` (for example
`windows_batch.cluster_name`), which MWAA exposes to the DAG as environment variables; the
CloudFormation stack sets them. Locally, scripts/local_airflow.py sets the local backend's.
Only `os.environ` is read: no Airflow Variable, no AWS call, nothing slow.

Keys (AIRFLOW__WINDOWS_BATCH__<KEY>; default in brackets):
- BACKEND [ecs]: `ecs` (AWS) or `local` (the study's commands run on this machine).
- STUDIES_DIR [<dags folder>/studies]: where the study folders are (catalog.py).
- CLUSTER_NAME [windows-batch]: ECS cluster the tasks run on.
- ASG_NAME [windows-batch]: Auto Scaling group behind the cluster.
- TASK_FAMILY_PREFIX [windows-batch-study-]: a study's task definition family is this prefix and
  the study's name (the deployer's study stacks, cloudformation/study.yaml).
- CONTAINER_NAME [task]: the container in every study's task definition.
- LOG_GROUP [empty: logs not fetched]: CloudWatch log group of the containers; each study's
  streams start with its name.
- S3_BUCKET [empty; local: windows-batch-local]: the results bucket; on the ECS backend the only
  bucket a study may use (its task role may write nothing else), under the study's prefix.
- INSTANCE_SIZES [the table in capacity.py]: `type=vCPUs/MiB,...` of the group's types.
- RESERVED_MEMORY_MIB [2048]: the agent's ECS_RESERVED_MEMORY (ecs.yaml ReservedMemoryInMiB).
- MAX_CLUSTER_SIZE [10]: the largest cluster_size the form allows (the group's MaxSize).
- MAX_PARALLEL_TASKS [0: MAX_CLUSTER_SIZE x the study's tasks per instance]: chunks started at
  once per run.
- MAX_MAP_LENGTH [AIRFLOW__CORE__MAX_MAP_LENGTH, else 1024]: Airflow's `[core] max_map_length`
  as deployed: the most chunks (Airflow task instances) a run's fan-out may have.
- MAX_ITEMS [100000]: the most work items one run may plan.
- RUN_TASK_RATE [10]: RunTask calls per second the fan-out may make (ECS throttles RunTask).
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
- TASK_TIMEOUT_S [7200]: deadline of each try of a chunk or the aggregate, from the try's start,
  across every deferral (its waits for room included); the ECS task is stopped at it.
- RETRIES [2], RETRY_DELAY_S [60]: Airflow retries per task and the wait before one.
- RUN_NOTE [off; local: api]: how the engine sets the run note: `api` (this Airflow's REST
  API at AIRFLOW__API__BASE_URL), `mwaa` (mwaa:InvokeRestApi), `off`.
- MWAA_ENVIRONMENT [empty]: the MWAA environment's name, for RUN_NOTE=mwaa.
- Cost and estimate (INSTANCE_TYPES, PURCHASE_OPTION, PRICES, BOOT_S, PULL_S, the warm pool's
  WARM_POOL_SIZE, WARM_START_S, ROOT_VOLUME_GIB, ...): see windows_batch/cost.py, which reads
  them. With WARM_POOL_SIZE above 0 scale_out also reads the pool (cluster.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from windows_batch.capacity import CapacityError, InstanceSize, parse_sizes
from windows_batch.cost_settings import CostSettings, CostSettingsError, load_cost_settings

PREFIX = "AIRFLOW__WINDOWS_BATCH__"
BACKENDS = ("ecs", "local")
RUN_NOTE_MODES = ("off", "api", "mwaa")
DEFAULT_MAX_MAP_LENGTH = 1024
"""Airflow's own default of `[core] max_map_length`."""
# dags/windows_batch/settings.py -> dags/ and the repository root (meaningful in a checkout).
_DAGS = Path(__file__).resolve().parent.parent
_REPO = _DAGS.parent


class SettingsError(ValueError):
    """A deployment setting has a value the DAG cannot use."""


@dataclass(frozen=True)
class Settings:
    """The deployment settings (see the module docstring for keys and defaults)."""

    backend: str
    studies_dir: Path
    cluster_name: str
    asg_name: str
    task_family_prefix: str
    container_name: str
    log_group: str
    s3_bucket: str
    instance_sizes: dict[str, InstanceSize]
    reserved_memory_mib: int
    max_cluster_size: int
    max_parallel_tasks: int
    max_map_length: int
    max_items: int
    run_task_rate: float
    aws_conn_id: str
    region: str | None
    local_root: Path
    waiter_delay_s: int
    scale_poke_interval_s: int
    capacity_retry_s: int
    defer_settle_s: int
    task_timeout_s: int
    retries: int
    retry_delay_s: int
    run_note: str
    mwaa_environment: str
    cost: CostSettings

    @property
    def local(self) -> bool:
        return self.backend == "local"

    @property
    def results_bucket_only(self) -> str | None:
        """The one bucket a study may write on this backend: ECS tasks run with a task role
        that may write only the deployment's results bucket under the study's prefix; None
        (any bucket) for the local backend."""
        return self.s3_bucket if self.backend == "ecs" else None

    def log_stream_prefix_for_operator(self, study_name: str) -> str:
        """`awslogs_stream_prefix` as EcsRunTaskOperator wants it: `<study>/<container>`.

        ECS names a container's stream `<prefix>/<container>/<task id>`; the operator appends
        `/<task id>` (and the container name only when the prefix does not already end with it).
        """
        return f"{study_name}/{self.container_name}"

    def parallel_tasks(self, slots_per_instance: int) -> int:
        """Chunks of one run started at once: the setting, else the largest cluster's slots."""
        return self.max_parallel_tasks or self.max_cluster_size * slots_per_instance


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
    max_cluster = _int(env, "MAX_CLUSTER_SIZE", 10, low=1, high=1000)
    try:
        sizes = parse_sizes(_str(env, "INSTANCE_SIZES", ""))
    except CapacityError as exc:
        raise SettingsError(f"{PREFIX}{exc}") from None
    raw_map = env.get("AIRFLOW__CORE__MAX_MAP_LENGTH", "").strip()
    map_env = {PREFIX + "MAX_MAP_LENGTH": raw_map} if raw_map else {}
    rate = _int(env, "RUN_TASK_RATE", 10, low=1, high=1000)
    run_note = _str(env, "RUN_NOTE", "api" if local else "off").lower()
    if run_note not in RUN_NOTE_MODES:
        raise SettingsError(
            f"{PREFIX}RUN_NOTE={run_note!r}: use one of {', '.join(RUN_NOTE_MODES)}"
        )
    return Settings(
        backend=backend,
        studies_dir=Path(_str(env, "STUDIES_DIR", str(_DAGS / "studies"))),
        cluster_name=_str(env, "CLUSTER_NAME", "windows-batch"),
        asg_name=_str(env, "ASG_NAME", "windows-batch"),
        task_family_prefix=_str(env, "TASK_FAMILY_PREFIX", "windows-batch-study-"),
        container_name=_str(env, "CONTAINER_NAME", "task"),
        log_group=_str(env, "LOG_GROUP", ""),
        s3_bucket=_str(env, "S3_BUCKET", "windows-batch-local" if local else ""),
        instance_sizes=sizes,
        reserved_memory_mib=_int(env, "RESERVED_MEMORY_MIB", 2048, low=0, high=65536),
        max_cluster_size=max_cluster,
        max_parallel_tasks=_int(env, "MAX_PARALLEL_TASKS", 0, low=0, high=100_000),
        max_map_length=_int(
            {**env, **map_env}, "MAX_MAP_LENGTH", DEFAULT_MAX_MAP_LENGTH, low=1, high=100_000
        ),
        max_items=_int(env, "MAX_ITEMS", 100_000, low=1, high=10_000_000),
        run_task_rate=float(rate),
        aws_conn_id=_str(env, "AWS_CONN_ID", "aws_default"),
        region=_str(env, "REGION", "") or None,
        local_root=Path(_str(env, "LOCAL_ROOT", str(_REPO / ".local" / "buckets"))),
        waiter_delay_s=_int(env, "WAITER_DELAY_S", 15, low=1, high=3600),
        scale_poke_interval_s=_int(env, "SCALE_POKE_INTERVAL_S", 30, low=1, high=300),
        capacity_retry_s=_int(env, "CAPACITY_RETRY_S", 30, low=1, high=3600),
        defer_settle_s=_int(env, "DEFER_SETTLE_S", 10, low=0, high=600),
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
