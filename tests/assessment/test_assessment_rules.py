"""The assessment service's pure rules, without gRPC: scoping, request checks, budgets."""

from __future__ import annotations

import pytest

from assay.assessment.v1 import assessment_service_pb2 as pb
from assaylib import errors
from assaylib.auth import Principal
from assessment_svc.archive_client import DEFAULT_TIMEOUT, Budget
from assessment_svc.submissions import (
    list_owner,
    owner_scope,
    result_request_violations,
    submit_request_violations,
)
from tests.assessment.conftest import submission

USER = Principal("alice", frozenset({"user"}))
OPERATOR = Principal("admin", frozenset({"operator"}))
SERVICE = Principal("cli", frozenset({"service"}))
JOB = "7f4b3c2a-1d2e-4f50-8a9b-0c1d2e3f4a5b"


def test_owner_scope_restricts_users_only() -> None:
    assert owner_scope(USER) == "alice"
    assert owner_scope(OPERATOR) == ""
    assert owner_scope(SERVICE) == ""


def test_list_owner() -> None:
    assert list_owner(USER, "") == ""
    assert list_owner(USER, "alice") == "alice"
    with pytest.raises(errors.PermissionDenied):
        list_owner(USER, "bob")
    assert list_owner(OPERATOR, "bob") == "bob"
    assert list_owner(SERVICE, "bob") == "bob"


@pytest.mark.parametrize(
    ("request_fields", "fields"),
    [
        ({"job_id": JOB}, []),
        ({"result_id": JOB}, []),
        ({}, ["result_id"]),
        ({"job_id": JOB, "result_id": JOB}, ["job_id"]),
        ({"job_id": "x"}, ["job_id"]),
        ({"result_id": "x"}, ["result_id"]),
    ],
)
def test_result_request(request_fields: dict[str, str], fields: list[str]) -> None:
    violations = result_request_violations(pb.GetResultRequest(**request_fields))
    assert [v.field for v in violations] == fields


def test_request_id_rules() -> None:
    assert submit_request_violations(submission(request_id="a-key:1")) == []
    assert submit_request_violations(submission()) == []
    for bad in ("k" * 201, "tab\tkey"):
        violations = submit_request_violations(submission(request_id=bad))
        assert [v.field for v in violations] == ["request_id"]


def test_budget() -> None:
    assert DEFAULT_TIMEOUT - 1 < Budget(None).remaining() <= DEFAULT_TIMEOUT
    assert 1 < Budget(2.0).remaining() <= 2.0
    with pytest.raises(errors.DeadlineExceeded):
        Budget(0.0).remaining()
    with pytest.raises(errors.DeadlineExceeded):
        Budget(-1.0).remaining()
