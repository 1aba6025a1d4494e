"""The shipper's retry policy: full-jitter exponential backoff, Retry-After, a time budget.

Only `TransientSendError` (429, 5xx, timeouts, connection errors, Cognito
unreachable) is retried; anything else goes straight back to the caller,
which decides (dead/, split, renew credentials, stop).

The wait before retry *n* (n = 1 after the first failure) is

    jitter(n) = rand() * min(cap, base * 2 ** (n - 1))        # "full jitter"
    wait(n)   = max(retry_after, jitter(n))  if the server sent Retry-After
              = jitter(n)                     otherwise

so a server's Retry-After is never undercut, and a fleet coming back after an
outage spreads out instead of arriving in step (AWS Architecture Blog,
"Exponential Backoff and Jitter"). Retrying stops, and the last error is
raised, as soon as the next wait would end past the deadline: the batch
stays in ready/ for the next run, which a timer or the next seal starts.

`sleep`, `clock` (monotonic) and `rand` are injected so tests assert the exact
schedule. The stop decision is taken from the same planned wait that is then
slept, which keeps it independent of the order in which tenacity versions
call `stop` and `wait`.
"""

from __future__ import annotations

import random
import time
from typing import Callable, Optional, TypeVar

import tenacity

from omprog_forwarder.errors import TransientSendError

T = TypeVar("T")

DEFAULT_BASE = 1.0
DEFAULT_CAP = 60.0


class RetryPolicy:
    """Retries one operation until it succeeds, fails for good, or the deadline comes."""

    def __init__(
        self,
        deadline: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
        base: float = DEFAULT_BASE,
        cap: float = DEFAULT_CAP,
        on_retry: Optional[Callable[[int, float, BaseException], None]] = None,
    ) -> None:
        self.deadline = deadline
        self.clock = clock
        self.sleep = sleep
        self.rand = rand
        self.base = base
        self.cap = cap
        self.on_retry = on_retry
        self._plans: dict[int, float] = {}

    def planned_wait(self, attempt: int, exc: Optional[BaseException]) -> float:
        """The wait after failed attempt number `attempt` (1-based)."""
        ceiling = min(self.cap, self.base * (2 ** (attempt - 1)))
        wait = self.rand() * ceiling
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            wait = max(float(retry_after), wait)
        return wait

    def remaining(self) -> float:
        return self.deadline - self.clock()

    # -- tenacity hooks: one plan per attempt, shared by stop and wait --

    def _plan(self, state: tenacity.RetryCallState) -> float:
        n = state.attempt_number
        if n not in self._plans:
            exc = state.outcome.exception() if state.outcome else None
            self._plans[n] = self.planned_wait(n, exc)
        return self._plans[n]

    def _stop(self, state: tenacity.RetryCallState) -> bool:
        return self.clock() + self._plan(state) > self.deadline

    def _wait(self, state: tenacity.RetryCallState) -> float:
        return self._plan(state)

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        if self.on_retry is not None and state.outcome is not None:
            self.on_retry(state.attempt_number, self._plan(state), state.outcome.exception())

    def call(self, fn: Callable[[], T]) -> T:
        """`fn()`, retried on TransientSendError within the deadline; the last error re-raised."""
        self._plans = {}
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientSendError),
            stop=self._stop,
            wait=self._wait,
            sleep=self.sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        return retrying(fn)
