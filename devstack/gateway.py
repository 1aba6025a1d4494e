"""A loopback stand-in for API Gateway (REST API, AWS_IAM authorization).

moto cannot verify a signature or run a Lambda behind API Gateway, so tests
use this instead: a real HTTP server on 127.0.0.1 (port 0, its own thread)
that

* verifies SigV4 the way API Gateway does, rebuilding the canonical request
  with botocore from the headers the client listed as signed and the
  client's own timestamp (research notes, aws_slack.md section 3), with the
  secret looked up by access key, an injectable clock and skew window, and
  API Gateway's wording for each refusal (tests match on it);
* can be told to answer a scripted sequence first (`enqueue`): any status
  with headers and body (`Reply`, `too_many(retry_after)`, `EXPIRED_TOKEN`,
  ...), `Hang()` (read the request, never answer), `Reset()` (TCP RST),
  `CompleteThenReset()` (verify and run the handler, then reset instead of
  answering: the work is done and the answer lost; a request refused before
  the handler is answered as usual) or `Proceed()` (handle this one
  normally: a gap in a script);
* builds the Lambda proxy event (payload format 1.0, with
  `requestContext.identity` filled from the caller's record, section 4) and
  hands it to `on_request(event) -> (status, headers, body)`: the default
  accepts; `lambda_proxy(handler)` plugs a real Lambda proxy handler in;
* records every request (`received`) and, for accepted ones, the decoded
  JSON body (`payloads`; with `keep_payloads=False` only its fields other
  than `logs`, plus `lines`, for long benchmark runs).

Use it as a context manager, or `start()` / `stop()`; `stop()` then
`start()` again listens on the same port (an outage and its end).
"""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import hmac
import json
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional, Union
from urllib.parse import unquote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

MIB = 1024 * 1024
AMZ_FORMAT = "%Y%m%dT%H%M%SZ"
SERVICE = "execute-api"
AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<akid>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request,\s*SignedHeaders=(?P<signed>[a-z0-9;-]+),\s*"
    r"Signature=(?P<sig>[0-9a-f]{64})$"
)

# API Gateway's own messages (matched by the shipper and by tests).
MSG_MISSING = "Missing Authentication Token"
MSG_INVALID_TOKEN = "The security token included in the request is invalid."
MSG_EXPIRED_TOKEN = "The security token included in the request is expired"
MSG_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)


@dataclass
class Caller:
    """What the gateway knows about an access key (what IAM knows in real AWS)."""

    secret_key: str
    session_token: Optional[str] = None
    expires_at: Optional[float] = None  # on the gateway's clock
    identity: dict[str, Any] = field(default_factory=dict)  # into requestContext.identity


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Hang:
    """Read the request, then answer nothing for `seconds` (or until stop())."""

    seconds: float = 30.0


@dataclass(frozen=True)
class Reset:
    """Read the request, then reset the connection (RST, no answer)."""


@dataclass(frozen=True)
class CompleteThenReset:
    """Handle the request in full (the Lambda archives the batch), then reset the
    connection instead of answering: the device never learns it succeeded."""


@dataclass(frozen=True)
class Proceed:
    """Handle the request normally (a gap in a scripted sequence)."""


Action = Union[Reply, Hang, Reset, CompleteThenReset, Proceed]


def reply_json(status: int, obj: Any, headers: Optional[Mapping[str, str]] = None) -> Reply:
    return Reply(
        status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})}
    )


def too_many(retry_after: Optional[str] = None) -> Reply:
    """429 as API Gateway throttling sends it, optionally with Retry-After."""
    return reply_json(
        429, {"message": "Too Many Requests"}, {"Retry-After": retry_after} if retry_after else None
    )


EXPIRED_TOKEN = reply_json(403, {"message": MSG_EXPIRED_TOKEN})
BAD_SIGNATURE = reply_json(403, {"message": MSG_SIGNATURE})
TOO_LARGE = reply_json(413, {"message": "Request Too Long"})
BAD_REQUEST = reply_json(400, {"message": "bad batch: logs must be a list"})
SERVER_ERROR = reply_json(500, {"message": "Internal server error"})
UNAVAILABLE = reply_json(503, {"message": "Service Unavailable"})


@dataclass
class Received:
    """One request as the gateway saw it, and what it answered."""

    time: float
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body_bytes: int
    header_bytes: int
    status: int
    # "accepted", "scripted", "hang", "reset", "complete-reset" (the handler's
    # status, answer never sent) or the refusal message
    outcome: str
    payload: Optional[dict[str, Any]] = None
    event: Optional[dict[str, Any]] = None


def sigv4_check(
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    lookup: Callable[[str], Optional[Caller]],
    region: str,
    now: float,
    skew_window: float = 300.0,
) -> tuple[int, str, Optional[str], Optional[Caller]]:
    """Verify a SigV4 request: (status, message, access key, caller); 200 means valid."""
    h = {k.lower(): v for k, v in headers.items()}
    m = AUTH_RE.match(h.get("authorization", ""))
    if not m:
        return 403, MSG_MISSING, None, None
    akid = m.group("akid")
    if m.group("service") != SERVICE:
        return 403, f"Credential should be scoped to correct service: '{SERVICE}'.", akid, None
    if m.group("region") != region:
        return 403, "Credential should be scoped to a valid region.", akid, None
    amz = h.get("x-amz-date", "")
    try:
        when = datetime.datetime.strptime(amz, AMZ_FORMAT).replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return (
            403,
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
            akid,
            None,
        )
    if m.group("date") != amz[:8]:
        return (
            403,
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of "
            f"date from HTTP: '{m.group('date')}' != '{amz[:8]}'",
            akid,
            None,
        )
    signed = m.group("signed").split(";")
    if signed != sorted(set(signed)) or "host" not in signed or "x-amz-date" not in signed:
        return 403, MSG_SIGNATURE, akid, None
    if any(name not in h for name in signed):
        return 403, MSG_SIGNATURE, akid, None
    t = when.timestamp()
    fmt = lambda e: datetime.datetime.fromtimestamp(e, datetime.timezone.utc).strftime(AMZ_FORMAT)  # noqa: E731
    if t < now - skew_window:
        return (
            403,
            (
                f"Signature expired: {amz} is now earlier than {fmt(now - skew_window)} "
                f"({fmt(now)} - 5 min.)"
            ),
            akid,
            None,
        )
    if t > now + skew_window:
        return (
            403,
            (
                f"Signature not yet current: {amz} is still later than {fmt(now + skew_window)} "
                f"({fmt(now)} + 5 min.)"
            ),
            akid,
            None,
        )
    caller = lookup(akid)
    if caller is None:
        return 403, MSG_INVALID_TOKEN, akid, None
    if caller.session_token is not None and (
        "x-amz-security-token" not in signed
        or not hmac.compare_digest(h.get("x-amz-security-token", ""), caller.session_token)
    ):
        return 403, MSG_INVALID_TOKEN, akid, None
    if caller.expires_at is not None and now >= caller.expires_at:
        return 403, MSG_EXPIRED_TOKEN, akid, None
    if (
        "x-amz-content-sha256" in h
        and h["x-amz-content-sha256"] != hashlib.sha256(body).hexdigest()
    ):
        return 403, MSG_SIGNATURE, akid, None  # never trust the header alone
    path, _, query = target.partition("?")
    params = [
        (unquote(k), unquote(v)) for k, _, v in (p.partition("=") for p in query.split("&") if p)
    ]
    req = AWSRequest(
        method=method,
        url="https://" + h["host"] + path,
        data=body,
        headers={name: h[name] for name in signed},
        params=params,
    )
    req.context["timestamp"] = amz
    signer = SigV4Auth(Credentials(akid, caller.secret_key, caller.session_token), SERVICE, region)
    expected = signer.signature(signer.string_to_sign(req, signer.canonical_request(req)), req)
    if not hmac.compare_digest(expected, m.group("sig")):
        return 403, MSG_SIGNATURE, akid, caller
    return 200, "", akid, caller


def lambda_proxy(
    handler: Callable[[dict[str, Any], Any], Mapping[str, Any]], context: Any = None
) -> Callable[[dict[str, Any]], tuple[int, Mapping[str, str], bytes]]:
    """Adapt a Lambda proxy handler (`handler(event, context)` returning
    `{"statusCode", "headers", "body", "isBase64Encoded"}`) to `on_request`."""

    def on_request(event: dict[str, Any]) -> tuple[int, Mapping[str, str], bytes]:
        result = handler(event, context)
        body = result.get("body") or ""
        raw = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode("utf-8")
        return int(result.get("statusCode", 200)), dict(result.get("headers") or {}), raw

    return on_request


def decode_body(content_type: str, body: bytes) -> Optional[dict[str, Any]]:
    """The JSON a client sent (gzip'd or not), or None if it is not JSON."""
    try:
        raw = gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body
        value = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, EOFError):
        return None
    return value if isinstance(value, dict) else None


class Gateway:
    """See the module docstring. Thread-safe; every list is guarded by `lock`."""

    def __init__(
        self,
        credentials: Union[Mapping[str, Caller], Callable[[str], Optional[Caller]], None] = None,
        *,
        region: str = "eu-west-1",
        stage: str = "prod",
        resource: str = "/logs",
        clock: Callable[[], float] = time.time,
        skew_window: float = 300.0,
        max_body_bytes: int = 10 * MIB,
        binary_media_types: tuple[str, ...] = ("application/gzip",),
        on_request: Optional[
            Callable[[dict[str, Any]], tuple[int, Mapping[str, str], bytes]]
        ] = None,
        keep_events: bool = True,
        keep_payloads: bool = True,
    ) -> None:
        self._callers: dict[str, Caller] = {}
        self._lookup_fn: Optional[Callable[[str], Optional[Caller]]] = None
        if callable(credentials):
            self._lookup_fn = credentials
        elif credentials:
            self._callers.update(credentials)
        self.region = region
        self.stage = stage
        self.resource = resource
        self.clock = clock
        self.skew_window = skew_window
        self.max_body_bytes = max_body_bytes
        self.binary_media_types = binary_media_types
        self.on_request = on_request
        self.keep_events = keep_events
        self.keep_payloads = keep_payloads
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self._script: list[Action] = []
        self._release = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self.port = 0

    # -- lifecycle --------------------------------------------------------

    def start(self) -> Gateway:
        self._release.clear()
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler_for(self))
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="gateway", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop open keep-alive connections: the API is down."""
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self.lock:
            connections, self._connections = list(self._connections), set()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.stage}{self.resource}"

    # -- configuration ----------------------------------------------------

    def add_caller(self, access_key: str, caller: Caller) -> None:
        with self.lock:
            self._callers[access_key] = caller

    def lookup(self, access_key: str) -> Optional[Caller]:
        with self.lock:
            caller = self._callers.get(access_key)
        if caller is None and self._lookup_fn is not None:
            caller = self._lookup_fn(access_key)
        return caller

    def enqueue(self, *actions: Action) -> None:
        """Answer the next requests with these, in order, before any verification."""
        with self.lock:
            self._script.extend(actions)

    def clear_script(self) -> None:
        """Forget the scripted answers not used yet."""
        with self.lock:
            self._script.clear()

    def _next_action(self) -> Optional[Action]:
        with self.lock:
            return self._script.pop(0) if self._script else None

    # -- what happened ----------------------------------------------------

    @property
    def accepted(self) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.outcome == "accepted"]

    @property
    def payloads(self) -> list[dict[str, Any]]:
        return [r.payload for r in self.accepted if r.payload is not None]

    def statuses(self) -> list[int]:
        with self.lock:
            return [r.status for r in self.received]

    def wait_for(self, predicate: Callable[[Gateway], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.01)
        return predicate(self)

    # -- the API Gateway proxy event --------------------------------------

    def build_event(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        access_key: Optional[str],
        caller: Optional[Caller],
        source_ip: str,
    ) -> dict[str, Any]:
        path, _, query = target.partition("?")
        single: dict[str, str] = {}
        multi: dict[str, list[str]] = {}
        for name, value in headers:
            single[name] = value
            multi.setdefault(name, []).append(value)
        qs = [
            (unquote(k), unquote(v))
            for k, _, v in (p.partition("=") for p in query.split("&") if p)
        ]
        content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
        binary = content_type.split(";")[0].strip() in self.binary_media_types
        resource_path = path[len(self.stage) + 1 :] if path.startswith(f"/{self.stage}/") else path
        identity: dict[str, Any] = {
            "cognitoIdentityPoolId": None,
            "cognitoIdentityId": None,
            "cognitoAuthenticationType": None,
            "cognitoAuthenticationProvider": None,
            "accountId": None,
            "caller": None,
            "user": None,
            "userArn": None,
            "accessKey": access_key,
            "sourceIp": source_ip,
            "userAgent": single.get("User-Agent") or single.get("user-agent"),
        }
        if caller is not None:
            identity.update(caller.identity)
        return {
            "resource": self.resource,
            "path": resource_path,
            "httpMethod": method,
            "headers": single,
            "multiValueHeaders": multi,
            "queryStringParameters": dict(qs) or None,
            "multiValueQueryStringParameters": None,
            "pathParameters": None,
            "stageVariables": None,
            "body": base64.b64encode(body).decode() if binary else body.decode("utf-8", "replace"),
            "isBase64Encoded": binary,
            "requestContext": {
                "resourcePath": self.resource,
                "httpMethod": method,
                "path": path,
                "stage": self.stage,
                "requestId": str(uuid.uuid4()),
                "requestTimeEpoch": int(self.clock() * 1000),
                "apiId": "local",
                "accountId": "123456789012",
                "identity": identity,
            },
        }

    def default_handler(self, event: dict[str, Any]) -> tuple[int, Mapping[str, str], bytes]:
        return 200, {"Content-Type": "application/json"}, b'{"message":"accepted"}'


def _handler_for(gw: Gateway) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "local-gateway"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def setup(self) -> None:
            super().setup()
            with gw.lock:
                gw._connections.add(self.connection)

        def date_time_string(self, timestamp: Optional[float] = None) -> str:
            from email.utils import formatdate

            return formatdate(gw.clock() if timestamp is None else timestamp, usegmt=True)

        def _send(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _record(
            self,
            status: int,
            outcome: str,
            body: bytes,
            header_bytes: int,
            payload: Optional[dict[str, Any]] = None,
            event: Optional[dict[str, Any]] = None,
        ) -> None:
            rec = Received(
                time=gw.clock(),
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body_bytes=len(body),
                header_bytes=header_bytes,
                status=status,
                outcome=outcome,
                payload=payload,
                event=event if gw.keep_events else None,
            )
            with gw.lock:
                gw.received.append(rec)

        def do_GET(self) -> None:
            self._send(
                403,
                {"Content-Type": "application/json"},
                json.dumps({"message": MSG_MISSING}).encode(),
            )

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            header_bytes = (
                len(self.requestline)
                + 4
                + sum(len(k) + len(v) + 4 for k, v in self.headers.items())
            )
            action = gw._next_action()
            if isinstance(action, Hang):
                self._record(0, "hang", body, header_bytes)
                gw._release.wait(action.seconds)
                self.close_connection = True
                return
            if isinstance(action, Reset):
                self._record(0, "reset", body, header_bytes)
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.close_connection = True
                self.rfile.close()  # wfile holds no reference: this closes the socket
                self.connection.close()
                return
            if isinstance(action, Reply):
                self._record(action.status, "scripted", body, header_bytes)
                self._send(action.status, action.headers, action.body)
                return
            path = self.path.partition("?")[0]
            if path != f"/{gw.stage}{gw.resource}":
                return self._refuse(403, MSG_MISSING, body, header_bytes)
            if len(body) > gw.max_body_bytes:
                return self._refuse(413, "Request Too Long", body, header_bytes)
            status, message, akid, caller = sigv4_check(
                self.command,
                self.path,
                dict(self.headers.items()),
                body,
                gw.lookup,
                gw.region,
                gw.clock(),
                gw.skew_window,
            )
            if status != 200:
                return self._refuse(status, message, body, header_bytes)
            event = gw.build_event(
                self.command,
                self.path,
                list(self.headers.items()),
                body,
                akid,
                caller,
                self.client_address[0],
            )
            handler = gw.on_request or gw.default_handler
            out_status, out_headers, out_body = handler(event)
            payload = decode_body(self.headers.get("Content-Type", ""), body)
            if payload is not None and not gw.keep_payloads:  # long runs: a summary only
                logs = payload.pop("logs", None)
                payload["lines"] = len(logs) if isinstance(logs, list) else None
            outcome = "accepted" if 200 <= out_status < 300 else "refused by handler"
            if isinstance(action, CompleteThenReset):
                self._record(out_status, "complete-reset", body, header_bytes, payload, event)
                return self._reset()
            self._record(out_status, outcome, body, header_bytes, payload, event)
            self._send(out_status, out_headers, out_body)

        def _reset(self) -> None:
            """Close with a TCP RST (SO_LINGER 0), as `Reset` does, after the handler ran."""
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.rfile.close()  # wfile holds no reference: this closes the socket
            self.connection.close()

        def _refuse(self, status: int, message: str, body: bytes, header_bytes: int) -> None:
            self._record(status, message, body, header_bytes)
            self._send(
                status,
                {"Content-Type": "application/json", "x-amzn-ErrorType": "ForbiddenException"},
                json.dumps({"message": message}).encode(),
            )

        def finish(self) -> None:
            with gw.lock:
                gw._connections.discard(self.connection)
            try:
                super().finish()
            except (OSError, ValueError):
                pass

    return Handler
