"""The pure parts: classifying an answer, Retry-After, the retry policy's arithmetic."""

from __future__ import annotations

import calendar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.clock import FakeClock

from omprog_forwarder.errors import (
    BatchTooLargeError,
    ClockSkewError,
    CredentialsRejectedError,
    PermanentSendError,
    TransientSendError,
)
from omprog_forwarder.ship.retry import RetryPolicy
from omprog_forwarder.ship.transport import classify, parse_retry_after, server_time_from

DATE = "Thu, 26 Nov 2026 23:30:00 GMT"
DATE_EPOCH = calendar.timegm((2026, 11, 26, 23, 30, 0))
SKEW_BODY = (
    b'{"message":"Signature expired: 20261126T231000Z is now earlier than 20261126T232500Z '
    b'(20261126T233000Z - 5 min.)"}'
)


@pytest.mark.parametrize(
    "status, headers, body, expected",
    [
        (200, {}, b"", None),
        (202, {}, b"", None),
        (413, {}, b'{"message":"Request Too Long"}', BatchTooLargeError),
        (429, {"Retry-After": "3"}, b"", TransientSendError),
        (500, {}, b"", TransientSendError),
        (503, {}, b"", TransientSendError),
        (408, {}, b"", TransientSendError),
        (302, {}, b"", TransientSendError),
        (403, {"Date": DATE}, SKEW_BODY, ClockSkewError),
        (
            403,
            {},
            b'{"message":"Signature not yet current: X is still later than Y"}',
            ClockSkewError,
        ),
        (
            403,
            {},
            b'{"message":"The security token included in the request is expired"}',
            CredentialsRejectedError,
        ),
        (401, {}, b"", CredentialsRejectedError),
        (400, {}, b"bad", PermanentSendError),
        (404, {}, b"", PermanentSendError),
        (422, {}, b"", PermanentSendError),
    ],
    ids=[
        "200",
        "202",
        "413",
        "429",
        "500",
        "503",
        "408",
        "302",
        "403-skew-expired",
        "403-skew-not-yet",
        "403-token-expired",
        "401",
        "400",
        "404",
        "422",
    ],
)
def test_classify(status, headers, body, expected):
    error = classify(status, headers, body, now=0.0)
    if expected is None:
        assert error is None
    else:
        assert type(error) is expected
        assert str(status) in str(error)


def test_classify_keeps_the_server_time_of_a_skew_403_and_the_retry_after_of_a_429():
    assert classify(403, {"Date": DATE}, SKEW_BODY, 0.0).server_time == DATE_EPOCH
    assert classify(429, {"Retry-After": "17"}, b"", 0.0).retry_after == 17.0
    assert classify(400, {}, b'{"message":"no"}' * 1000, 0.0).body.startswith('{"message":"no"}')
    assert len(classify(400, {}, b"x" * 10000, 0.0).body) == 2000


def test_skew_server_time_falls_back_to_the_message_without_a_date_header():
    assert server_time_from({}, SKEW_BODY.decode()) == DATE_EPOCH
    assert server_time_from({}, "no time here") is None


@pytest.mark.parametrize(
    "headers, now, expected",
    [
        ({"Retry-After": "120"}, 0.0, 120.0),
        ({"Retry-After": "0"}, 0.0, 0.0),
        ({"Retry-After": "Thu, 26 Nov 2026 23:30:30 GMT", "Date": DATE}, 0.0, 30.0),
        ({"Retry-After": "Thu, 26 Nov 2026 23:30:30 GMT"}, DATE_EPOCH + 10, 20.0),
        ({"Retry-After": "Thu, 26 Nov 2026 23:29:00 GMT", "Date": DATE}, 0.0, 0.0),
        ({"Retry-After": "soon"}, 0.0, None),
        ({}, 0.0, None),
    ],
    ids=[
        "seconds",
        "zero",
        "date-vs-Date",
        "date-vs-own-clock",
        "date-in-past",
        "garbage",
        "absent",
    ],
)
def test_parse_retry_after(headers, now, expected):
    assert parse_retry_after(headers, now) == expected


def failing(errors):
    calls = []

    def fn():
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "ok"

    return fn, calls


def test_policy_exact_schedule_and_result():
    clock = FakeClock(0.0)
    fn, calls = failing(
        [TransientSendError("a"), TransientSendError("b", retry_after=9), TransientSendError("c")]
    )
    seen = []
    policy = RetryPolicy(
        100,
        clock=clock,
        sleep=clock.sleep,
        rand=lambda: 0.25,
        on_retry=lambda n, w, e: seen.append((n, w, str(e))),
    )
    assert policy.call(fn) == "ok"
    assert clock.sleeps == [0.25, 9.0, 1.0]
    assert seen == [(1, 0.25, "a"), (2, 9.0, "b"), (3, 1.0, "c")]
    assert len(calls) == 4


@pytest.mark.parametrize(
    "error",
    [
        PermanentSendError("x"),
        BatchTooLargeError("x"),
        CredentialsRejectedError("x"),
        ValueError("bug"),
    ],
)
def test_policy_does_not_retry_what_is_not_transient(error):
    clock = FakeClock(0.0)
    fn, calls = failing([error])
    with pytest.raises(type(error)):
        RetryPolicy(100, clock=clock, sleep=clock.sleep).call(fn)
    assert len(calls) == 1 and clock.sleeps == []


def test_policy_stops_before_a_wait_that_would_end_past_the_deadline():
    clock = FakeClock(0.0)
    fn, calls = failing([TransientSendError(str(i)) for i in range(50)])
    with pytest.raises(TransientSendError, match="^3$"):
        RetryPolicy(10, clock=clock, sleep=clock.sleep, rand=lambda: 1.0).call(fn)
    assert clock.sleeps == [1, 2, 4]  # 7 s slept; 8 more would end at 15 > 10
    assert len(calls) == 4


@given(
    attempt=st.integers(1, 40),
    r=st.floats(0, 1, exclude_max=True),
    retry_after=st.none() | st.floats(0, 1000),
)
def test_full_jitter_stays_within_its_ceiling_and_never_undercuts_retry_after(
    attempt, r, retry_after
):
    policy = RetryPolicy(0, rand=lambda: r, base=1.0, cap=60.0)
    wait = policy.planned_wait(attempt, TransientSendError("x", retry_after=retry_after))
    ceiling = min(60.0, 2.0 ** (attempt - 1))
    if retry_after is None:
        assert 0 <= wait <= ceiling
    else:
        assert wait >= retry_after and wait <= max(retry_after, ceiling)
