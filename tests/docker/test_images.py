"""The container images' inputs: the base image's entrypoint contract, the studies' images built
FROM it, and each image's pinned requirements.

No Docker engine here: the Linux entrypoint runs directly (with .venv's python first on PATH),
the Dockerfiles are read, and each requirements file is checked against constraints.txt and
against the dependency closure of what the image runs, as installed in .venv.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bersim.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
BASE = DOCKER / "base"
BERSIM = DOCKER / "bersim"
OPTION_PRICING = DOCKER / "option_pricing"
ENTRYPOINT = BASE / "entrypoint.sh"
PLATFORMS = {
    "linux": {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix"},
    "win32": {"sys_platform": "win32", "platform_system": "Windows", "os_name": "nt"},
}
BUILD_ONLY = {"setuptools"}
# Each image's requirements file and the distributions it exists to run (their closure is the
# file); the studies' images are built FROM the base image.
IMAGES = {
    "base": (BASE / "requirements.txt", ("wbrun",)),
    "bersim": (BERSIM / "requirements.txt", ("bersim",)),
    "option_pricing": (OPTION_PRICING / "requirements.txt", ("numpy", "matplotlib")),
}
STUDY_IMAGES = (BERSIM, OPTION_PRICING)
BASE_TAGS = {
    "Dockerfile": "windows-batch-base:ltsc2022",
    "Dockerfile.linux": "windows-batch-base:linux",
}


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


def test_entrypoint_runs_the_task_runner_with_the_container_arguments(tmp_path: Path) -> None:
    done = entrypoint("--version", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("wbrun ")
    done = entrypoint(cwd=tmp_path)
    assert done.returncode == 0
    assert "usage: wbrun" in done.stdout
    assert os.access(ENTRYPOINT, os.X_OK)  # the Linux base image COPYs it with its mode


def test_entrypoint_passes_the_exit_code_through(tmp_path: Path) -> None:
    done = entrypoint("run", cwd=tmp_path)
    assert done.returncode == 64  # the runner's own: bad arguments, final
    assert "wbrun: error: the following arguments are required: --manifest" in done.stdout
    done = entrypoint(
        "exec", "--", "python", "-m", "bersim", "simulate", "--ebn0-db=99", cwd=tmp_path
    )
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
        "exec",
        "--",
        "python",
        "-m",
        "bersim",
        "aggregate",
        "--input=tasks",
        "--output=agg",
        "--expected-tasks=2",
        cwd=tmp_path,
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


def closure(roots: tuple[str, ...], platform: str) -> set[str]:
    """`roots` and their runtime dependencies, transitively, on `platform`, from .venv's
    metadata; a root that is our own package (wbrun, bersim) is not itself on the list."""
    environment = {**default_environment(), **PLATFORMS[platform], "extra": ""}
    ours = {"wbrun", "bersim"}
    seen: set[str] = set()
    todo = [r for r in roots if r not in ours]
    for root in roots:
        if root in ours:
            todo += [
                Requirement(r).name
                for r in metadata.requires(root) or []
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


@pytest.mark.parametrize("image", IMAGES)
def test_image_requirements_match_the_constraints(image: str) -> None:
    path, _ = IMAGES[image]
    constraints = pinned(ROOT / "constraints.txt")
    drift = {
        name: (version, constraints.get(name, ("absent", ""))[0])
        for name, (version, marker) in pinned(path).items()
        # The lock is resolved on Linux: a Windows-only package cannot be in it.
        if constraints.get(name, ("absent", ""))[0] != version
        and not (name not in constraints and marker == 'sys_platform == "win32"')
    }
    assert drift == {}, f"{path.relative_to(ROOT)} differs from constraints.txt: regenerate it"


@pytest.mark.parametrize("platform", ["linux", "win32"])
@pytest.mark.parametrize("image", IMAGES)
def test_image_requirements_are_the_complete_closure(image: str, platform: str) -> None:
    path, roots = IMAGES[image]
    environment = {**default_environment(), **PLATFORMS[platform]}
    listed = {
        name
        for name, (_, marker) in pinned(path).items()
        if not marker or Requirement(f"x; {marker}").marker.evaluate(environment)
    }
    assert listed - BUILD_ONLY == closure(roots, platform)


def instructions(path: Path) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined (` on Windows, \\ on Linux)."""
    text = path.read_text()
    escape = "`" if text.startswith("# escape=`") else "\\"
    text = text.replace(f"{escape}\n", " ")
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def runs(path: Path) -> list[str]:
    return [line[4:] for line in instructions(path) if line.startswith("RUN ")]


def test_windows_downloads_are_pinned_by_sha256() -> None:
    found = {}
    for path in (BASE / "Dockerfile", *(d / "Dockerfile" for d in STUDY_IMAGES)):
        text = path.read_text()
        hashes = dict(re.findall(r"^ARG (\w+_SHA256)=(\S+)$", text, flags=re.MULTILINE))
        for name, value in hashes.items():
            assert re.fullmatch(r"[0-9a-f]{64}", value), (path, name)
            assert f"$env:{name}" in text, f"{path}: {name} is pinned but never checked"
        downloads = sum(run.count("Invoke-WebRequest") for run in runs(path))
        assert downloads == len(hashes), f"{path}: a download without a pinned hash"
        found.update({name: path.parent.name for name in hashes})
    assert found == {"PYTHON_SHA256": "base", "OCTAVE_SHA256": "bersim"}


def test_octave_comes_from_the_gnu_mirror_network_with_retries_and_the_pinned_hash() -> None:
    octave = next(run for run in runs(BERSIM / "Dockerfile") if "octave-{0}-w64.zip" in run)
    assert "'https://ftpmirror.gnu.org/gnu/octave/windows/octave-{0}-w64.zip'" in octave
    assert "://ftp.gnu.org" not in octave
    loop = octave[octave.index("foreach ($attempt in 1..") :]
    # The hash is checked inside the retry loop (a bad mirror is retried) and once more after it.
    assert loop.index("Get-FileHash") < loop.index("if ($hash -eq $env:OCTAVE_SHA256) { break }")
    assert "if ($hash -ne $env:OCTAVE_SHA256) { throw" in loop


def base_entrypoint(dockerfile: str) -> list[str]:
    text = (BASE / dockerfile).read_text()
    found = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.MULTILINE)
    assert found, f"docker/base/{dockerfile} has no exec-form ENTRYPOINT"
    return list(json.loads(found.group(1)))


def test_the_base_images_run_the_task_runner_through_their_entrypoints() -> None:
    windows = base_entrypoint("Dockerfile")
    assert windows[-2:] == ["-File", "C:/wbrun/entrypoint.ps1"]
    script = (BASE / "entrypoint.ps1").read_text()
    assert "& python -m wbrun @runnerArgs" in script
    assert "exit $LASTEXITCODE" in script
    assert base_entrypoint("Dockerfile.linux") == [
        "/usr/bin/tini",
        "--",
        "/usr/local/bin/entrypoint.sh",
    ]
    assert 'exec python -m wbrun "$@"' in ENTRYPOINT.read_text()


@pytest.mark.parametrize("folder", STUDY_IMAGES, ids=lambda p: p.name)
@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.linux"])
def test_study_images_are_built_from_the_base_image(folder: Path, dockerfile: str) -> None:
    """A study's image is a FROM line plus its program: the base image's entrypoint is the one
    ECS runs, so a study's Dockerfile sets none."""
    lines = instructions(folder / dockerfile)
    tag = BASE_TAGS[dockerfile]
    assert f"ARG BASE_IMAGE={tag}" in lines
    assert [line for line in lines if line.startswith("FROM ")] == ["FROM ${BASE_IMAGE}"]
    assert not [line for line in lines if line.startswith(("ENTRYPOINT", "CMD"))]
    # The base image's own build comment names the same tag.
    assert f"-t {tag} ." in (BASE / dockerfile).read_text()


def bersim_smoke_commands(dockerfile: str, invocation: str) -> dict[str, list[str]]:
    """The bersim commands of the image's build-time smoke test, run through `invocation`."""
    commands: dict[str, list[str]] = {}
    for run in runs(BERSIM / dockerfile):
        for found in re.finditer(
            re.escape(invocation) + r" exec -- python -m bersim ([^;&]*)", run
        ):
            argv = shlex.split(found.group(1).strip(), posix=dockerfile != "Dockerfile")
            commands[argv[0]] = argv
    return commands


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.linux"])
def test_bersim_smoke_test_runs_through_the_real_entrypoint_and_parses(dockerfile: str) -> None:
    if dockerfile == "Dockerfile":
        entry = base_entrypoint("Dockerfile")
        invocation = "& " + " ".join(entry).replace("/", "\\")
    else:
        invocation = "python -m wbrun"  # what /usr/local/bin/entrypoint.sh execs
    commands = bersim_smoke_commands(dockerfile, invocation)
    assert set(commands) == {"simulate", "aggregate"}, commands
    parser = build_parser()
    simulate = parser.parse_args(commands["simulate"])
    aggregate = parser.parse_args(commands["aggregate"])
    # The aggregate reads the result the simulate wrote: a planned name, directly in its input.
    assert simulate.task_index == 0
    folder, _, name = simulate.output.replace("\\", "/").rpartition("/")
    assert name == "task-00000.json"
    assert folder == aggregate.input.replace("\\", "/")
    assert aggregate.expected_tasks == 1
    assert not any("python.exe -m bersim" in run for run in runs(BERSIM / dockerfile))


def test_base_smoke_test_runs_through_the_real_entrypoint() -> None:
    invocation = "& " + " ".join(base_entrypoint("Dockerfile")).replace("/", "\\")
    assert any(f"{invocation} exec -- python -c" in run for run in runs(BASE / "Dockerfile"))
    assert any(
        "python -m wbrun exec -- python -c" in run for run in runs(BASE / "Dockerfile.linux")
    )


def test_entrypoint_routes_task_credentials_but_not_the_instance_metadata_service() -> None:
    script = (BASE / "entrypoint.ps1").read_text()
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    assert "'169.254.170.2/32'" in code
    assert "169.254.169.254" not in code
    header = script[: script.index("$ErrorActionPreference")]
    assert "instance role" in header  # the reason is stated where the route is left out
    assert "AWS_REGION" in header
