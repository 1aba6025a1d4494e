"""The scheduled function: silent devices, devices back, digests nobody carried, fleet episodes.

EventBridge invokes ``lambda_handler`` every 5 minutes (lambda/template.yaml,
``ScheduledFunction``). One run, in this order:

1. one paged Scan of the state table (state.py lists the items);
2. the latest fleet episode, if it ended, and any older fleet shard not yet
   sent (an ingest invocation posts an ended episode too, when an alerting
   batch comes; this run is the one that comes anyway);
3. every device digest whose cool-down ended with no new batch to carry it
   (``delivery.Notifier.claim_digest``), one message each while the fleet
   gate has room, the rest in combined lists;
4. silent devices: last seen longer than ``SILENT_AFTER`` ago. A device the
   operator deprovisioned (Cognito user disabled, or deleted) is marked
   ``skipped`` and never posted; Cognito is asked once per device per run,
   and only for devices that newly look silent. Each silent device is posted
   once per silence: a conditional write on its item marks it, and only the
   writer whose condition held posts;
5. devices back from a silence (the ingest function notes ``back_at`` on the
   first batch after it): one "back" message with how long it was gone. The
   back notice is this run's, not the ingest's: it is then retried like any
   other post, and it comes within 5 minutes of the device's return.

More notices than the fleet gate lets through (``FLEET_THRESHOLD`` single
messages a minute, shared with the ingest function) are listed in one
message per kind. Posts are paced (``POST_INTERVAL``) since Slack takes about
one message a second. A post that fails is settled as not sent: a digest's
lines go back to pending, a silent or back claim is released, and the next
run tries again. The run never raises; it writes one JSON log line.

Like ``handler.py``, every side effect comes through :class:`Dependencies`.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import alerts
import delivery
import handler
import state as state_mod
import storm
from errors import ConfigError
from request import ID_RE
from settings import ScheduledSettings, load_scheduled_settings
from state import StateError, StateStore

LOGGER = logging.getLogger("omprog_forwarder.lambda")
LOGGER.setLevel(logging.INFO)

#: Per-container counters, reported in every log line.
COUNTERS: dict[str, int] = {}
#: Seconds between two posts of one run (Slack: about one message a second per webhook).
POST_INTERVAL = 1.1
#: Time kept back at the end of a run for settling and the log line, seconds.
RESERVE = 10.0
#: The run's own budget when the context says nothing, seconds.
DEFAULT_BUDGET = 100.0
#: How long a silent or back claim protects its poster, seconds.
CLAIM_SECONDS = storm.INFLIGHT_SECONDS


@dataclass
class Dependencies:
    """Everything the run touches outside its own memory (as handler.Dependencies)."""

    dynamodb: Callable[[], Any]
    cognito: Callable[[], Any]
    transport: alerts.Transport
    sleep: Callable[[float], None]
    clock: Callable[[], float]
    environ: Mapping[str, str]
    secrets: Callable[[], Any] = field(default=lambda: handler._client("secretsmanager"))
    wall: Callable[[], float] = field(default=time.time)


def default_dependencies() -> Dependencies:
    return Dependencies(
        dynamodb=lambda: handler._client("dynamodb"),
        cognito=lambda: handler._client("cognito-idp"),
        transport=alerts.urllib_transport,
        sleep=time.sleep,
        clock=time.monotonic,
        environ=os.environ,
        secrets=lambda: handler._client("secretsmanager"),
        wall=time.time,
    )


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """The Lambda entry point named in the deployment."""
    return handle(event, context, default_dependencies())


def handle(event: Any, context: Any, deps: Dependencies) -> dict[str, Any]:
    """One run; never raises. Returns (and logs) what it did."""
    started = deps.clock()
    log: dict[str, Any] = {
        "event": "schedule",
        "request_id": getattr(context, "aws_request_id", None),
    }
    try:
        _run(context, deps, log)
    except ConfigError as exc:
        log.update(error=exc.code, field=exc.field, reason=exc.message)
    except StateError as exc:
        _count("state_errors")
        log.update(error="state_unavailable", state_error=exc.reason)
    except Exception as exc:  # noqa: BLE001 - a scheduled run must end with its log line
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        log.update(
            error="internal_error",
            exception=type(exc).__name__,
            where=f"{os.path.basename(frame.filename)}:{frame.lineno}",
        )
    log["duration_ms"] = round((deps.clock() - started) * 1000, 1)
    log["counters"] = dict(COUNTERS)
    LOGGER.info(json.dumps(log, sort_keys=True, default=str))
    return log


class _Run:
    """One run's plumbing: the paced post, the time left, Cognito with a per-run cache."""

    def __init__(
        self, settings: ScheduledSettings, context: Any, deps: Dependencies, url: str
    ) -> None:
        self.settings = settings
        self.context = context
        self.deps = deps
        self.url = url
        self.deadline = deps.clock() + _budget(context)
        self.posted = 0
        self.results: list[str] = []
        self._enabled: dict[str, Optional[str]] = {}

    def time_left(self) -> bool:
        return self.deps.clock() < self.deadline

    def post(self, payload: dict[str, Any]) -> alerts.SendResult:
        if not self.time_left():
            return alerts.SendResult("failed", reason="run out of time")
        if self.posted:
            self.deps.sleep(POST_INTERVAL)
        self.posted += 1
        result = handler.post_to_slack(self.url, payload, self.settings, self.deps, self.context)
        self.results.append(result.status)
        _count(f"slack_{result.status}")
        return result

    def why_not_alert(self, device: str) -> Optional[str]:
        """``None`` when the device may be reported; else why not (``deprovisioned``,
        ``unknown device``), or ``"?"`` when Cognito could not say (ask next run)."""
        pool = self.settings.user_pool_id
        if not pool:
            return None
        if device not in self._enabled:
            try:
                # The id matched request.ID_RE (state.device_key): it cannot break the quotes.
                answer = self.deps.cognito().list_users(
                    UserPoolId=pool, Filter=f'username = "{device}"', Limit=1
                )
            except Exception:  # noqa: BLE001 - ClientError, throttling, network
                _count("cognito_errors")
                self._enabled[device] = "?"
                return "?"
            users = [u for u in answer.get("Users", []) if u.get("Username") == device]
            if not users:
                self._enabled[device] = "unknown device"
            elif users[0].get("Enabled") is False:
                self._enabled[device] = "deprovisioned"
            else:
                self._enabled[device] = None
        return self._enabled[device]


def _run(context: Any, deps: Dependencies, log: dict[str, Any]) -> None:
    settings = load_scheduled_settings(deps.environ)
    url, failure = handler.webhook_url(settings, deps)
    if failure is not None:
        log.update(alert_status=failure.status, reason=failure.reason)
        return
    if not url:
        log.update(alert_status="off", reason="WEBHOOK_URL is empty")
        return
    run = _Run(settings, context, deps, url)
    store = StateStore(
        deps.dynamodb(), settings.policy.state_table, clock=deps.clock, budget=_budget(context)
    )
    notifier = delivery.Notifier(
        store,
        settings.policy,
        post=run.post,
        threshold_name=settings.alert_min_severity_name,
        count=_count,
    )
    now = deps.wall()
    items = list(store.scan())
    devices = [i for i in items if i.get("kind") == "device" and i.get("device")]
    log["devices"] = len(devices)

    fleet = notifier.flush_episode(now)
    for item in items:
        if item.get("kind") != "fleet" or item.get("sent") or not run.time_left():
            continue
        # Older episodes' shards, and any of the latest that failed above: a claim on a
        # shard that is sent (or held by a live poster) is refused, so none goes twice.
        if storm.episode_due(float(item.get("start", now)), now):
            result = notifier.flush_shard(str(item["pk"]), now)
            if result is not None:
                fleet.append(result)
    log["fleet_posts"] = len(fleet)

    claims = []
    for item in devices:
        if not run.time_left():
            break
        claim = notifier.claim_digest(item, now)
        if claim is not None:
            claims.append(claim)
    notifier.post_claims(claims, now)
    log["digests"] = len(claims)
    log["digest_lines"] = sum(c.digest.lines for c in claims)

    silent, back, skipped = _silences(run, store, devices, now)
    log.update(silent=silent, back=back, silent_skipped=skipped, posts=run.results)


def _silences(
    run: _Run, store: StateStore, devices: list[dict[str, Any]], now: float
) -> tuple[list[str], list[str], list[str]]:
    """Claim, post and settle the silent and back notices; returns the devices of each."""
    policy = run.settings.policy
    to_silence: list[tuple[dict[str, Any], str]] = []
    to_welcome: list[tuple[dict[str, Any], str]] = []
    skipped: list[str] = []
    for item in devices:
        if not run.time_left():
            break
        device = str(item["device"])
        last_seen = item.get("last_seen")
        mark = item.get("silent")
        if not isinstance(last_seen, (int, float)) or not ID_RE.match(device):
            continue  # (an item this code did not write: nothing of it reaches a filter)
        if not mark:
            if storm.silent(last_seen, now, policy.silent_after):
                why = run.why_not_alert(device)
                if why == "?":
                    continue
                token = delivery.new_token()
                if why is not None:
                    if store.claim_silent(
                        device,
                        last_seen,
                        now,
                        token=token,
                        until=now,
                        state="skipped",
                        why=why,
                    ):
                        skipped.append(device)
                elif store.claim_silent(
                    device, last_seen, now, token=token, until=now + CLAIM_SECONDS, state="claimed"
                ):
                    to_silence.append((item, token))
            continue
        came_back = last_seen > float(mark.get("seen", last_seen))
        claim_dead = mark.get("state") == "claimed" and float(mark.get("until", 0)) < now
        if came_back and mark.get("state") == "alerted":
            token = delivery.new_token()
            if store.claim_back(device, float(mark["at"]), token, now, now + CLAIM_SECONDS):
                to_welcome.append((item, token))
        elif came_back and (mark.get("state") == "skipped" or claim_dead):
            store.clear_silence(device, float(mark["at"]))
        elif claim_dead:
            token = delivery.new_token()
            if store.claim_silent(
                device, last_seen, now, token=token, until=now + CLAIM_SECONDS, state="claimed"
            ):
                to_silence.append((item, token))

    def silent_message(item: dict[str, Any]) -> dict[str, Any]:
        return alerts.build_silent_message(
            str(item["device"]),
            last_seen=float(item["last_seen"]),
            last_batch=str(item.get("last_batch") or ""),
            now=now,
            silent_after=policy.silent_after,
        )

    def silent_line(item: dict[str, Any]) -> str:
        seen = float(item["last_seen"])
        return alerts.cut(
            f"• `{alerts.escape(str(item['device']))}` last seen {alerts.clock_text(seen)} "
            f"({alerts.duration_text(now - seen)} ago)",
            alerts.ENTRY_CHARS,
        )

    def back_times(item: dict[str, Any]) -> tuple[float, float, float]:
        mark = item["silent"]
        back_at = item.get("back_at")
        return (
            float(mark["seen"]),
            float(back_at if back_at is not None else item["last_seen"]),
            float(mark["at"]),
        )

    def back_message(item: dict[str, Any]) -> dict[str, Any]:
        before, back_at, at = back_times(item)
        return alerts.build_back_message(
            str(item["device"]), last_seen_before=before, back_at=back_at, silent_since=at
        )

    def back_line(item: dict[str, Any]) -> str:
        before, back_at, _ = back_times(item)
        return alerts.cut(
            f"• `{alerts.escape(str(item['device']))}` back after "
            f"{alerts.duration_text(back_at - before)} (nothing between "
            f"{alerts.clock_text(before)} and {alerts.clock_text(back_at)})",
            alerts.ENTRY_CHARS,
        )

    _post_notices(
        run,
        store,
        to_silence,
        now,
        single=silent_message,
        line=silent_line,
        title="Silent: {n} have sent nothing for over " + alerts.duration_text(policy.silent_after),
        settle=store.settle_silent,
    )
    _post_notices(
        run,
        store,
        to_welcome,
        now,
        single=back_message,
        line=back_line,
        title="Back: {n} send again after a silence",
        settle=store.settle_back,
    )
    return (
        [str(i["device"]) for i, _ in to_silence],
        [str(i["device"]) for i, _ in to_welcome],
        skipped,
    )


def _post_notices(
    run: _Run,
    store: StateStore,
    claimed: list[tuple[dict[str, Any], str]],
    now: float,
    *,
    single: Callable[[dict[str, Any]], dict[str, Any]],
    line: Callable[[dict[str, Any]], str],
    title: str,
    settle: Callable[[str, str, bool], None],
) -> None:
    """One message per notice while the fleet gate has room; the rest in one list."""
    threshold = run.settings.policy.fleet_threshold
    rest = []
    for item, token in claimed:
        device = str(item["device"])
        if store.take_gate_slot(threshold, now, storm.FLEET_WINDOW):
            result = run.post(single(item))
            store.extend(state_mod.SETTLE_BUDGET)
            settle(device, token, result.status == "sent")
        else:
            rest.append((item, token))
    for start in range(0, len(rest), storm.FLEET_SHARD_SIZE):
        chunk = rest[start : start + storm.FLEET_SHARD_SIZE]
        heading = title.format(
            n=alerts.cut(f"{len(chunk)} device{'s' if len(chunk) != 1 else ''}", 40)
        )
        payload = alerts.build_list_message(
            heading,
            f"More than {threshold} notices were due at once, so they are listed together",
            (line(item) for item, _ in chunk),
            more=lambda n: f"…and {n} more devices not shown.",
        )
        result = run.post(payload)
        store.extend(state_mod.SETTLE_BUDGET)
        for item, token in chunk:
            settle(str(item["device"]), token, result.status == "sent")


def _budget(context: Any) -> float:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if callable(remaining):
        try:
            return max(remaining() / 1000.0 - RESERVE, 0.0)
        except Exception:  # noqa: BLE001 - a strange context must not stop the run
            pass
    return DEFAULT_BUDGET


def _count(name: str, amount: int = 1) -> None:
    COUNTERS[name] = COUNTERS.get(name, 0) + amount
