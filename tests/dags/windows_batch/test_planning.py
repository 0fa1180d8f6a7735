"""plan_tasks' own checks (planning.py), the catalog of studies, the manifest and its chunks.

The engine refuses, naming the field, before anything starts: unknown fields, a bucket other
than the deployment's, a key prefix with '.' or '..' parts, more chunks than Airflow maps, a
chunk that cannot end before its deadline, a task bigger than any instance, a command this
machine does not have (local backend), a run id that cannot name a folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from windows_batch import catalog, manifest, planning
from windows_batch import settings as settings_mod
from windows_batch.dag_factory import load_study
from windows_batch.objects import ObjectError, Objects, local_path
from windows_batch.runs import ChunkRef
from windows_batch.study import StudyError

REPO = Path(__file__).resolve().parents[3]
WORKLOADS = REPO / "tests" / "workloads" / "studies"
SHIPPED = REPO / "dags" / "studies"
RUN = "manual__2026-01-02T03:04:05+00:00"


def settings(tmp_path: Path, **extra: str) -> settings_mod.Settings:
    env = {
        "AIRFLOW__WINDOWS_BATCH__BACKEND": "local",
        "AIRFLOW__WINDOWS_BATCH__LOCAL_ROOT": str(tmp_path / "buckets"),
        "AIRFLOW__WINDOWS_BATCH__CACHE_DIR": str(tmp_path / "cache"),
    }
    env.update({f"AIRFLOW__WINDOWS_BATCH__{k}": v for k, v in extra.items()})
    return settings_mod.load(env)


def study(name: str, s: settings_mod.Settings, folder: Path = WORKLOADS) -> Any:
    return load_study(catalog.study_info(folder / name), s)


def plan(
    s: settings_mod.Settings,
    name: str = "tiny",
    conf: dict[str, Any] | None = None,
    *,
    folder: Path = WORKLOADS,
    run_id: str = RUN,
    write: bool = True,
) -> planning.Planned:
    loaded = study(name, s, folder)
    params = {k: v.value for k, v in loaded.form(s).items()}
    params.update(conf or {})
    return planning.plan_run(loaded, s, params=params, conf=conf or {}, run_id=run_id, write=write)


def test_a_plan_writes_its_manifest_and_one_reference_per_chunk(tmp_path: Path) -> None:
    s = settings(tmp_path)
    planned = plan(s, conf={"Items": 7, "PerChunk": 3})
    assert [len(c) for c in planned.chunks] == [1, 1, 1]  # CHUNK[INT]: a chunk is one command
    assert [ref.items for ref in planned.refs] == [3, 2, 2]
    root = local_path(planned.context.engine_uri + "manifest/", s.local_root)
    lines = (root / "chunks.jsonl").read_bytes()
    for ref in planned.refs:
        entry = json.loads(lines[ref.offset : ref.offset + ref.length])
        assert entry["chunk"] == ref.chunk
    header = json.loads((root / "header.json").read_text())
    assert header["work_items"] == 7
    assert header["outputs_uri"] == planned.plan.outputs_uri


def test_a_python_study_is_chunked_by_the_engine_past_airflow_s_map_length(tmp_path: Path) -> None:
    s = settings(tmp_path, MAX_MAP_LENGTH="16")
    conf = {"num_tasks": 40, "ebn0_db": [0, 2], "max_bits_per_task": 10_000, "target_errors": 0}
    planned = plan(s, "bersim", conf, folder=SHIPPED, write=False)
    assert len(planned.plan.items) == 40
    assert len(planned.chunks) <= 16
    assert sorted(i.index for c in planned.chunks for i in c) == list(range(40))
    # Below the map length, one task per chunk: the BER study's runs are as they were.
    small = plan(settings(tmp_path), "bersim", {"num_tasks": 12}, folder=SHIPPED, write=False)
    assert [len(c) for c in small.chunks] == [1] * 12


def test_more_chunks_than_airflow_maps_is_refused_naming_the_field(tmp_path: Path) -> None:
    s = settings(tmp_path, MAX_MAP_LENGTH="4")
    with pytest.raises(StudyError, match=r"^work: 5 chunks need 5 Airflow task instances.*4"):
        plan(s, conf={"Items": 10, "PerChunk": 2}, write=False)


def test_a_chunk_that_cannot_finish_before_its_deadline_is_refused(tmp_path: Path) -> None:
    s = settings(tmp_path, TASK_TIMEOUT_S="600")
    conf = {"num_tasks": 8, "ebn0_db": [20], "max_bits_per_task": 10**11, "target_errors": 0}
    with pytest.raises(
        StudyError, match=r"^max_bits_per_task: the longest task is expected to run"
    ):
        plan(s, "bersim", conf, folder=SHIPPED, write=False)


def test_a_study_bigger_than_any_instance_is_refused_before_anything_scales(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "studies"
    shutil.copytree(WORKLOADS / "tiny", folder / "tiny")
    (folder / "tiny" / "study.yaml").write_text(yaml.safe_dump({"memory_mib": 32768}))
    with pytest.raises(StudyError, match=r"^memory_mib: study.yaml: a task asks for 1024 CPU"):
        plan(settings(tmp_path), folder=folder, write=False)


def test_a_command_this_machine_does_not_have_is_refused_on_the_local_backend(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "studies"
    shutil.copytree(WORKLOADS / "tiny", folder / "tiny")
    path = folder / "tiny" / "template.yaml"
    path.write_text(path.read_text().replace("command: python", "command: powershell-7-only"))
    with pytest.raises(StudyError, match=r"command 'powershell-7-only' cannot run on this machine"):
        plan(settings(tmp_path), folder=folder, write=False)


@pytest.mark.parametrize(
    ("conf", "field"),
    [
        pytest.param({"Itemz": 3}, "Itemz", id="unknown-field"),
        pytest.param({"cluster_size": 99}, "cluster_size", id="cluster-too-big"),
        pytest.param({"max_failed_tasks": "lots"}, "max_failed_tasks", id="bad-budget"),
        pytest.param({"max_failed_tasks": "120%"}, "max_failed_tasks", id="budget-over-100"),
    ],
)
def test_engine_fields_are_checked_naming_the_field(
    tmp_path: Path, conf: dict[str, Any], field: str
) -> None:
    with pytest.raises(StudyError, match=rf"^{field}: "):
        plan(settings(tmp_path), conf=conf, write=False)


@pytest.mark.parametrize(
    "prefix",
    ["sim/../../etc", "sim/./x", "..", "sim/..", "./sim"],
)
def test_key_prefixes_with_dot_parts_are_refused_by_name(tmp_path: Path, prefix: str) -> None:
    with pytest.raises(StudyError, match=r"^s3_prefix_task_results: .*'\.' or '\.\.' part"):
        plan(
            settings(tmp_path),
            "bersim",
            {"s3_prefix_task_results": prefix},
            folder=SHIPPED,
            write=False,
        )


def test_a_run_id_that_cannot_name_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StudyError, match=r"^run_id: '\.\.'"):
        plan(settings(tmp_path), run_id="..", write=False)


def test_on_aws_only_the_deployment_s_bucket_and_the_study_s_prefix(tmp_path: Path) -> None:
    s = settings_mod.load(
        {
            "AIRFLOW__WINDOWS_BATCH__S3_BUCKET": "results",
            "AIRFLOW__WINDOWS_BATCH__CACHE_DIR": str(tmp_path / "cache"),
        }
    )
    with pytest.raises(StudyError, match=r"^s3_bucket: 'other' is not this deployment"):
        plan(s, "bersim", {"s3_bucket": "other"}, folder=SHIPPED, write=False)
    with pytest.raises(
        StudyError, match=r"^s3_prefix_aggregate_results: 'elsewhere' is outside sim/"
    ):
        plan(
            s,
            "bersim",
            {"s3_bucket": "results", "s3_prefix_aggregate_results": "elsewhere"},
            folder=SHIPPED,
            write=False,
        )


def test_the_local_store_never_leaves_its_root(tmp_path: Path) -> None:
    with pytest.raises(ObjectError):
        local_path("s3://b/a/../../../etc/passwd", tmp_path)
    with pytest.raises(ObjectError):
        local_path("s3://../x", tmp_path)
    assert local_path("s3://b/k/x.txt", tmp_path) == (tmp_path / "b" / "k" / "x.txt").resolve()


def test_chunk_sizes() -> None:
    # As few items per chunk as the map length allows.
    assert manifest.chunk_size(items=10_000, max_chunks=1024) == 10
    assert manifest.chunk_size(items=200, max_chunks=1024) == 1
    # A target runtime: about target / item seconds, but no fewer chunks than slots.
    assert (
        manifest.chunk_size(items=10_000, max_chunks=1024, item_s=2, target_s=100, slots=30) == 50
    )
    assert manifest.chunk_size(items=60, max_chunks=1024, item_s=2, target_s=100, slots=30) == 2


def test_progress_counts_from_two_listings(tmp_path: Path) -> None:
    s = settings(tmp_path)
    objects = Objects(s)
    engine = f"s3://b/studies/t/_engine/{RUN}/"
    for number, count in [(0, 50), (1, 50), (2, 50)]:
        objects.write(engine + manifest.done_key(number, count), b"{}")
    objects.write(
        engine + "chunks/failed/00003.json", json.dumps({"done": 10, "failed": 1}).encode()
    )
    objects.write(engine + "chunks/failed/00001.json", b"{}")  # an earlier try; done since
    found = manifest.progress(objects, engine)
    assert (found.chunks_done, found.items_done) == (3, 160)
    assert (found.chunks_failed, found.items_failed, found.failed_chunks) == (1, 1, (3,))


def test_chunk_references_from_xcom_are_checked() -> None:
    good = {"chunk": 3, "at": "10:20", "sha": "a" * 64, "items": 5}
    ref = ChunkRef.parse(good)
    assert ref.command("s3://b/p/manifest/") == [
        "run",
        "--manifest",
        "s3://b/p/manifest/",
        "--chunk",
        "3",
        "--at",
        "10:20",
        "--sha",
        "a" * 64,
    ]
    for bad in (
        {**good, "chunk": -1},
        {**good, "at": "x:1"},
        {**good, "sha": "not-a-digest"},
        {**good, "chunk": "3; rm -rf /"},
        "nonsense",
    ):
        with pytest.raises(ValueError, match="not a chunk reference"):
            ChunkRef.parse(bad)


def test_catalog_reads_study_settings_and_refuses_bad_ones(tmp_path: Path) -> None:
    shipped = catalog.discover(SHIPPED, docker_dir=REPO / "docker")
    ber = next(s for s in shipped if s.name == "bersim")
    assert (ber.dag_id, ber.results_prefix, ber.final_exit_codes) == (
        "windows-batch-compute-dag",
        "sim",
        (2, 3),
    )
    assert ber.image_dir == REPO / "docker" / "bersim"
    assert ber.kind == "python"
    folder = tmp_path / "studies" / "x"
    shutil.copytree(WORKLOADS / "tiny", folder)
    for raw, message in [
        ({"cpu": "lots"}, r"cpu: 'lots' is not a whole number"),
        ({"unknown": 1}, r"unknown setting\(s\) unknown"),
        ({"results_prefix": "_engine/x"}, r"'_engine/x' is not a key prefix"),
        ({"results_prefix": "../up"}, r"is not a key prefix"),
        ({"max_failed_tasks": "half"}, r"max_failed_tasks: 'half'"),
        ({"image": "missing-folder"}, r"image: .*missing-folder/Dockerfile does not exist"),
    ]:
        (folder / "study.yaml").write_text(yaml.safe_dump(raw))
        with pytest.raises(catalog.CatalogError, match=message):
            catalog.study_info(folder, docker_dir=REPO / "docker")
    (folder / "study.yaml").unlink()
    (folder / "study.py").write_text("")
    with pytest.raises(catalog.CatalogError, match=r"exactly one of template.yaml"):
        catalog.study_info(folder)


def test_failure_budgets() -> None:
    assert catalog.parse_budget("3", where="x") == catalog.FailureBudget(count=3)
    half = catalog.parse_budget("5%", where="x")
    assert half is not None
    assert half.allowed(200) == 10
    assert catalog.parse_budget("", where="x") is None
