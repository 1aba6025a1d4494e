"""Slack alerts: messages grouped, escaped, inside Slack's limits, sent politely.

What the how-to got wrong, and what this module does instead:

* one message per alerting *line*, three blocks each, so 17 error lines broke
  Slack's 50-block limit and the whole alert was refused. Here identical
  lines are grouped with a count, one section per group, worst first, and
  when groups do not fit the last block says how many were left out and where
  the batch is archived;
* log text pasted into mrkdwn, so ``<!channel>`` in a log line paged the
  channel and ``<https://evil|click>`` became a disguised link. Here every
  log-derived string is escaped (``&``, ``<``, ``>``) before it is cut to
  length, cuts never split an entity, and mrkdwn objects are ``verbatim``;
* a 429 or an outage of Slack lost the alert and, worse, could fail the
  request. Here a 429 waits ``Retry-After`` within a bounded budget, and any
  failure is a :class:`SendResult` with a named reason: the sender never
  raises into the handler.

Blocks are built with ``slack_sdk.models.blocks`` (which checks section text,
field count and header length) and checked again by :func:`check_message`
for what slack_sdk does not check (block count, field length, escaping).

Besides the one-batch message (:func:`build_message`, a device's first alert)
this module builds what storm control sends instead of many of those
(docs/ALERTS.md): a device's digest after its cool-down
(:func:`build_digest_message`), a list of devices (:func:`build_list_message`:
the fleet message, combined digests), and the silent and back notices. Each
message carries its line counts in plain words, so that what reached Slack can
be added up against what was sent.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Optional

from parsing import Record
from severity import SEVERITY_NAMES
from slack_sdk.models.blocks import (
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_HEADER_TEXT = 150
MAX_MESSAGE_TEXT = 40000
#: Characters of a log message shown per group; the archive has the whole line.
MESSAGE_CHARS = 1500
#: Characters of host/app names shown.
NAME_CHARS = 200
#: Distinct groups remembered per batch; lines of any further group are only counted.
MAX_TRACKED_GROUPS = 1000
MAX_ATTEMPTS = 4
#: One line of a device list (fleet message); the device id is at most 128 characters.
ENTRY_CHARS = 400

if TYPE_CHECKING:  # storm imports this module; these are for type hints only
    from storm import Digest, Entry

Transport = Callable[[str, bytes, "dict[str, str]", float], "tuple[int, dict[str, str], bytes]"]


def escape(text: str) -> str:
    """Slack's three control characters, ``&`` first; nothing else is touched."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cut(escaped: str, limit: int) -> str:
    """Shorten already-escaped text to ``limit`` characters without splitting an entity."""
    if len(escaped) <= limit:
        return escaped
    head = escaped[: max(limit - 1, 0)]
    amp = head.rfind("&", max(len(head) - 4, 0))
    if amp != -1 and ";" not in head[amp:]:
        head = head[:amp]
    return head + "…"


@dataclass
class Group:
    """Identical alerting lines: same severity, host, app and message."""

    severity_num: int
    severity: str
    host: Optional[str]
    app: Optional[str]
    msg: Optional[str]
    count: int = 0
    first: Optional[datetime] = None
    last: Optional[datetime] = None


@dataclass
class AlertCollector:
    """Gathers alerting records as the archive streams them, in bounded memory."""

    max_groups: int = MAX_TRACKED_GROUPS
    lines: int = 0
    untracked_lines: int = 0
    groups: dict[tuple[Any, ...], Group] = field(default_factory=dict)
    first: Optional[datetime] = None
    last: Optional[datetime] = None
    #: Lines per severity number, every line counted (tracked or not).
    by_severity: dict[int, int] = field(default_factory=dict)

    def add(self, record: Record) -> None:
        self.lines += 1
        num = record["severity_num"]
        self.by_severity[num] = self.by_severity.get(num, 0) + 1
        when = _when(record.get("ts"))
        if when is not None:
            self.first = when if self.first is None or when < self.first else self.first
            self.last = when if self.last is None or when > self.last else self.last
        msg = record.get("msg")
        if msg is None:
            # A line that parsed only as far as its severity (parsing.py keeps it in
            # `raw`): the line itself is what the operator needs to see.
            msg = record.get("raw")
        key = (num, record.get("host"), record.get("app"), msg)
        group = self.groups.get(key)
        if group is None:
            if len(self.groups) >= self.max_groups:
                self.untracked_lines += 1
                return
            group = Group(key[0], record["severity"], key[1], key[2], key[3])
            self.groups[key] = group
        group.count += 1
        if when is not None:
            if group.first is None or when < group.first:
                group.first = when
            if group.last is None or when > group.last:
                group.last = when


def _when(ts: Any) -> Optional[datetime]:
    if not isinstance(ts, str):
        return None
    try:
        return datetime.fromisoformat(ts).astimezone(timezone.utc)
    except (ValueError, OverflowError):
        return None


def _span(first: Optional[datetime], last: Optional[datetime]) -> str:
    if first is None or last is None:
        return "time unknown"
    start = f"{_day(first)} {first:%H:%M:%S}"
    if last == first:
        return f"{start} UTC"
    end = f"{last:%H:%M:%S}" if last.date() == first.date() else f"{_day(last)} {last:%H:%M:%S}"
    return f"{start} – {end} UTC"


def _day(when: datetime) -> str:
    """``YYYY-MM-DD`` with the year zero-padded (``strftime("%Y")`` is not, on Linux)."""
    return f"{when.year:04d}-{when.month:02d}-{when.day:02d}"


def _mrkdwn(text: str) -> MarkdownTextObject:
    return MarkdownTextObject(text=text, verbatim=True)


def _code(msg: Optional[str]) -> str:
    if not msg:
        return "_(empty message)_"
    # A ``` inside the message would close the code block early: break it with zero-width spaces.
    shown = cut(escape(msg.replace("```", "`\u200b`\u200b`")), MESSAGE_CHARS)
    return f"```{shown}```"


def _name(value: Optional[str]) -> str:
    return cut(escape(value), NAME_CHARS) if value else "–"


def build_message(
    collector: AlertCollector,
    *,
    device_id: str,
    batch_id: str,
    location: str,
    threshold_name: str,
) -> dict[str, Any]:
    """The webhook payload (``text`` + ``blocks``) for one batch's alerting lines.

    ``location`` is where the batch is archived (``s3://bucket/key``); it is
    shown when groups had to be left out, so that nobody believes the message
    holds everything.
    """
    plural = "" if collector.lines == 1 else "s"
    title = f"{collector.lines} {threshold_name}+ line{plural} from {device_id}"
    blocks: list[dict[str, Any]] = [
        HeaderBlock(text=PlainTextObject(text=cut(title, MAX_HEADER_TEXT), emoji=False)).to_dict(),
        ContextBlock(
            elements=[
                _mrkdwn(
                    cut(
                        f"*Device* {escape(device_id)} · *Window* "
                        f"{_span(collector.first, collector.last)} · *Batch* {escape(batch_id)}",
                        MAX_SECTION_TEXT,
                    )
                )
            ]
        ).to_dict(),
    ]
    groups = sorted(
        collector.groups.values(),
        key=lambda g: (
            g.severity_num,
            -g.count,
            g.first or datetime.max.replace(tzinfo=timezone.utc),
        ),
    )
    room = MAX_BLOCKS - len(blocks)
    shown = groups if len(groups) <= room and not collector.untracked_lines else groups[: room - 1]
    blocks.extend(_group_section(group) for group in shown)
    left_groups = len(groups) - len(shown)
    left_lines = sum(g.count for g in groups[len(shown) :]) + collector.untracked_lines
    if left_lines:
        more = f"{left_groups} more group{'s' if left_groups != 1 else ''}"
        if collector.untracked_lines:  # their groups were not counted: say so
            more = f"at least {left_groups + 1} more group{'s' if left_groups else ''}"
        blocks.append(
            ContextBlock(
                elements=[
                    _mrkdwn(
                        cut(
                            f"…and {more} ({left_lines} line{'s' if left_lines != 1 else ''}) "
                            f"not shown. The whole batch is archived at `{escape(location)}`",
                            MAX_SECTION_TEXT,
                        )
                    )
                ]
            ).to_dict()
        )
    return {"text": cut(title, MAX_MESSAGE_TEXT), "blocks": blocks}


def _group_section(group: Group) -> dict[str, Any]:
    """One group: the message as code, then severity (with its count), time, app, host."""
    count = f" ×{group.count}" if group.count > 1 else ""
    return SectionBlock(
        text=_mrkdwn(_code(group.msg)),
        fields=[
            _mrkdwn(f"*Severity*\n{escape(group.severity)}{count}"),
            _mrkdwn(f"*Time*\n{_span(group.first, group.last)}"),
            _mrkdwn(f"*App*\n{_name(group.app)}"),
            _mrkdwn(f"*Host*\n{_name(group.host)}"),
        ],
    ).to_dict()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def clock_text(epoch: Optional[float]) -> str:
    """Wall-clock time as ``YYYY-MM-DD HH:MM:SS UTC``."""
    if epoch is None:
        return "time unknown"
    when = datetime.fromtimestamp(epoch, timezone.utc)
    return f"{_day(when)} {when:%H:%M:%S} UTC"


def duration_text(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3 h 5 min``, ``2 d 4 h``: what an operator reads at a glance."""
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def severity_counts(by_severity: dict[int, int]) -> str:
    """``crit 2, err 310``: worst first."""
    return ", ".join(f"{SEVERITY_NAMES[num]} {by_severity[num]}" for num in sorted(by_severity))


def _context(text: str) -> dict[str, Any]:
    return ContextBlock(elements=[_mrkdwn(cut(text, MAX_SECTION_TEXT))]).to_dict()


def _header(title: str) -> dict[str, Any]:
    return HeaderBlock(
        text=PlainTextObject(text=cut(title, MAX_HEADER_TEXT), emoji=False)
    ).to_dict()


def build_digest_message(
    digest: Digest,
    *,
    device_id: str,
    threshold_name: str,
    cooldown: float,
) -> dict[str, Any]:
    """What came in from one device during its cool-down: counts per group, worst first,
    and the archive prefix to look at. Its header counts every line it stands for."""
    title = f"Digest: {_plural(digest.lines, threshold_name + '+ line')} from {device_id}"
    detail = [
        f"*Device* {escape(device_id)}",
        f"*Since* {clock_text(digest.since)}",
        f"*Lines* {_span(digest.first, digest.last)}",
        f"*Batches* {digest.batches}",
        f"*By severity* {escape(severity_counts(digest.by_severity))}",
        f"*Cool-down* {duration_text(cooldown)}",
    ]
    if digest.requeued:
        detail.append(f"{_plural(digest.requeued, 'line')} from a post that did not go through")
    blocks = [_header(title), _context(" · ".join(detail))]
    groups = digest.sorted_groups()
    room = MAX_BLOCKS - len(blocks) - 1  # the last block says where to look
    shown = groups if len(groups) <= room else groups[: room - 1]
    blocks.extend(_group_section(group) for group in shown)
    left_groups = len(groups) - len(shown)
    left_lines = sum(g.count for g in groups[len(shown) :]) + digest.other_lines
    where = ", ".join(f"`{escape(loc)}`" for loc in digest.locations) or "the archive"
    tail = f"Archived under {where}"
    if left_lines:
        what = _plural(left_groups, "more group") if left_groups else "lines of other groups"
        if left_groups and digest.other_lines:
            what += " and lines of other groups"
        tail = f"…{_plural(left_lines, 'line')} not shown ({what}). {tail}"
    blocks.append(_context(tail))
    return {"text": cut(title, MAX_MESSAGE_TEXT), "blocks": blocks}


def entry_line(entry: Entry) -> str:
    """``• `pi-0042` ×3 (crit 1, err 2)``: the count a test or a reader adds up."""
    text = (
        f"• `{escape(entry.device)}` ×{entry.lines} ({escape(severity_counts(entry.by_severity))})"
    )
    return cut(text, ENTRY_CHARS)


def _common(entries: Sequence[Entry]) -> str:
    """The messages several devices share (what a network outage looks like)."""
    seen: dict[tuple[Any, ...], list[str]] = {}
    for entry in entries:
        g = entry.sample
        if g is not None:
            seen.setdefault((g.severity_num, g.app, g.msg), []).append(entry.device)
    shared = sorted(
        ((key, devices) for key, devices in seen.items() if len(devices) > 1),
        key=lambda kv: (-len(kv[1]), kv[0][0]),
    )[:5]
    parts = []
    for (_num, app, msg), devices in shared:
        text = cut(escape((msg or "").replace("\n", " ")), 300)
        parts.append(f"• {_plural(len(devices), 'device')}: {_name(app)}: {text}")
    return "\n".join(parts)


def build_list_message(
    title: str,
    context: str,
    lines: Iterable[str],
    *,
    more: Callable[[int], str],
    footer: str = "",
    extra: str = "",
) -> dict[str, Any]:
    """Many devices in one message: ``lines`` (already escaped mrkdwn, at most
    ENTRY_CHARS each) packed into sections of up to 3000 characters; when they do not
    all fit in 50 blocks, ``more(n)`` says how many were left out."""
    blocks = [_header(title), _context(context)]
    if extra:
        blocks.append(SectionBlock(text=_mrkdwn(cut(extra, MAX_SECTION_TEXT))).to_dict())
    room = MAX_BLOCKS - len(blocks) - 1
    items = list(lines)
    sections: list[str] = []
    current = ""
    used = 0
    for line in items:
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) <= MAX_SECTION_TEXT:
            current = candidate
            used += 1
            continue
        if len(sections) + 1 >= room:
            break
        sections.append(current)
        current = line
        used += 1
    if current:
        sections.append(current)
    for text in sections:
        blocks.append(SectionBlock(text=_mrkdwn(text)).to_dict())
    tail = footer
    if used < len(items):
        tail = f"{more(len(items) - used)} {footer}".strip()
    if tail:
        blocks.append(_context(tail))
    return {"text": cut(title, MAX_MESSAGE_TEXT), "blocks": blocks}


def build_fleet_message(
    entries: Sequence[Entry],
    *,
    title: str,
    context: str,
    threshold_name: str,
) -> dict[str, Any]:
    """One message for many devices' alerting lines, worst device first, each with its
    count; the messages they share on top; where each device's lines are archived."""
    ordered = sorted(entries, key=lambda e: (e.worst, -e.lines, e.device))
    total = sum(e.lines for e in ordered)
    heading = (
        f"{title}: {_plural(len(ordered), 'device')}, {_plural(total, threshold_name + '+ line')}"
    )
    hint = ""
    for entry in ordered:
        if entry.location:
            prefix = entry.location.split("device=")[0]
            hint = f"Each device's lines are archived under `{escape(prefix)}device=DEVICE/`"
            break

    def more(n: int) -> str:
        left = ordered[len(ordered) - n :]
        lines = sum(e.lines for e in left)
        return f"…and {_plural(n, 'more device')} ({_plural(lines, 'line')}) not shown."

    common = _common(ordered)
    return build_list_message(
        heading,
        context,
        (entry_line(e) for e in ordered),
        more=more,
        footer=hint,
        extra=f"*Shared by several devices*\n{common}" if common else "",
    )


def _notice(title: str, context: str) -> dict[str, Any]:
    """A message of a title and one context line (the silent and back notices)."""
    return {"text": cut(title, MAX_MESSAGE_TEXT), "blocks": [_header(title), _context(context)]}


def build_silent_message(
    device_id: str, *, last_seen: float, last_batch: str, now: float, silent_after: float
) -> dict[str, Any]:
    """A device has sent nothing (not even an empty batch) for longer than SILENT_AFTER."""
    gone = duration_text(now - last_seen)
    title = f"{device_id} has sent nothing for {gone}"
    context = (
        f"*Device* {escape(device_id)} · *Last seen* {clock_text(last_seen)} · "
        f"*Last batch* {escape(last_batch or '–')} · *Silent after* {duration_text(silent_after)}"
    )
    return _notice(title, context)


def build_back_message(
    device_id: str, *, last_seen_before: float, back_at: float, silent_since: float
) -> dict[str, Any]:
    """A device reported silent sends again: how long it was gone."""
    gap = duration_text(back_at - last_seen_before)
    title = f"{device_id} is back after {gap}"
    context = (
        f"*Device* {escape(device_id)} · *Nothing between* {clock_text(last_seen_before)} "
        f"*and* {clock_text(back_at)} · *Reported silent at* {clock_text(silent_since)}"
    )
    return _notice(title, context)


def _texts(node: Any) -> list[tuple[str, str]]:
    """Every (type, text) pair of text objects anywhere in a payload."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        if node.get("type") in ("mrkdwn", "plain_text") and isinstance(node.get("text"), str):
            found.append((node["type"], node["text"]))
        for value in node.values():
            found.extend(_texts(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_texts(value))
    return found


def check_message(payload: dict[str, Any]) -> list[str]:
    """Slack's limits that slack_sdk does not enforce, plus our escaping rule.

    Returns the problems found (empty when the payload may be sent). The
    escaping rule is strict: this module never emits a Slack link or mention,
    so no ``<`` or ``>`` may appear at all, and every ``&`` must start one of
    the three entities.
    """
    problems: list[str] = []
    blocks = payload.get("blocks", [])
    if len(blocks) > MAX_BLOCKS:
        problems.append(f"{len(blocks)} blocks > {MAX_BLOCKS}")
    if len(payload.get("text", "")) > MAX_MESSAGE_TEXT:
        problems.append("text over 40000 characters")
    for block in blocks:
        kind = block.get("type")
        if kind == "header" and len(block["text"]["text"]) > MAX_HEADER_TEXT:
            problems.append("header over 150 characters")
        if kind == "section":
            if len(block.get("text", {}).get("text", "")) > MAX_SECTION_TEXT:
                problems.append("section text over 3000 characters")
            fields = block.get("fields", [])
            if len(fields) > MAX_FIELDS:
                problems.append("more than 10 fields")
            if any(len(f["text"]) > MAX_FIELD_TEXT for f in fields):
                problems.append("field over 2000 characters")
        if kind == "context" and any(
            len(e.get("text", "")) > MAX_SECTION_TEXT for e in block["elements"]
        ):
            problems.append("context text over 3000 characters")
    for kind, text in _texts(payload) + [("text", payload.get("text", ""))]:
        if "<" in text or ">" in text:
            problems.append(f"unescaped angle bracket in {kind} text")
        stripped = text.replace("&amp;", "").replace("&lt;", "").replace("&gt;", "")
        if "&" in stripped:
            problems.append(f"unescaped & in {kind} text")
        if kind == "mrkdwn" and len(text) > MAX_SECTION_TEXT:
            problems.append("mrkdwn text over 3000 characters")
    return problems


@dataclass(frozen=True)
class SendResult:
    """What became of one alert: ``sent``, ``off``, ``invalid``, ``rate_limited`` or ``failed``."""

    status: str
    attempts: int = 0
    http_status: Optional[int] = None
    reason: str = ""


def urllib_transport(
    url: str, data: bytes, headers: dict[str, str], timeout: float
) -> tuple[int, dict[str, str], bytes]:
    """POST with the standard library; HTTP errors are answers, not exceptions."""
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - scheme checked in send()
            return response.status, dict(response.headers.items()), response.read(2048)
    except urllib.error.HTTPError as exc:
        answer = exc.read(2048) if exc.fp is not None else b""
        return exc.code, dict(exc.headers.items()) if exc.headers else {}, answer


def _retry_after(headers: dict[str, str]) -> float:
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                seconds = float(value)
            except ValueError:
                return 1.0
            # nan, inf or a negative wait would make sleep() raise or spin: not a wait.
            return seconds if math.isfinite(seconds) and seconds >= 0 else 1.0
    return 1.0


def send(
    url: str,
    payload: dict[str, Any],
    *,
    transport: Transport,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
    budget: float,
) -> SendResult:
    """Post ``payload`` once, retrying 429 (after ``Retry-After``) and 5xx/network errors
    (short backoff) while the whole exchange fits in ``budget`` seconds. Never raises.
    """
    if not url:
        return SendResult("off", reason="WEBHOOK_URL is empty")
    if not url.startswith(("https://", "http://")):
        return SendResult("invalid", reason="WEBHOOK_URL is not an http(s) URL")
    problems = check_message(payload)
    if problems:
        return SendResult("invalid", reason=problems[0])
    data = json.dumps(payload).encode("utf-8")
    headers = {"Content-Type": "application/json; charset=utf-8"}
    start = clock()
    attempts = 0
    backoff = 0.5
    status: Optional[int] = None
    reason = ""
    while attempts < MAX_ATTEMPTS:
        remaining = budget - (clock() - start)
        if remaining <= 0:
            break
        attempts += 1
        try:
            status, answer_headers, answer = transport(url, data, headers, min(5.0, remaining))
        except Exception as exc:  # noqa: BLE001 - network failures of any kind are a result
            status, answer_headers, answer = None, {}, b""
            reason = type(exc).__name__
        if status is not None and 200 <= status < 300:
            return SendResult("sent", attempts, status)
        if status == 429:
            wait, reason = _retry_after(answer_headers), "rate_limited"
        elif status is None or status >= 500:
            wait, backoff = backoff, backoff * 2
            reason = reason if status is None else f"http {status}"
        else:
            text = answer[:100].decode("utf-8", "replace")
            return SendResult("failed", attempts, status, f"http {status}: {text}")
        if clock() - start + wait >= budget:
            break
        sleep(wait)
    return SendResult("rate_limited" if status == 429 else "failed", attempts, status, reason)
