"""Run a study on this machine with real Airflow and the local backend.

    make run                                     # the BER study (200 tasks), laptop-sized
    make run CONF='{"num_tasks": 20}'            # any trigger-form fields, as JSON
    make run STUDY=option_pricing                # any study folder under dags/studies/
    make run STUDY=option_pricing CONF='{"Batches": 100}'
    make ui                                      # Airflow's UI on http://127.0.0.1:8080

`make run` starts `airflow standalone` (SQLite metadata database and logs under .local/airflow,
the LocalExecutor running tasks in parallel on every core), triggers one run of the study's DAG
through the REST API, shows progress as tasks finish, stops Airflow again and prints the run's
Results view (the "Results" tab of the run's page, open while `make ui` runs). Its last line is
the run's output folder, or, for a study that publishes a plot (the BER study's results.png),
the plot. Results go to .local/buckets/<bucket>/<prefix>/... (the local stand-in for S3, same
keys as on AWS).
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "dags"))

import local_airflow

from windows_batch import catalog
from windows_batch.results import results_view_path

DEFAULT_STUDY = "bersim"
STUDIES = Path(__file__).resolve().parent.parent / "dags" / "studies"
FINISHED = {"success", "failed"}
PLOTS = (".png", ".svg")
_TI_PAGE = 100
DAG_ID = ""
"""The DAG of the study being run (set by main)."""


class ApiError(RuntimeError):
    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"HTTP {status}: {detail}")


def api(base_url: str, method: str, path: str, body: Any = None) -> Any:
    """Call this Airflow's REST API; the decoded body, or ApiError with the server's detail."""
    status, answer = local_airflow.request(base_url, method, path, body)
    if status >= 400:
        detail = answer.get("detail", answer) if isinstance(answer, dict) else answer
        raise ApiError(status, detail if isinstance(detail, str) else json.dumps(detail))
    return answer


def wait_for_dag(base_url: str, timeout_s: float = 120) -> None:
    """Wait until the DAG processor has parsed the DAG, then make sure it is unpaused."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            api(base_url, "GET", f"/dags/{DAG_ID}")
            break
        except ApiError as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                errors = api(base_url, "GET", "/importErrors").get("import_errors", [])
                raise RuntimeError(f"the DAG did not load: {exc}; import errors: {errors}") from exc
            time.sleep(1)
    api(base_url, "PATCH", f"/dags/{DAG_ID}", {"is_paused": False})


def task_states(base_url: str, run_id: str) -> list[dict[str, Any]]:
    run = urllib.parse.quote(run_id, safe="")
    found: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = api(
            base_url,
            "GET",
            f"/dags/{DAG_ID}/dagRuns/{run}/taskInstances?limit={_TI_PAGE}&offset={offset}",
        )
        found += page.get("task_instances", [])
        offset += _TI_PAGE
        if offset >= int(page.get("total_entries", 0)):
            return found


def _count(base_url: str, run: str, **query: str) -> int:
    page = api(
        base_url,
        "GET",
        f"/dags/{DAG_ID}/dagRuns/{run}/taskInstances?limit=1&{urllib.parse.urlencode(query)}",
    )
    return int(page.get("total_entries", 0))


def fan_out_task(base_url: str) -> str:
    """The study's mapped task: the DAG's only task with a mapped index."""
    tasks = api(base_url, "GET", f"/dags/{DAG_ID}/tasks").get("tasks", [])
    mapped = [t["task_id"] for t in tasks if t.get("is_mapped")]
    return mapped[0] if mapped else ""


def progress_line(base_url: str, run_id: str, elapsed_s: float, fan_out: str) -> str:
    """One line of progress; a few small queries (counting, not listing, the mapped tasks)."""
    run = urllib.parse.quote(run_id, safe="")
    singles = api(base_url, "GET", f"/dags/{DAG_ID}/dagRuns/{run}/taskInstances?map_index=-1")
    others = {
        ti["task_id"]: ti.get("state") or "waiting"
        for ti in singles.get("task_instances", [])
        if ti["task_id"] != fan_out
    }
    order = ["finish", "scale_in", *[t for t in others if t not in ENGINE_TASKS], "scale_out"]
    stage = next((t for t in order if others.get(t) not in (None, "waiting")), "plan_tasks")
    total = _count(base_url, run, task_id=fan_out)
    if not total or others.get("scale_out") in (None, "waiting", "scheduled", "queued"):
        sims = f"{fan_out} not started yet"
    else:
        done, failed, running = (
            _count(base_url, run, task_id=fan_out, state=state)
            for state in ("success", "failed", "running")
        )
        sims = f"{fan_out} {done}/{total} done, {failed} failed, {running} running"
    return f"[{elapsed_s:6.0f} s] {sims} | {stage}: {others.get(stage, 'waiting')}"


ENGINE_TASKS = ("plan_tasks", "scale_out", "scale_in", "finish")


def ti_label(ti: dict[str, Any]) -> str:
    index = ti.get("map_index", -1)
    return str(ti["task_id"]) + ("" if index is None or index < 0 else f"[{index}]")


def xcom(base_url: str, run_id: str, task_id: str, key: str) -> Any:
    run = urllib.parse.quote(run_id, safe="")
    try:
        entry = api(
            base_url,
            "GET",
            f"/dags/{DAG_ID}/dagRuns/{run}/taskInstances/{task_id}/xcomEntries/{key}",
        )
    except ApiError:
        return None
    value = entry.get("value")
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def outputs_folder(location: Any, local_root: Path) -> Path | None:
    """The run's local output folder, from plan_tasks' record of where results live."""
    if isinstance(location, str):
        try:
            location = json.loads(location)
        except ValueError:
            return None
    uri = location.get("outputs") if isinstance(location, dict) else None
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        return None
    bucket, _, key = uri[len("s3://") :].partition("/")
    return local_root / bucket / key


def last_line(folder: Path | None) -> Path | None:
    """What `make run` prints last: the run's plot when it published one, else its folder."""
    if folder is None or not folder.is_dir():
        return None
    plots = sorted(p for p in folder.rglob("*") if p.suffix.lower() in PLOTS)
    named = [p for p in plots if p.name == "results.png"]
    return (named or plots or [folder])[0]


def run_study(
    conf: dict[str, Any], *, port: int, parallelism: int | None = None, poll_s: float = 3.0
) -> int:
    env = local_airflow.airflow_env(port=port, parallelism=parallelism)
    local_root = Path(env["AIRFLOW__WINDOWS_BATCH__LOCAL_ROOT"])
    print(f"Airflow home: {env['AIRFLOW_HOME']} (SQLite); results under {local_root}", flush=True)
    local_airflow.migrate(env)
    started = time.monotonic()
    with local_airflow.standalone(env) as base_url:
        print(f"Airflow is up at {base_url} ({time.monotonic() - started:.0f} s)", flush=True)
        wait_for_dag(base_url)
        try:
            run = api(
                base_url, "POST", f"/dags/{DAG_ID}/dagRuns", {"conf": conf, "logical_date": None}
            )
        except ApiError as exc:
            print(f"The study was refused: {exc.detail}", file=sys.stderr, flush=True)
            return 2
        run_id = run["dag_run_id"]
        print(f"Triggered run {run_id} of {DAG_ID}", flush=True)
        triggered = time.monotonic()
        last = ""
        fan_out = fan_out_task(base_url)
        while True:
            state = api(
                base_url, "GET", f"/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
            )["state"]
            line = progress_line(base_url, run_id, time.monotonic() - triggered, fan_out)
            if line.split("]", 1)[1] != last:
                print(line, flush=True)
                last = line.split("]", 1)[1]
            if state in FINISHED:
                break
            time.sleep(poll_s)
        wall_s = time.monotonic() - triggered
        run_path = f"/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
        note = api(base_url, "GET", run_path).get("note")
        folder = outputs_folder(
            xcom(base_url, run_id, "plan_tasks", "results_location"), local_root
        )
        refused = plan_refusal(base_url, run_id)
        errors = [
            ti_label(ti)
            for ti in task_states(base_url, run_id)
            if ti.get("state") in ("failed", "upstream_failed")
        ]
    print(f"Run {run_id}: {state} in {wall_s:.0f} s", flush=True)
    if refused:
        print(f"The study was refused: {refused}", file=sys.stderr, flush=True)
        return 2
    if note:
        print("Run note:\n  " + "\n  ".join(note.splitlines()), flush=True)
    if errors:
        shown = ", ".join(errors[:10]) + (" ..." if len(errors) > 10 else "")
        print(f"Failed tasks: {shown} (logs under {env['AIRFLOW_HOME']}/logs)", flush=True)
    shown_last = last_line(folder)
    if shown_last is None:
        print("The run published no outputs (see the failed tasks above).", flush=True)
        return 1
    view = f"{base_url}/{results_view_path(dag_id=DAG_ID, run_id=run_id)}"
    print(f"Results view (open it while `make ui` runs): {view}", flush=True)
    print(shown_last, flush=True)
    return 0 if state == "success" else 1


def plan_refusal(base_url: str, run_id: str) -> str | None:
    """plan_tasks' "Invalid input: <field>: ..." when it refused the form, else None."""
    run = urllib.parse.quote(run_id, safe="")
    try:
        ti = api(base_url, "GET", f"/dags/{DAG_ID}/dagRuns/{run}/taskInstances/plan_tasks")
    except ApiError:
        return None
    if ti.get("state") != "failed":
        return None
    log_path = Path(local_airflow.DEFAULT_HOME)
    del log_path
    try:
        logs = api(
            base_url,
            "GET",
            f"/dags/{DAG_ID}/dagRuns/{run}/taskInstances/plan_tasks/logs/{ti.get('try_number', 1)}"
            "?full_content=true",
        )
    except ApiError:
        return "plan_tasks failed (see its log)"
    text = json.dumps(logs)
    found = re.search(r"Invalid input: ([^\"\\]+)", text)
    refused = re.search(r"This study cannot run: ([^\"\\]+)", text)
    if found:
        return found.group(1)
    if refused:
        return refused.group(1)
    return "plan_tasks failed (see its log)"


def run_ui(*, port: int) -> int:
    env = local_airflow.airflow_env(port=port)
    local_airflow.migrate(env)
    print("Starting Airflow (about 15 s)...", flush=True)
    with local_airflow.standalone(env) as base_url:
        wait_for_dag(base_url)
        print(f"Airflow is up: {base_url}/dags/{DAG_ID}", flush=True)
        print(
            "Open it, then 'Trigger' (the form). No login needed. Ctrl-C stops Airflow.", flush=True
        )
        print(
            "Results: the Results tab of each run's page; files under "
            f"{env['AIRFLOW__WINDOWS_BATCH__LOCAL_ROOT']}",
            flush=True,
        )
        try:
            signal.pause()
        except KeyboardInterrupt:
            print("\nStopping Airflow...", flush=True)
    return 0


def parse_conf(text: str) -> dict[str, Any]:
    text = text.strip()
    if not text:
        return {}
    try:
        conf = json.loads(text)
    except ValueError as exc:
        raise SystemExit(f"run_local.py: --conf is not valid JSON: {exc}") from None
    if not isinstance(conf, dict):
        raise SystemExit("run_local.py: --conf must be a JSON object such as '{\"num_tasks\": 20}'")
    return conf


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C or a plain `kill` both stop Airflow through standalone()'s clean-up (even when
    # started from a script, where a background job inherits SIGINT as ignored).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--conf", default="", help="trigger-form fields as JSON (make run CONF=...)"
    )
    parser.add_argument(
        "--study", default="", help=f"a study folder under dags/studies/ (default {DEFAULT_STUDY})"
    )
    parser.add_argument("--ui", action="store_true", help="start Airflow's UI until Ctrl-C")
    parser.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080)")
    parser.add_argument(
        "--parallelism",
        type=int,
        default=None,
        help="tasks run at once (default: see local_airflow)",
    )
    args = parser.parse_args(argv)
    global DAG_ID  # noqa: PLW0603 (the one study this process runs)
    name = args.study or DEFAULT_STUDY
    try:
        info = catalog.study_info(STUDIES / name)
    except catalog.CatalogError as exc:
        known = ", ".join(p.name for p in catalog.study_folders(STUDIES))
        raise SystemExit(f"run_local.py: study {name!r}: {exc} (studies: {known})") from None
    DAG_ID = info.dag_id
    if args.ui:
        return run_ui(port=args.port)
    conf = parse_conf(args.conf)
    laptop = {k: v for k, v in info.local_conf.items() if k not in conf}
    if laptop:
        print(
            f"Laptop-sized run of {name} (study.yaml local_conf; the form's defaults are sized "
            "for a cluster): "
            + ", ".join(
                f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}" for k, v in laptop.items()
            )
            + "; set them in CONF to override.",
            flush=True,
        )
    if not conf:
        print(f"No CONF: running study {name} with its form's defaults.", flush=True)
    try:
        return run_study({**laptop, **conf}, port=args.port, parallelism=args.parallelism)
    except KeyboardInterrupt:
        print("Interrupted: Airflow stopped; the run did not finish.", file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
