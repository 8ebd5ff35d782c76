"""API keys: several named keys, kept as SHA-256 hashes at rest (`--api-keys-file`).

    # NAME   ROLE   HASH                 (one key a line; # starts a comment)
    alice    user   sha256:4f1c...e2
    ops      admin  sha256:9a07...31

A key is 32 random bytes (`new_key`), so a fast hash is enough: nobody can search 2**256
keys for one that hashes the same, and checking a key costs a microsecond, not the tens of
milliseconds of a password hash (bcrypt, argon2) that a stream of wrong keys would turn into
CPU load. What the file protects against is a reader of the file (or of a backup) learning
keys that work. The single `--api-key` / `--api-key-file` / $TUNESMITH_API_KEY is one admin
key named "admin".
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidOptionError

ROLES = ("user", "admin")
SINGLE_KEY_NAME = "admin"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_HASH = re.compile(r"^sha256:([0-9a-f]{64})$")


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(frozen=True)
class ApiKey:
    name: str
    digest: bytes  # SHA-256 of the key
    admin: bool = False


class KeyRing:
    """The keys a server takes; empty: the server takes requests without one."""

    def __init__(self, keys: list[ApiKey] | None = None) -> None:
        self.keys = list(keys or [])
        names = [k.name for k in self.keys]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise InvalidOptionError(f"API key name(s) given twice: {', '.join(twice)}")

    def __bool__(self) -> bool:
        return bool(self.keys)

    @classmethod
    def of(
        cls, single: str | None = None, keys_file: str | os.PathLike[str] | None = None
    ) -> KeyRing:
        """The single key (as admin "admin") and the keys file's keys together."""
        keys = [] if keys_file is None else read_keys_file(keys_file)
        if single:
            keys.append(ApiKey(SINGLE_KEY_NAME, digest(single), admin=True))
        return cls(keys)

    def match(self, presented: str) -> ApiKey | None:
        """The key `presented` is, or None; every entry is compared, in constant time."""
        given = digest(presented)
        found = None
        for key in self.keys:
            if hmac.compare_digest(given, key.digest):
                found = key
        return found


def read_keys_file(path: str | os.PathLike[str]) -> list[ApiKey]:
    """The keys of a keys file; InvalidOptionError naming the line of anything wrong."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidOptionError(
            f"--api-keys-file {os.fspath(path)!r}: cannot read it ({err})"
        ) from None
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        where = f"--api-keys-file {os.fspath(path)!r} line {number}"
        if len(fields) != 3:
            raise InvalidOptionError(
                f"{where}: expected NAME ROLE sha256:HASH, got {len(fields)} field(s)"
            )
        name, role, hashed = fields
        if not _NAME.match(name):
            raise InvalidOptionError(f"{where}: bad name {name!r} (letters, digits, _.@-)")
        if role not in ROLES:
            raise InvalidOptionError(
                f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}"
            )
        found = _HASH.match(hashed)
        if found is None:
            raise InvalidOptionError(
                f"{where}: the key must be stored as sha256:<64 hex digits>, never in plain text "
                "(tunesmith serve --add-key NAME --api-keys-file FILE writes one)"
            )
        keys.append(ApiKey(name, bytes.fromhex(found.group(1)), admin=role == "admin"))
    if not keys:
        raise InvalidOptionError(f"--api-keys-file {os.fspath(path)!r} holds no key")
    return keys


def new_key() -> str:
    """A fresh key: 32 random bytes, URL-safe text."""
    return secrets.token_urlsafe(32)


def add_key(path: str | os.PathLike[str], name: str, admin: bool = False) -> str:
    """Append a new key named `name` to the keys file (made readable by its owner only) and
    return the key itself, which is kept nowhere else."""
    target = Path(path)
    existing = read_keys_file(target) if target.is_file() and target.read_text().strip() else []
    if not _NAME.match(name):
        raise InvalidOptionError(f"bad key name {name!r} (letters, digits, _.@-; at most 64)")
    if any(k.name == name for k in existing):
        raise InvalidOptionError(f"{os.fspath(path)!r} already has a key named {name!r}")
    key = new_key()
    line = f"{name} {'admin' if admin else 'user'} sha256:{digest(key).hex()}\n"
    try:
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(line)
    except OSError as err:
        raise InvalidOptionError(
            f"cannot write {os.fspath(path)!r}: {err.strerror or err}"
        ) from None
    return key
