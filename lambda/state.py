"""The alert policy's state in DynamoDB: the key schema, the item layout, every conditional write.

Design constraints, in the order they decided the layout:

* **Nothing from a log line or a request body is a key.** Keys are built here
  from the validated device id (``request.ID_RE``, checked again below) and
  from numbers; digest groups are keyed by a hash (``storm.group_key``), and
  the log text stored for display is bounded (``storm.safe_text``) and
  escaped only when it is rendered for Slack.
* **Many invocations run at once, and none reads-modifies-writes blind.**
  Counters (last seen, lines today) are written by every batch with SET/ADD
  and no read. The policy fields (``v cool pend infl applied``) are written
  only whole and only if ``v`` is still the version they were computed from
  (optimistic concurrency); a writer that loses reads again and recomputes.
  Claims (a fleet message, a silent or back notice) are conditional SETs of a
  token; the one whose condition held posts, and only it may settle.
* **A failing DynamoDB never fails the archive.** Every service error is a
  :class:`StateError` with a reason that names the error code only, and the
  whole state step of one invocation has a time budget; the caller decides
  what to do without state (post the batch on its own: docs/ALERTS.md).
* **The item limit is 400 KB.** A digest keeps at most ``MAX_DIGEST_GROUPS``
  groups of bounded text; a fleet shard at most ``FLEET_SHARD_SIZE`` devices.

Items (table key ``pk``, a string; attribute names are always
``ExpressionAttributeNames``, DynamoDB reserves words such as ``day``)::

    dev#<device id>                        one per device that ever sent a batch
      kind=device device last_seen last_batch day lines_today alert_lines_today
                                               (every batch: SET + ADD, no condition
                                                but "same day")
      v cool pend infl applied                 (policy: written with v = :expected)
      silent {at seen state tok until why}     (claimed with a condition on last_seen)
      back_at  back {tok until}                (first batch after a silence; its notice)
    fleet#gate                             slot0 … slot<N-1>: when each of the
                                           FLEET_THRESHOLD single-device posts of the
                                           last minute went out
    fleet#episode                          start folds flushed: the latest episode
    fleet#<start ms>#<shard>               kind=fleet start shard lines
                                           d#<device id> {n b s loc g} per device
                                           sealed claim{tok until} sent tries why
                                           expires_at (TTL)

Every time is wall-clock epoch seconds (a float), from the caller.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Optional

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError
from request import ID_RE

#: Seconds one invocation may spend on state before it gives up on it.
STATE_BUDGET = 6.0
#: Seconds a settle (or a claim's release) gets after a post, whatever is left of the budget.
SETTLE_BUDGET = 3.0
#: Fleet items are deleted by DynamoDB's TTL this long after their episode, seconds.
FLEET_TTL = 7 * 86_400
#: Optimistic-concurrency retries before a writer gives up (and the caller degrades).
MAX_TRIES = 8

GATE = "fleet#gate"
EPISODE = "fleet#episode"

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


class StateError(Exception):
    """DynamoDB failed or was too slow; ``reason`` is an error code, never a message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _ConditionFailed(Exception):
    pass


class _Canceled(Exception):
    def __init__(self, codes: list[str]) -> None:
        super().__init__(codes)
        self.codes = codes


def device_key(device: str) -> str:
    """``dev#<id>``; the id was validated by the caller, and is checked again here."""
    if not isinstance(device, str) or not ID_RE.match(device):
        raise ValueError("not a device id")
    return f"dev#{device}"


def shard_key(start: float, shard: int) -> str:
    return f"fleet#{int(round(start * 1000))}#{int(shard)}"


def entry_name(device: str) -> str:
    """The attribute a device's entry has in a fleet shard."""
    return "d#" + device_key(device)[4:]


def utc_day(now: float) -> str:
    d = datetime.fromtimestamp(now, timezone.utc)
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}"


def _plain(value: Any) -> Any:
    """Python values → what TypeSerializer takes (floats as Decimal)."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    raise TypeError(f"cannot store {type(value).__name__}")


def _native(value: Any) -> Any:
    """What TypeDeserializer gives → plain Python (Decimal → int or float)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {k: _native(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_native(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_native(v) for v in value)
    return value


def encode(value: Any) -> dict[str, Any]:
    return _serializer.serialize(_plain(value))


def decode_item(item: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    if not item:
        return {}
    return {k: _native(_deserializer.deserialize(v)) for k, v in item.items()}


class _Expr:
    """Collects ``#name`` and ``:value`` placeholders for one expression."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def n(self, name: str) -> str:
        for placeholder, known in self.names.items():
            if known == name:
                return placeholder
        placeholder = f"#n{len(self.names)}"
        self.names[placeholder] = name
        return placeholder

    def v(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = encode(value)
        return placeholder

    def args(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ExpressionAttributeNames": self.names}
        if self.values:
            out["ExpressionAttributeValues"] = self.values
        return out


class StateStore:
    """One invocation's view of the table: each method is one conditional request (or a
    short, bounded loop of them); failures become :class:`StateError`."""

    def __init__(
        self,
        client: Any,
        table: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        budget: float = STATE_BUDGET,
    ) -> None:
        self.client = client
        self.table = table
        self.clock = clock
        self.deadline = clock() + budget

    def extend(self, seconds: float) -> None:
        """Give the next requests ``seconds`` more, whatever the budget said: a settle
        after a post must be tried even when the time before it ran out, or the post's
        lines would come back (and be counted twice) when its claim expires."""
        self.deadline = max(self.deadline, self.clock() + seconds)

    # -- plumbing ------------------------------------------------------------------------

    def _call(self, operation: str, **kwargs: Any) -> Any:
        if self.clock() > self.deadline:
            raise StateError("state budget spent")
        try:
            return getattr(self.client, operation)(**kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "ClientError"))
            if code == "ConditionalCheckFailedException":
                raise _ConditionFailed() from exc
            if code == "TransactionCanceledException":
                reasons = exc.response.get("CancellationReasons") or []
                raise _Canceled([str(r.get("Code", "")) for r in reasons]) from exc
            raise StateError(code if code.isidentifier() else "ClientError") from exc
        except BotoCoreError as exc:
            raise StateError(type(exc).__name__) from exc

    def _update(
        self,
        key: str,
        expression: str,
        expr: _Expr,
        condition: Optional[str] = None,
        returns: str = "NONE",
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "Key": {"pk": {"S": key}},
            "UpdateExpression": expression,
            "ReturnValues": returns,
            **expr.args(),
        }
        if condition:
            kwargs["ConditionExpression"] = condition
        answer = self._call("update_item", **kwargs)
        return decode_item(answer.get("Attributes"))

    def get(self, key: str, *, consistent: bool = True) -> dict[str, Any]:
        answer = self._call(
            "get_item", TableName=self.table, Key={"pk": {"S": key}}, ConsistentRead=consistent
        )
        return decode_item(answer.get("Item"))

    def get_device(self, device: str) -> dict[str, Any]:
        return self.get(device_key(device))

    def scan(self) -> Iterator[dict[str, Any]]:
        """Every item, page by page (the scheduled run; eventually consistent is enough)."""
        start: Optional[dict[str, Any]] = None
        while True:
            kwargs: dict[str, Any] = {"TableName": self.table}
            if start:
                kwargs["ExclusiveStartKey"] = start
            answer = self._call("scan", **kwargs)
            for item in answer.get("Items", []):
                yield decode_item(item)
            start = answer.get("LastEvaluatedKey")
            if not start:
                return

    # -- every batch ---------------------------------------------------------------------

    def record_seen(
        self, device: str, batch_id: str, lines: int, alert_lines: int, now: float
    ) -> dict[str, Any]:
        """Last seen and today's counts, with no read; returns the item as it was before.

        Two tries per round: ADD to today's counters if the item is of today, else
        start the day. ``v`` is created at 0 so that policy writes always have a version
        to compare. Not idempotent (a retried request counts its lines twice): these
        counters are for reading, the policy's counts are in ``applied``-guarded state.
        """
        day = utc_day(now)
        for _ in range(3):
            for same_day in (True, False):
                e = _Expr()
                sets = (
                    f"{e.n('kind')} = {e.v('device')}, {e.n('device')} = {e.v(device)}, "
                    f"{e.n('last_seen')} = {e.v(now)}, {e.n('last_batch')} = {e.v(batch_id)}, "
                    f"{e.n('v')} = if_not_exists({e.n('v')}, {e.v(0)}), "
                    f"{e.n('day')} = {e.v(day)}"
                )
                if same_day:
                    expression = (
                        f"SET {sets} ADD {e.n('lines_today')} {e.v(lines)}, "
                        f"{e.n('alert_lines_today')} {e.v(alert_lines)}"
                    )
                    condition = f"{e.n('day')} = {e.v(day)}"
                else:
                    expression = (
                        f"SET {sets}, {e.n('lines_today')} = {e.v(lines)}, "
                        f"{e.n('alert_lines_today')} = {e.v(alert_lines)}"
                    )
                    condition = f"attribute_not_exists({e.n('day')}) OR {e.n('day')} <> {e.v(day)}"
                try:
                    return self._update(device_key(device), expression, e, condition, "ALL_OLD")
                except _ConditionFailed:
                    continue
        raise StateError("record_seen contention")

    def mark_back(self, device: str, now: float) -> None:
        """The first batch after a silence notes when the device came back."""
        e = _Expr()
        try:
            self._update(
                device_key(device),
                f"SET {e.n('back_at')} = {e.v(now)}",
                e,
                f"attribute_exists({e.n('silent')}) AND attribute_not_exists({e.n('back_at')})",
            )
        except _ConditionFailed:
            pass

    # -- the policy fields ---------------------------------------------------------------

    def _policy_update(
        self, device: str, expected: int, fields: Mapping[str, Any]
    ) -> tuple[str, _Expr, str]:
        e = _Expr()
        sets, removes = [], []
        for name, value in fields.items():
            if value is None:
                removes.append(e.n(name))
            else:
                sets.append(f"{e.n(name)} = {e.v(value)}")
        expression = "SET " + ", ".join(sets)
        if removes:
            expression += " REMOVE " + ", ".join(removes)
        v = e.n("v")
        condition = f"{v} = {e.v(expected)}"
        if expected == 0:
            condition = f"attribute_not_exists({v}) OR {condition}"
        return expression, e, condition

    def write_policy(self, device: str, expected: int, fields: Mapping[str, Any]) -> bool:
        """Write the policy fields if the item is still at version ``expected``.

        ``False``: another invocation wrote first; read again and recompute.
        """
        expression, e, condition = self._policy_update(device, expected, fields)
        try:
            self._update(device_key(device), expression, e, condition)
        except _ConditionFailed:
            return False
        return True

    # -- the fleet -----------------------------------------------------------------------

    def take_gate_slot(self, slots: int, now: float, window: float) -> bool:
        """Claim one of ``slots`` single-device posts of the last ``window`` seconds.

        One read, then a conditional SET of a slot that is free (empty, or older than
        the window); contenders for the same slot lose their condition and try the next.
        """
        gate = self.get(GATE)
        for i in range(slots):
            seen = gate.get(f"slot{i}")
            if seen is not None and seen > now - window:
                continue
            e = _Expr()
            name = e.n(f"slot{i}")
            try:
                self._update(
                    GATE,
                    f"SET {name} = {e.v(now)}",
                    e,
                    f"attribute_not_exists({name}) OR {name} <= {e.v(now - window)}",
                )
                return True
            except _ConditionFailed:
                continue
        return False

    def join_episode(self, now: float, window: float) -> tuple[float, int]:
        """A place in the fleet episode open at ``now`` (opening one if none is):
        returns ``(episode start, this device's slot from 1)``."""
        for _ in range(MAX_TRIES):
            e = _Expr()
            start, folds = e.n("start"), e.n("folds")
            try:
                item = self._update(
                    EPISODE,
                    f"ADD {folds} {e.v(1)}",
                    e,
                    f"{start} > {e.v(now - window)}",
                    "ALL_NEW",
                )
                return float(item["start"]), int(item["folds"])
            except _ConditionFailed:
                pass
            e = _Expr()
            start, folds = e.n("start"), e.n("folds")
            try:
                item = self._update(
                    EPISODE,
                    f"SET {start} = {e.v(now)}, {folds} = {e.v(1)} REMOVE {e.n('flushed')}",
                    e,
                    f"attribute_not_exists({start}) OR {start} <= {e.v(now - window)}",
                    "ALL_NEW",
                )
                return float(item["start"]), int(item["folds"])
            except _ConditionFailed:
                continue
        raise StateError("episode contention")

    def fold(
        self,
        device: str,
        expected: int,
        fields: Mapping[str, Any],
        start: float,
        shard: int,
        entry: Mapping[str, Any],
        lines: int,
        token: str,
    ) -> str:
        """In one transaction: the device's policy write and its entry in the episode's
        shard. ``"ok"``; ``"device"`` (version moved: read again); ``"closed"`` (the
        shard is sealed, or already holds this device: post on your own)."""
        expression, e, condition = self._policy_update(device, expected, fields)
        device_update = {
            "TableName": self.table,
            "Key": {"pk": {"S": device_key(device)}},
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            **e.args(),
        }
        f = _Expr()
        name = f.n(entry_name(device))
        shard_update = {
            "TableName": self.table,
            "Key": {"pk": {"S": shard_key(start, shard)}},
            "UpdateExpression": (
                f"SET {name} = {f.v(entry)}, {f.n('kind')} = {f.v('fleet')}, "
                f"{f.n('start')} = {f.v(start)}, {f.n('shard')} = {f.v(shard)}, "
                f"{f.n('expires_at')} = {f.v(int(start + FLEET_TTL))} "
                f"ADD {f.n('lines')} {f.v(lines)}"
            ),
            "ConditionExpression": (
                f"attribute_not_exists({f.n('sealed')}) AND attribute_not_exists({name})"
            ),
            **f.args(),
        }
        try:
            self._call(
                "transact_write_items",
                TransactItems=[{"Update": device_update}, {"Update": shard_update}],
                # A retry of the same transaction within 10 minutes is applied once.
                ClientRequestToken=token[:36],
            )
        except _Canceled as exc:
            codes = exc.codes + ["", ""]
            if codes[0] == "ConditionalCheckFailed":
                return "device"
            if codes[1] == "ConditionalCheckFailed":
                return "closed"
            raise StateError("TransactionCanceled") from exc
        return "ok"

    def claim_shard(
        self, key: str, token: str, now: float, until: float
    ) -> Optional[dict[str, Any]]:
        """Seal a fleet shard and claim its message; ``None`` when it is sent or another
        invocation holds a live claim. Returns the shard as sealed."""
        e = _Expr()
        claim, tok_until, sent = e.n("claim"), e.n("until"), e.n("sent")
        value = e.v({"tok": token, "until": until})
        try:
            return self._update(
                key,
                f"SET {e.n('sealed')} = {e.v(True)}, {claim} = {value}",
                e,
                f"attribute_not_exists({sent}) AND "
                f"(attribute_not_exists({claim}) OR {claim}.{tok_until} < {e.v(now)})",
                "ALL_NEW",
            )
        except _ConditionFailed:
            return None

    def finish_shard(self, key: str, token: str, sent: bool, now: float, why: str) -> None:
        """Settle a shard's claim: sent (never again), or released for the next try."""
        e = _Expr()
        claim = e.n("claim")
        if sent:
            expression = f"SET {e.n('sent')} = {e.v(now)} REMOVE {claim}"
        else:
            tries = e.n("tries")
            expression = (
                f"SET {tries} = if_not_exists({tries}, {e.v(0)}) + {e.v(1)}, "
                f"{e.n('why')} = {e.v(why[:200])} REMOVE {claim}"
            )
        try:
            self._update(key, expression, e, f"{claim}.{e.n('tok')} = {e.v(token)}")
        except _ConditionFailed:
            pass

    def mark_flushed(self, start: float) -> None:
        """Every shard of the episode that started at ``start`` is sent."""
        e = _Expr()
        try:
            self._update(
                EPISODE,
                f"SET {e.n('flushed')} = {e.v(True)}",
                e,
                f"{e.n('start')} = {e.v(start)}",
            )
        except _ConditionFailed:
            pass

    # -- silence -------------------------------------------------------------------------

    def claim_silent(
        self,
        device: str,
        last_seen: float,
        now: float,
        *,
        token: str,
        until: float,
        state: str,
        why: str = "",
    ) -> bool:
        """Mark the device silent (``state`` ``claimed``: its notice is being posted;
        ``skipped``: nothing is posted, e.g. it was deprovisioned), once per silence:
        only if it was not seen since ``last_seen`` and is not marked (or holds a claim
        whose poster died)."""
        e = _Expr()
        sil = e.n("silent")
        value = {"at": now, "seen": last_seen, "state": state, "tok": token, "until": until}
        if why:
            value["why"] = why
        condition = (
            f"{e.n('last_seen')} = {e.v(last_seen)} AND (attribute_not_exists({sil}) OR "
            f"({sil}.{e.n('state')} = {e.v('claimed')} AND {sil}.{e.n('until')} < {e.v(now)}))"
        )
        try:
            self._update(device_key(device), f"SET {sil} = {e.v(value)}", e, condition)
        except _ConditionFailed:
            return False
        return True

    def settle_silent(self, device: str, token: str, sent: bool) -> None:
        e = _Expr()
        sil, tok = e.n("silent"), e.n("tok")
        if sent:
            expression = f"SET {sil}.{e.n('state')} = {e.v('alerted')} REMOVE {sil}.{tok}"
        else:
            expression = f"REMOVE {sil}"
        try:
            self._update(device_key(device), expression, e, f"{sil}.{tok} = {e.v(token)}")
        except _ConditionFailed:
            pass

    def claim_back(
        self, device: str, silent_at: float, token: str, now: float, until: float
    ) -> bool:
        e = _Expr()
        back = e.n("back")
        condition = (
            f"{e.n('silent')}.{e.n('at')} = {e.v(silent_at)} AND "
            f"(attribute_not_exists({back}) OR {back}.{e.n('until')} < {e.v(now)})"
        )
        try:
            self._update(
                device_key(device),
                f"SET {back} = {e.v({'tok': token, 'until': until})}",
                e,
                condition,
            )
        except _ConditionFailed:
            return False
        return True

    def settle_back(self, device: str, token: str, sent: bool) -> None:
        e = _Expr()
        back = e.n("back")
        if sent:
            expression = f"REMOVE {e.n('silent')}, {e.n('back_at')}, {back}"
        else:
            expression = f"REMOVE {back}"
        try:
            self._update(device_key(device), expression, e, f"{back}.{e.n('tok')} = {e.v(token)}")
        except _ConditionFailed:
            pass

    def clear_silence(self, device: str, silent_at: float) -> None:
        """Forget a silence that had no notice (skipped, or its claim died unposted)."""
        e = _Expr()
        try:
            self._update(
                device_key(device),
                f"REMOVE {e.n('silent')}, {e.n('back_at')}, {e.n('back')}",
                e,
                f"{e.n('silent')}.{e.n('at')} = {e.v(silent_at)}",
            )
        except _ConditionFailed:
            pass
