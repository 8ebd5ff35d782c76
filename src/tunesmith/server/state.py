"""What every handler needs, kept on `app.state.tunesmith`, and how answers stay free of the
server's paths."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import Request

from ..checkpoints.hub import looks_like_path
from .disk import DiskGuard
from .keys import KeyRing
from .store import JobStore
from .streams import StreamHub
from .throttle import FailedLogins
from .worker import Worker

if TYPE_CHECKING:
    from ..musicgen import MusicGen

_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s'\"/]+/)+[^\s'\":,;)]*")


@dataclass
class ServerState:
    model: MusicGen
    store: JobStore
    worker: Worker
    hub: StreamHub
    keys: KeyRing
    disk: DiskGuard
    logins: FailedLogins = field(default_factory=FailedLogins)
    max_queue: int = 16
    max_batch: int = 4

    @property
    def model_name(self) -> str:
        """The model as a client may see it: a local checkpoint's folder name, never its path."""
        name = self.model.name
        return Path(name).name if looks_like_path(name) else name

    def not_ready(self) -> str | None:
        """Why the server cannot take a job now (None: it can)."""
        if not self.worker.alive:
            return (
                "the server is stopping" if self.worker.draining
                else "the server's worker is not running"
            )  # fmt: skip
        return self.disk.low()

    def without_paths(self, message: str) -> str:
        """`message` with the server's folders taken out (see `without_paths`)."""
        roots = [self.store.data_dir]
        if looks_like_path(self.model.name):
            roots.append(Path(self.model.name))
        return without_paths(message, roots)


async def get_state(request: Request) -> ServerState:
    """Async, as every dependency of the key check is: none of them waits for a thread of
    the pool the handlers run in (a burst of requests cannot starve the others there)."""
    state: ServerState = request.app.state.tunesmith
    return state


def without_paths(message: str, roots: list[Path] | tuple[Path, ...] = ()) -> str:
    """`message` with file paths cut to their last part: a client has no business knowing the
    server's folders. `roots` (the data folder, the model's) are taken out first, whatever
    characters their names hold; any other absolute path then goes by its shape."""
    for root in roots:
        for form in {str(root), str(Path(root).resolve())}:
            if len(form) > 1 and form in message:
                message = message.replace(form + "/", "").replace(form, "")
    return _PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1], message)
