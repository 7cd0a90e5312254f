"""Hostile input to every public RPC: never INTERNAL or UNKNOWN, a status that always fits a
client's metadata limit, and nothing stored for a refused call.

Hypothesis drives SubmitAssessment and the other AssessmentService RPCs, the archive's RPCs
(as a service would call them) and WatchJobs with NUL and other control characters, NaN and
±Infinity, huge and deeply nested values, forged page tokens and out-of-range numbers. Raw
bytes that are no request at all are sent to every method of every service.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import descriptor_pool, struct_pb2
from google.protobuf.message import Message
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from archive_svc.app import ArchiveApp
from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay.assessment.v1 import assessment_service_pb2 as pb
from assay.common.v1 import assessment_pb2
from assay.notifier.v1 import notifier_service_pb2 as notifier_pb
from assay.notifier.v1 import notifier_service_pb2_grpc as notifier_grpc
from assaylib.auth import bearer_token_interceptors
from assaylib.config import Settings
from assaylib.errors import STATUS_DETAILS_KEY, error_from_rpc, field_violations_of
from assaylib.jobs import ASSESSMENT_NAMES
from assessment_svc.app import AssessmentApp
from notifier.app import NotifierApp
from tests.archive.helpers import check_invariants, snapshot, talent_data
from tests.assessment.conftest import StubFactory, grant
from tests.conftest import token

MAX_STATUS_BYTES = 8 * 1024
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE}
EXAMPLES = hypothesis_settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# ---- strategies ------------------------------------------------------------------------

SHORT = st.text(max_size=30)  # every code point but surrogates: NUL and controls included
HOSTILE_TEXT = st.one_of(
    SHORT,
    st.sampled_from(["\x00", "a\x00b", "\x01\x1f\x7f", "a.b.*.>", "\u202e", "'--"]),
    st.integers(10_000, 13_000).map(lambda n: "x" * n),
    st.builds(lambda text, n: text * n, SHORT.filter(bool), st.integers(100, 2000)),
)
IDS = st.one_of(HOSTILE_TEXT, st.uuids().map(str))
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
META = st.recursive(
    st.one_of(st.none(), st.booleans(), FLOATS, HOSTILE_TEXT),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(HOSTILE_TEXT, inner, max_size=3)
    ),
    max_leaves=8,
)


def forged_token(parts: list[Any]) -> str:
    """A page token as an attacker would forge one: the old unsigned base64 JSON."""
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode()


PAGE_TOKENS = st.one_of(
    HOSTILE_TEXT,
    st.lists(st.one_of(st.integers(), HOSTILE_TEXT, st.none()), max_size=3).map(forged_token),
    st.sampled_from(
        [
            forged_token(["2024-01-01T00:00:00+00:00", 5]),
            forged_token(["0001-01-01T00:00:00+14:00", "5f0c1c1e-8a8e-4a53-9d7b-2f0c1c1e8a8e"]),
            "eyJ4Ijo1fQ.AAAAAAAAAAAAAAAAAAAAAA",
        ]
    ),
)


def mostly_valid(valid: Any, hostile: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` three times in four, else a hostile value."""
    return st.integers(0, 3).flatmap(lambda n: hostile if n == 0 else st.just(valid))


@st.composite
def raw_item(draw: st.DrawFn) -> assessment_pb2.RawResponseItem:
    """A raw answer with any field possibly hostile."""
    item = assessment_pb2.RawResponseItem(question_id=draw(mostly_valid("q1", HOSTILE_TEXT)))
    kind = draw(st.sampled_from(["number", "text", "bool", "none"]))
    if kind == "number":
        item.number_value = draw(mostly_valid(42.0, FLOATS))
    elif kind == "text":
        item.text_value = draw(mostly_valid("an answer", HOSTILE_TEXT))
    elif kind == "bool":
        item.bool_value = draw(st.booleans())
    if draw(st.booleans()):
        item.weight = draw(mostly_valid(1.0, FLOATS))
    if draw(st.booleans()):
        item.meta.update(draw(st.dictionaries(HOSTILE_TEXT, META, max_size=3)))
    return item


@st.composite
def raw_responses(draw: st.DrawFn) -> assessment_pb2.RawResponses:
    """Raw answers with anything possibly hostile."""
    raw = assessment_pb2.RawResponses()
    for key in draw(st.lists(mostly_valid("riasec", HOSTILE_TEXT), max_size=3)):
        raw.responses[key].items.extend(draw(st.lists(raw_item(), max_size=4)))
    return raw


@st.composite
def assessment_data(draw: st.DrawFn) -> assessment_pb2.AssessmentData:
    """Talent Mapping scores, half the time with some missing or out of range."""
    data = talent_data()
    if draw(st.booleans()):
        return data
    for group in ("riasec", "ocean", "via_is"):
        message = getattr(data, group)
        for field in draw(st.lists(st.sampled_from(list(message.DESCRIPTOR.fields)), max_size=2)):
            if draw(st.booleans()):
                message.ClearField(field.name)
            else:
                setattr(message, field.name, draw(INT32))
    return data


NAMES = mostly_valid("", st.one_of(st.sampled_from(ASSESSMENT_NAMES), HOSTILE_TEXT))


def _item(**fields: Any) -> assessment_pb2.RawResponseItem:
    return assessment_pb2.RawResponseItem(**{"question_id": "q1", "number_value": 50, **fields})


def _with_meta(meta: dict[str, Any]) -> assessment_pb2.RawResponseItem:
    item = _item()
    item.meta.update(meta)
    return item


Mutation = Callable[[pb.SubmitAssessmentRequest], None]


def set_name(name: str) -> Mutation:
    return lambda request: setattr(request, "assessment_name", name)


def set_data(data: assessment_pb2.AssessmentData) -> Mutation:
    return lambda request: request.assessment_data.CopyFrom(data)


def add_item(item: assessment_pb2.RawResponseItem, key: str = "riasec") -> Mutation:
    return lambda request: request.raw_responses.responses[key].items.append(item)


def add_blank_items(count: int) -> Mutation:
    blank = [assessment_pb2.RawResponseItem() for _ in range(count)]
    return lambda request: request.raw_responses.responses["bulk"].items.extend(blank)


def merge_raw(raw: assessment_pb2.RawResponses) -> Mutation:
    return lambda request: request.raw_responses.MergeFrom(raw)


def set_request_id(request_id: str) -> Mutation:
    return lambda request: setattr(request, "request_id", request_id)


# Each mutation makes one part of an otherwise valid submission hostile, so that the hostile
# value meets the deepest check (and the database) rather than an earlier refusal.
MUTATIONS: st.SearchStrategy[Mutation] = st.one_of(
    NAMES.map(set_name),
    assessment_data().map(set_data),
    HOSTILE_TEXT.map(lambda text: add_item(_item(question_id=text))),
    HOSTILE_TEXT.map(lambda text: add_item(_item(text_value=text))),
    FLOATS.map(lambda number: add_item(_item(number_value=number))),
    FLOATS.map(lambda weight: add_item(_item(weight=weight))),
    st.dictionaries(HOSTILE_TEXT, META, min_size=1, max_size=3).map(
        lambda meta: add_item(_with_meta(meta))
    ),
    HOSTILE_TEXT.map(lambda key: add_item(_item(), key)),
    st.integers(50, 60_000).map(add_blank_items),
    raw_responses().map(merge_raw),
    st.one_of(st.uuids().map(str), HOSTILE_TEXT).map(set_request_id),
)


@st.composite
def submission(draw: st.DrawFn) -> pb.SubmitAssessmentRequest:
    """A valid submission with one or two hostile mutations."""
    request = pb.SubmitAssessmentRequest(assessment_data=talent_data())
    request.raw_responses.responses["riasec"].items.append(_item())
    for mutate in draw(st.lists(MUTATIONS, min_size=1, max_size=2)):
        mutate(request)
    return request


Call = tuple[str, Message]
"""A method name and its request."""


def assessment_calls() -> st.SearchStrategy[Call]:
    """Every AssessmentService RPC but SubmitAssessment, with hostile fields."""
    return st.one_of(
        st.builds(pb.GetJobRequest, job_id=IDS).map(lambda r: ("GetJob", r)),
        st.builds(
            pb.ListJobsRequest,
            status=st.integers(-3, 9),
            page_size=INT32,
            page_token=PAGE_TOKENS,
            user_id=st.one_of(st.just(""), IDS),
        ).map(lambda r: ("ListJobs", r)),
        st.builds(pb.GetResultRequest, result_id=IDS, job_id=IDS).map(lambda r: ("GetResult", r)),
        st.builds(pb.CancelJobRequest, job_id=IDS).map(lambda r: ("CancelJob", r)),
        st.builds(pb.RetryJobRequest, job_id=IDS).map(lambda r: ("RetryJob", r)),
        st.builds(pb.GetTokenBalanceRequest, user_id=IDS).map(lambda r: ("GetTokenBalance", r)),
    )


@st.composite
def profile(draw: st.DrawFn) -> assessment_pb2.PersonaProfile:
    return assessment_pb2.PersonaProfile(
        archetype=draw(HOSTILE_TEXT),
        strengths=draw(st.lists(HOSTILE_TEXT, max_size=3)),
        role_model=[assessment_pb2.RoleModel(name=draw(HOSTILE_TEXT))],
    )


def durations() -> st.SearchStrategy[Any]:
    from google.protobuf.duration_pb2 import Duration

    return st.builds(
        Duration, seconds=st.integers(-315_576_000_000, 315_576_000_000), nanos=st.just(0)
    )


def archive_calls() -> st.SearchStrategy[Call]:
    """The archive's RPCs as a (buggy or hostile) service could call them."""
    attempt = st.integers(-5, 2**31 - 1)
    return st.one_of(
        st.builds(
            archive_pb.CreateSubmissionRequest,
            user_id=IDS,
            assessment_name=NAMES,
            assessment_data=assessment_data(),
            raw_responses=raw_responses(),
            request_id=st.one_of(st.just(""), HOSTILE_TEXT),
            max_inflight=INT32,
        ).map(lambda r: ("CreateSubmission", r)),
        st.builds(
            archive_pb.GrantTokensRequest, user_id=IDS, amount=INT64, reason=HOSTILE_TEXT
        ).map(lambda r: ("GrantTokens", r)),
        st.builds(
            archive_pb.FailJobRequest,
            job_id=IDS,
            worker_id=st.one_of(st.just(""), IDS),
            attempt=attempt,
            error_code=HOSTILE_TEXT,
            error_message=HOSTILE_TEXT,
        ).map(lambda r: ("FailJob", r)),
        st.builds(
            archive_pb.CompleteJobRequest,
            job_id=IDS,
            worker_id=IDS,
            attempt=attempt,
            test_result=profile(),
        ).map(lambda r: ("CompleteJob", r)),
        st.builds(
            archive_pb.CancelJobRequest,
            job_id=IDS,
            user_id=st.one_of(st.just(""), IDS),
            worker_id=st.one_of(st.just(""), IDS),
            attempt=attempt,
        ).map(lambda r: ("CancelJob", r)),
        st.builds(archive_pb.StartJobRequest, job_id=IDS, worker_id=IDS).map(
            lambda r: ("StartJob", r)
        ),
        st.builds(archive_pb.HeartbeatRequest, job_id=IDS, worker_id=IDS, attempt=attempt).map(
            lambda r: ("Heartbeat", r)
        ),
        st.builds(archive_pb.RetryJobRequest, job_id=IDS, user_id=IDS).map(
            lambda r: ("RetryJob", r)
        ),
        st.builds(archive_pb.GetJobRequest, job_id=IDS, user_id=IDS).map(lambda r: ("GetJob", r)),
        st.builds(archive_pb.GetResultRequest, result_id=IDS, user_id=IDS).map(
            lambda r: ("GetResult", r)
        ),
        st.builds(
            archive_pb.ListResultsRequest, user_id=IDS, page_size=INT32, page_token=PAGE_TOKENS
        ).map(lambda r: ("ListResults", r)),
        st.builds(
            archive_pb.ListLedgerEntriesRequest,
            user_id=IDS,
            job_id=st.one_of(st.just(""), IDS),
            page_size=INT32,
            page_token=PAGE_TOKENS,
        ).map(lambda r: ("ListLedgerEntries", r)),
        st.builds(
            archive_pb.ListStuckJobsRequest,
            stuck_after=durations(),
            max_processing=durations(),
            page_size=INT32,
            page_token=PAGE_TOKENS,
        ).map(lambda r: ("ListStuckJobs", r)),
        st.builds(
            archive_pb.SweepStuckJobsRequest,
            stuck_after=durations(),
            max_processing=durations(),
            max_queued=durations(),
            limit=INT32,
            dry_run=st.just(True),
            max_fraction=FLOATS,
        ).map(lambda r: ("SweepStuckJobs", r)),
        st.builds(
            archive_pb.CreateResultRequest,
            job_id=IDS,
            test_data=assessment_data(),
            raw_responses=raw_responses(),
        ).map(lambda r: ("CreateResult", r)),
        st.builds(
            archive_pb.UpdateResultRequest,
            result=st.builds(
                lambda rid, raw, prof: _result(rid, raw, prof), IDS, raw_responses(), profile()
            ),
        ).map(lambda r: ("UpdateResult", _masked(r))),
    )


def _result(result_id: str, raw: Any, profile: Any) -> Any:
    from assay.common.v1 import job_pb2

    return job_pb2.AnalysisResult(result_id=result_id, raw_responses=raw, test_result=profile)


def _masked(request: archive_pb.UpdateResultRequest) -> archive_pb.UpdateResultRequest:
    request.update_mask.paths.extend(["raw_responses", "test_result"])
    return request


# ---- the checks ------------------------------------------------------------------------


def check_status(err: grpc.aio.AioRpcError, what: str) -> None:
    """A refusal is a deliberate, well-formed, small status."""
    assert err.code() not in FORBIDDEN, f"{what}: {err.code().name} {err.details()!r}"[:2000]
    details = b"".join(
        value
        for key, value in err.trailing_metadata() or ()
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes)
    )
    size = len(details) + len((err.details() or "").encode())
    assert size < MAX_STATUS_BYTES, f"{what}: a {size}-byte status"
    if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
        assert error_from_rpc(err).reason == "RATE_LIMITED", err.details()
    if err.code() == grpc.StatusCode.INVALID_ARGUMENT:
        assert field_violations_of(err), f"{what}: INVALID_ARGUMENT names no field"


async def call_refused_changes_nothing(
    database_url: str, invoke: Callable[[], Awaitable[Any]], what: str
) -> None:
    """Make the call; if it is refused, check the status and that the database is as it
    was before."""
    before = await snapshot(database_url)
    try:
        await invoke()
    except grpc.aio.AioRpcError as err:
        check_status(err, what)
        assert await snapshot(database_url) == before, f"{what}: a refused call wrote"


@pytest.fixture
def assessment_settings(settings: Settings, archive: ArchiveApp) -> Settings:
    """No in-flight limit here: a hostile submission must reach every check and write."""
    return dataclasses.replace(
        settings, archive_addr=f"127.0.0.1:{archive.port}", max_inflight_per_user=0
    )


@pytest.fixture
async def hostile_setup(client: StubFactory, archive_stub, settings: Settings) -> StubFactory:
    await grant(archive_stub, "alice", 1_000_000)
    return client


def method_of(stub: Any, name: str) -> Callable[..., Awaitable[Any]]:
    method: Callable[..., Awaitable[Any]] = getattr(stub, name)
    return method


@hypothesis_settings(EXAMPLES, max_examples=150)
@given(request=submission())
async def test_submit_refuses_hostile_input_cleanly(
    hostile_setup: StubFactory, settings: Settings, request: pb.SubmitAssessmentRequest
) -> None:
    stub = hostile_setup("user", "alice")
    await call_refused_changes_nothing(
        settings.database_url, lambda: stub.SubmitAssessment(request, timeout=20), "submit"
    )


@EXAMPLES
@given(call=assessment_calls())
async def test_assessment_rpcs_refuse_hostile_input_cleanly(
    hostile_setup: StubFactory, settings: Settings, call: Call
) -> None:
    name, request = call
    stub = hostile_setup("user", "alice")
    await call_refused_changes_nothing(
        settings.database_url, lambda: method_of(stub, name)(request, timeout=20), name
    )


@EXAMPLES
@given(call=archive_calls())
async def test_archive_rpcs_refuse_hostile_input_cleanly(
    archive_stub, settings: Settings, call: Call
) -> None:
    name, request = call
    await call_refused_changes_nothing(
        settings.database_url, lambda: method_of(archive_stub, name)(request, timeout=20), name
    )


@pytest.fixture
async def notifier(settings: Settings, archive: ArchiveApp) -> AsyncIterator[NotifierApp]:
    wired = dataclasses.replace(settings, archive_addr=f"127.0.0.1:{archive.port}")
    app = await NotifierApp.start(wired, "127.0.0.1:0")
    yield app
    await app.stop(grace=1.0)


@pytest.fixture
async def notifier_stub(notifier: NotifierApp) -> AsyncIterator[Any]:
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{notifier.port}",
        interceptors=bearer_token_interceptors(token("user", "alice")),
    )
    yield notifier_grpc.NotifierServiceStub(channel)
    await channel.close()


@EXAMPLES
@given(
    request=st.builds(
        notifier_pb.WatchJobsRequest,
        user_id=st.one_of(st.just(""), IDS),
        job_id=st.one_of(st.just(""), IDS),
        resume_after=st.integers(0, 2**64 - 1),
        include_snapshot=st.booleans(),
    )
)
async def test_watch_jobs_refuses_hostile_input_cleanly(
    notifier_stub: Any, request: notifier_pb.WatchJobsRequest
) -> None:
    call = notifier_stub.WatchJobs(request, timeout=20)
    try:
        await call.read()  # the first item (a bookmark) means the watch was accepted
    except grpc.aio.AioRpcError as err:
        check_status(err, "WatchJobs")
    finally:
        call.cancel()


async def test_invariants_hold_after_hostile_calls(
    hostile_setup: StubFactory, settings: Settings
) -> None:
    stub = hostile_setup("user", "alice")
    for text in ("a\x00b", "x" * 12_000):
        request = pb.SubmitAssessmentRequest(assessment_data=talent_data())
        request.raw_responses.responses["riasec"].items.add(question_id="q1", text_value=text)
        await call_refused_changes_nothing(
            settings.database_url, partial(stub.SubmitAssessment, request), "submit"
        )
    await stub.SubmitAssessment(pb.SubmitAssessmentRequest(assessment_data=talent_data()))
    counts = await check_invariants(settings.database_url)
    assert counts["jobs"] == 1


# ---- undecodable bodies ----------------------------------------------------------------


def with_nested_meta(request: Any, depth: int) -> bytes:
    """``request`` (a submission) with one raw item whose meta is nested ``depth`` deep."""
    inner = struct_pb2.Struct()
    for _ in range(depth):
        outer = struct_pb2.Struct()
        outer.fields["k"].struct_value.CopyFrom(inner)
        inner = outer
    item = request.raw_responses.responses["riasec"].items.add(question_id="q", bool_value=True)
    item.meta.CopyFrom(inner)
    return bytes(request.SerializeToString())


def every_method(service_name: str) -> list[str]:
    """The full method paths of a service."""
    service = descriptor_pool.Default().FindServiceByName(service_name)
    return [f"/{service.full_name}/{m.name}" for m in service.methods]


async def raw_call(channel: grpc.aio.Channel, path: str, body: bytes, streaming: bool) -> None:
    """Send ``body`` as the request of ``path``, whatever its request type."""
    if streaming:
        stream = channel.unary_stream(path, request_serializer=bytes, response_deserializer=bytes)
        await stream(body, timeout=10).read()
        return
    unary = channel.unary_unary(path, request_serializer=bytes, response_deserializer=bytes)
    await unary(body, timeout=10)


async def test_undecodable_bodies_are_invalid_argument_after_authentication(
    assessment: AssessmentApp, archive: ArchiveApp, notifier: NotifierApp
) -> None:
    body = b"\xff\xff"
    services = {
        "assay.assessment.v1.AssessmentService": (assessment.port, "user"),
        "assay.archive.v1.ArchiveService": (archive.port, "operator"),
        "assay.notifier.v1.NotifierService": (notifier.port, "user"),
        "grpc.health.v1.Health": (archive.port, ""),  # exempt from authentication
    }
    for service_name, (port, role) in services.items():
        for path in every_method(service_name):
            for who in {role, None}:
                interceptors = bearer_token_interceptors(token(who, "alice")) if who else None
                async with grpc.aio.insecure_channel(
                    f"127.0.0.1:{port}", interceptors=interceptors
                ) as channel:
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await raw_call(
                            channel, path, body, streaming=path.endswith(("Watch", "WatchJobs"))
                        )
                authenticated = who is not None or not role
                expected = (
                    grpc.StatusCode.INVALID_ARGUMENT
                    if authenticated
                    else grpc.StatusCode.UNAUTHENTICATED
                )
                assert caught.value.code() == expected, (path, who, caught.value.details())
                if authenticated:
                    assert [v.field for v in field_violations_of(caught.value)] == ["request"]


async def test_a_meta_nested_past_the_decoder_limit_is_invalid_argument(
    assessment: AssessmentApp, archive: ArchiveApp, settings: Settings
) -> None:
    submit = pb.SubmitAssessmentRequest(assessment_data=talent_data())
    create = archive_pb.CreateSubmissionRequest(user_id="alice", assessment_data=talent_data())
    calls = [
        (
            assessment.port,
            "/assay.assessment.v1.AssessmentService/SubmitAssessment",
            "user",
            submit,
        ),
        (archive.port, "/assay.archive.v1.ArchiveService/CreateSubmission", "operator", create),
    ]
    before = await snapshot(settings.database_url)
    for port, path, role, request in calls:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", interceptors=bearer_token_interceptors(token(role, "alice"))
        ) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await raw_call(channel, path, with_nested_meta(request, 40), streaming=False)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        assert [v.field for v in field_violations_of(caught.value)] == ["request"]
    assert await snapshot(settings.database_url) == before


async def test_a_meta_nested_under_the_decoder_limit_is_accepted(
    hostile_setup: StubFactory, settings: Settings
) -> None:
    stub = hostile_setup("user", "alice")
    body = with_nested_meta(pb.SubmitAssessmentRequest(assessment_data=talent_data()), 25)
    reply = await stub.SubmitAssessment(pb.SubmitAssessmentRequest.FromString(body), timeout=20)
    assert reply.job.job_id
    await check_invariants(settings.database_url)
