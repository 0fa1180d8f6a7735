"""tests/dags/moto_ecs_server.py with the faults the deadline tests need, switched on by env.

A container is picked by the chunk its command runs (`run --manifest ... --chunk N ...`, the
engine's task runner): the aggregate (`aggregate --manifest ...`) is never picked.

- MOTO_HANG_CHUNKS (comma-separated): the container of such a chunk never exits by itself (it
  sleeps); only StopTask ends it (SIGTERM, exit 143).
- MOTO_RECLAIM_CHUNKS (comma-separated): the first container of such a chunk (one that would
  not finish by itself) loses its host after MOTO_RECLAIM_AFTER_S (default 2) seconds, as when
  EC2 reclaims a Spot instance: the EC2 instance is terminated, so every container on it is
  killed and its task STOPPED with ECS's stoppedReason "Host EC2 (instance i-...) terminated.",
  and the Auto Scaling group replaces the instance (moto_ecs_server.py's health check).
  Later containers of the chunk run the task runner.
- MOTO_UNHEALTHY_INSTANCES=N: the first N instances of a group fail their health check as
  their container instance registers (the group marks them Unhealthy, as a failed EC2 status
  check or a reclaimed Spot instance does); the server's Auto Scaling then replaces each one
  (see moto_ecs_server.py: Terminating with the agent still connected, terminated, removed).

    python tests/dags/moto_ecs_faults.py PORT      # prints "READY <port>" when serving
"""

from __future__ import annotations

import importlib.util
import os
import stat
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("moto_ecs_server", HERE / "moto_ecs_server.py")
assert _spec is not None
assert _spec.loader is not None
server = importlib.util.module_from_spec(_spec)
sys.modules["moto_ecs_server"] = server
_spec.loader.exec_module(server)

from moto.autoscaling.models import autoscaling_backends  # noqa: E402
from moto.ec2.models import ec2_backends  # noqa: E402

HANG = {int(x) for x in os.environ.get("MOTO_HANG_CHUNKS", "").split(",") if x.strip()}
RECLAIM = {int(x) for x in os.environ.get("MOTO_RECLAIM_CHUNKS", "").split(",") if x.strip()}
RECLAIM_AFTER_S = float(os.environ.get("MOTO_RECLAIM_AFTER_S", "2"))
UNHEALTHY = int(os.environ.get("MOTO_UNHEALTHY_INSTANCES", "0"))
_reclaimed: set[int] = set()
_unhealthy: list[str] = []


def _hang_entrypoint() -> Path:
    script = Path(tempfile.mkdtemp(prefix="moto-hang-")) / "hang.sh"
    script.write_text('#!/bin/bash\necho "wbrun (hung): $*"\nexec sleep 86400\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


_HANG_ENTRYPOINT = _hang_entrypoint()
_original_container_init = server.Container.__init__


def chunk_of(command: list[str]) -> int | None:
    """The chunk a container command runs (`run ... --chunk N`), None for anything else."""
    if command[:1] == ["run"] and "--chunk" in command:
        return int(command[command.index("--chunk") + 1])
    return None


def _chunk(task: Any) -> int | None:
    for override in (task.overrides or {}).get("containerOverrides", []):
        found = chunk_of([str(a) for a in override.get("command") or []])
        if found is not None:
            return found
    return None


def _lose_host(container: Any) -> None:
    """The instance under the container is terminated (the server stops its tasks)."""
    hosts = [
        ci.ec2_instance_id
        for cis in container.backend.container_instances.values()
        for ci in cis.values()
        if ci.container_instance_arn == container.task.container_instance_arn
    ]
    assert hosts, f"no container instance for {container.task.task_arn}"
    server.record(server.EVENT_LOG, {"op": "reclaim_instance", "instance": hosts[0]})
    ec2_backends[server.ACCOUNT][server.REGION].terminate_instances(hosts)


def container_init(self: Any, backend: Any, task: Any) -> None:
    """Start the container; a hung chunk gets a process that only StopTask ends."""
    chunk = _chunk(task)
    reclaim = chunk in RECLAIM and chunk not in _reclaimed
    if reclaim:
        _reclaimed.add(chunk)
        timer = threading.Timer(RECLAIM_AFTER_S, _lose_host, args=(self,))
        timer.daemon = True
    elif chunk not in HANG:
        _original_container_init(self, backend, task)
        return
    entrypoint = server.ENTRYPOINT
    server.ENTRYPOINT = _HANG_ENTRYPOINT  # run_task holds the server's lock meanwhile
    try:
        _original_container_init(self, backend, task)
    finally:
        server.ENTRYPOINT = entrypoint
    if reclaim:
        timer.start()


_original_register = server.EC2ContainerServiceBackend.register_container_instance


def register_container_instance(self: Any, cluster_str: str, ec2_instance_id: str) -> Any:
    """Register; the first UNHEALTHY instances fail their health check right then."""
    registered = _original_register(self, cluster_str, ec2_instance_id)
    if len(_unhealthy) < UNHEALTHY:
        _unhealthy.append(ec2_instance_id)
        backend = autoscaling_backends[server.ACCOUNT][server.REGION]
        backend.set_instance_health(ec2_instance_id, "Unhealthy")
        server.record(server.EVENT_LOG, {"op": "unhealthy", "instance": ec2_instance_id})
    return registered


server.Container.__init__ = container_init  # type: ignore[method-assign]
server.EC2ContainerServiceBackend.register_container_instance = register_container_instance  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(server.main())
