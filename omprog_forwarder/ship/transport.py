"""One batch on the wire: build the gzip body, sign it, POST it, classify the answer.

`Transport.post` returns on a 2xx and otherwise raises exactly one of the
classified errors, so the caller reads as policy:

    2xx                             -> returns `Sent`
    429, 5xx, 408, timeout,         -> TransientSendError (with Retry-After)
      connection error, 1xx/3xx
    413                             -> BatchTooLargeError            (split)
    401/403 with a skew message     -> ClockSkewError  (server time from `Date`)
    other 401/403                   -> CredentialsRejectedError      (renew once)
    any other 4xx                   -> PermanentSendError            (dead/)

Signing is SigV4 for `execute-api` with requests-aws4auth; the session token
goes in `x-amz-security-token` and is signed. The request time is given by
the caller (`sign_time`), so a device with a wrong clock signs with the
corrected time: `x-amz-date` is set before signing and requests-aws4auth
derives the signing key's date from it.

The body is `Content-Type: application/gzip` with no `Content-Encoding`, so
API Gateway hands the bytes to the Lambda untouched (base64, as a binary
media type) instead of trying to decompress them itself.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import re
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import requests
from requests_aws4auth import AWS4Auth

from omprog_forwarder import __version__
from omprog_forwarder.errors import (
    BatchTooLargeError,
    ClockSkewError,
    CredentialsRejectedError,
    PermanentSendError,
    SendError,
    TransientSendError,
)

CONTENT_TYPE = "application/gzip"
#: The wire body's keys, in order; the Lambda reads exactly these (tests/test_contract.py).
BODY_KEYS = ("device_id", "batch_id", "timestamp", "logs")
SERVICE = "execute-api"
USER_AGENT = f"omprog-forwarder/{__version__}"
BODY_EXCERPT_CHARS = 2000
ERROR_TEXT_CHARS = 200
# Level 9, not zlib's default 6: on syslog it is about 6 % smaller for twice the
# CPU (bench/bench_ship.py), and a device's uplink is scarcer than its CPU at
# one batch per window.
GZIP_LEVEL = 9
# Z_FILTERED: deflate keeps only matches of 6 bytes or more. The JSON template's
# random 128-bit uuid (32 hex digits a line) is cheaper as Huffman-coded literals
# than as the 3-5 byte chance matches the default strategy finds in it: bodies are
# 4-6 % smaller at 300+ lines, at the same CPU, and plain text comes out the same
# (bench/bench_ship.py). An encoder setting only: the body inflates to the same bytes.
GZIP_STRATEGY = zlib.Z_FILTERED
_CHUNK_LINES = 2048
# API Gateway's wording (also botocore issue #149): "Signature expired: X is now
# earlier than Y (Z - 5 min.)" and "Signature not yet current: X is still later
# than Y (Z + 5 min.)".
_SKEW_RE = re.compile(
    r"signature expired|signature not yet current|is now earlier than|is now later than"
    r"|is still later than",
    re.IGNORECASE,
)
_SKEW_SERVER_TIME_RE = re.compile(r"\((\d{8}T\d{6}Z) [-+] 5 min\.\)")


# ---------------------------------------------------------------- body


@dataclass(frozen=True)
class Body:
    """A gzip body ready to send, and what went into it."""

    data: bytes
    lines: int
    invalid_utf8: int
    json_bytes: int


def build_body(
    device_id: str,
    batch_id: str,
    timestamp: str,
    lines: Sequence[bytes],
    level: int = GZIP_LEVEL,
) -> Body:
    """gzip of `{"device_id", "batch_id", "timestamp", "logs": [...]}`.

    Lines are decoded as UTF-8; a line that is not valid UTF-8 gets U+FFFD
    for each bad byte sequence and is counted in `invalid_utf8`. The JSON is
    produced and compressed in slices so a 4 MiB batch never exists as one
    big string next to its encoded copy.
    """
    # wbits 31: gzip container, mtime 0; memLevel 8 is zlib's default.
    comp = zlib.compressobj(level, zlib.DEFLATED, 31, 8, GZIP_STRATEGY)
    head = json.dumps(
        dict(zip(BODY_KEYS[:3], (device_id, batch_id, timestamp))),
        ensure_ascii=False,
        separators=(",", ":"),
    )
    parts = [comp.compress((head[:-1] + f',"{BODY_KEYS[3]}":[').encode("utf-8"))]
    size = len(head) + 8
    invalid = 0
    first = True
    for start in range(0, len(lines), _CHUNK_LINES):
        texts = []
        for raw in lines[start : start + _CHUNK_LINES]:
            try:
                texts.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                texts.append(raw.decode("utf-8", "replace"))
                invalid += 1
        piece = json.dumps(texts, ensure_ascii=False, separators=(",", ":"))[1:-1]
        encoded = (piece if first else "," + piece).encode("utf-8")
        first = False
        size += len(encoded)
        parts.append(comp.compress(encoded))
    parts.append(comp.compress(b"]}"))
    parts.append(comp.flush())
    return Body(b"".join(parts), len(lines), invalid, size + 2)


# ---------------------------------------------------------------- signing + POST


@dataclass(frozen=True)
class Sent:
    """A 2xx: its status, how long it took, what was sent, and the start of the answer."""

    status: int
    elapsed: float
    body_bytes: int
    answer: bytes = b""


def amz_date(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _http_date(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.timestamp()


def parse_retry_after(headers: Mapping[str, str], now: float) -> Optional[float]:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date.

    An HTTP date is measured against the response's own `Date` when it has
    one, so a device clock that is off does not distort the wait.
    """
    value = (headers.get("Retry-After") or "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return float(value)
    when = _http_date(value)
    if when is None:
        return None
    reference = _http_date(headers.get("Date"))
    return max(0.0, when - (reference if reference is not None else now))


def server_time_from(headers: Mapping[str, str], message: str) -> Optional[float]:
    """The server's clock from a skew 403: its `Date`, else the time in the message."""
    when = _http_date(headers.get("Date"))
    if when is not None:
        return when
    m = _SKEW_SERVER_TIME_RE.search(message)
    if m:
        try:
            parsed = datetime.datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ")
        except ValueError:
            return None  # not a real time: treat as no server time
        return parsed.replace(tzinfo=datetime.timezone.utc).timestamp()
    return None


def _excerpt(content: bytes, limit: int) -> str:
    return content[: limit * 4].decode("utf-8", "replace")[:limit]


def _api_message(text: str) -> str:
    """API Gateway wraps errors as {"message": ...}; take it out when it is there."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, dict):
        for key in ("message", "Message", "error"):
            if isinstance(value.get(key), str):
                return value[key]
    return text


def classify(
    status: int, headers: Mapping[str, str], content: bytes, now: float
) -> Optional[SendError]:
    """None for a 2xx, otherwise the error that says what to do about the answer."""
    if 200 <= status < 300:
        return None
    body = _excerpt(content, BODY_EXCERPT_CHARS)
    short = " ".join(_api_message(body).split())[:ERROR_TEXT_CHARS]
    what = f"HTTP {status} from the API" + (f": {short}" if short else "")
    if status == 413:
        return BatchTooLargeError(what, status, body)
    if status in (401, 403):
        if _SKEW_RE.search(body):
            return ClockSkewError(what, server_time_from(headers, body), status)
        return CredentialsRejectedError(what, status)
    if status == 429 or status == 408 or status >= 500:
        return TransientSendError(what, status, parse_retry_after(headers, now))
    if 400 <= status < 500:
        return PermanentSendError(what, status, body)
    return TransientSendError(f"unexpected HTTP {status} from the API", status)


class Transport:
    """POSTs signed gzip bodies to one endpoint over one keep-alive session."""

    def __init__(
        self,
        endpoint_url: str,
        region: str,
        *,
        session: Optional[requests.Session] = None,
        timeout: tuple[float, float] = (10.0, 60.0),
    ) -> None:
        self.endpoint_url = endpoint_url
        self.region = region
        self.session = session or requests.Session()
        self.timeout = timeout

    def post(self, body: bytes, creds: Any, sign_time: float) -> Sent:
        """One signed POST. Returns on 2xx; raises a classified SendError otherwise.

        `creds` has `access_key`, `secret_key` and `token` (see auth.Credentials).
        """
        auth = AWS4Auth(
            creds.access_key,
            creds.secret_key,
            self.region,
            SERVICE,
            session_token=creds.token or None,
        )
        headers = {
            "Content-Type": CONTENT_TYPE,
            "User-Agent": USER_AGENT,
            "x-amz-date": amz_date(sign_time),
        }
        started = time.monotonic()
        try:
            resp = self.session.post(
                self.endpoint_url,
                data=body,
                headers=headers,
                auth=auth,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.Timeout as exc:
            raise TransientSendError(f"no answer from the API within {self.timeout}s") from exc
        except requests.ConnectionError as exc:
            raise TransientSendError(f"cannot reach the API: {_reason(exc)}") from exc
        except requests.RequestException as exc:
            raise TransientSendError(f"request to the API failed: {_reason(exc)}") from exc
        try:
            content = resp.content
        except requests.RequestException as exc:
            raise TransientSendError(f"the API's answer was cut: {_reason(exc)}") from exc
        finally:
            resp.close()
        error = classify(resp.status_code, resp.headers, content, time.time())
        if error is not None:
            raise error
        return Sent(
            resp.status_code,
            time.monotonic() - started,
            len(body),
            content[: BODY_EXCERPT_CHARS * 4],
        )


def _reason(exc: BaseException) -> str:
    """A short cause for a log line: urllib3's reason rather than requests' wrapper."""
    inner: Any = exc
    if exc.args and isinstance(exc.args[0], BaseException):
        inner = exc.args[0]
    if isinstance(getattr(inner, "reason", None), BaseException):
        inner = inner.reason
    return f"{type(inner).__name__}: {inner}"[:ERROR_TEXT_CHARS]
