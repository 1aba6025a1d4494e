"""The one fake clock of the tests.

Stands in for `time.monotonic` or `time.time` wherever code takes a clock:
it reads `now`, moves only when the test says (`advance`) or when the code
under test sleeps (`sleep` records the wait, moves the clock at once and
then calls `on_sleep(n)` for the n-th sleep, so a test can act "during" a
retry wait). With `follow`, the clock is that real clock plus `now` as an
offset: for parts that live in real time (moto's credentials, a gateway's
signature window) while the test still shifts the device's view of it.
"""

from __future__ import annotations

from typing import Callable, Optional


class FakeClock:
    def __init__(self, start: float = 1000.0, follow: Optional[Callable[[], float]] = None) -> None:
        self.now = float(start)
        self.follow = follow
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[int], None] = lambda n: None

    def __call__(self) -> float:
        return self.now + (self.follow() if self.follow is not None else 0.0)

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.on_sleep(len(self.sleeps))
