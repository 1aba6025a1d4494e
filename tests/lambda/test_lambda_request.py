"""request.py: the three event shapes, body decoding, size bounds and field validation."""

from __future__ import annotations

import base64
import gzip
import json
import time
import tracemalloc
import zlib
from datetime import datetime, timezone
from typing import Any

import pytest
import request
from errors import BadRequest, PayloadTooLarge, RequestError, UnsupportedMediaType
from support.events import DIRECT, HOWTO_MAPPING, HOWTO_TEST, batch, load_event, proxy_event

MAX = 1024 * 1024


def read(event: dict, max_bytes: int = MAX) -> request.Batch:
    return request.read_batch(event, request.event_kind(event), max_bytes)


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        pytest.param(load_event("apigw_rest_proxy_cognito"), "proxy", id="rest-proxy"),
        pytest.param(load_event(HOWTO_TEST), "mapping-template", id="howto-test-event"),
        pytest.param(load_event(HOWTO_MAPPING), "mapping-template", id="howto-mapping-template"),
        pytest.param(load_event(DIRECT), "direct", id="direct-invoke"),
    ],
)
def test_every_event_shape_yields_the_batch(event: dict, kind: str) -> None:
    assert request.event_kind(event) == kind
    got = read(event)
    assert got.logs and all(isinstance(line, str) for line in got.logs)
    assert got.timestamp.tzinfo is not None


def test_recorded_proxy_event_body_is_the_device_batch() -> None:
    got = read(load_event("apigw_rest_proxy_cognito"))
    assert (got.device_id, got.batch_id) == ("pi-kitchen-01", "20261126T231000Z-1a2b3c4d5e6f7a8b")
    assert got.timestamp == datetime(2026, 11, 26, 23, 10, tzinfo=timezone.utc)
    assert len(got.logs) == 2


def test_howto_events_string_and_object_body_are_the_same_batch() -> None:
    a, b = read(load_event(HOWTO_TEST)), read(load_event(HOWTO_MAPPING))
    assert (a.device_id, a.batch_id, a.timestamp, a.logs) == (
        b.device_id,
        b.batch_id,
        b.timestamp,
        b.logs,
    )
    assert a.batch_id is None  # how-to senders have none: the handler derives one
    assert a.timestamp == datetime(2024, 7, 13, 15, 40, 3, 587907, tzinfo=timezone.utc)


@pytest.mark.parametrize("encoding", ["gzip", "plain", "base64"])
def test_proxy_body_encodings(encoding: str) -> None:
    got = read(proxy_event(batch(["a line"]), encoding=encoding))
    assert got.logs == ["a line"]


def test_concatenated_gzip_members_are_one_body() -> None:
    data = json.dumps(batch(["x"])).encode()
    raw = gzip.compress(data[:10]) + gzip.compress(data[10:]) + b"\x00\x00"
    assert read(proxy_event(raw=raw, encoding="base64")).logs == ["x"]


def _gzip_members(data: bytes, count: int, empty: int = 0) -> bytes:
    """``data`` cut into ``count`` gzip members, then ``empty`` empty members."""
    cuts = [len(data) * i // count for i in range(count + 1)]
    members = [gzip.compress(data[a:b], mtime=0) for a, b in zip(cuts, cuts[1:])]
    return b"".join(members) + gzip.compress(b"", mtime=0) * empty


@pytest.mark.parametrize(
    "count",
    [
        pytest.param(2, id="two-members"),
        pytest.param(request.MAX_GZIP_MEMBERS, id="sixteen-members-the-cap"),
    ],
)
def test_gzip_members_up_to_the_cap_are_one_body(count: int) -> None:
    data = json.dumps(batch(["first line", "second line"])).encode()
    raw = _gzip_members(data, count) + b"\x00" * 4
    assert read(proxy_event(raw=raw, encoding="base64")).logs == ["first line", "second line"]


@pytest.mark.parametrize(
    ("count", "empty"),
    [
        pytest.param(17, 0, id="seventeen-members"),
        pytest.param(1, 16, id="one-member-and-sixteen-empty"),
        # The reviewer's body: ~4 MiB of empty members took > 29 s (quadratic copying).
        pytest.param(1, 210_000, id="210000-empty-members-4MiB"),
    ],
)
def test_more_than_sixteen_gzip_members_are_415_at_once(count: int, empty: int) -> None:
    data = json.dumps(batch(["x" * 40])).encode()
    event = proxy_event(raw=_gzip_members(data, count, empty), encoding="base64")
    started = time.perf_counter()
    error = _error(event, max_bytes=32 * 2**20)
    elapsed = time.perf_counter() - started
    assert (error.status, error.field) == (415, "body")
    assert "more than 16 gzip members" in error.message
    assert elapsed < 2.0  # milliseconds in fact; the quadratic version took half a minute


@pytest.mark.parametrize(
    "make_event",
    [
        pytest.param(lambda logs: proxy_event(batch(logs)), id="proxy-gzip"),
        pytest.param(lambda logs: proxy_event(batch(logs), encoding="plain"), id="proxy-plain"),
        pytest.param(lambda logs: {"body": batch(logs)}, id="mapping-object-body"),
        pytest.param(lambda logs: batch(logs), id="direct-invoke"),
    ],
)
def test_more_lines_than_max_lines_is_413_naming_logs(make_event: Any) -> None:
    at_cap = make_event(["a"] * 3)
    assert len(request.read_batch(at_cap, request.event_kind(at_cap), MAX, max_lines=3).logs) == 3
    over = make_event(["a"] * 4)
    with pytest.raises(PayloadTooLarge) as info:
        request.read_batch(over, request.event_kind(over), MAX, max_lines=3)
    assert (info.value.status, info.value.field) == (413, "logs")
    assert "4 lines" in info.value.message and "3-line limit" in info.value.message


def _error(event: dict, max_bytes: int = MAX) -> RequestError:
    with pytest.raises(RequestError) as info:
        read(event, max_bytes)
    return info.value


REJECTIONS = [
    # (event, status, field)
    pytest.param(proxy_event(raw=b"not json", encoding="plain"), 400, "body", id="not-json"),
    pytest.param(proxy_event(raw=b"[1, 2]", encoding="plain"), 400, "body", id="json-array"),
    pytest.param(proxy_event(raw=b'"a string"', encoding="gzip"), 400, "body", id="json-string"),
    pytest.param(proxy_event(raw=b"[" * 50000, encoding="plain"), 400, "body", id="deep-json"),
    pytest.param({**load_event(HOWTO_TEST), "body": None}, 400, "body", id="mapping-body-null"),
    pytest.param({**load_event(HOWTO_TEST), "body": 12}, 400, "body", id="mapping-body-number"),
    pytest.param({**proxy_event(batch(["x"])), "body": None}, 400, "body", id="proxy-no-body"),
    pytest.param(
        proxy_event({"timestamp": "2026-11-26T23:10:00Z"}), 400, "logs", id="logs-missing"
    ),
    pytest.param(proxy_event(batch("one line")), 400, "logs", id="logs-a-string"),
    pytest.param(proxy_event(batch(["ok", 3])), 400, "logs", id="logs-not-strings"),
    pytest.param(proxy_event(batch(["x"], device_id="../x")), 400, "device_id", id="device-dotdot"),
    pytest.param(proxy_event(batch(["x"], device_id="a/b")), 400, "device_id", id="device-slash"),
    pytest.param(proxy_event(batch(["x"], device_id="")), 400, "device_id", id="device-empty"),
    pytest.param(proxy_event(batch(["x"], device_id="a" * 129)), 400, "device_id", id="device-129"),
    pytest.param(
        proxy_event({**batch(["x"]), "device_id": 7}), 400, "device_id", id="device-number"
    ),
    pytest.param(
        proxy_event(batch(["x"], device_id="pi\n01")), 400, "device_id", id="device-newline"
    ),
    pytest.param(
        proxy_event(batch(["x"], batch_id=".hidden")), 400, "batch_id", id="batch-dot-first"
    ),
    pytest.param(proxy_event(batch(["x"], batch_id="a b")), 400, "batch_id", id="batch-space"),
    pytest.param(proxy_event(batch(["x"], batch_id="é")), 400, "batch_id", id="batch-non-ascii"),
    pytest.param(proxy_event(batch(["x"], timestamp="yesterday")), 400, "timestamp", id="ts-word"),
    pytest.param(
        proxy_event(batch(["x"], timestamp="2026-13-01T00:00:00")),
        400,
        "timestamp",
        id="ts-month-13",
    ),
    pytest.param(proxy_event({"logs": ["x"]}), 400, "timestamp", id="ts-missing"),
    pytest.param(
        proxy_event({**batch(["x"]), "timestamp": 1795734605}), 400, "timestamp", id="ts-number"
    ),
    pytest.param(
        {**proxy_event(batch(["x"])), "body": "!!!not base64"}, 415, "body", id="bad-base64"
    ),
    pytest.param(
        proxy_event(raw=b"\x1f\x8b\x08\x00garbage", encoding="base64"), 415, "body", id="bad-gzip"
    ),
    pytest.param(
        proxy_event(raw=gzip.compress(json.dumps(batch(["x"])).encode())[:-12], encoding="base64"),
        415,
        "body",
        id="truncated-gzip",
    ),
    pytest.param(
        proxy_event(
            raw=gzip.compress(json.dumps(batch(["x"])).encode()) + b"junk", encoding="base64"
        ),
        415,
        "body",
        id="gzip-trailing-junk",
    ),
    pytest.param(
        proxy_event(raw=b'{"logs": ["\xff\xfe"]}', encoding="base64"), 415, "body", id="not-utf8"
    ),
    pytest.param(
        {**proxy_event(batch(["x"])), "body": "\ud800", "isBase64Encoded": False},
        415,
        "body",
        id="lone-surrogate-body",
    ),
    pytest.param("just a string", 400, "event", id="event-not-object"),
]


@pytest.mark.parametrize(("event", "status", "field"), REJECTIONS)
def test_rejections_name_the_field(event: object, status: int, field: str) -> None:
    with pytest.raises(RequestError) as info:
        read(event)  # type: ignore[arg-type]
    assert (info.value.status, info.value.field) == (status, field)
    assert info.value.body()["field"] == field


def test_gzip_bomb_stops_at_the_cap() -> None:
    """64 MiB of zeros in under 100 kB is refused after inflating at most the cap (+1 byte)."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"\0" * (16 * 2**20)
    bomb = b"".join(deflater.compress(zeros) for _ in range(4)) + deflater.flush()
    assert len(bomb) < 100_000
    event = proxy_event(raw=bomb, encoding="base64")
    tracemalloc.start()
    try:
        error = _error(event, max_bytes=4 * 2**20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(error, PayloadTooLarge) and error.status == 413
    assert peak < 12 * 2**20  # bounded by the cap, not by the 64 MiB the bomb holds


def test_plain_body_over_the_cap_is_413() -> None:
    event = proxy_event(batch(["x" * 2000]), encoding="plain")
    assert isinstance(_error(event, max_bytes=1000), PayloadTooLarge)


def test_object_body_over_the_cap_is_413() -> None:
    event = {"body": batch(["x" * 2000])}
    error = _error(event, max_bytes=1000)
    assert isinstance(error, PayloadTooLarge) and error.field == "logs"


def test_a_body_just_under_the_cap_is_accepted() -> None:
    data = json.dumps(batch(["y" * 500])).encode()
    assert read(proxy_event(raw=data), max_bytes=len(data)).body_bytes == len(data)
    assert isinstance(_error(proxy_event(raw=data), max_bytes=len(data) - 1), PayloadTooLarge)


@pytest.mark.parametrize(
    "batch_id",
    ["20261126T231000Z-1a2b3c4d5e6f7a8b", "20261126T231000Z-1a2b3c4d5e6f7a8b.1.2", "a", "A" * 128],
)
def test_device_batch_ids_are_accepted(batch_id: str) -> None:
    assert read(proxy_event(batch(["x"], batch_id=batch_id))).batch_id == batch_id


def test_timestamp_with_offset_is_converted_to_utc() -> None:
    got = read(proxy_event(batch(["x"], timestamp="2026-11-27T00:30:00+01:00")))
    assert got.timestamp == datetime(2026, 11, 26, 23, 30, tzinfo=timezone.utc)


def test_derived_batch_id_is_stable_valid_and_content_bound() -> None:
    one = read(load_event(HOWTO_TEST))
    again = read(load_event(HOWTO_MAPPING))
    first = request.derive_batch_id("THISISTEST", one)
    assert first == request.derive_batch_id("THISISTEST", again)
    assert request.ID_RE.match(first) and first.startswith("20240713T154003Z-h")
    assert request.derive_batch_id("OTHER", one) != first
    moved = request.Batch(
        None, None, one.timestamp, [one.logs[0] + one.logs[1][:1], one.logs[1][1:]], 0
    )
    assert request.derive_batch_id("THISISTEST", moved) != first


@pytest.mark.parametrize(
    ("timestamp", "prefix"),
    [
        pytest.param("0005-01-01T00:00:00+00:00", "00050101T000000Z-h", id="year-5"),
        pytest.param("0999-12-31T23:59:59Z", "09991231T235959Z-h", id="year-999"),
        pytest.param("2026-11-26T23:10:00Z", "20261126T231000Z-h", id="year-2026"),
    ],
)
def test_derived_batch_id_pads_the_year_to_four_digits(timestamp: str, prefix: str) -> None:
    got = read(proxy_event(batch(["x"], batch_id=None, timestamp=timestamp)))
    derived = request.derive_batch_id("pi-1", got)
    assert derived.startswith(prefix) and request.ID_RE.match(derived)


def test_errors_are_translated_not_leaked() -> None:
    """A dependency's exception never escapes raw: it is a RequestError with a cause."""
    error = _error({**proxy_event(batch(["x"])), "body": "%%%"})
    assert isinstance(error, UnsupportedMediaType) and error.__cause__ is not None
    error = _error(proxy_event(raw=b"{", encoding="plain"))
    assert isinstance(error, BadRequest) and isinstance(error.__cause__, ValueError)


def test_base64_flag_with_plain_json_is_accepted() -> None:
    event = proxy_event(batch(["x"]), encoding="plain")
    event["body"] = base64.b64encode(event["body"].encode()).decode()
    event["isBase64Encoded"] = True
    assert read(event).logs == ["x"]
