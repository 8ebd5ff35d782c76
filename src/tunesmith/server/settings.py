"""How `tunesmith serve` runs: every service setting in one frozen dataclass, checked once."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidOptionError

API_KEY_ENV = "TUNESMITH_API_KEY"
LOG_FORMATS = ("text", "json")
DEFAULT_MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class ServiceSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("tunesmith-data")  # relative: in the folder the server starts from
    api_key: str | None = None  # one admin key
    api_keys_file: Path | None = None  # named keys, hashed (server/keys.py)
    allowed_hosts: tuple[str, ...] = ()  # public names served besides loopback ones
    max_queue: int = 16
    max_batch: int = 4
    max_attempts: int = DEFAULT_MAX_ATTEMPTS  # starts of a job across crashes before it fails
    drain_seconds: float = 30.0  # on SIGTERM, time the running batch has to finish
    min_free_mb: float = 64.0  # below this free in the data folder: no new jobs (507)
    keep_days: float | None = None  # retention: finished jobs older than this go
    max_disk_gb: float | None = None  # retention: the oldest finished go past this much audio
    request_timeout: float = 30.0  # a request body must arrive within this
    keep_alive_seconds: float = 5.0  # an idle connection is closed after this
    max_connections: int = 256  # past this many open connections: 503
    log_format: str = "text"

    def __post_init__(self) -> None:
        checks = [
            (0 <= self.port <= 65535, f"port must be in 0..65535, got {self.port}"),
            (self.max_queue >= 1 and self.max_batch >= 1,
             "--max-queue and --max-batch must be at least 1"),
            (self.max_attempts >= 1, "--max-attempts must be at least 1"),
            (self.drain_seconds >= 0, "--drain-seconds must be at least 0"),
            (self.min_free_mb >= 0, "--min-free-mb must be at least 0"),
            (self.keep_days is None or self.keep_days > 0, "--keep-days must be above 0"),
            (self.max_disk_gb is None or self.max_disk_gb > 0, "--max-disk-gb must be above 0"),
            (self.request_timeout > 0, "--request-timeout must be above 0"),
            (self.max_connections >= 1, "--max-connections must be at least 1"),
            (self.log_format in LOG_FORMATS, f"--log-format must be one of {LOG_FORMATS}"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise InvalidOptionError(message)

    @property
    def min_free_bytes(self) -> int:
        return int(self.min_free_mb * 2**20)

    def app_options(self) -> dict[str, Any]:
        """The keywords of `create_app` these settings give (the keys apart: `serve` reads
        them, before the model loads)."""
        return {
            "allowed_hosts": self.allowed_hosts,
            "max_queue": self.max_queue,
            "max_batch": self.max_batch,
            "max_attempts": self.max_attempts,
            "drain_seconds": self.drain_seconds,
            "min_free_bytes": self.min_free_bytes,
            "keep_days": self.keep_days,
            "max_disk_bytes": None if self.max_disk_gb is None else int(self.max_disk_gb * 1e9),
            "body_timeout": self.request_timeout,
        }


def read_api_key(given: str | None, key_file: str | None) -> str | None:
    """The API key: --api-key-file's first line, else $TUNESMITH_API_KEY, else --api-key
    (which `ps` shows every user of the machine: the file or the variable are better)."""
    if key_file is not None:
        try:
            key = Path(key_file).read_text().strip().splitlines()[0].strip()
        except (OSError, IndexError) as err:
            raise InvalidOptionError(f"--api-key-file {key_file!r}: no key read ({err})") from None
        if not key:
            raise InvalidOptionError(f"--api-key-file {key_file!r} holds an empty key")
        return key
    return os.environ.get(API_KEY_ENV) or given or None
