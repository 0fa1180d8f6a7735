"""The IAM checker of the ECS end-to-end tests (iam_policy.py) decides as AWS documents.

IAM User Guide, "Policy evaluation logic" (explicit deny > allow > implicit deny) and "IAM JSON
policy elements: Condition operators" (a missing key fails a positive operator, ...IfExists
passes). The statements below have the shapes of our templates' (mwaa.yaml, study.yaml).
"""

from __future__ import annotations

import pytest

from .iam_policy import ALLOW, DENY, IMPLICIT_DENY, Request, evaluate

CLUSTER = "arn:aws:ecs:us-east-1:123456789012:cluster/wb-ecs-cluster"
RUN_TASK = {
    "Effect": "Allow",
    "Action": "ecs:RunTask",
    "Resource": "arn:aws:ecs:us-east-1:123456789012:task-definition/wb-study-*:*",
    "Condition": {"ArnEquals": {"ecs:cluster": CLUSTER}},
}
LIST_OWN = {
    "Effect": "Allow",
    "Action": "s3:ListBucket",
    "Resource": "arn:aws:s3:::results",
    "Condition": {"StringLike": {"s3:prefix": ["studies/tiny/*"]}},
}
KMS = {
    "Effect": "Allow",
    "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
    "NotResource": "arn:aws:kms:*:123456789012:key/*",
    "Condition": {"StringLike": {"kms:ViaService": ["sqs.us-east-1.amazonaws.com"]}},
}
TASK_DEF = "arn:aws:ecs:us-east-1:123456789012:task-definition/wb-study-tiny:1"


@pytest.mark.parametrize(
    ("statements", "request_", "decision"),
    [
        pytest.param(
            [RUN_TASK],
            Request("ecs:RunTask", TASK_DEF, {"ecs:cluster": CLUSTER}),
            ALLOW,
            id="scoped-allow",
        ),
        pytest.param(
            [RUN_TASK],
            Request("ECS:runtask", TASK_DEF, {"ecs:cluster": CLUSTER}),
            ALLOW,
            id="action-case-insensitive",
        ),
        pytest.param(
            [RUN_TASK],
            Request("ecs:RunTask", TASK_DEF, {"ecs:cluster": CLUSTER.replace("wb-ecs", "other")}),
            IMPLICIT_DENY,
            id="other-cluster",
        ),
        pytest.param(
            [RUN_TASK], Request("ecs:RunTask", TASK_DEF), IMPLICIT_DENY, id="condition-key-missing"
        ),
        pytest.param(
            [RUN_TASK],
            Request("ecs:RunTask", "*", {"ecs:cluster": CLUSTER}),
            IMPLICIT_DENY,
            id="star-is-not-an-arn",
        ),
        pytest.param(
            [RUN_TASK],
            Request("ecs:StopTask", TASK_DEF, {"ecs:cluster": CLUSTER}),
            IMPLICIT_DENY,
            id="other-action",
        ),
        pytest.param(
            [LIST_OWN],
            Request(
                "s3:ListBucket", "arn:aws:s3:::results", {"s3:prefix": "studies/tiny/_engine/r/"}
            ),
            ALLOW,
            id="prefix-like",
        ),
        pytest.param(
            [LIST_OWN],
            Request("s3:ListBucket", "arn:aws:s3:::results", {"s3:prefix": "studies/other/"}),
            IMPLICIT_DENY,
            id="prefix-outside",
        ),
        pytest.param(
            [LIST_OWN],
            Request("s3:ListBucket", "arn:aws:s3:::results"),
            IMPLICIT_DENY,
            id="head-bucket-no-prefix",
        ),
        pytest.param(
            [KMS],
            Request(
                "kms:Decrypt",
                "arn:aws:kms:us-east-1:999999999999:key/k",
                {"kms:ViaService": "sqs.us-east-1.amazonaws.com"},
            ),
            ALLOW,
            id="not-resource-other-account",
        ),
        pytest.param(
            [KMS],
            Request(
                "kms:Decrypt",
                "arn:aws:kms:us-east-1:123456789012:key/k",
                {"kms:ViaService": "sqs.us-east-1.amazonaws.com"},
            ),
            IMPLICIT_DENY,
            id="not-resource-own-account",
        ),
        pytest.param(
            [KMS],
            Request(
                "kms:GenerateDataKeyWithoutPlaintext",
                "arn:aws:kms:us-east-1:9:key/k",
                {"kms:ViaService": "s3.us-east-1.amazonaws.com"},
            ),
            IMPLICIT_DENY,
            id="via-other-service",
        ),
        pytest.param(
            [
                LIST_OWN,
                {
                    "Effect": "Deny",
                    "Action": "s3:*",
                    "Resource": "*",
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                },
            ],
            Request(
                "s3:ListBucket",
                "arn:aws:s3:::results",
                {"s3:prefix": "studies/tiny/", "aws:SecureTransport": "false"},
            ),
            DENY,
            id="explicit-deny-wins",
        ),
        pytest.param(
            [
                {
                    "Effect": "Allow",
                    "Action": "iam:PassRole",
                    "Resource": "arn:aws:iam::1:role/r",
                    "Condition": {
                        "StringEqualsIfExists": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}
                    },
                }
            ],
            Request("iam:PassRole", "arn:aws:iam::1:role/r"),
            ALLOW,
            id="if-exists-missing-key",
        ),
        pytest.param(
            [
                {
                    "Effect": "Allow",
                    "Action": "s3:GetObject",
                    "Resource": "*",
                    "Condition": {"StringNotEquals": {"aws:SourceVpc": "vpc-1"}},
                }
            ],
            Request("s3:GetObject", "arn:aws:s3:::b/k"),
            ALLOW,
            id="negated-missing-key",
        ),
    ],
)
def test_decisions(statements: list[dict[str, object]], request_: Request, decision: str) -> None:
    assert evaluate(statements, request_) == decision


def test_an_operator_it_cannot_evaluate_fails_loudly() -> None:
    statement = {
        "Effect": "Allow",
        "Action": "s3:GetObject",
        "Resource": "*",
        "Condition": {"DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}},
    }
    with pytest.raises(ValueError, match="DateGreaterThan"):
        evaluate([statement], Request("s3:GetObject", "arn:aws:s3:::b/k", {"aws:CurrentTime": "x"}))
