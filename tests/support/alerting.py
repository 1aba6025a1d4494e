"""Helpers for the alert-policy tests (tests/alerts/): a loopback Slack, DynamoDB as atomic
as the real one, and the tally of what reached Slack.

* :class:`LoopbackSlack` is an incoming webhook on 127.0.0.1 that records every post and
  answers from a script (``(status, headers, body)`` per request, then ``200 ok``).
* :class:`AtomicRequests` wraps a moto DynamoDB client so that each request runs alone.
  moto's in-process backend evaluates a condition and applies the write in plain Python,
  with no lock: measured with 8 threads doing conditional version bumps, 88 of 800
  writes that moto answered as successful were lost. Real DynamoDB applies each request
  atomically, and that is all the code under test relies on; with this wrapper the
  requests of concurrent invocations still interleave in any order, one request at a
  time, as they do against DynamoDB.
* :func:`tally` reads the line counts back out of the messages: a one-batch alert's
  header (``N err+ lines from D``), a digest's (``Digest: N err+ lines from D``) and a
  list message's entries (``• `D` ×N (…)``), so that a test can check every alerting
  line was counted once.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

STATE_TABLE = "omprog-alert-state"


@dataclass
class LoopbackSlack:
    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    script: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)

    @property
    def payloads(self) -> list[dict[str, Any]]:
        """What Slack accepted (answered 2xx)."""
        return [r["json"] for r in self.requests if 200 <= r["status"] < 300]

    @property
    def refused(self) -> list[dict[str, Any]]:
        return [r["json"] for r in self.requests if not 200 <= r["status"] < 300]


@contextmanager
def loopback_slack() -> Iterator[LoopbackSlack]:
    sink = LoopbackSlack()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                status, headers, body = sink.script.pop(0) if sink.script else (200, {}, b"ok")
                sink.requests.append({"json": json.loads(data), "status": status})
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    sink.url = f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/XXXX"
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class AtomicRequests:
    """A client whose every request runs under one lock (see the module docstring)."""

    def __init__(self, client: Any, lock: threading.Lock | None = None) -> None:
        self._client = client
        self._lock = lock or threading.Lock()
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls[name] += 1
                return attr(*args, **kwargs)

        return call


def create_table(client: Any, name: str = STATE_TABLE) -> str:
    """The state table as lambda/template.yaml declares it (key ``pk``, on demand)."""
    client.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


_SINGLE = re.compile(r"(?:Digest: )?(\d+) [a-z]+\+ lines? from (\S+)\Z")
_ENTRY = re.compile(r"^• `([^`]+)` ×(\d+) ", re.MULTILINE)


def kind_of(payload: dict[str, Any]) -> str:
    """``alert`` (one batch), ``digest``, ``fleet``, ``digests``, ``silent``, ``back``."""
    text = payload["text"]
    if text.startswith("Digest: "):
        return "digest"
    if text.startswith("Fleet: "):
        return "fleet"
    if text.startswith("Digests: "):
        return "digests"
    if text.startswith("Silent: ") or " has sent nothing for " in text:
        return "silent"
    if text.startswith("Back: ") or " is back after " in text:
        return "back"
    if _SINGLE.match(text):
        return "alert"
    raise AssertionError(f"a message of no known kind: {text!r}")


def tally(payloads: list[dict[str, Any]]) -> Counter[str]:
    """Device → alerting lines counted in ``payloads`` (one-batch, digest and list messages)."""
    counts: Counter[str] = Counter()
    for payload in payloads:
        kind = kind_of(payload)
        if kind in ("alert", "digest"):
            match = _SINGLE.match(payload["text"])
            assert match is not None
            counts[match[2]] += int(match[1])
        elif kind in ("fleet", "digests"):
            for device, lines in entries(payload):
                counts[device] += lines
    return counts


def entries(payload: dict[str, Any]) -> list[tuple[str, int]]:
    """The ``(device, lines)`` a list message names, in order."""
    found = []
    for block in payload["blocks"]:
        if block["type"] == "section" and "fields" not in block:
            found.extend((d, int(n)) for d, n in _ENTRY.findall(block["text"]["text"]))
    return found


def named_devices(payload: dict[str, Any]) -> set[str]:
    """Every device a message names: its header's, or each entry's."""
    match = _SINGLE.match(payload["text"])
    if match:
        return {match[2]}
    notice = re.match(r"(\S+) (?:has sent nothing for|is back after) ", payload["text"])
    if notice:
        return {notice[1]}
    return {device for device, _ in entries(payload)} | set(
        re.findall(r"^• `([^`]+)`", "\n".join(_texts(payload)), re.MULTILINE)
    )


def _texts(payload: dict[str, Any]) -> list[str]:
    return [
        block["text"]["text"]
        for block in payload["blocks"]
        if block["type"] == "section" and "text" in block
    ]


def slack_problems(payload: dict[str, Any]) -> list[str]:
    """Slack's documented limits and the escaping rule, checked independently of
    lambda/alerts.py (and with slack_sdk's own block validation)."""
    from slack_sdk.models.blocks import Block

    problems = []
    blocks = payload["blocks"]
    if len(blocks) > 50:
        problems.append("more than 50 blocks")
    if not payload.get("text") or len(payload["text"]) > 40000:
        problems.append("text missing or over 40000")
    texts = [payload["text"]]
    for block in blocks:
        Block.parse(block).validate_json()  # raises SlackObjectFormationError
        if block["type"] == "header":
            if len(block["text"]["text"]) > 150:
                problems.append("header over 150")
            texts.append(block["text"]["text"])
        elif block["type"] == "section":
            if len(block["text"]["text"]) > 3000:
                problems.append("section text over 3000")
            if block["text"].get("verbatim") is not True:
                problems.append("section text not verbatim")
            if len(block.get("fields", [])) > 10:
                problems.append("over 10 fields")
            texts.append(block["text"]["text"])
            for item in block.get("fields", []):
                if len(item["text"]) > 2000:
                    problems.append("field over 2000")
                if item.get("type") == "mrkdwn" and item.get("verbatim") is not True:
                    problems.append("mrkdwn field not verbatim")
                texts.append(item["text"])
        elif block["type"] == "context":
            if len(block["elements"]) > 10:
                problems.append("over 10 context elements")
            texts.extend(e["text"] for e in block["elements"])
    for text in texts:
        if "<" in text or ">" in text:
            problems.append(f"raw angle bracket: {text[:80]!r}")
        if "&" in text.replace("&amp;", "").replace("&lt;", "").replace("&gt;", ""):
            problems.append(f"raw ampersand: {text[:80]!r}")
    return problems
