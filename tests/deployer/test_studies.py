"""The studies of a checkout and their images, without AWS: which image each study runs, what is
built (the base first, a shared docker/ folder once), --image-uri's forms, the repository's
lifecycle rules, and which live stacks are this deployment's studies."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from deployer import studies
from deployer.console import DeployError

from .conftest import OPTION_PRICING, REPO, TINY, scratch_project


def test_each_study_runs_its_own_image_a_given_one_or_the_base(tmp_path: Path) -> None:
    project = scratch_project(
        tmp_path,
        {"tiny": TINY, "option_pricing": OPTION_PRICING, "twin": OPTION_PRICING},
    )
    # Two studies on one docker/ folder: one image, built once.
    twin = project.studies / "twin" / "study.yaml"
    twin.write_text(
        twin.read_text().replace("dag_id: option-pricing", "dag_id: twin")
        + "image: option_pricing\nresults_prefix: studies/twin\n"
    )
    found = studies.resolve(project, repository="p/images", image_uris=())
    assert found.names == ["option_pricing", "tiny", "twin"]
    base, option = found.sources
    assert (base.name, option.name) == ("base", "option_pricing")
    assert option.parent == base
    by_name = {study.name: study for study in found.studies}
    assert by_name["tiny"].source == base
    assert by_name["tiny"].origin == "the base image docker/base/"
    assert by_name["option_pricing"].source == by_name["twin"].source == option
    assert by_name["option_pricing"].image_uri("r.example/p/images") == (
        f"r.example/p/images:{option.tag}"
    )
    assert found.image_names() == ["base", "option_pricing"]

    # Every image given: nothing is built, not even the base.
    given = studies.resolve(
        project,
        repository="p/images",
        image_uris=("tiny=a.example/t:1", "option_pricing=a.example/o:1", "twin=a.example/w:1"),
    )
    assert given.sources == ()
    assert given.image_uris(None) == ["a.example/o:1", "a.example/t:1", "a.example/w:1"]


def test_image_uri_forms(tmp_path: Path) -> None:
    assert studies.parse_image_uris(["x.example/i:1"], ["tiny"]) == {"tiny": "x.example/i:1"}
    assert studies.parse_image_uris(["a=x/i:1", "b=y/j@sha256:00"], ["a", "b"]) == {
        "a": "x/i:1",
        "b": "y/j@sha256:00",
    }
    for given, message in (
        (["x/i:1"], "names no study and dags/studies/ has 2 (a, b)"),
        (["c=x/i:1"], "there is no study c in dags/studies/ (studies: a, b)"),
        (["a="], "not an image URI"),
        (["a=x/i:1", "a=x/i:2"], "gives study a twice"),
    ):
        with pytest.raises(DeployError, match=re.escape(message)):
            studies.parse_image_uris(given, ["a", "b"])


def test_a_bad_study_folder_or_none_at_all_is_refused_naming_it(tmp_path: Path) -> None:
    project = scratch_project(tmp_path, {"tiny": TINY})
    (project.studies / "tiny" / "study.yaml").write_text("cpu: lots\n")
    with pytest.raises(DeployError, match=r"dags/studies/: .*tiny/study.yaml: cpu: 'lots'"):
        studies.resolve(project, repository="p/images", image_uris=())
    shutil.rmtree(project.studies / "tiny")
    with pytest.raises(DeployError, match="no study in"):
        studies.resolve(project, repository="p/images", image_uris=())


def test_the_lifecycle_rules_keep_each_images_last_ones_longer_names_first() -> None:
    """ECR applies rules by priority, and an image a rule matches cannot be expired by a later
    one (ECR User Guide, lifecycle policies): `a-b-*` must come before `a-*`."""
    policy = json.loads(studies.lifecycle_policy(["a", "base", "a-b"]))
    rules = sorted(policy["rules"], key=lambda rule: rule["rulePriority"])
    assert [rule["selection"]["tagPatternList"] for rule in rules] == [
        ["base-*"],
        ["a-b-*"],
        ["a-*"],
    ]
    assert len({rule["rulePriority"] for rule in rules}) == len(rules)
    for rule in rules:
        assert rule["selection"]["tagStatus"] == "tagged"
        assert rule["selection"]["countType"] == "imageCountMoreThan"
        assert rule["selection"]["countNumber"] == studies.IMAGES_TO_KEEP
        assert rule["action"] == {"type": "expire"}
        # At most four wildcards per pattern (ECR User Guide, lifecycle policy properties).
        assert rule["selection"]["tagPatternList"][0].count("*") <= 4
    # A CloudFormation parameter value holds at most 4,096 bytes (CloudFormation quotas).
    with pytest.raises(DeployError, match="at most 4096"):
        studies.lifecycle_policy([f"image{n:02d}" for n in range(40)])


def test_a_study_name_with_an_underscore_gets_a_stack_name_cloudformation_takes(
    tmp_path: Path,
) -> None:
    """A stack name takes letters, digits and '-' only (CloudFormation API reference,
    CreateStack); the family and role keep the study's name. Two names that would share one
    stack are refused."""
    assert studies.stack_name("wb", "option_pricing") == "wb-study-option-pricing"
    project = scratch_project(tmp_path, {"a_b": TINY, "a-b": TINY})
    with pytest.raises(DeployError, match="studies a-b and a_b would share the stack"):
        studies.resolve(project, repository="p/images", image_uris=())


def test_study_stacks_are_found_by_their_tags_not_their_names() -> None:
    listed = [
        {"StackName": "wb-study-x", "Tags": [*tags("wb", "x")]},
        # A deployment named wb-study: its stacks are wb-study-*, tagged as its own.
        {"StackName": "wb-study-storage", "Tags": tags("wb-study", "")[:1]},
        {"StackName": "wb-study-y"},
        # Tagged for study z but named otherwise: not ours to delete.
        {"StackName": "wb-other", "Tags": [*tags("wb", "z")]},
    ]  # fmt: skip
    assert studies.deployed(listed, "wb") == {"x": "wb-study-x"}


def tags(prefix: str, study: str) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in studies.stack_tags(prefix, study).items()]


def test_the_repositorys_own_studies_resolve() -> None:
    """The checkout's dags/studies/ as it is: every study has an image."""
    from deployer.settings import Project

    found = studies.resolve(Project(root=REPO), repository="p/images", image_uris=())
    assert found.studies
    assert found.sources[0].name == "base"
