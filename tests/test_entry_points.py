"""./deploy.sh and ./destroy.sh as users run them: options, output and exit codes.

Only what proves the doors: they run the deployer from .venv, pass every argument through,
keep the exit codes (0, 1 on any error) and print to the right stream. Everything the deployer
does is tested in process in tests/deployer/.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import moto_server  # tests/cloudformation/moto_server.py, loaded by tests/conftest.py
import pytest

from deployer.engine import catalog

REPO = Path(__file__).resolve().parents[1]
REGION = "us-east-1"


def aws_env(home: Path, endpoint: str | None = None) -> dict[str, str]:
    """Fake credentials and no user AWS configuration; polls of a few milliseconds."""
    (home / "aws-config").write_text("")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(home / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-config"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "DEPLOY_POLL_SECONDS": "0.05",
        "DEPLOY_BUILD_POLL_SECONDS": "0.05",
        "DESTROY_POLL_SECONDS": "0.05",
    }
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    return env


def run(
    script: str, env: dict[str, str], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / script), *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with moto_server.running_server(log, REGION) as url:
        yield url


def test_the_scripts_are_executable_and_shellcheck_clean() -> None:
    for name in ("deploy.sh", "destroy.sh"):
        assert os.access(REPO / name, os.X_OK), name
        assert len((REPO / name).read_text().splitlines()) <= 12, name  # a door, not a program
    result = subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "shellcheck"),
            str(REPO / "deploy.sh"),
            str(REPO / "destroy.sh"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_help(tmp_path: Path) -> None:
    deploy = run("deploy.sh", aws_env(tmp_path), "--help")
    assert deploy.returncode == 0, deploy.stderr
    assert deploy.stdout.startswith("Usage: ./deploy.sh [options]")
    for option in ("--region", "--prefix", "--instance-types", "--spot", "--image-uri",
                   "--build-image", "--bake-ami", "--warm-pool", "--skip", "--check",
                   "-y, --yes"):  # fmt: skip
        assert f"  {option}" in deploy.stdout, option
    destroy = run("destroy.sh", aws_env(tmp_path), "-h")
    assert destroy.returncode == 0, destroy.stderr
    assert "--pause" in destroy.stdout
    assert "run history" in destroy.stdout


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        pytest.param(
            "deploy.sh", ["--prefix", "Bad_Prefix"], "--prefix must be lowercase", id="prefix"
        ),
        pytest.param("deploy.sh", ["--bogus"], "unknown option: --bogus", id="unknown-option"),
        pytest.param("deploy.sh", ["--skip", "everything"], "unknown step for --skip", id="skip"),
        pytest.param("deploy.sh", ["--region"], "--region needs a value", id="no-value"),
        pytest.param(
            "deploy.sh",
            ["--warm-pool", "-1"],
            "--warm-pool must be a whole number: -1",
            id="warm-pool",
        ),
        pytest.param(
            "deploy.sh",
            ["--task-cpu", "2048"],
            "--task-cpu is gone: each study sizes its own task in dags/studies/<name>/study.yaml",
            id="gone-option",
        ),
        pytest.param("destroy.sh", ["--bogus"], "unknown option: --bogus", id="destroy-option"),
    ],
)
def test_bad_options_are_refused_with_exit_1(
    tmp_path: Path, script: str, args: list[str], message: str
) -> None:
    result = run(script, aws_env(tmp_path), *args)
    assert result.returncode == 1
    assert f"{script}: error: {message}" in result.stderr
    assert result.stdout == ""
    if "unknown option" in message:
        assert result.stderr.startswith(f"Usage: ./{script}")


def test_missing_region_and_credentials_are_reported(tmp_path: Path) -> None:
    env = aws_env(tmp_path)
    del env["AWS_DEFAULT_REGION"]
    no_region = run("deploy.sh", env)
    assert no_region.returncode == 1
    assert "no AWS region set; pass --region" in no_region.stderr
    env = aws_env(tmp_path)
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    no_credentials = run("destroy.sh", env)
    assert no_credentials.returncode == 1
    assert "AWS credentials are missing or invalid" in no_credentials.stderr
    assert "Unable to locate credentials" in no_credentials.stderr


def test_deploy_rerun_and_destroy_through_the_doors(tmp_path: Path, moto_url: str) -> None:
    env = aws_env(tmp_path, moto_url)
    args = ("--prefix", "wbe", "--skip", "mwaa")
    first = run("deploy.sh", env, *args, "--build-image")
    assert first.returncode == 0, first.stderr + first.stdout
    assert "==> Stack wbe-ecs: created (" in first.stdout
    assert "build host i-" in first.stdout
    assert first.stderr == ""
    assert "==> Stack wbe-study-bersim: created (" in first.stdout
    again = run("deploy.sh", env, *args)
    assert again.returncode == 0, again.stderr + again.stdout
    # Four stacks, a stack per study, the uploads.
    studies = catalog.discover(REPO / "dags" / "studies")
    assert again.stdout.count(": no changes (") == 4 + len(studies) + 1

    refused = run("destroy.sh", env, "--prefix", "wbe", stdin="no\n")
    assert refused.returncode == 1
    assert "destroy.sh: error: not confirmed; nothing deleted" in refused.stderr
    destroyed = run("destroy.sh", env, "--prefix", "wbe", "--yes")
    assert destroyed.returncode == 0, destroyed.stderr + destroyed.stdout
    assert "==> Done: everything deploy.sh created with prefix wbe is gone" in destroyed.stdout
