"""Storm control, as pure functions: post now, add to the device's digest, or fold into the fleet.

The model is Prometheus Alertmanager's, with a device as the group
(``group_by: [device]``):

* ``group_wait`` is 0: a device's first alerting batch is posted at once;
* ``group_interval`` is ``ALERT_COOLDOWN``: after a post, further alerting
  batches of that device only add their groups and counts to its pending
  digest, and one digest message says what came in once the cool-down ends;
* there is no ``repeat_interval``: a digest holds only lines that came in
  since the last message, so nothing is ever posted twice on purpose;
* across the fleet, at most ``FLEET_THRESHOLD`` messages of single devices
  (first alerts and digests) go out in any 60 seconds (the *gate*); beyond
  that a device's lines join the fleet *episode* (opened by the first device
  the gate turned away, for 60 seconds) and one fleet message names every
  device of the episode.

Nothing here does I/O or reads a clock: every function takes ``now`` (epoch
seconds) and returns the new state, so the policy is tested without AWS.
:mod:`state` stores what these functions return; :mod:`delivery` sequences
them with the posts.

Exactly-once counting rests on three rules that every function here keeps:

1. a batch's lines enter the state once: its batch id joins ``applied`` in
   the same write that adds its lines (a retried write finds it there);
2. a line is in exactly one of *pending* (waiting for the next digest),
   *inflight* (being posted now) or a fleet entry;
3. a post that fails puts its inflight lines back into pending (:func:`settle`),
   and an inflight whose poster died is put back once its deadline passed
   (:func:`requeue_expired`), so a failed or abandoned post drops nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Optional

from alerts import MESSAGE_CHARS, NAME_CHARS, AlertCollector, Group
from severity import SEVERITY_NAMES

#: Groups a digest keeps with their text (worst first); lines of further groups are counted.
MAX_DIGEST_GROUPS = 20
#: Characters of a message a digest stores per group (the archive has the whole line).
DIGEST_MESSAGE_CHARS = min(MESSAGE_CHARS, 500)
#: Characters of the sample message a fleet entry stores.
SAMPLE_CHARS = 300
#: Batch ids remembered per device, to recognise a retried write of the same batch.
APPLIED_KEEP = 32
#: Archive prefixes a digest names.
MAX_LOCATIONS = 3
#: How long a claimed post may take before another invocation takes its lines back,
#: seconds. Longer than either function's timeout (25 s, 120 s), so a live poster is
#: never overtaken.
INFLIGHT_SECONDS = 300.0
#: The fleet gate's and a fleet episode's window, seconds.
FLEET_WINDOW = 60.0
#: Seconds after an episode's window before it is sealed and posted: a device that
#: joined at the last moment has committed by then.
FLEET_GRACE = 5.0
#: Devices one fleet message names (one shard item holds them: ~600 bytes each).
FLEET_SHARD_SIZE = 200

DUPLICATE = "duplicate"
PENDING = "pending"
POST = "post"
FLEET = "fleet"


def group_key(
    severity_num: int, host: Optional[str], app: Optional[str], msg: Optional[str]
) -> str:
    """A digest group's key: a hash, so that no log text is ever an attribute name."""
    data = json.dumps([severity_num, host, app, msg], ensure_ascii=True)
    return hashlib.sha256(data.encode("ascii")).hexdigest()[:20]


def safe_text(value: Optional[str], limit: int) -> Optional[str]:
    """Log text as it may be stored: cut to ``limit`` and valid UTF-8 (a lone surrogate
    from a JSON line would make DynamoDB refuse the whole write). Escaping is the
    renderer's job (:func:`alerts.escape`), at the last moment."""
    if value is None:
        return None
    cut = value[:limit]
    return cut.encode("utf-8", "replace").decode("utf-8")


def _iso(when: Optional[datetime]) -> Optional[str]:
    return None if when is None else when.isoformat()


def _when(text: Any) -> Optional[datetime]:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text).astimezone(timezone.utc)
    except ValueError:
        return None


def _min(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else min(a, b)


def _max(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else max(a, b)


def _worst_first(group: Group) -> tuple[Any, ...]:
    return (
        group.severity_num,
        -group.count,
        group.first or datetime.max.replace(tzinfo=timezone.utc),
    )


@dataclass
class Digest:
    """Alerting lines of one device not yet in any message: groups, counts, where to look.

    ``lines`` always equals ``sum(by_severity.values())`` and
    ``sum(g.count for g in groups.values()) + other_lines``.
    """

    lines: int = 0
    batches: int = 0
    groups: dict[str, Group] = field(default_factory=dict)
    #: Lines whose group was not kept (over MAX_DIGEST_GROUPS or untracked in the batch).
    other_lines: int = 0
    by_severity: dict[int, int] = field(default_factory=dict)
    #: Wall-clock time the first and the last contribution arrived (epoch seconds).
    since: Optional[float] = None
    until: Optional[float] = None
    #: The lines' own time span.
    first: Optional[datetime] = None
    last: Optional[datetime] = None
    #: Archive prefixes (``s3://bucket/logs/dt=…/device=…/``).
    locations: list[str] = field(default_factory=list)
    #: Lines that came back from a post that failed or was abandoned.
    requeued: int = 0

    @classmethod
    def from_collector(cls, collector: AlertCollector, location: str, now: float) -> Digest:
        """One batch's alerting lines, bounded for storage."""
        groups: dict[str, Group] = {}
        for (num, host, app, msg), g in collector.groups.items():
            key = group_key(num, host, app, msg)
            groups[key] = Group(
                num,
                g.severity,
                safe_text(host, NAME_CHARS),
                safe_text(app, NAME_CHARS),
                safe_text(msg, DIGEST_MESSAGE_CHARS),
                g.count,
                g.first,
                g.last,
            )
        digest = cls(
            lines=collector.lines,
            batches=1,
            groups=groups,
            other_lines=collector.untracked_lines,
            by_severity=dict(collector.by_severity),
            since=now,
            until=now,
            first=collector.first,
            last=collector.last,
            locations=[location] if location else [],
        )
        return digest.bounded()

    @property
    def worst(self) -> Optional[int]:
        return min(self.by_severity) if self.by_severity else None

    def sorted_groups(self) -> list[Group]:
        return sorted(self.groups.values(), key=_worst_first)

    def bounded(self) -> Digest:
        """Keep the MAX_DIGEST_GROUPS worst groups; count the lines of the rest."""
        if len(self.groups) <= MAX_DIGEST_GROUPS:
            return self
        ranked = sorted(self.groups.items(), key=lambda kv: _worst_first(kv[1]))
        kept = dict(ranked[:MAX_DIGEST_GROUPS])
        dropped = sum(g.count for _, g in ranked[MAX_DIGEST_GROUPS:])
        return replace(self, groups=kept, other_lines=self.other_lines + dropped)

    def merge(self, other: Digest) -> Digest:
        """Both digests' lines in one; neither input is changed."""
        groups = {k: replace(g) for k, g in self.groups.items()}
        for key, g in other.groups.items():
            mine = groups.get(key)
            if mine is None:
                groups[key] = replace(g)
            else:
                mine.count += g.count
                mine.first = _min(mine.first, g.first)
                mine.last = _max(mine.last, g.last)
        by_severity = dict(self.by_severity)
        for num, count in other.by_severity.items():
            by_severity[num] = by_severity.get(num, 0) + count
        locations = list(self.locations)
        for loc in other.locations:
            if loc not in locations and len(locations) < MAX_LOCATIONS:
                locations.append(loc)
        merged = Digest(
            lines=self.lines + other.lines,
            batches=self.batches + other.batches,
            groups=groups,
            other_lines=self.other_lines + other.other_lines,
            by_severity=by_severity,
            since=_min(self.since, other.since),
            until=_max(self.until, other.until),
            first=_min(self.first, other.first),
            last=_max(self.last, other.last),
            locations=locations,
            requeued=self.requeued + other.requeued,
        )
        return merged.bounded()

    def to_item(self) -> dict[str, Any]:
        """The digest as a DynamoDB map: short names (an item holds 400 KB), hashed keys."""
        return {
            "n": self.lines,
            "b": self.batches,
            "o": self.other_lines,
            "rq": self.requeued,
            "s": {str(num): count for num, count in self.by_severity.items()},
            "t0": self.since,
            "t1": self.until,
            "f": _iso(self.first),
            "l": _iso(self.last),
            "loc": list(self.locations),
            "g": {
                key: {
                    "s": g.severity_num,
                    "h": g.host,
                    "a": g.app,
                    "m": g.msg,
                    "c": g.count,
                    "f": _iso(g.first),
                    "l": _iso(g.last),
                }
                for key, g in self.groups.items()
            },
        }

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Digest:
        groups = {}
        for key, g in (item.get("g") or {}).items():
            num = int(g["s"])
            groups[key] = Group(
                num,
                SEVERITY_NAMES[num],
                g.get("h"),
                g.get("a"),
                g.get("m"),
                int(g.get("c", 0)),
                _when(g.get("f")),
                _when(g.get("l")),
            )
        return cls(
            lines=int(item.get("n", 0)),
            batches=int(item.get("b", 0)),
            groups=groups,
            other_lines=int(item.get("o", 0)),
            by_severity={int(k): int(v) for k, v in (item.get("s") or {}).items()},
            since=item.get("t0"),
            until=item.get("t1"),
            first=_when(item.get("f")),
            last=_when(item.get("l")),
            locations=list(item.get("loc") or []),
            requeued=int(item.get("rq", 0)),
        )


@dataclass(frozen=True)
class Inflight:
    """Lines claimed by one post: ``token`` names the poster, ``deadline`` bounds it."""

    token: str
    deadline: float
    digest: Digest

    def to_item(self) -> dict[str, Any]:
        return {"tok": self.token, "dl": self.deadline, "d": self.digest.to_item()}

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Inflight:
        return cls(str(item["tok"]), float(item["dl"]), Digest.from_item(item["d"]))


@dataclass(frozen=True)
class DeviceState:
    """The policy part of a device's item; written whole, guarded by ``version``."""

    version: int = 0
    cooldown_until: Optional[float] = None
    pending: Optional[Digest] = None
    inflight: Optional[Inflight] = None
    applied: tuple[str, ...] = ()

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> DeviceState:
        return cls(
            version=int(item.get("v", 0)),
            cooldown_until=item.get("cool"),
            pending=Digest.from_item(item["pend"]) if item.get("pend") else None,
            inflight=Inflight.from_item(item["infl"]) if item.get("infl") else None,
            applied=tuple(item.get("applied") or ()),
        )

    def fields(self) -> dict[str, Any]:
        """Attribute → value (``None``: remove it), for :meth:`state.StateStore.write_policy`."""
        return {
            "v": self.version,
            "cool": self.cooldown_until,
            "pend": self.pending.to_item() if self.pending is not None else None,
            "infl": self.inflight.to_item() if self.inflight is not None else None,
            "applied": list(self.applied),
        }


@dataclass(frozen=True)
class Decision:
    """What to do with a batch (or a due digest), and the state that records it."""

    kind: str
    state: DeviceState
    #: What the post (or the fleet entry) carries.
    outgoing: Optional[Digest] = None
    #: True when ``outgoing`` is more than the incoming batch (a digest).
    digest: bool = False


def requeue_expired(state: DeviceState, now: float) -> DeviceState:
    """An inflight past its deadline belongs to a poster that died: its lines go back to
    pending (marked ``requeued``), to be posted with the next digest."""
    if state.inflight is None or now < state.inflight.deadline:
        return state
    back = replace(state.inflight.digest, requeued=state.inflight.digest.lines)
    pending = back if state.pending is None else back.merge(state.pending)
    return replace(state, pending=pending, inflight=None)


def decide(
    state: DeviceState,
    incoming: Digest,
    batch_id: str,
    now: float,
    cooldown: float,
    token: str,
) -> Decision:
    """A new alerting batch: post now (with any pending lines) or add it to pending.

    Posting is allowed when the device is out of its cool-down and no other post
    of it is in flight; the post then starts the next cool-down.
    """
    if batch_id in state.applied:
        return Decision(DUPLICATE, state)
    base = requeue_expired(state, now)
    applied = (*base.applied, batch_id)[-APPLIED_KEEP:]
    if base.inflight is None and (base.cooldown_until is None or now >= base.cooldown_until):
        outgoing = incoming if base.pending is None else base.pending.merge(incoming)
        new = DeviceState(
            base.version + 1,
            now + cooldown,
            None,
            Inflight(token, now + INFLIGHT_SECONDS, outgoing),
            applied,
        )
        return Decision(POST, new, outgoing, digest=base.pending is not None)
    pending = incoming if base.pending is None else base.pending.merge(incoming)
    return Decision(
        PENDING, replace(base, version=base.version + 1, pending=pending, applied=applied)
    )


def due(state: DeviceState, now: float, cooldown: float, token: str) -> Optional[Decision]:
    """The scheduled run's question: is this device's digest due (cool-down over, lines
    pending, no post in flight)? Then claim it as :func:`decide` would."""
    base = requeue_expired(state, now)
    if base.pending is None or base.inflight is not None:
        return None
    if base.cooldown_until is not None and now < base.cooldown_until:
        return None
    new = DeviceState(
        base.version + 1,
        now + cooldown,
        None,
        Inflight(token, now + INFLIGHT_SECONDS, base.pending),
        base.applied,
    )
    return Decision(POST, new, base.pending, digest=True)


def fold(decision: Decision) -> Decision:
    """The gate is closed: the lines of a post decision go to the fleet episode instead.
    The device still enters its cool-down, so its next lines wait for its own digest."""
    assert decision.kind == POST and decision.outgoing is not None
    return Decision(
        FLEET, replace(decision.state, inflight=None), decision.outgoing, decision.digest
    )


def settle(state: DeviceState, token: str, sent: bool) -> Optional[DeviceState]:
    """After the post ``token``: forget the lines (sent) or put them back (not sent).

    ``None`` when there is nothing to change: the inflight is another poster's, or
    was already taken back because its deadline passed.
    """
    if state.inflight is None or state.inflight.token != token:
        return None
    if sent:
        return replace(state, version=state.version + 1, inflight=None)
    back = replace(state.inflight.digest, requeued=state.inflight.digest.lines)
    pending = back if state.pending is None else back.merge(state.pending)
    return replace(state, version=state.version + 1, inflight=None, pending=pending)


# --- the fleet ------------------------------------------------------------------------------


def gate_open(slots: Iterable[Optional[float]], now: float) -> list[int]:
    """Indexes of the gate's slots free at ``now`` (never used, or used a window ago)."""
    return [i for i, t in enumerate(slots) if t is None or t <= now - FLEET_WINDOW]


def episode_open(start: Optional[float], now: float) -> bool:
    """Does an episode that started at ``start`` still take devices at ``now``?"""
    return start is not None and now < start + FLEET_WINDOW


def episode_due(start: float, now: float) -> bool:
    """Is the episode over, and its grace too, so that its message may be sealed and sent?"""
    return now >= start + FLEET_WINDOW + FLEET_GRACE


def shard_of(slot: int) -> int:
    """The shard (message) the ``slot``-th device of an episode (from 1) goes into."""
    return (slot - 1) // FLEET_SHARD_SIZE


@dataclass(frozen=True)
class Entry:
    """One device's line in a list message (fleet, combined digests)."""

    device: str
    lines: int
    by_severity: dict[int, int]
    sample: Optional[Group] = None
    location: str = ""
    batches: int = 0

    @property
    def worst(self) -> int:
        return min(self.by_severity) if self.by_severity else 7

    def to_item(self) -> dict[str, Any]:
        g = self.sample
        return {
            "n": self.lines,
            "b": self.batches,
            "s": {str(k): v for k, v in self.by_severity.items()},
            "loc": self.location,
            "g": None
            if g is None
            else {
                "s": g.severity_num,
                "h": g.host,
                "a": g.app,
                "m": safe_text(g.msg, SAMPLE_CHARS),
            },
        }

    @classmethod
    def from_item(cls, device: str, item: Mapping[str, Any]) -> Entry:
        g = item.get("g")
        sample = None
        if g:
            num = int(g["s"])
            sample = Group(num, SEVERITY_NAMES[num], g.get("h"), g.get("a"), g.get("m"), 1)
        return cls(
            device,
            int(item.get("n", 0)),
            {int(k): int(v) for k, v in (item.get("s") or {}).items()},
            sample,
            str(item.get("loc") or ""),
            int(item.get("b", 0)),
        )

    @classmethod
    def from_digest(cls, device: str, digest: Digest) -> Entry:
        groups = digest.sorted_groups()
        return cls(
            device,
            digest.lines,
            dict(digest.by_severity),
            groups[0] if groups else None,
            digest.locations[0] if digest.locations else "",
            digest.batches,
        )


def entries_of_shard(item: Mapping[str, Any]) -> list[Entry]:
    """The devices a fleet shard item holds (attributes ``d#<device id>``)."""
    return [
        Entry.from_item(name[2:], value)
        for name, value in item.items()
        if name.startswith("d#") and isinstance(value, Mapping)
    ]


def silent(last_seen: Optional[float], now: float, silent_after: float) -> bool:
    """A device is silent when it has sent nothing for longer than ``silent_after``."""
    return last_seen is not None and now - last_seen > silent_after
