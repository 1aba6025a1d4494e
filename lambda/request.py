"""From whatever event invoked the function to a validated :class:`Batch`.

Three event shapes arrive here and all mean the same batch:

* the API Gateway REST proxy event (the project's path): ``body`` is a string,
  base64 of gzip when the device sends ``application/gzip`` (a binary media
  type), or plain JSON;
* the published how-to's mapping-template event ``{"body": {...}}``, whose
  own test event carries ``body`` as a JSON *string* instead;
* a direct invoke whose payload is the batch object itself.

Nothing from the body reaches an S3 key or a log line before it has passed the
checks here; every refusal names the field at fault. The decompressed size is
bounded while inflating, so a gzip bomb costs at most ``MAX_BATCH_BYTES``.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import re
import zlib
from base64 import b64decode
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional

from errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

#: The batch object's keys, as the device sends them (tests/test_contract.py).
BODY_KEYS = ("device_id", "batch_id", "timestamp", "logs")
#: Device and batch ids: safe as one S3 key segment, and as a log field.
#: The device holds the same pattern (omprog_forwarder/spool.py ID_PATTERN).
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z", re.ASCII)
GZIP_MAGIC = b"\x1f\x8b"
#: Concatenated gzip members accepted in one body (a device sends one).
MAX_GZIP_MEMBERS = 16

KIND_PROXY = "proxy"
KIND_MAPPING = "mapping-template"
KIND_DIRECT = "direct"


@dataclass(frozen=True)
class Batch:
    """A batch as the device claims it; identity is checked separately."""

    device_id: Optional[str]
    batch_id: Optional[str]
    timestamp: datetime
    logs: list[str]
    body_bytes: int


def event_kind(event: Any) -> str:
    """Tell the three invocation shapes apart."""
    if not isinstance(event, dict):
        raise BadRequest("the event is not a JSON object", field="event")
    if "requestContext" in event or "httpMethod" in event or "isBase64Encoded" in event:
        return KIND_PROXY
    if "body" in event:
        return KIND_MAPPING
    return KIND_DIRECT


def read_batch(
    event: dict[str, Any], kind: str, max_bytes: int, max_lines: Optional[int] = None
) -> Batch:
    """Decode, bound and validate the batch carried by ``event``.

    ``max_lines`` (``None``: no cap) bounds the number of log lines: a cap on
    bytes alone lets millions of tiny lines through.
    """
    if kind == KIND_DIRECT:
        obj: Any = event
        size = -1
    else:
        body = event.get("body")
        if isinstance(body, dict):
            obj, size = body, -1
        elif isinstance(body, str):
            data = _body_bytes(body, bool(event.get("isBase64Encoded")))
            if data[:2] == GZIP_MAGIC:
                data = gunzip_bounded(data, max_bytes)
            elif len(data) > max_bytes:
                raise PayloadTooLarge(
                    f"body is {len(data)} bytes, over the {max_bytes}-byte limit", field="body"
                )
            size = len(data)
            text = _utf8(data)
            del data  # the body is held once at a time: bytes, then text, then objects
            obj = _json_object(text)
            del text
        elif body is None:
            raise BadRequest("the request has no body", field="body")
        else:
            raise BadRequest("body is not a JSON object", field="body")
    return validate(obj, max_bytes, size, max_lines)


def _body_bytes(body: str, is_base64: bool) -> bytes:
    if is_base64:
        try:
            return b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise UnsupportedMediaType("body is flagged base64 but is not", field="body") from exc
    try:
        return body.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UnsupportedMediaType("body is not valid UTF-8 text", field="body") from exc


def gunzip_bounded(data: bytes, max_bytes: int) -> bytearray:
    """Inflate gzip (at most ``MAX_GZIP_MEMBERS`` members) but never past ``max_bytes`` of output.

    A device sends one member; concatenated members are legal gzip and allowed
    up to the cap. The cap bounds the work: every member boundary costs a copy
    of the rest of the body (``unused_data``), so 200 000 empty members in a
    few MiB would otherwise take half a minute. Trailing zero padding is
    accepted and checked once, at the end, without a copy.
    """
    out = bytearray()
    inflater = zlib.decompressobj(wbits=31)
    pending = data
    members = 1
    try:
        while True:
            chunk = inflater.decompress(pending, max_bytes + 1 - len(out))
            out += chunk
            if len(out) > max_bytes:
                raise PayloadTooLarge(
                    f"body inflates past the {max_bytes}-byte limit", field="body"
                )
            if inflater.eof:
                rest = inflater.unused_data
                if rest[:2] == GZIP_MAGIC:
                    members += 1
                    if members > MAX_GZIP_MEMBERS:
                        raise UnsupportedMediaType(
                            f"body has more than {MAX_GZIP_MEMBERS} gzip members", field="body"
                        )
                    inflater, pending = zlib.decompressobj(wbits=31), rest
                    continue
                if rest.count(0) != len(rest):
                    raise UnsupportedMediaType("garbage after the gzip data", field="body")
                return out
            if inflater.unconsumed_tail and chunk:
                pending = inflater.unconsumed_tail
            else:
                raise UnsupportedMediaType("the gzip data is truncated", field="body")
    except zlib.error as exc:
        raise UnsupportedMediaType("body is not valid gzip", field="body") from exc


def _utf8(data: bytes | bytearray) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnsupportedMediaType("body is not UTF-8", field="body") from exc


def _json_object(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadRequest("body is not JSON", field="body") from exc


def validate(obj: Any, max_bytes: int, size: int = -1, max_lines: Optional[int] = None) -> Batch:
    """Check every field the function uses; ``size`` < 0 means "measure the logs"."""
    if not isinstance(obj, dict):
        raise BadRequest("body is not a JSON object", field="body")

    logs = obj.get("logs")
    if not isinstance(logs, list):
        raise BadRequest("logs is missing or not a list", field="logs")
    if max_lines is not None and len(logs) > max_lines:
        raise PayloadTooLarge(
            f"logs hold {len(logs)} lines, over the {max_lines}-line limit", field="logs"
        )
    for index, line in enumerate(logs):
        if not isinstance(line, str):
            raise BadRequest(f"logs[{index}] is not a string", field="logs")
    if size < 0:
        size = sum(len(line) for line in logs)
        if size > max_bytes:
            raise PayloadTooLarge(
                f"logs hold {size} characters, over the {max_bytes}-byte limit", field="logs"
            )

    return Batch(
        device_id=_optional_id(obj, "device_id"),
        batch_id=_optional_id(obj, "batch_id"),
        timestamp=_timestamp(obj.get("timestamp")),
        logs=logs,
        body_bytes=size,
    )


def _optional_id(obj: dict[str, Any], name: str) -> Optional[str]:
    if name not in obj or obj[name] is None:
        return None
    value = obj[name]
    if not isinstance(value, str) or not ID_RE.match(value):
        raise BadRequest(f"{name} must match ^[A-Za-z0-9][A-Za-z0-9._-]{{0,127}}$", field=name)
    return value


def check_id(value: str, name: str) -> str:
    """Refuse an id that cannot be one S3 key segment."""
    if not ID_RE.match(value):
        raise BadRequest(f"{name} must match ^[A-Za-z0-9][A-Za-z0-9._-]{{0,127}}$", field=name)
    return value


def _timestamp(value: Any) -> datetime:
    """The batch time, aware and in UTC; a time without zone (the how-to's) is UTC."""
    if not isinstance(value, str) or not 10 <= len(value) <= 40 or not value.isascii():
        raise BadRequest("timestamp must be an ISO 8601 date-time", field="timestamp")
    text = value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise BadRequest("timestamp must be an ISO 8601 date-time", field="timestamp") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError as exc:
        raise BadRequest("timestamp is out of range", field="timestamp") from exc


def derive_batch_id(device_id: str, batch: Batch) -> str:
    """A stable id for senders that send none (the how-to): the same batch resent maps
    to the same S3 key, so it is archived and alerted once.

    Hashes the content, not the transport (proxy, mapping template or direct
    invoke give the same id), with length prefixes so no two batches collide by
    moving a boundary.
    """
    digest = hashlib.sha256()
    for part in (device_id, batch.timestamp.isoformat()):
        data = part.encode("utf-8", "surrogatepass")
        digest.update(b"%d:" % len(data) + data)
    for line in batch.logs:
        data = line.encode("utf-8", "surrogatepass")
        digest.update(b"%d:" % len(data) + data)
    t = batch.timestamp  # strftime("%Y") does not pad years below 1000 on Linux
    stamp = f"{t.year:04d}{t.month:02d}{t.day:02d}T{t.hour:02d}{t.minute:02d}{t.second:02d}Z"
    return f"{stamp}-h{digest.hexdigest()[:32]}"
