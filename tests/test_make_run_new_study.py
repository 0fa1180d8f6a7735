"""Bring your own workload, as the README's tutorial says: add a study folder, `make run` it.

A scratch checkout (this tree's files, committed in a fresh git repository) gets one new folder,
dags/studies/sweep10k/ (a job template written here, as a user would), and runs it with
`make run STUDY=sweep10k`: real `airflow standalone`, the engine, the task runner, 10,000 work
items in 10 chunks. The run is correct item for item (the template's own aggregate checks that
every item was counted exactly once), it used at most a few hundred Airflow task instances, and
`git status` shows that nothing but the new folder changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, local_airflow

pytestmark = pytest.mark.airflow

ITEMS = 10_000
PER_CHUNK = 1000
TEMPLATE = """\
specificationVersion: jobtemplate-2023-09
extensions: [TASK_CHUNKING]
name: Sweep of ten thousand items
description: Each item squares its number; the summary checks every item was counted once.
parameterDefinitions:
- name: Items
  type: INT
  default: 10
  minValue: 1
  maxValue: 1000000
  userInterface: {label: Items}
- name: PerTask
  type: INT
  default: 5
  minValue: 1
  userInterface: {label: Items per task}
- name: Out
  type: PATH
  objectType: DIRECTORY
  dataFlow: OUT
steps:
- name: Square
  parameterSpace:
    taskParameterDefinitions:
    - name: Item
      type: CHUNK[INT]
      range: "1-{{Param.Items}}"
      chunks: {defaultTaskCount: "{{Param.PerTask}}", rangeConstraint: CONTIGUOUS}
  script:
    embeddedFiles:
    - name: Square
      type: TEXT
      filename: square.py
      data: |
        import json, os, sys
        first, _, last = sys.argv[1].partition("-")
        items = range(int(first), int(last or first) + 1)
        os.makedirs(sys.argv[2], exist_ok=True)
        name = os.path.join(sys.argv[2], f"part-{items[0]:07d}.json")
        json.dump({str(i): i * i for i in items}, open(name, "w"))
    actions:
      onRun:
        command: python
        args: ["{{Task.File.Square}}", "{{Task.Param.Item}}", "{{Param.Out}}"]
- name: Check
  dependencies: [{dependsOn: Square}]
  script:
    embeddedFiles:
    - name: Check
      type: TEXT
      filename: check.py
      data: |
        import json, os, sys
        out, expected = sys.argv[1], int(sys.argv[2])
        seen = {}
        for name in sorted(os.listdir(out)):
            if name.startswith("part-"):
                for key, value in json.load(open(os.path.join(out, name))).items():
                    seen[int(key)] = seen.get(int(key), 0) + 1
                    assert value == int(key) ** 2, key
        once = sum(1 for n in range(1, expected + 1) if seen.get(n) == 1)
        summary = f"{once} of {expected} items counted exactly once"
        json.dump({"summary": summary, "once": once, "extra": len(seen) - once},
                  open(os.path.join(out, "results.json"), "w"))
        print(summary)
        sys.exit(0 if once == expected and len(seen) == expected else 1)
    actions:
      onRun:
        command: python
        args: ["{{Task.File.Check}}", "{{Param.Out}}", "{{Param.Items}}"]
"""


def _copy_tree(target: Path) -> None:
    """This tree's tracked files (what a clone would hold, with uncommitted changes)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        source = REPO / raw.decode()
        if source.is_file():
            destination = target / raw.decode()
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)


def _git(checkout: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    return subprocess.run(
        ["git", *args], cwd=checkout, capture_output=True, text=True, check=True, env=env
    ).stdout


def test_a_new_template_study_runs_ten_thousand_items_with_make_run_touching_no_engine_file(
    tmp_path: Path, migrated_db: Path
) -> None:
    checkout = tmp_path / "checkout"
    _copy_tree(checkout)
    _git(checkout, "init", "-q")
    _git(checkout, "add", "-A")
    _git(checkout, "commit", "-qm", "scratch")
    # The installed environments, as `make setup` left them (nothing to install again).
    for venv in (".venv", ".venv-checkov", ".venv-awscli"):
        if (REPO / venv).exists():
            (checkout / venv).symlink_to(REPO / venv)
    # The session's migrated metadata database: make run finds it up to date.
    home = checkout / ".local" / "airflow"
    home.mkdir(parents=True)
    for name in ("airflow.db", ".migrated"):
        shutil.copy2(migrated_db / name, home / name)

    study = checkout / "dags" / "studies" / "sweep10k"
    study.mkdir()
    (study / "template.yaml").write_text(TEMPLATE)
    (study / "study.yaml").write_text("expected_item_s: 0.01\nmemory_mib: 512\n")

    conf = json.dumps({"Items": ITEMS, "PerTask": PER_CHUNK})
    port = local_airflow.free_port()
    # Not Airflow's settings of this session, nor an outer make's (`make unit` would make this
    # a sub-make, which prints "Entering directory" lines around the output).
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AIRFLOW") and k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")
    }
    done = subprocess.run(
        ["make", "run", "STUDY=sweep10k", f"PORT={port}", f"CONF={conf}"],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env=env,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    last = Path(done.stdout.strip().splitlines()[-1])
    assert last.is_dir(), output[-3000:]
    results = json.loads((last / "Out" / "results.json").read_text())
    assert results["summary"] == f"{ITEMS} of {ITEMS} items counted exactly once"
    assert results["extra"] == 0
    assert len(list((last / "Out").glob("part-*.json"))) == ITEMS // PER_CHUNK
    # Ten chunks: ten Airflow task instances for ten thousand items.
    assert f"square {ITEMS // PER_CHUNK}/{ITEMS // PER_CHUNK} done, 0 failed" in done.stdout
    assert f"{ITEMS} of {ITEMS} work items done, 0 failed" in done.stdout
    # Adding the study touched nothing else: no engine file, no plugin, no Makefile.
    changed = _git(checkout, "status", "--porcelain", "--untracked-files=all")
    assert sorted(line[3:] for line in changed.splitlines()) == [
        "dags/studies/sweep10k/study.yaml",
        "dags/studies/sweep10k/template.yaml",
    ], changed
