"""The command lines of deploy.sh and destroy.sh: options, help, messages and exit codes.

Both exit 0 on success and 1 on any error (the message on stderr, `<program>: error: ...`);
an interrupt (Ctrl-C, SIGTERM, SIGHUP) ends the run after its cleanups (a build host is
terminated, a lease released) with 130 or 128 + the signal.
"""

from __future__ import annotations

import re
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from deployer.aws import Aws, Caller, connect
from deployer.capacity import DEFAULT_INSTANCE_TYPES, MAX_INSTANCE_TYPES, parse_instance_types
from deployer.console import Console, DeployError
from deployer.deploy import deploy
from deployer.destroy import destroy
from deployer.plan import LAYERS, DeployOptions
from deployer.settings import Context, Project, Timing, validate_prefix

Connector = Callable[[str | None], tuple[Aws, Caller]]

DEPLOY_USAGE = f"""\
Usage: ./deploy.sh [options]

Deploys (or updates) windows-batch-compute in one AWS region: stacks <prefix>-storage,
<prefix>-network, <prefix>-image, (with --bake-ami) <prefix>-ami, <prefix>-ecs, one stack
<prefix>-study-<name> per study of dags/studies/ (its task definition and task role) and
<prefix>-mwaa, then uploads dags/ (the studies included), requirements-mwaa.txt and plugins.zip
(plugins/, the Results view) to the MWAA bucket. The stack of a study no longer in dags/studies/
is deleted (its results stay). Re-running with nothing changed changes nothing.
Options not given take their defaults on every run, except the capacity options
(--instance-types, --spot/--on-demand, --on-demand-base, --warm-pool), which keep what the ECS
stack has, and the baked AMI (kept until --no-bake-ami).

Options:
  --region REGION          AWS region (default: AWS_REGION, AWS_DEFAULT_REGION or the profile's)
  --prefix PREFIX          stack-name prefix, lowercase (default: windows-batch)
  --instance-types T1,T2   up to {MAX_INSTANCE_TYPES} ECS container instance types of one size
                           (x86_64, able to run the Windows Server 2022 ECS AMI); the first has the
                           on-demand priority. A study's tasks per instance = the minimum
                           over them (its cpu and memory_mib in study.yaml).
                           (default on the first deploy: {",".join(DEFAULT_INSTANCE_TYPES)})
  --instance-type TYPE     one instance type only (same as --instance-types TYPE)
  --spot                   launch Spot instances above the on-demand base (price-capacity-
                           optimized over the types, capacity rebalancing); an interruption
                           costs time, not a retry
  --on-demand              launch on-demand instances only (the default on the first deploy)
  --on-demand-base N       with --spot, the first N instances are on-demand (default: 0)
  --max-instances N        upper bound of the Auto Scaling group (default: 10)
  --warm-pool N            keep N pre-initialized instances stopped in a warm pool (at most
                           --max-instances; On-Demand only, not with --spot): a scale-out starts
                           them instead of launching cold ones. Idle, each bills its root
                           volume (--check shows what); 0 removes the pool (default on the
                           first deploy: 0). A launch template change (a new baked AMI) starts
                           an instance refresh of the pool, not awaited.
  --image-uri STUDY=URI    run this container image for that study instead of building one
                           (repeatable; a bare URI when dags/studies/ holds one study). Else a
                           study runs study.yaml's image: URI, or the image built from
                           docker/<image>/ (study.yaml's image:, default the study's name) on the
                           engine's base image docker/base/, or the base image itself.
  --build-image            build the images of the current docker/base/ and docker/<image>/
                           folders on one short-lived Windows Server 2022 instance (SSM Run
                           Command), base first; an image that already exists is not built again.
                           Without it every image the studies run must exist.
  --bake-ami               bake every study's image (and the base image) into an AMI (EC2 Image
                           Builder, stack <prefix>-ami: about an hour for each new set of images)
                           with EC2 Fast Launch (one pre-provisioned snapshot per instance of
                           --max-instances), and launch the instances from it: no image pull
                           and a shorter Windows boot. Costs its EBS snapshots while it exists
                           (README). A re-run keeps it (and bakes again when an image changed);
                           --no-bake-ami returns to the public AMI and removes the ami stack, its
                           AMIs and their snapshots.
  --webserver-access MODE  PUBLIC_ONLY (default; AWS sign-in) or PRIVATE_ONLY (VPC only)
  --environment-class C    MWAA size (default: mw1.small)
  --nat-gateways 1|2       1 shared NAT gateway (default, cheaper) or one per AZ
  --rdp-cidr CIDR          allow RDP to the instances from CIDR (default: no inbound access)
  --skip LAYER[,LAYER]     leave these steps out; later steps read the outputs of the existing
                           stacks. Steps: {" ".join(LAYERS)}
  --check                  only run the preflight (credentials, region, warm pool and its cost,
                           vCPU quota, each study, its image and stack) and print it as a
                           table; changes nothing.
                           deploy.sh always runs it first.
  -y, --yes                do not ask before deleting a stack left in ROLLBACK_COMPLETE
  -h, --help               show this help

Runs the deployer (deployer/, Python) from the project's .venv, which it creates when missing
(scripts/bootstrap.sh --venv); needs AWS credentials (aws configure, aws sso login or the
AWS_* variables).
"""

DESTROY_USAGE = """\
Usage: ./destroy.sh [options]

Deletes the stacks deploy.sh created (<prefix>-mwaa, every <prefix>-study-<name>, -ecs, -ami,
-image, -network, -storage), after emptying the buckets of the storage stack, including every
object version. This deletes all study results. Before the ECS stack an instance refresh still
running is cancelled, the warm pool deleted (its instances terminated, awaited), the instance
group scaled to 0 and the cluster drained; before the ami stack its baked AMIs go (EC2 Fast
Launch disabled, which deletes its pre-provisioned snapshots, then each AMI deregistered and its
snapshots deleted); the log groups ECS, MWAA and Image Builder created themselves go too (by
their exact names). Waits for each stack up to DESTROY_STACK_DELETE_TIMEOUT_SECONDS (default 3
hours; MWAA alone can exceed an hour). Asks for confirmation unless --yes is given.

--pause deletes only what bills while no study runs (<prefix>-mwaa, -ecs, -network: MWAA, the
NAT gateway and the warm pool's volumes, deleted as above) and keeps the buckets (results,
DAGs), the images, the study stacks (they bill nothing) and the baked AMI (its snapshots keep
billing; see the README); ./deploy.sh with the same options resumes, without rebuilding an
image or the AMI. The MWAA environment holds Airflow's metadata database: its run history (DAG
runs, task instances, XComs) and Airflow's logs go with it, also on --pause.

Options:
  --region REGION   AWS region (default: AWS_REGION, AWS_DEFAULT_REGION or the profile's)
  --prefix PREFIX   stack-name prefix used with deploy.sh (default: windows-batch)
  --pause           delete only the billing-while-idle stacks; keep buckets, images, baked AMI
  -y, --yes         do not ask for confirmation
  -h, --help        show this help
"""


class UsageError(DeployError):
    """A bad command line: the usage goes to stderr before the message."""


def _positive(option: str, text: str) -> int:
    if not re.fullmatch(r"[1-9][0-9]*", text):
        raise DeployError(f"not a positive whole number: {text} ({option})")
    return int(text)


def _whole(option: str, text: str) -> int:
    if not re.fullmatch(r"0|[1-9][0-9]*", text):
        raise DeployError(f"{option} must be a whole number: {text}")
    return int(text)


def _nat_gateways(text: str) -> int:
    if text not in ("1", "2"):
        raise DeployError("--nat-gateways must be 1 or 2")
    return int(text)


def _skip(text: str) -> frozenset[str]:
    for layer in text.split(","):
        if layer not in LAYERS:
            raise DeployError(f"unknown step for --skip: {layer} (steps: {' '.join(LAYERS)})")
    return frozenset(text.split(","))


# Options that take a value: the field they set and how the text becomes its value.
VALUE_OPTIONS: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "--region": ("region", lambda _o, text: text),
    "--prefix": ("prefix", lambda _o, text: text),
    "--instance-types": ("instance_types", lambda _o, text: parse_instance_types(text)),
    "--instance-type": ("instance_types", lambda _o, text: parse_instance_types(text)),
    "--on-demand-base": ("on_demand_base", _whole),
    "--max-instances": ("max_instances", _positive),
    "--warm-pool": ("warm_pool", _whole),
    "--webserver-access": ("webserver_access", lambda _o, text: text),
    "--environment-class": ("environment_class", lambda _o, text: text),
    "--nat-gateways": ("nat_gateways", lambda _o, text: _nat_gateways(text)),
    "--rdp-cidr": ("rdp_cidr", lambda _o, text: text),
}
# Flags: the field they set and its value.
FLAG_OPTIONS: dict[str, tuple[str, Any]] = {
    "--spot": ("purchase_option", "spot"),
    "--on-demand": ("purchase_option", "on-demand"),
    "--build-image": ("build_image", True),
    "--bake-ami": ("bake_ami", True),
    "--no-bake-ami": ("bake_ami", False),
    "--check": ("check_only", True),
    "-y": ("assume_yes", True),
    "--yes": ("assume_yes", True),
}


# Options of the single-task deployment: each study sizes its own task now.
GONE_OPTIONS = {
    "--task-cpu": "cpu",
    "--task-memory": "memory_mib",
    "--slots-per-instance": "cpu and memory_mib",
}


def parse_deploy(argv: Sequence[str]) -> DeployOptions | None:
    """The options, or None for --help. Every check the shell script made, same messages."""
    values: dict[str, Any] = {}
    skip: frozenset[str] = frozenset()
    image_uris: list[str] = []
    args = list(argv)
    while args:
        option = args.pop(0)
        if option in ("-h", "--help"):
            return None
        if option in FLAG_OPTIONS:
            name, flag = FLAG_OPTIONS[option]
            values[name] = flag
            continue
        if option in GONE_OPTIONS:
            raise DeployError(
                f"{option} is gone: each study sizes its own task in dags/studies/<name>/"
                f"study.yaml ({GONE_OPTIONS[option]}), and its tasks per instance follow"
            )
        if option not in (*VALUE_OPTIONS, "--skip", "--image-uri"):
            raise UsageError(f"unknown option: {option}")
        if not args or not args[0]:
            raise DeployError(f"{option} needs a value")
        text = args.pop(0)
        if option == "--skip":
            skip |= _skip(text)
            continue
        if option == "--image-uri":
            image_uris.append(text)
            continue
        name, convert = VALUE_OPTIONS[option]
        values[name] = convert(option, text)
    options = DeployOptions(**values, skip=skip, image_uris=tuple(image_uris))
    validate_prefix(options.prefix)
    if options.on_demand_base is not None and options.purchase_option == "on-demand":
        raise DeployError(
            "--on-demand-base applies to --spot only (with --on-demand every instance is on-demand)"
        )
    if options.webserver_access not in ("PUBLIC_ONLY", "PRIVATE_ONLY"):
        raise DeployError("--webserver-access must be PUBLIC_ONLY or PRIVATE_ONLY")
    return options


def parse_destroy(argv: Sequence[str]) -> tuple[str | None, str, bool, bool] | None:
    """(region, prefix, pause, assume_yes), or None for --help."""
    region: str | None = None
    prefix = "windows-batch"
    pausing = assume_yes = False
    args = list(argv)
    while args:
        option = args.pop(0)
        if option in ("--region", "--prefix"):
            if not args or not args[0]:
                raise DeployError(f"{option} needs a value")
            if option == "--region":
                region = args.pop(0)
            else:
                prefix = args.pop(0)
        elif option == "--pause":
            pausing = True
        elif option in ("-y", "--yes"):
            assume_yes = True
        elif option in ("-h", "--help"):
            return None
        else:
            raise UsageError(f"unknown option: {option}")
    validate_prefix(prefix)
    return region, prefix, pausing, assume_yes


def _default_connector(region: str | None) -> tuple[Aws, Caller]:
    return connect(region=region)


def _on_signal(number: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + number)


def _context(
    *,
    console: Console,
    connector: Connector,
    region: str | None,
    project: Project,
    timing: Timing | None,
    prefix: str,
) -> Context:
    aws, caller = connector(region)
    return Context(
        aws=aws,
        caller=caller,
        console=console,
        project=project,
        timing=timing or Timing.from_environment(),
        prefix=prefix,
    )


def main(
    command: str,
    argv: Sequence[str],
    *,
    project: Project,
    console: Console | None = None,
    timing: Timing | None = None,
    connector: Connector = _default_connector,
) -> int:
    """Runs deploy or destroy; the exit code."""
    console = console or Console(program=f"{command}.sh")
    usage = DEPLOY_USAGE if command == "deploy" else DESTROY_USAGE
    try:
        if command == "deploy":
            options = parse_deploy(argv)
            if options is not None:
                console.assume_yes = options.assume_yes
                ctx = _context(
                    console=console,
                    connector=connector,
                    region=options.region,
                    project=project,
                    timing=timing,
                    prefix=options.prefix,
                )
                console.log(
                    f"Deploying as {ctx.caller.arn} to {ctx.aws.region}, stacks {options.prefix}-*"
                )
                deploy(ctx, options)
        else:
            parsed = parse_destroy(argv)
            if parsed is not None:
                region, prefix, pausing, console.assume_yes = parsed
                ctx = _context(
                    console=console,
                    connector=connector,
                    region=region,
                    project=project,
                    timing=timing,
                    prefix=prefix,
                )
                destroy(ctx, pausing=pausing)
        if (options if command == "deploy" else parsed) is None:
            print(usage, end="", file=console.out)
        return 0
    except UsageError as error:
        print(usage, end="", file=console.err)
        console.error(str(error))
    except DeployError as error:
        console.error(str(error))
    except (ClientError, BotoCoreError) as error:
        console.error(f"an AWS call failed: {error}")
    except KeyboardInterrupt:
        console.error("interrupted; what this run started is cleaned up")
        return 130
    return 1


def entry_point() -> None:
    """`python -m deployer deploy|destroy ARGS`, as deploy.sh and destroy.sh run it."""
    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, _on_signal)
    if len(sys.argv) < 2 or sys.argv[1] not in ("deploy", "destroy"):
        print("usage: python -m deployer deploy|destroy [options]", file=sys.stderr)
        raise SystemExit(2)
    root = Path(__file__).resolve().parents[1]
    raise SystemExit(main(sys.argv[1], sys.argv[2:], project=Project(root=root)))
