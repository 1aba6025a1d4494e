"""A Slack incoming webhook on loopback: records each alert and shows it as text.

`SlackSink` listens on 127.0.0.1 (port 0), answers like Slack (`200 ok`, or
what a test scripted: a 429 with `Retry-After`, a 404 `no_service`), keeps
every posted payload, and hands each to `on_alert` (the devstack prints it
with `render`). With `forward_to` set (`SLACK_WEBHOOK_URL`), each payload is
also posted to that real webhook and Slack's answer is passed back.

`render` turns a Block Kit payload into the plain text a person would read
in the channel: the header, context lines, each section's text and fields.
It un-escapes Slack's three entities for the terminal only; the payload
itself is kept exactly as sent.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional

WEBHOOK_PATH = "/services/T00000000/B00000000/devstack"


def render(payload: Mapping[str, Any]) -> str:
    """The alert as text: one line per block (fields joined with ` · `)."""
    out: list[str] = []
    for block in payload.get("blocks") or []:
        kind = block.get("type")
        if kind == "header":
            out.append(f"== {_text(block.get('text'))} ==")
        elif kind == "context":
            out.append("   " + " · ".join(_text(e) for e in block.get("elements", [])))
        elif kind == "section":
            if block.get("text"):
                out.append("   " + _text(block["text"]).replace("```", "").strip())
            fields = [_text(f).replace("\n", ": ", 1) for f in block.get("fields", [])]
            if fields:
                out.append("   " + " · ".join(fields))
        elif kind == "divider":
            out.append("   ---")
    if not out:
        out.append(str(payload.get("text", "")))
    return "\n".join(out)


def _text(obj: Any) -> str:
    if isinstance(obj, dict):
        obj = obj.get("text", "")
    text = str(obj or "")
    for entity, char in (("&lt;", "<"), ("&gt;", ">"), ("&amp;", "&")):
        text = text.replace(entity, char)
    return text.replace("*", "")


class SlackSink:
    """See the module docstring. Thread-safe: posts arrive on server threads."""

    def __init__(
        self,
        on_alert: Optional[Callable[[dict[str, Any]], None]] = None,
        forward_to: str = "",
        port: int = 0,
    ) -> None:
        self.on_alert = on_alert
        self.forward_to = forward_to
        self.port = port
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.script: list[tuple[int, dict[str, str], bytes]] = []
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"

    @property
    def payloads(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r["json"] for r in self.requests if r["json"] is not None]

    def start(self) -> SlackSink:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler_for(self))
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="slack-sink", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> SlackSink:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def answer(self, data: bytes, payload: Optional[dict[str, Any]]) -> tuple[int, dict, bytes]:
        """What to answer this post: the script first, then the real webhook or `ok`."""
        with self.lock:
            if self.script:
                return self.script.pop(0)
        if self.forward_to:
            return _forward(self.forward_to, data)
        return 200, {}, b"ok"


def _forward(url: str, data: bytes) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - operator's URL
            return resp.status, dict(resp.headers.items()), resp.read(2048)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()) if exc.headers else {}, exc.read(2048)
    except OSError as exc:
        return 502, {}, f"forwarding to SLACK_WEBHOOK_URL failed: {exc}".encode()


def _handler_for(sink: SlackSink) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length)
            try:
                payload = json.loads(data)
            except ValueError:
                payload = None
            if self.path != WEBHOOK_PATH:
                status, headers, body = 404, {}, b"no_service"
            elif not isinstance(payload, dict):
                status, headers, body = 400, {}, b"invalid_payload"
            else:
                status, headers, body = sink.answer(data, payload)
            with sink.lock:
                sink.requests.append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers),
                        "json": payload,
                        "status": status,
                    }
                )
            if 200 <= status < 300 and isinstance(payload, dict) and sink.on_alert:
                sink.on_alert(payload)
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler
