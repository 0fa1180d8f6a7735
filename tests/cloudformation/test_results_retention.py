"""The results bucket: published results stay recoverable, every task result expires.

Issue 17 point 11: a study's task role may PutObject anywhere under its results prefix, so any
container (or a bug) could replace a past run's published results for good, and only the
default task prefix expired. AWS's rules the template is held to:
- A lifecycle rule selects objects by key prefix and by object tags; its Expiration acts on an
  object's current version. On a versioning-enabled bucket it only adds a delete marker, and
  what was replaced stays as a noncurrent version until a NoncurrentVersionExpiration removes
  it (S3 User Guide, "Lifecycle configuration elements" and "Expiring objects").
- ExpiredObjectDeleteMarker cannot be given with Days or Date (S3 API reference,
  LifecycleExpiration) nor in a rule with a tag-based filter ("Lifecycle configuration
  elements").
- A PutObject that sets tags (x-amz-tagging) is also authorized as s3:PutObjectTagging, and the
  condition key s3:RequestObjectTag/<key> restricts the tags it may set (S3 User Guide,
  "Tagging and access control policies"; PutObject API reference).

moto keeps object tags and versions but never runs lifecycle rules, and its CloudFormation
ignores both versioning and lifecycle: the template's rules are evaluated here against the tags
the task runner (wbrun) and bersim really write into moto, and the template's versioning is
applied as CloudFormation would.
"""

from __future__ import annotations

import sys
from typing import Any

import boto3
import pytest

from bersim.storage import TASK_RESULT_TAGS, Storage, parse_uri
from wbrun.runner import RECORD_TAGS
from wbrun.storage import Store

from ..conftest import REPO, load_module
from .test_templates import REGION, aws, create_stack, load  # noqa: F401  (aws: fixture)

iam_policy = load_module("iam_policy", REPO / "tests" / "dags" / "iam_policy.py")
if str(REPO / "dags") not in sys.path:
    sys.path.insert(0, str(REPO / "dags"))

# (task results prefix, aggregate results prefix) of BER runs the form accepts on ECS (checked
# below with the study's validate): the defaults, a study's own folder, and a published folder
# whose name starts like the old default task prefix.
ACCEPTED_PREFIXES = [
    ("sim/task_results", "sim/aggregate_results"),
    ("sim/my_study/tasks", "sim/my_study/results"),
    ("sim/tr", "sim/task_results/published"),
]
RUN_ID = "manual__2026-01-02T03:04:05+00:00"


def results_bucket_properties() -> dict[str, Any]:
    return dict(load("storage")["Resources"]["ResultsBucket"]["Properties"])


def lifecycle_rules() -> list[dict[str, Any]]:
    return list(results_bucket_properties()["LifecycleConfiguration"]["Rules"])


def expires_current_version(rule: dict[str, Any], key: str, tags: dict[str, str]) -> bool:
    """Whether an enabled rule's Expiration applies to this object (prefix and tag filters)."""
    if rule["Status"] != "Enabled":
        return False
    if "ExpirationInDays" not in rule and "ExpirationDate" not in rule:
        return False
    wanted = {f["Key"]: f["Value"] for f in rule.get("TagFilters", [])}
    if rule.get("TagFilter"):
        wanted[rule["TagFilter"]["Key"]] = rule["TagFilter"]["Value"]
    return key.startswith(rule.get("Prefix", "")) and wanted.items() <= tags.items()


def object_tags(s3: Any, bucket: str, key: str) -> dict[str, str]:
    tag_set = s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    return {tag["Key"]: tag["Value"] for tag in tag_set}


@pytest.fixture
def results_bucket(aws: Any) -> str:  # noqa: F811
    """The storage stack's results bucket in moto, versioned as the template says."""
    bucket = create_stack(aws, "storage", "t-storage")["ResultsBucketName"]
    versioning = results_bucket_properties().get("VersioningConfiguration")
    if versioning:
        boto3.client("s3", region_name=REGION).put_bucket_versioning(
            Bucket=bucket, VersioningConfiguration=versioning
        )
    return bucket


def test_the_prefixes_used_here_are_ones_the_form_accepts() -> None:
    from studies.bersim.form import DEFAULTS, validate

    for task_prefix, aggregate_prefix in ACCEPTED_PREFIXES:
        conf = {
            "s3_prefix_task_results": task_prefix,
            "s3_prefix_aggregate_results": aggregate_prefix,
        }
        validate({**DEFAULTS, **conf}, bucket="results-bucket", results_prefix="sim", local=False)


def test_the_runners_item_records_expire_and_its_chunk_records_and_outputs_do_not(
    results_bucket: str,
) -> None:
    """wbrun's records of a run (runner.py): the per-item ones only serve a retry."""
    store = Store()
    engine = f"s3://{results_bucket}/studies/render/_engine/{RUN_ID}/"
    item_key = f"studies/render/_engine/{RUN_ID}/items/Render-00007.json"
    chunk_key = f"studies/render/_engine/{RUN_ID}/chunks/done/00001-50.json"
    output_key = f"studies/render/runs/{RUN_ID}/frames/frame-0007.png"
    store.write(engine + "items/Render-00007.json", b"{}", tags=RECORD_TAGS)
    store.write(engine + "chunks/done/00001-50.json", b"{}")
    store.write(f"s3://{results_bucket}/{output_key}", b"png")
    s3 = boto3.client("s3", region_name=REGION)
    rules = lifecycle_rules()
    tags = object_tags(s3, results_bucket, item_key)
    assert tags == RECORD_TAGS == TASK_RESULT_TAGS
    assert any(expires_current_version(r, item_key, tags) for r in rules)
    for key in (chunk_key, output_key):
        kept = object_tags(s3, results_bucket, key)
        assert not any(expires_current_version(r, key, kept) for r in rules), key


@pytest.mark.parametrize(("task_prefix", "aggregate_prefix"), ACCEPTED_PREFIXES)
def test_every_task_result_expires_and_no_published_result_does(
    results_bucket: str, task_prefix: str, aggregate_prefix: str
) -> None:
    store = Storage()
    task_key = f"{task_prefix}/{RUN_ID}/task-00003.json"
    # What bersim simulate writes (docker/bersim/cli.py) and what aggregate publishes.
    store.write_bytes(
        parse_uri(f"s3://{results_bucket}/{task_key}", option="--output", is_prefix=False),
        b"{}",
        tags=TASK_RESULT_TAGS,
    )
    published = [f"{aggregate_prefix}/{RUN_ID}/results.{ext}" for ext in ("csv", "json", "png")]
    for key in published:
        store.write_bytes(
            parse_uri(f"s3://{results_bucket}/{key}", option="--output", is_prefix=True), b"x"
        )
    s3 = boto3.client("s3", region_name=REGION)
    rules = lifecycle_rules()
    task_tags = object_tags(s3, results_bucket, task_key)
    assert task_tags == TASK_RESULT_TAGS
    assert any(expires_current_version(r, task_key, task_tags) for r in rules), task_key
    for key in published:
        tags = object_tags(s3, results_bucket, key)
        assert not any(expires_current_version(r, key, tags) for r in rules), key


def test_an_overwritten_published_result_stays_recoverable(results_bucket: str) -> None:
    key = f"sim/aggregate_results/{RUN_ID}/results.json"
    loc = parse_uri(f"s3://{results_bucket}/{key}", option="--output", is_prefix=False)
    Storage().write_bytes(loc, b'{"published": true}')
    Storage().write_bytes(loc, b"overwritten by a stray container")
    s3 = boto3.client("s3", region_name=REGION)
    versions = s3.list_object_versions(Bucket=results_bucket, Prefix=key)["Versions"]
    assert len(versions) == 2
    (old,) = [v for v in versions if not v["IsLatest"]]
    body = s3.get_object(Bucket=results_bucket, Key=key, VersionId=old["VersionId"])["Body"]
    assert body.read() == b'{"published": true}'


def test_replaced_versions_expire_after_a_parameter_and_the_rules_are_ones_aws_accepts() -> None:
    template = load("storage")
    rules = {rule["Id"]: rule for rule in lifecycle_rules()}
    # Every replaced, expired or deleted version goes, after the window a person has to notice.
    replaced = rules["ExpireReplacedVersions"]
    assert replaced["Status"] == "Enabled"
    assert "Prefix" not in replaced
    assert "TagFilters" not in replaced
    assert replaced["NoncurrentVersionExpiration"] == {
        "NoncurrentDays": {"Ref": "ReplacedResultsExpirationInDays"}
    }
    assert template["Parameters"]["ReplacedResultsExpirationInDays"]["Default"] == 14
    # The task results rule reads exactly the tags bersim writes.
    tagged = rules["ExpireTaskResults"]
    assert tagged["TagFilters"] == [{"Key": k, "Value": v} for k, v in TASK_RESULT_TAGS.items()]
    assert tagged["ExpirationInDays"] == {"Ref": "TaskResultsExpirationInDays"}
    assert "Prefix" not in tagged
    for rule in rules.values():
        if rule.get("ExpiredObjectDeleteMarker"):
            assert not {"ExpirationInDays", "ExpirationDate", "TagFilters"} & set(rule), rule


def _task_role_statements() -> list[dict[str, Any]]:
    """A study's task role (study.yaml) with the BER study's prefix, sim."""
    role = load("study")["Resources"]["TaskRole"]["Properties"]
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]

    def resolve(value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"Fn::Sub"}:
            return (
                value["Fn::Sub"]
                .replace("${AWS::Partition}", "aws")
                .replace("${ResultsBucketName}", "results-bucket")
                .replace("${ResultsPrefix}", "sim")
            )
        if isinstance(value, list):
            return [resolve(v) for v in value]
        return value

    return [{**s, "Resource": resolve(s["Resource"])} for s in statements]


@pytest.mark.parametrize(
    ("action", "key", "tags", "decision"),
    [
        pytest.param("s3:PutObject", "sim/x/task-00001.json", {}, "Allow", id="put"),
        pytest.param(
            "s3:PutObjectTagging",
            "sim/x/task-00001.json",
            TASK_RESULT_TAGS,
            "Allow",
            id="tag-a-task-result",
        ),
        pytest.param(
            "s3:PutObjectTagging",
            "sim/x/task-00001.json",
            {"windows-batch-retention": "keep"},
            "ImplicitDeny",
            id="tag-another-value",
        ),
        pytest.param("s3:PutObjectTagging", "sim/x/a.json", {}, "ImplicitDeny", id="untag"),
        pytest.param("s3:DeleteObjectVersion", "sim/x/a.json", {}, "ImplicitDeny", id="purge"),
        pytest.param("s3:DeleteObject", "sim/x/a.json", {}, "ImplicitDeny", id="delete"),
    ],
)
def test_the_task_role_can_tag_only_for_expiry_and_never_remove_a_version(
    action: str, key: str, tags: dict[str, str], decision: str
) -> None:
    context = {f"s3:RequestObjectTag/{k}": v for k, v in tags.items()}
    request = iam_policy.Request(action, f"arn:aws:s3:::results-bucket/{key}", context)
    assert iam_policy.evaluate(_task_role_statements(), request) == decision
    for bucket_action in ("s3:PutBucketVersioning", "s3:PutLifecycleConfiguration"):
        bucket = iam_policy.Request(bucket_action, "arn:aws:s3:::results-bucket")
        assert iam_policy.evaluate(_task_role_statements(), bucket) == "ImplicitDeny"
