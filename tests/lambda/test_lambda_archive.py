"""archive.py: key layout, gzip JSON Lines content, and a write that never overwrites."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import archive
import pytest
from errors import ServiceUnavailable

REF = datetime(2026, 11, 26, 23, 10, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("prefix", "timestamp", "expected"),
    [
        pytest.param("logs/", REF, "logs/dt=2026-11-26/device=pi-1/b-1.jsonl.gz", id="default"),
        pytest.param("", REF, "dt=2026-11-26/device=pi-1/b-1.jsonl.gz", id="no-prefix"),
        pytest.param(
            "logs/",
            datetime(2026, 11, 27, 0, 30, tzinfo=timezone(timedelta(hours=2))),
            "logs/dt=2026-11-26/device=pi-1/b-1.jsonl.gz",
            id="date-is-utc",
        ),
        pytest.param(
            "logs/",
            datetime(5, 1, 1, tzinfo=timezone.utc),
            "logs/dt=0005-01-01/device=pi-1/b-1.jsonl.gz",
            id="year-5-is-zero-padded",
        ),
        pytest.param(
            "logs/",
            datetime(999, 12, 31, 23, 59, tzinfo=timezone.utc),
            "logs/dt=0999-12-31/device=pi-1/b-1.jsonl.gz",
            id="year-999-is-zero-padded",
        ),
    ],
)
def test_object_key(prefix: str, timestamp: datetime, expected: str) -> None:
    assert archive.object_key(prefix, timestamp, "pi-1", "b-1") == expected


def test_encode_batch_is_gzip_json_lines_in_order_with_ids() -> None:
    lines = [
        "2024-07-06 13:50:33 raspberrypi daemon.error: dhcpcd[727]: wlan0: boom",
        "not a log line",
        '{"ts":"2026-11-26T23:14:04Z","severity":6,"msg":" ok"}',
    ]
    seen = []
    encoded = archive.encode_batch(lines, "pi-1", "b-1", REF, 3, seen.append)
    records = [json.loads(x) for x in gzip.decompress(encoded.body).decode().splitlines()]
    assert [r["format"] for r in records] == ["customlogformat", "raw", "json"]
    assert all(r["device_id"] == "pi-1" and r["batch_id"] == "b-1" for r in records)
    assert records[1]["raw"] == "not a log line" and records[1]["severity"] is None
    assert (encoded.lines, encoded.unparsed) == (3, 1)
    assert encoded.formats == {"customlogformat": 1, "raw": 1, "json": 1}
    assert [r["msg"] for r in seen] == ["wlan0: boom"]  # only lines at err or worse


def test_parser_safety_net_catches_are_counted() -> None:
    encoded = archive.encode_batch(["fine", None], "pi-1", "b-1", REF, 3)  # type: ignore[list-item]
    assert (encoded.lines, encoded.unparsed, encoded.parser_errors) == (2, 2, 1)


def test_large_batch_round_trips_through_several_chunks() -> None:
    lines = [f"2026-11-26 23:00:00 h user.info: app[{i}]: line {i}" for i in range(5000)]
    encoded = archive.encode_batch(lines, "pi-1", "b-1", REF, 3)
    out = gzip.decompress(encoded.body).decode().splitlines()
    assert len(out) == 5000 and json.loads(out[4321])["pid"] == "4321"


def test_put_once_creates_then_reports_existing_without_overwriting(s3: Any, bucket: str) -> None:
    key = "logs/dt=2026-11-26/device=pi-1/b-1.jsonl.gz"
    assert archive.put_once(s3, bucket, key, b"first", {"lines": "1"}) is True
    assert archive.put_once(s3, bucket, key, b"second", {"lines": "2"}) is False
    stored = s3.get_object(Bucket=bucket, Key=key)
    assert stored["Body"].read() == b"first"
    assert stored["Metadata"] == {"lines": "1"}
    assert stored["ContentType"] == "application/gzip"


def test_missing_bucket_is_503(s3: Any) -> None:
    with pytest.raises(ServiceUnavailable, match="NoSuchBucket"):
        archive.put_once(s3, "no-such-bucket-here", "k", b"x", {})


def test_unreachable_s3_is_503(closed_port: int) -> None:
    import boto3
    from botocore.config import Config

    down = boto3.client(
        "s3",
        region_name="eu-west-1",
        endpoint_url=f"http://127.0.0.1:{closed_port}",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    with pytest.raises(ServiceUnavailable, match="unreachable"):
        archive.put_once(down, "omprog-test-logs", "k", b"x", {})


def test_conditional_write_conflict_409_is_503_so_the_device_retries(s3: Any, bucket: str) -> None:
    """Real S3 answers 409 ConditionalRequestConflict when two conditional writes race.

    moto cannot produce that race, so botocore's own stubber plays S3 here.
    """
    from botocore.stub import Stubber

    with Stubber(s3) as stub:
        stub.add_client_error(
            "put_object", service_error_code="ConditionalRequestConflict", http_status_code=409
        )
        with pytest.raises(ServiceUnavailable, match="ConditionalRequestConflict"):
            archive.put_once(s3, bucket, "k", b"x", {})
