"""plugins.zip as the deployer builds it: reproducible, flat, and loadable by Airflow once unpacked.

MWAA unpacks plugins.zip into /usr/local/airflow/plugins; the test unpacks it into a folder and
points Airflow's plugin manager at it (`airflow plugins`), so the zip, not the source tree, is
what must carry the Results view.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def build(source: Path, archive: Path) -> bytes:
    """The deployer's plugins.zip of `source` (deployer/uploads.py), written to `archive`."""
    sys.path.insert(0, str(REPO))
    try:
        from deployer.uploads import plugins_zip
    finally:
        sys.path.remove(str(REPO))
    archive.write_bytes(plugins_zip(source))
    return archive.read_bytes()


def test_plugins_zip_is_reproducible_and_loads(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(REPO / "plugins", source, ignore=shutil.ignore_patterns("__pycache__"))
    first = build(source, tmp_path / "a.zip")
    os.utime(source / "windows_batch_results_plugin.py", (0, 0))  # another mtime, same content
    assert build(source, tmp_path / "b.zip") == first, "same sources must give the same zip"

    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        names = zf.namelist()
        assert "windows_batch_results_plugin.py" in names  # flat: the plugin file at the root
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        zf.extractall(tmp_path / "plugins")

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        "AIRFLOW_HOME": str(tmp_path / "home"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(tmp_path / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    airflow = Path(sys.executable).parent / "airflow"
    listing = subprocess.run(
        [str(airflow), "plugins", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    plugins = json.loads(listing.stdout[listing.stdout.index("[") :])
    (plugin,) = [p for p in plugins if p["name"] == "windows_batch_results"]
    assert [a["url_prefix"] for a in plugin["fastapi_apps"]] == ["/windows-batch"]
    assert [(v["destination"], v["url_route"]) for v in plugin["external_views"]] == [
        ("dag_run", "results")
    ]
