"""The S3 archive: object key, gzip JSON Lines encoding, and a write that never overwrites.

Idempotence is the whole point of the key: it is derived from the batch id,
which the device keeps from sealing to archive, and it is written with
``If-None-Match: *``. A resend after a lost answer therefore finds the object
already there (412 ``PreconditionFailed``), overwrites nothing and is answered
as a duplicate, and alerts nobody twice. Any other S3 failure becomes a 503 so
that the device keeps the batch and retries.

Encoding streams line by line into one gzip member: parsed records are never
all held at once, which is what bounds the function's memory for a batch at
the size cap.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from json.encoder import encode_basestring_ascii
from typing import Any, Callable, Optional

from botocore.exceptions import BotoCoreError, ClientError
from errors import ServiceUnavailable
from parsing import FORMAT_RAW, RECORD_FIELDS, Record, parse_line

_CHUNK_LINES = 2048
_STANDARD = frozenset(RECORD_FIELDS)
# ASCII-only output: a lone surrogate from the JSON body cannot break the UTF-8 encoding.
_str = encode_basestring_ascii
_dumps = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


def record_tail(device_id: str, batch_id: str) -> str:
    """The end of every line of a batch: its device and batch, encoded once."""
    return f',"device_id":{_str(device_id)},"batch_id":{_str(batch_id)}}}'


def encode_record(record: Record, tail: str) -> str:
    """One record as one compact JSON line, ``tail`` closing it.

    Spelled out field by field because this runs once per line and the
    generic encoder takes twice as long; the tests hold it equal to
    ``json.loads`` of the generic encoding for every record the parser makes.
    """
    try:
        ts = record["ts"]
        host = record["host"]
        fac = record["facility"]
        sev = record["severity"]
        num = record["severity_num"]
        app = record["app"]
        pid = record["pid"]
        msg = record["msg"]
        uuid = record["uuid"]
        line = (
            f'{{"ts":{"null" if ts is None else _str(ts)}'
            f',"host":{"null" if host is None else _str(host)}'
            f',"facility":{"null" if fac is None else _str(fac)}'
            f',"severity":{"null" if sev is None else _str(sev)}'
            f',"severity_num":{"null" if num is None else int(num)}'
            f',"app":{"null" if app is None else _str(app)}'
            f',"pid":{"null" if pid is None else _str(pid)}'
            f',"msg":{"null" if msg is None else _str(msg)}'
            f',"uuid":{"null" if uuid is None else _str(uuid)}'
            f',"format":{_str(record["format"])}'
        )
        if len(record) > len(RECORD_FIELDS):
            line += "".join(
                f",{_str(key)}:{_dumps(value)}"
                for key, value in record.items()
                if key not in _STANDARD
            )
        return line + tail
    except (KeyError, TypeError, ValueError):
        # Not a record this module knows the shape of: the generic encoder is always right.
        return _dumps(record)[:-1] + tail


@dataclass
class Encoded:
    """The compressed object and what went into it (for the response and the log line)."""

    body: bytes
    lines: int = 0
    unparsed: int = 0
    formats: dict[str, int] = field(default_factory=dict)
    #: Lines the parser's safety net caught (a parser bug; the line is kept raw).
    parser_errors: int = 0


def object_key(prefix: str, timestamp: datetime, device_id: str, batch_id: str) -> str:
    """``PREFIX dt=YYYY-MM-DD/device=ID/BATCH.jsonl.gz``: the Athena partition layout.

    The date is the batch's (UTC), not the arrival's, so a resend on another
    day still finds its first copy. Both ids were checked against the id
    pattern before they get here.
    """
    d = timestamp.astimezone(timezone.utc)
    day = f"{d.year:04d}-{d.month:02d}-{d.day:02d}"  # strftime("%Y") leaves year 5 as "5"
    return f"{prefix}dt={day}/device={device_id}/{batch_id}.jsonl.gz"


def encode_batch(
    lines: Iterable[str],
    device_id: str,
    batch_id: str,
    ref: datetime,
    alert_threshold: int,
    on_alert: Optional[Callable[[Record], None]] = None,
    level: int = 3,
) -> Encoded:
    """Parse every line and gzip the records as JSON Lines, one record per line, in order.

    ``on_alert`` sees each record at ``alert_threshold`` or worse as it passes,
    so alerting needs no second pass and no list of records.
    """
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
    parts: list[bytes] = []
    chunk: list[str] = []
    formats: dict[str, int] = {}
    count = unparsed = parser_errors = 0
    tail = record_tail(device_id, batch_id)
    for line in lines:
        record = parse_line(line, ref)
        fmt = record["format"]
        formats[fmt] = formats.get(fmt, 0) + 1
        if fmt == FORMAT_RAW:
            unparsed += 1
            if "parse_error" in record:
                parser_errors += 1
        num = record["severity_num"]
        if on_alert is not None and num is not None and num <= alert_threshold:
            on_alert(record)
        chunk.append(encode_record(record, tail))
        count += 1
        if len(chunk) >= _CHUNK_LINES:
            parts.append(compressor.compress(("\n".join(chunk) + "\n").encode("ascii")))
            chunk.clear()
    if chunk:
        parts.append(compressor.compress(("\n".join(chunk) + "\n").encode("ascii")))
    parts.append(compressor.flush())
    return Encoded(b"".join(parts), count, unparsed, formats, parser_errors)


def put_once(s3: Any, bucket: str, key: str, body: bytes, metadata: dict[str, str]) -> bool:
    """Write ``key`` only if it does not exist yet.

    Returns ``True`` when this call created the object, ``False`` when it
    already existed (the batch was archived before). Raises
    :class:`ServiceUnavailable` for anything else, including S3's 409
    ``ConditionalRequestConflict`` when two copies race: the device retries and
    then meets the 412.
    """
    try:
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=body,
            IfNoneMatch="*",
            ContentType="application/gzip",
            Metadata=metadata,
        )
    except ClientError as exc:
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if error.get("Code") == "PreconditionFailed" or status == 412:
            return False
        raise ServiceUnavailable(
            f"the archive (S3) refused the write: {error.get('Code', 'unknown')}"
        ) from exc
    except BotoCoreError as exc:
        raise ServiceUnavailable(f"the archive (S3) is unreachable: {type(exc).__name__}") from exc
    return True
