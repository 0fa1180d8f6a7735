"""Evaluate IAM identity policies the way AWS documents it, for one request at a time.

moto's own check (moto/iam/access_control.py) matches the action, compares every non-S3 call
against the resource "*" (so a statement scoped to an ARN never allows anything) and ignores
conditions other than StringEquals on sts:ExternalId. This module is what the moto ECS server
(tests/dags/moto_ecs_server.py) uses instead, with the request's real resource ARNs and
condition keys. It follows AWS's policy evaluation logic for one account:

- an explicit Deny in any statement wins; otherwise an Allow that matches decides; otherwise the
  request is implicitly denied;
- Action/NotAction match case-insensitively with `*` and `?` wildcards, Resource/NotResource
  case-sensitively with the same wildcards;
- several condition operators in a block are ANDed, several keys under one operator are ANDed,
  several values for one key are ORed; a key the request does not carry makes a positive
  operator false and a negated one true, and `...IfExists` makes a missing key true.

An operator it does not know raises, so a policy it cannot evaluate fails loudly instead of being
waved through. Sources: "Policy evaluation logic" and "IAM JSON policy elements: Condition
operators" in the IAM User Guide.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ALLOW = "Allow"
DENY = "Deny"
IMPLICIT_DENY = "ImplicitDeny"


@dataclass(frozen=True)
class Request:
    """One authorization request: an action on a resource ARN with its condition keys."""

    action: str
    resource: str
    context: Mapping[str, str | list[str]] = field(default_factory=dict)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _glob(pattern: str, value: str, *, ignore_case: bool) -> bool:
    regex = fnmatch.translate(pattern)  # * and ?; brackets do not occur in ARNs we evaluate
    return re.match(regex, value, re.IGNORECASE if ignore_case else 0) is not None


def _arn_like(pattern: str, value: str) -> bool:
    """ArnLike: the six colon-separated parts match one by one (wildcards within a part)."""
    want = pattern.split(":", 5)
    have = value.split(":", 5)
    if len(want) != 6 or len(have) != 6:
        return False
    return all(_glob(w, h, ignore_case=False) for w, h in zip(want, have, strict=True))


def _compare(base: str, expected: str, actual: str) -> bool:
    if base == "StringEquals":
        return expected == actual
    if base == "StringEqualsIgnoreCase":
        return expected.lower() == actual.lower()
    if base == "StringLike":
        return _glob(expected, actual, ignore_case=False)
    if base in {"ArnLike", "ArnEquals"}:  # AWS documents both with per-part wildcards
        return _arn_like(expected, actual)
    if base == "Bool":
        return expected.lower() == actual.lower()
    raise ValueError(f"condition operator {base!r} is not supported by this checker")


_NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
}
_POSITIVE = {"StringEquals", "StringEqualsIgnoreCase", "StringLike", "ArnEquals", "ArnLike", "Bool"}


def _condition_holds(operator: str, key: str, values: Any, context: Mapping[str, Any]) -> bool:
    if_exists = operator.endswith("IfExists")
    base = operator.removesuffix("IfExists")
    present = {k.lower(): v for k, v in context.items()}
    actual = present.get(key.lower())
    expected = [str(v) for v in _as_list(values)]
    if base == "Null":
        return (actual is None) == (expected[0].lower() == "true")
    if actual is None:
        return if_exists or base in _NEGATED
    actual_values = [str(v) for v in _as_list(actual)]
    if base in _NEGATED:
        positive = _NEGATED[base]
        return not any(_compare(positive, e, a) for e in expected for a in actual_values)
    if base not in _POSITIVE:
        raise ValueError(f"condition operator {operator!r} is not supported by this checker")
    return any(_compare(base, e, a) for e in expected for a in actual_values)


def _conditions_hold(conditions: Mapping[str, Any] | None, context: Mapping[str, Any]) -> bool:
    for operator, block in (conditions or {}).items():
        if ":" in operator:  # ForAnyValue:/ForAllValues: set operators
            raise ValueError(f"condition operator {operator!r} is not supported by this checker")
        for key, values in block.items():
            if not _condition_holds(operator, key, values, context):
                return False
    return True


def _matches(statement: Mapping[str, Any], request: Request) -> bool:
    if "Action" in statement:
        if not any(
            _glob(a, request.action, ignore_case=True) for a in _as_list(statement["Action"])
        ):
            return False
    elif any(_glob(a, request.action, ignore_case=True) for a in _as_list(statement["NotAction"])):
        return False
    if "Resource" in statement:
        if not any(
            _glob(r, request.resource, ignore_case=False) for r in _as_list(statement["Resource"])
        ):
            return False
    elif "NotResource" in statement and any(
        _glob(r, request.resource, ignore_case=False) for r in _as_list(statement["NotResource"])
    ):
        return False
    return _conditions_hold(statement.get("Condition"), request.context)


def statements_of(documents: Iterable[str | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every statement of the policy documents (JSON text or parsed)."""
    found: list[dict[str, Any]] = []
    for document in documents:
        parsed = json.loads(document) if isinstance(document, str) else dict(document)
        found.extend(_as_list(parsed.get("Statement")))
    return found


def evaluate(statements: Iterable[Mapping[str, Any]], request: Request) -> str:
    """ALLOW, DENY (an explicit Deny matched) or IMPLICIT_DENY (nothing allowed it)."""
    allowed = False
    for statement in statements:
        if not _matches(statement, request):
            continue
        if statement.get("Effect") == DENY:
            return DENY
        allowed = True
    return ALLOW if allowed else IMPLICIT_DENY
