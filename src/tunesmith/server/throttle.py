"""The delay of failed authentications: an `asyncio.sleep` on the event loop, so it holds no
thread of the pool the handlers run in and no lock, and a hundred wrong keys at once slow
down only themselves. The delay grows with a client's recent failures (at most MAX_DELAY
seconds), and a client may wait for at most MAX_PENDING delayed answers at once; past that
it is told 429 at once. All of it runs on the event loop's thread: no lock is needed.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import HTTPException

MAX_DELAY = 2.0  # seconds, the longest a failed authentication is held
MAX_PENDING = 16  # delayed answers one client may wait for at once
FORGET_AFTER = 60.0  # a quiet minute forgets a client's failures
MAX_CLIENTS = 10_000  # bounded memory under a spray of addresses


class FailedLogins:
    """Per-client count of recent failed authentications, and the delay they earn."""

    def __init__(self, step: float = 0.1) -> None:
        self.step = step
        self._failures: dict[str, tuple[int, float]] = {}
        self._pending: dict[str, int] = {}

    def delay(self, client: str) -> float:
        """Count one more failure from `client`; the seconds to hold its answer."""
        now = time.monotonic()
        count, last = self._failures.get(client, (0, now))
        count = 1 if now - last > FORGET_AFTER else count + 1
        if len(self._failures) >= MAX_CLIENTS:
            self._failures.clear()
        self._failures[client] = (count, now)
        return min(MAX_DELAY, self.step * count)

    async def hold(self, client: str) -> None:
        """Wait out the client's delay on the event loop (429 if it already waits too often)."""
        delay = self.delay(client)
        if self._pending.get(client, 0) >= MAX_PENDING:
            raise HTTPException(
                429, "too many failed authentications at once; slow down",
                headers={"Retry-After": str(int(MAX_DELAY) + 1)},
            )  # fmt: skip
        self._pending[client] = self._pending.get(client, 0) + 1
        try:
            await asyncio.sleep(delay)
        finally:
            left = self._pending.get(client, 1) - 1
            if left > 0:
                self._pending[client] = left
            else:
                self._pending.pop(client, None)
