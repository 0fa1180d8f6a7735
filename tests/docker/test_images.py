"""The container images' inputs: the Linux entrypoint's contract and the pinned requirements.

No Docker engine here: the entrypoint runs directly (with .venv's python first on PATH), and the
requirements are checked against constraints.txt and against the dependency closure of bersim
as installed in .venv.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
ENTRYPOINT = DOCKER / "entrypoint.sh"
PLATFORMS = {
    "linux": {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix"},
    "win32": {"sys_platform": "win32", "platform_system": "Windows", "os_name": "nt"},
}
BUILD_ONLY = {"setuptools"}


def entrypoint(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [str(ENTRYPOINT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
        env=env,
    )


def test_entrypoint_runs_bersim_with_the_container_arguments(tmp_path: Path) -> None:
    done = entrypoint("--version", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("bersim ")
    done = entrypoint(cwd=tmp_path)
    assert done.returncode == 0
    assert "usage: bersim" in done.stdout


def test_entrypoint_passes_the_exit_code_through(tmp_path: Path) -> None:
    done = entrypoint("simulate", "--ebn0-db", "99", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "bersim: error: argument --ebn0-db: '99' dB is outside [-10, 30] dB"
    )
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    doc = {
        "schema": "bersim.task_result/1",
        "task_index": 1,
        "ebn0_db": 0.0,
        "bits": 100,
        "errors": 8,
        "seed": 1,
        "target_errors": 0,
        "max_bits": 100,
        "elapsed_s": 0.1,
        "provenance": {},
    }
    (tasks / "task-00001.json").write_text(json.dumps(doc))
    done = entrypoint(
        "aggregate", "--input", "tasks", "--output", "agg", "--expected-tasks", "2", cwd=tmp_path
    )
    assert done.returncode == 3, done.stderr
    assert (tmp_path / "agg" / "results.json").is_file()


def pinned(path: Path) -> dict[str, tuple[str, str]]:
    """name -> (version, marker) of every `name==version[; marker]` line."""
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1, line
        assert specifiers[0].operator == "==", line
        pins[canonicalize_name(requirement.name)] = (
            specifiers[0].version,
            str(requirement.marker or ""),
        )
    return pins


def closure(platform: str) -> set[str]:
    """bersim's runtime dependencies, transitively, on `platform`, from .venv's metadata."""
    environment = {**default_environment(), **PLATFORMS[platform], "extra": ""}
    seen: set[str] = set()
    todo = [
        Requirement(r).name
        for r in metadata.requires("bersim") or []
        if not Requirement(r).marker or Requirement(r).marker.evaluate(environment)
    ]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            # A Windows-only package is not installed on Linux (colorama, a leaf): keep its name.
            assert platform == "win32", name
            continue
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate(environment):
                todo.append(requirement.name)
    return seen


def test_image_requirements_match_the_constraints() -> None:
    image = pinned(DOCKER / "requirements.txt")
    constraints = pinned(ROOT / "constraints.txt")
    drift = {
        name: (version, constraints.get(name, ("absent", ""))[0])
        for name, (version, marker) in image.items()
        # The lock is resolved on Linux: a Windows-only package cannot be in it.
        if constraints.get(name, ("absent", ""))[0] != version
        and not (name not in constraints and marker == 'sys_platform == "win32"')
    }
    assert drift == {}, "docker/requirements.txt differs from constraints.txt: regenerate it"


@pytest.mark.parametrize("platform", ["linux", "win32"])
def test_image_requirements_are_the_complete_closure(platform: str) -> None:
    environment = {**default_environment(), **PLATFORMS[platform]}
    image = {
        name
        for name, (_, marker) in pinned(DOCKER / "requirements.txt").items()
        if not marker or Requirement(f"x; {marker}").marker.evaluate(environment)
    }
    assert image - BUILD_ONLY == closure(platform)


def test_windows_downloads_are_pinned_by_sha256() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    hashes = dict(re.findall(r"^ARG (\w+_SHA256)=(\S+)$", text, flags=re.MULTILINE))
    assert set(hashes) == {"PYTHON_SHA256", "OCTAVE_SHA256"}
    assert all(re.fullmatch(r"[0-9a-f]{64}", value) for value in hashes.values())
    for name in hashes:
        assert f"$env:{name}" in text, f"{name} is pinned but never checked"


def dockerfile_runs() -> list[str]:
    """The Dockerfile's RUN instructions, continuation lines joined."""
    text = (DOCKER / "Dockerfile").read_text().replace("`\n", " ")
    return [line[4:] for line in text.splitlines() if line.startswith("RUN ")]


def test_octave_comes_from_the_gnu_mirror_network_with_retries_and_the_pinned_hash() -> None:
    octave = next(run for run in dockerfile_runs() if "octave-{0}-w64.zip" in run)
    assert "'https://ftpmirror.gnu.org/gnu/octave/windows/octave-{0}-w64.zip'" in octave
    assert "://ftp.gnu.org" not in octave
    loop = octave[octave.index("foreach ($attempt in 1..") :]
    # The hash is checked inside the retry loop (a bad mirror is retried) and once more after it.
    assert loop.index("Get-FileHash") < loop.index("if ($hash -eq $env:OCTAVE_SHA256) { break }")
    assert "if ($hash -ne $env:OCTAVE_SHA256) { throw" in loop


def test_build_smoke_test_runs_through_the_real_entrypoint() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
    invocation = " ".join(entrypoint).replace("/", "\\")
    smoke = [run for run in dockerfile_runs() if "smoke" in run]
    assert smoke, "no smoke-test RUN"
    for command in ("simulate", "aggregate"):
        assert any(f"& {invocation} {command} " in run for run in smoke), command
    assert not any("python.exe -m bersim" in run for run in dockerfile_runs())


def test_entrypoint_routes_task_credentials_but_not_the_instance_metadata_service() -> None:
    script = (DOCKER / "entrypoint.ps1").read_text()
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    assert "'169.254.170.2/32'" in code
    assert "169.254.169.254" not in code
    header = script[: script.index("$ErrorActionPreference")]
    assert "instance role" in header  # the reason is stated where the route is left out
    assert "AWS_REGION" in header
