"""The README's "Bring your own workload" example is a study the engine takes as it is written.

Its job template and its study.yaml are read out of README.md, put in a studies folder, and
loaded, formed and planned by the engine as plan_tasks does on AWS (the command exists only in
the study's image, so the local backend, which runs commands here, would refuse it): the README
cannot drift from what the engine accepts.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from windows_batch import catalog, planning
from windows_batch import settings as settings_mod
from windows_batch.dag_factory import load_study

REPO = Path(__file__).resolve().parents[2]
BUCKET = "results-bucket"


def readme_blocks() -> tuple[str, str]:
    """(template.yaml, study.yaml) of the README's tutorial: its first two YAML blocks."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Bring your own workload") :]
    blocks = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    return blocks[0], blocks[1]


@pytest.fixture
def study_folder(tmp_path: Path) -> Path:
    template, study_yaml = readme_blocks()
    folder = tmp_path / "studies" / "render"
    folder.mkdir(parents=True)
    (folder / "template.yaml").write_text(template)
    settings = yaml.safe_load(study_yaml)
    settings.pop("for_each_file")  # an alternative to the frame range, shown in the same block
    (folder / "study.yaml").write_text(yaml.safe_dump(settings))
    return folder


def test_the_readme_example_loads_forms_and_plans_as_the_engine_runs_it(
    study_folder: Path, tmp_path: Path
) -> None:
    settings = settings_mod.load(
        {
            "AIRFLOW__WINDOWS_BATCH__BACKEND": "ecs",
            "AIRFLOW__WINDOWS_BATCH__S3_BUCKET": BUCKET,
            "AIRFLOW__WINDOWS_BATCH__CACHE_DIR": str(tmp_path / "cache"),
        }
    )
    info = catalog.study_info(study_folder)
    assert (info.dag_id, info.cpu, info.memory_mib) == ("render", 2048, 3072)
    assert info.results_prefix == "studies/render"
    study = load_study(info, settings)
    form = study.form(settings)
    assert {"Scene", "Frames", "cluster_size", "max_failed_tasks"} <= set(form)
    params = {name: param.value for name, param in form.items()}
    params["Scene"] = f"s3://{BUCKET}/studies/render/inputs/shot-010.blend"
    planned = planning.plan_run(
        study, settings, params=params, conf={"Scene": params["Scene"]}, run_id="r1", write=False
    )
    # 240 frames in chunks of 20 (CHUNK[INT] defaultTaskCount): 12 tasks, then the check step.
    assert planned.plan.work_items == 240
    assert len(planned.chunks) == 12
    assert planned.plan.aggregate is not None
    first = planned.chunks[0][0]
    assert first.argv[0] == r"C:\render\render.exe"
    assert first.argv[first.argv.index("--frames") + 1] == "1-20"
    # A c5.xlarge registers 4096 CPU units and about 5734 MiB: the memory allows one such task.
    assert planned.slots == 1
