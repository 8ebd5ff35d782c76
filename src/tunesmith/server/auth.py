"""Who is calling: the API key a request carries, checked before anything reads its body.

Every check runs on the event loop (async dependencies), so a failed authentication's delay
(`throttle.FailedLogins`) holds no thread of the pool the handlers run in and no lock.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from .state import ServerState, get_state


@dataclass(frozen=True)
class Caller:
    """The key a request came with. A key-less server's callers are all admins."""

    name: str | None
    admin: bool

    @property
    def visible_to(self) -> str | None:
        """What the store's reads take: None (everything) for an admin, else the name."""
        return None if self.admin else self.name


NOBODY = Caller(None, admin=True)  # the caller of a server without keys


_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer KEY`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: KEY`")
UNAUTHORIZED = "missing or wrong API key: send `Authorization: Bearer KEY` or `X-API-Key: KEY`"


async def optional_caller(
    request: Request,
    state: ServerState = Depends(get_state),
    bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
    header: str | None = Depends(_header),
) -> Caller | None:
    """The caller, or None if the request carries no credential at all (a server with keys);
    any wrong credential is a 401, even beside a right one."""
    if not state.keys:
        return NOBODY
    given = [c for c in (header, bearer.credentials if bearer is not None else None) if c]
    wrong = "authorization" in request.headers and bearer is None  # Basic, ...: wrong
    if not given and not wrong and "x-api-key" not in request.headers:
        return None
    found = [state.keys.match(c) for c in given]
    names = {k.name for k in found if k is not None}
    if wrong or not given or None in found or len(names) != 1:
        await state.logins.hold(request.client.host if request.client else "?")
        raise HTTPException(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
    key = next(k for k in found if k is not None)
    return Caller(key.name, key.admin)


async def caller(
    request: Request,
    who: Caller | None = Depends(optional_caller),
    state: ServerState = Depends(get_state),
) -> Caller:
    """The caller; 401 (after the delay) without a key on a server that has keys."""
    if who is None:
        await state.logins.hold(request.client.host if request.client else "?")
        raise HTTPException(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
    return who
