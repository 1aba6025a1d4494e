"""Storm control in motion: decide (:mod:`storm`), commit (:mod:`state`), post, settle.

Both functions use one :class:`Notifier`: the ingest function for each
alerting batch (:meth:`Notifier.batch`), the scheduled one for digests whose
cool-down ended with no batch to carry them (:meth:`Notifier.claim_digest`)
and for fleet messages (:meth:`Notifier.flush_episode`).

The order is always *commit, then post, then settle*, because a line must be
counted in exactly one message:

* the commit records, in one conditional write, that this batch's lines are
  pending, or claimed by this invocation's post (``inflight``, with a token
  and a deadline), or in a fleet entry; a concurrent writer loses its
  condition and recomputes from what it reads, so two invocations never
  claim the same lines;
* a post that fails (Slack down, 429 past the budget, a refused payload)
  settles by putting its lines back into pending: they go out with the
  device's next digest, and the digest says how many came back;
* a poster that dies between commit and settle leaves an inflight whose
  deadline passes; the next writer of that device puts those lines back
  (``storm.requeue_expired``).

What can count twice, never lose: a post that reached Slack and whose settle
was lost (the function died, or DynamoDB failed, in the milliseconds
between), and a commit that took effect but whose answer was lost (a
timeout), since the caller then alerts the batch on its own as well.

Only :class:`state.StateError` before a commit (or from the commit itself)
escapes :meth:`Notifier.batch`, and the caller then posts the batch on its
own; after a commit nothing is raised, since that would count it twice.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Optional

import alerts
import state as state_mod
import storm
from settings import AlertPolicy
from state import StateError, StateStore

LOGGER = logging.getLogger("omprog_forwarder.lambda")

Post = Callable[[dict[str, Any]], alerts.SendResult]


def new_token() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Outcome:
    """What became of one batch's alerting lines: ``decision`` is ``immediate``,
    ``digest`` (posted with pending lines), ``pending`` (waiting for the digest),
    ``fleet`` (in the fleet episode) or ``duplicate`` (already in the state)."""

    decision: str
    result: alerts.SendResult
    #: Lines the post carried (immediate, digest) or the batch added (pending, fleet).
    lines: int = 0


@dataclass(frozen=True)
class Claim:
    """A due digest claimed by the scheduled run, to post alone or in a combined list."""

    device: str
    token: str
    digest: storm.Digest


class Notifier:
    """One invocation's storm control; every side effect is passed in."""

    def __init__(
        self,
        store: StateStore,
        policy: AlertPolicy,
        *,
        post: Post,
        threshold_name: str,
        token: Callable[[], str] = new_token,
        count: Callable[[str, int], None] = lambda name, n: None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.post = post
        self.threshold_name = threshold_name
        self.token = token
        self.count = count

    # -- the ingest function -------------------------------------------------------------

    def batch(
        self,
        device: str,
        batch_id: str,
        collector: alerts.AlertCollector,
        location: str,
        now: float,
        before: Mapping[str, Any],
        render_single: Callable[[], dict[str, Any]],
    ) -> Outcome:
        """Decide, commit and (maybe) post one batch's alerting lines.

        ``before`` is the device's item as ``record_seen`` found it (the read this
        needs comes for free); ``render_single`` builds the one-batch message, used
        when the post carries this batch alone (a first alert, as before storm control).
        """
        incoming = storm.Digest.from_collector(collector, location, now)
        current = storm.DeviceState.from_item(before)
        token = self.token()
        slot: Optional[bool] = None
        fleet_open = True
        for _ in range(state_mod.MAX_TRIES):
            decision = storm.decide(current, incoming, batch_id, now, self.policy.cooldown, token)
            if decision.kind == storm.DUPLICATE:
                return Outcome("duplicate", alerts.SendResult("duplicate"))
            if decision.kind == storm.POST and fleet_open:
                if slot is None:
                    slot = self.store.take_gate_slot(
                        self.policy.fleet_threshold, now, storm.FLEET_WINDOW
                    )
                if not slot:
                    answer = self._fold(device, current, decision, now, token)
                    if answer == "ok":
                        lines = decision.outgoing.lines if decision.outgoing else 0
                        return Outcome("fleet", alerts.SendResult("fleet"), lines)
                    if answer == "closed":
                        fleet_open = False
                    else:
                        current = self._reload(device)
                    continue
            if not self.store.write_policy(device, current.version, decision.state.fields()):
                current = self._reload(device)
                continue
            if decision.kind == storm.PENDING:
                return Outcome("pending", alerts.SendResult("pending"), incoming.lines)
            assert decision.outgoing is not None
            render = render_single
            if decision.digest or decision.outgoing.requeued:
                render = self._digest_renderer(device, decision.outgoing)
            result = self._post_and_settle(device, token, render)
            kind = "digest" if decision.digest else "immediate"
            return Outcome(kind, result, decision.outgoing.lines)
        raise StateError("device contention")

    def _digest_renderer(self, device: str, digest: storm.Digest) -> Callable[[], dict[str, Any]]:
        def render() -> dict[str, Any]:
            return alerts.build_digest_message(
                digest,
                device_id=device,
                threshold_name=self.threshold_name,
                cooldown=self.policy.cooldown,
            )

        return render

    def _fold(
        self,
        device: str,
        current: storm.DeviceState,
        decision: storm.Decision,
        now: float,
        token: str,
    ) -> str:
        folded = storm.fold(decision)
        assert folded.outgoing is not None
        start, place = self.store.join_episode(now, storm.FLEET_WINDOW)
        entry = storm.Entry.from_digest(device, folded.outgoing)
        return self.store.fold(
            device,
            current.version,
            folded.state.fields(),
            start,
            storm.shard_of(place),
            entry.to_item(),
            folded.outgoing.lines,
            token,
        )

    def _reload(self, device: str) -> storm.DeviceState:
        return storm.DeviceState.from_item(self.store.get_device(device))

    def _post_and_settle(
        self, device: str, token: str, render: Callable[[], dict[str, Any]]
    ) -> alerts.SendResult:
        try:
            payload = render()
        except Exception as exc:  # noqa: BLE001 - a rendering bug must not lose the lines
            result = alerts.SendResult("invalid", reason=f"build failed: {type(exc).__name__}")
        else:
            result = self.post(payload)
        self.settle(device, token, result.status == "sent")
        return result

    def settle(self, device: str, token: str, sent: bool) -> None:
        """After a post: forget its lines, or put them back. Never raises: a settle that
        fails leaves the inflight to expire, and its lines come back then."""
        self.store.extend(state_mod.SETTLE_BUDGET)
        try:
            for _ in range(state_mod.MAX_TRIES):
                current = self._reload(device)
                new = storm.settle(current, token, sent)
                if new is None:
                    return
                if self.store.write_policy(device, current.version, new.fields()):
                    if not sent:
                        self.count("alerts_requeued", 1)
                    return
            self.count("settle_failures", 1)
        except Exception as exc:  # noqa: BLE001 - StateError or a bug: the deadline heals both
            self.count("settle_failures", 1)
            LOGGER.warning(
                json.dumps(
                    {"event": "settle_failed", "device": device, "reason": _reason(exc)},
                    sort_keys=True,
                )
            )

    # -- the fleet -----------------------------------------------------------------------

    def flush_episode(self, now: float) -> list[alerts.SendResult]:
        """Post the latest fleet episode once it is over (both functions call this)."""
        episode = self.store.get(state_mod.EPISODE)
        start = episode.get("start")
        if start is None or episode.get("flushed") or not storm.episode_due(start, now):
            return []
        shards = storm.shard_of(int(episode.get("folds", 0))) + 1
        results = []
        done = True
        for shard in range(shards):
            result = self.flush_shard(state_mod.shard_key(start, shard), now)
            if result is not None:
                results.append(result)
                done = done and result.status == "sent"
        if done:
            self.store.mark_flushed(start)
        return results

    def flush_shard(self, key: str, now: float) -> Optional[alerts.SendResult]:
        """Seal one shard, post its fleet message, settle. ``None``: nothing to post (sent
        already, claimed by another invocation, or empty)."""
        token = self.token()
        item = self.store.claim_shard(key, token, now, now + storm.INFLIGHT_SECONDS)
        if item is None:
            return None
        entries = storm.entries_of_shard(item)
        if not entries:
            self.store.finish_shard(key, token, True, now, "empty")
            return None
        start = float(item.get("start", now))
        context = (
            f"More than {self.policy.fleet_threshold} devices alerted within a minute, so "
            f"these are listed here instead of one message each · *From* "
            f"{alerts.clock_text(start)} · worst device first, ×lines · each device's "
            f"next lines wait for its own digest"
        )
        try:
            payload = alerts.build_fleet_message(
                entries, title="Fleet", context=context, threshold_name=self.threshold_name
            )
        except Exception as exc:  # noqa: BLE001 - keep the shard for the next try
            result = alerts.SendResult("invalid", reason=f"build failed: {type(exc).__name__}")
        else:
            result = self.post(payload)
        self.store.extend(state_mod.SETTLE_BUDGET)
        self.store.finish_shard(key, token, result.status == "sent", now, result.reason)
        if result.status != "sent":
            self.count("fleet_post_failures", 1)
        return result

    # -- the scheduled function ----------------------------------------------------------

    def claim_digest(self, item: Mapping[str, Any], now: float) -> Optional[Claim]:
        """Claim a device's digest if its cool-down is over (no batch came to carry it)."""
        device = str(item.get("device", ""))
        current = storm.DeviceState.from_item(item)
        token = self.token()
        for _ in range(state_mod.MAX_TRIES):
            decision = storm.due(current, now, self.policy.cooldown, token)
            if decision is None or decision.outgoing is None:
                return None
            if self.store.write_policy(device, current.version, decision.state.fields()):
                return Claim(device, token, decision.outgoing)
            current = self._reload(device)
        raise StateError("device contention")

    def post_claims(self, claims: list[Claim], now: float) -> list[alerts.SendResult]:
        """Post claimed digests: one message each while the fleet gate has room, the rest
        in combined lists (``FLEET_SHARD_SIZE`` devices a message); settle every claim."""
        results = []
        rest = []
        for claim in claims:
            if self.store.take_gate_slot(self.policy.fleet_threshold, now, storm.FLEET_WINDOW):
                render = self._digest_renderer(claim.device, claim.digest)
                results.append(self._post_and_settle(claim.device, claim.token, render))
            else:
                rest.append(claim)
        for start in range(0, len(rest), storm.FLEET_SHARD_SIZE):
            chunk = rest[start : start + storm.FLEET_SHARD_SIZE]
            entries = [storm.Entry.from_digest(c.device, c.digest) for c in chunk]
            context = (
                "Digests of devices whose cool-down ended, listed together because more "
                f"than {self.policy.fleet_threshold} were due · worst device first, ×lines"
            )
            try:
                payload = alerts.build_fleet_message(
                    entries, title="Digests", context=context, threshold_name=self.threshold_name
                )
            except Exception as exc:  # noqa: BLE001 - the claims are put back below
                result = alerts.SendResult("invalid", reason=f"build failed: {type(exc).__name__}")
            else:
                result = self.post(payload)
            for c in chunk:
                self.settle(c.device, c.token, result.status == "sent")
            results.append(result)
        return results


def _reason(exc: Exception) -> str:
    return exc.reason if isinstance(exc, StateError) else type(exc).__name__
