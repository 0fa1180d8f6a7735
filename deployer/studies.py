"""The deployment's studies: the folders of dags/studies/ and the image each one runs.

The engine's own catalog (dags/windows_batch/catalog.py) reads the folders, so the deployer,
the DAGs and the Results view agree on every study's name, size and results prefix. Each study
gets a stack `<prefix>-study-<name>` from cloudformation/study.yaml: its task definition (family
= the stack's name) and its task role. A study's image is, first that applies:

1. `--image-uri STUDY=URI` (or `--image-uri URI` when the deployment has one study);
2. study.yaml's `image:` when it is an image URI (it contains '/');
3. docker/<image>/ (study.yaml's `image:`, by default the study's name), built FROM the
   engine's base image docker/base/;
4. the base image itself: Python 3.12 and the task runner, enough for a job template whose
   commands are Python scripts of its bundle.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deployer.console import DeployError
from deployer.engine import catalog
from deployer.images import BASE, ImageSource, image_source
from deployer.settings import Project

STACK_INFIX = "study-"
# Tags on each study stack: a removed study's stack is found by them, never by a name prefix
# (a deployment `wb-study` has stacks `wb-study-*` too).
DEPLOYMENT_TAG = "windows-batch-compute:deployment"
STUDY_TAG = "windows-batch-compute:study"
# Images each image name (base, every docker/<image>/) keeps in ECR; older ones expire.
IMAGES_TO_KEEP = 5
# CloudFormation takes a parameter value of at most 4,096 bytes (CloudFormation User Guide,
# "Understand CloudFormation quotas": parameter value size).
PARAMETER_VALUE_MAX_BYTES = 4096


def stack_name(prefix: str, study: str) -> str:
    """The study's stack. A stack name takes only letters, digits and '-' ("A stack name can
    contain only alphanumeric characters (case sensitive) and hyphens": CloudFormation API
    reference, CreateStack), a study name also '_': it becomes '-' here (the family keeps it)."""
    return f"{prefix}-{STACK_INFIX}{study.replace('_', '-')}"


def family_prefix(prefix: str) -> str:
    """mwaa.yaml's TaskFamilyPrefix: a study's family is this and its name."""
    return f"{prefix}-{STACK_INFIX}"


@dataclass(frozen=True)
class Study:
    """A study of dags/studies/ and the image it runs: a given URI, or one built here."""

    info: catalog.StudyInfo
    # Exactly one of them.
    given_uri: str | None
    source: ImageSource | None
    # Where the image comes from, for the preflight and the logs.
    origin: str

    @property
    def name(self) -> str:
        return self.info.name

    def stack(self, prefix: str) -> str:
        return stack_name(prefix, self.name)

    def family(self, prefix: str) -> str:
        return self.info.task_family(family_prefix(prefix))

    def image_uri(self, repository_uri: str | None) -> str:
        if self.given_uri is not None:
            return self.given_uri
        assert self.source is not None
        if repository_uri is None:
            raise DeployError(f"study {self.name}: no image repository to run {self.source.ref}")
        return self.source.uri(repository_uri)


@dataclass(frozen=True)
class Studies:
    studies: tuple[Study, ...]
    # What must be built, in build order (the base first); empty when every image is given.
    sources: tuple[ImageSource, ...]

    @property
    def names(self) -> list[str]:
        return [study.name for study in self.studies]

    def image_names(self) -> list[str]:
        """The names of the images built here (their tags start `<name>-`)."""
        return sorted({source.name for source in self.sources})

    def image_uris(self, repository_uri: str | None) -> list[str]:
        """Every image of the deployment: each study's, and the base image when it is built
        here (the set a baked AMI holds)."""
        uris = {study.image_uri(repository_uri) for study in self.studies}
        uris |= {source.uri(repository_uri) for source in self.sources if repository_uri}
        return sorted(uris)


def parse_image_uris(given: Sequence[str], names: Sequence[str]) -> dict[str, str]:
    """--image-uri STUDY=URI (repeatable), or a bare URI when there is one study."""
    chosen: dict[str, str] = {}
    for text in given:
        study, equals, uri = text.partition("=")
        if not equals:
            if len(names) != 1:
                raise DeployError(
                    f"--image-uri {text} names no study and dags/studies/ has {len(names)} "
                    f"({', '.join(names)}); give --image-uri STUDY=URI for each study it is for"
                )
            study, uri = names[0], text
        if study not in names:
            raise DeployError(
                f"--image-uri {text}: there is no study {study} in dags/studies/ "
                f"(studies: {', '.join(names)})"
            )
        if not uri or re.search(r"\s", uri):
            raise DeployError(f"--image-uri {text}: not an image URI")
        if study in chosen:
            raise DeployError(f"--image-uri gives study {study} twice")
        chosen[study] = uri
    return chosen


def resolve(project: Project, *, repository: str, image_uris: Sequence[str]) -> Studies:
    """The studies of the checkout and their images (see the module docstring)."""
    try:
        found = catalog.discover(project.studies, docker_dir=project.docker)
    except catalog.CatalogError as error:
        raise DeployError(f"dags/studies/: {error}") from error
    if not found:
        raise DeployError(
            f"no study in {project.studies}: each study is a folder with template.yaml or "
            "study.py (README, Studies)"
        )
    stacks: dict[str, str] = {}
    for info in found:
        stack = stack_name("<prefix>", info.name)
        if stacks.setdefault(stack, info.name) != info.name:
            raise DeployError(
                f"studies {stacks[stack]} and {info.name} would share the stack {stack} (a stack "
                "name has no '_'); rename one of the folders"
            )
    given = parse_image_uris(image_uris, [info.name for info in found])
    base: ImageSource | None = None

    def base_image() -> ImageSource:
        nonlocal base
        if base is None:
            base = image_source(BASE, project.docker / BASE, repository=repository)
        return base

    built: dict[Path, ImageSource] = {}
    studies = []
    for info in found:
        if info.name in given:
            studies.append(Study(info, given[info.name], None, "--image-uri"))
        elif info.image_uri is not None:
            studies.append(Study(info, info.image_uri, None, "study.yaml image"))
        elif (
            info.image_dir is not None
            and info.image_dir.resolve() != (project.docker / BASE).resolve()
        ):
            directory = info.image_dir
            if directory not in built:
                built[directory] = image_source(
                    directory.name, directory, repository=repository, parent=base_image()
                )
            studies.append(Study(info, None, built[directory], f"docker/{directory.name}/"))
        else:
            studies.append(Study(info, None, base_image(), "the base image docker/base/"))
    sources = ([base] if base is not None else []) + list(built.values())
    return Studies(studies=tuple(studies), sources=tuple(sources))


def stack_parameters(
    study: Study,
    *,
    prefix: str,
    image_uri: str,
    results_bucket: str,
    log_group: str,
    execution_role_arn: str,
) -> dict[str, str]:
    """cloudformation/study.yaml's parameters for one study."""
    return {
        "StudyName": study.name,
        "TaskFamily": study.family(prefix),
        "ImageUri": image_uri,
        "TaskCpu": str(study.info.cpu),
        "TaskMemoryInMiB": str(study.info.memory_mib),
        "ResultsPrefix": study.info.results_prefix,
        "ResultsBucketName": results_bucket,
        "LogGroupName": log_group,
        "TaskExecutionRoleArn": execution_role_arn,
    }


def stack_tags(prefix: str, study: str) -> dict[str, str]:
    return {DEPLOYMENT_TAG: prefix, STUDY_TAG: study}


def deployed(stacks: Sequence[Mapping[str, object]], prefix: str) -> dict[str, str]:
    """{study: stack} of the live study stacks of this deployment, found by their tags."""
    found: dict[str, str] = {}
    for stack in stacks:
        raw_tags = stack.get("Tags") or []
        assert isinstance(raw_tags, list)
        tags = {tag["Key"]: tag["Value"] for tag in raw_tags}
        name = str(stack["StackName"])
        study = tags.get(STUDY_TAG)
        if tags.get(DEPLOYMENT_TAG) == prefix and study and name == stack_name(prefix, study):
            found[study] = name
    return found


def lifecycle_policy(image_names: Sequence[str], *, keep: int = IMAGES_TO_KEEP) -> str:
    """ECR lifecycle rules that keep the last `keep` images of each name.

    One rule per name: with a single count over the repository, one study rebuilt often would
    expire the only image of another. Longer names first, so `a-b-*` images are held by their
    own rule before `a-*` sees them ("An image that matches the tagging requirements of a rule
    cannot be expired by a rule with a lower priority": ECR User Guide, lifecycle policies).
    """
    ordered = sorted(set(image_names), key=lambda name: (-len(name), name))
    rules = [
        {
            "rulePriority": priority,
            "description": f"Keep the last {keep} {name} images",
            "selection": {
                "tagStatus": "tagged",
                "tagPatternList": [f"{name}-*"],
                "countType": "imageCountMoreThan",
                "countNumber": keep,
            },
            "action": {"type": "expire"},
        }
        for priority, name in enumerate(ordered, start=1)
    ]
    text = json.dumps({"rules": rules}, separators=(",", ":"))
    if len(text.encode()) > PARAMETER_VALUE_MAX_BYTES:
        raise DeployError(
            f"the image repository's lifecycle rules for {len(ordered)} images take "
            f"{len(text.encode())} bytes; CloudFormation takes a parameter of at most "
            f"{PARAMETER_VALUE_MAX_BYTES} (let studies share docker/ images)"
        )
    return text
