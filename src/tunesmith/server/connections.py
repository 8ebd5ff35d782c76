"""A time limit on the request head: uvicorn's HTTP/1.1 protocol closes a connection idle
after a response (`timeout_keep_alive`), but one that opens and never sends a whole request
head stays open as long as its client likes (500 half-open connections were held with no
end). Here the same timeout also runs from when a connection opens and after each response
until a whole head has arrived; trickling bytes does not reset it."""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class HeadTimeoutProtocol(H11Protocol):
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.timeout_keep_alive, self._head_timeout)

    def _head_timeout(self) -> None:
        """Close the connection unless a whole request head came meanwhile (h11 leaves IDLE
        only then)."""
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()
