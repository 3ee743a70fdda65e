"""API keys: created once and shown once, stored hashed under the instance folder, checked in constant time.

A key reads ``nxk_<id>_<secret>``: ``id`` (16 hex digits) is public and finds the key's row;
``secret`` is 32 random bytes (``secrets.token_urlsafe``). The store keeps, per key, the
**HMAC-SHA256** of the whole key under a server secret (32 random bytes in
``api_keys.secret``, mode 0600, beside the database ``api_keys.sqlite``), never the key.

Why HMAC and not a slow salted hash (scrypt, argon2): a slow hash protects *guessable* secrets
(passwords) by making each guess expensive; a key with 256 random bits cannot be guessed at any
speed, so the slowness would buy nothing and cost ~50-100 ms of CPU on every request (the API
checks a key per request, and its budget is a few milliseconds). The server secret adds what a
salt would: a copy of the database alone does not even let anyone test a candidate key.

The digest comparison is :func:`hmac.compare_digest`; an unknown id is compared against a dummy
digest, so an unknown id and a wrong secret take the same path. A running server sees ``keys
create`` and ``keys revoke`` from another process at its next request (it re-reads the database
when the file changes). ``last_used`` is written at most once a minute per key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import limits

from nexus_assets.instance import PROJECT_HOME

__all__ = [
    "DEFAULT_RATE",
    "KEYS_FILE",
    "SECRET_FILE",
    "KeyStoreError",
    "KeyRecord",
    "KeyStore",
    "instance_folder",
    "normalise_rate",
]

KEYS_FILE = "api_keys.sqlite"
SECRET_FILE = "api_keys.secret"
DEFAULT_RATE = "100/minute;1000/hour"  # Nexus v2's API contract
_KEY = re.compile(r"nxk_([0-9a-f]{16})_[A-Za-z0-9_-]{43}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_UNITS = {"s": "second", "sec": "second", "min": "minute", "m": "minute", "h": "hour", "hr": "hour", "d": "day"}
_TOUCH_EVERY = 60.0


def instance_folder() -> Path:
    """The project's instance folder: ``$DAGSTER_HOME`` if set, else ``./.dagster_home`` (as the CLI's runs)."""
    return Path(os.environ.get("DAGSTER_HOME") or PROJECT_HOME).resolve()


class KeyStoreError(ValueError):
    """A keys command that cannot be done (unknown or duplicate name, bad rate or scope)."""


def normalise_rate(text: str) -> str:
    """``100/min``, ``100/minute;1000/hour`` or ``100 per hour`` as ``limits``' canonical string
    (``100/minute;1000/hour``); raises :class:`KeyStoreError` for anything ``limits`` cannot parse."""
    parts = []
    for part in re.split(r"[;,]", text):
        match = re.fullmatch(r"\s*([0-9]+)\s*(?:/|per)\s*([0-9]*)\s*([A-Za-z]+)\s*", part)
        if not match:
            raise KeyStoreError(f"rate {text!r}: expected e.g. 100/min or 100/minute;1000/hour")
        amount, multiple, unit = match.groups()
        unit = _UNITS.get(unit.lower(), unit.lower().rstrip("s"))
        parts.append(f"{int(amount)}/{multiple + ' ' if multiple else ''}{unit}")
    canonical = ";".join(parts)
    try:
        parsed = limits.parse_many(canonical)
    except ValueError:
        raise KeyStoreError(f"rate {text!r}: expected e.g. 100/min or 100/minute;1000/hour") from None
    if any(item.amount < 1 for item in parsed):
        raise KeyStoreError(f"rate {text!r}: a limit must allow at least one request")
    return canonical


@dataclass(frozen=True)
class KeyRecord:
    """A key's row, without the key: name, scope (None: every asset), rate limits, dates."""

    name: str
    key_id: str
    digest: bytes
    assets: tuple[str, ...] | None
    rate: str
    created: str
    last_used: str | None
    revoked: str | None

    def may_see(self, asset: str) -> bool:
        return self.assets is None or asset in self.assets

    @property
    def scope(self) -> str:
        return "all assets" if self.assets is None else ",".join(self.assets)


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


class KeyStore:
    """The key database under ``folder`` (the instance folder)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / KEYS_FILE
        self._secret_path = self.folder / SECRET_FILE
        self._lock = threading.Lock()
        self._by_id: dict[str, KeyRecord] = {}
        self._identity: tuple | None = None
        self._secret: bytes | None = None
        self._touched: dict[str, float] = {}
        self._dummy = hashlib.sha256(b"no such key").digest()

    # --- files ---------------------------------------------------------------------------------
    def _connect(self, create: bool = False) -> sqlite3.Connection:
        if create:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        connection = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        if create:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS api_keys (name TEXT PRIMARY KEY, key_id TEXT UNIQUE NOT NULL, "
                "digest BLOB NOT NULL, assets TEXT, rate TEXT NOT NULL, created TEXT NOT NULL, last_used TEXT, "
                "revoked TEXT)"
            )
        return connection

    def _server_secret(self, create: bool = False) -> bytes | None:
        if self._secret is not None:
            return self._secret
        try:
            self._secret = self._secret_path.read_bytes()
        except FileNotFoundError:
            if not create:
                return None
            self.folder.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self._secret_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:  # another process made it first
                self._secret = self._secret_path.read_bytes()
            else:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(secrets.token_bytes(32))
                self._secret = self._secret_path.read_bytes()
        return self._secret

    def _digest(self, key: str, secret: bytes) -> bytes:
        return hmac.new(secret, key.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()

    # --- commands ------------------------------------------------------------------------------
    def create(self, name: str, assets: tuple[str, ...] | None, rate: str = DEFAULT_RATE) -> str:
        """A new key named ``name`` (returned once: only its HMAC is kept)."""
        if not _NAME.fullmatch(name):
            raise KeyStoreError(f"name {name!r}: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        rate = normalise_rate(rate)
        secret = self._server_secret(create=True)
        key_id = secrets.token_hex(8)
        key = f"nxk_{key_id}_{secrets.token_urlsafe(32)}"
        with self._connect(create=True) as connection:
            try:
                connection.execute(
                    "INSERT INTO api_keys (name, key_id, digest, assets, rate, created) VALUES (?, ?, ?, ?, ?, ?)",
                    (name, key_id, self._digest(key, secret), None if assets is None else json.dumps(list(assets)),
                     rate, _now()),
                )
            except sqlite3.IntegrityError:
                raise KeyStoreError(f"a key named {name!r} exists already (names are kept after revoking): "
                                "choose another name") from None
        return key

    def records(self) -> list[KeyRecord]:
        if not self.path.exists():
            return []
        with self._connect() as connection:
            try:
                rows = connection.execute(
                    "SELECT name, key_id, digest, assets, rate, created, last_used, revoked FROM api_keys ORDER BY created, name"
                ).fetchall()
            except sqlite3.OperationalError:  # the file exists but no key was ever created
                return []
        return [KeyRecord(n, i, bytes(d), None if a is None else tuple(json.loads(a)), r, c, u, v)
                for n, i, d, a, r, c, u, v in rows]

    def revoke(self, name: str) -> None:
        if not self.path.exists():
            raise KeyStoreError(f"no key named {name!r}")
        with self._connect(create=True) as connection:
            row = connection.execute("SELECT revoked FROM api_keys WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise KeyStoreError(f"no key named {name!r}")
            if row[0] is None:
                connection.execute("UPDATE api_keys SET revoked = ? WHERE name = ?", (_now(), name))

    # --- the server's side ---------------------------------------------------------------------
    def _reload(self) -> None:
        try:
            info = os.stat(self.path)
            identity = (info.st_ino, info.st_size, info.st_mtime_ns)
        except FileNotFoundError:
            identity = None
        if identity == self._identity:
            return
        with self._lock:
            self._by_id = {r.key_id: r for r in self.records()} if identity is not None else {}
            self._identity = identity

    def verify(self, presented: str) -> tuple[str, KeyRecord | None]:
        """``("ok", record)``, ``("revoked", record)`` or ``("unknown", None)`` for the header's value."""
        self._reload()
        secret = self._server_secret() or b"\0" * 32
        match = _KEY.fullmatch(presented)
        record = self._by_id.get(match.group(1)) if match else None
        expected = record.digest if record is not None else self._dummy
        if not hmac.compare_digest(expected, self._digest(presented, secret)) or record is None:
            return "unknown", None
        if record.revoked is not None:
            return "revoked", record
        return "ok", record

    def touch(self, record: KeyRecord) -> None:
        """Record that ``record`` was used (at most once a minute per key: a write per request
        would serialise the server on SQLite)."""
        now = time.monotonic()
        last = self._touched.get(record.name)
        if last is not None and now - last < _TOUCH_EVERY:
            return
        self._touched[record.name] = now
        try:
            with self._connect() as connection:
                connection.execute("UPDATE api_keys SET last_used = ? WHERE name = ?", (_now(), record.name))
        except sqlite3.Error:
            pass  # bookkeeping only: a locked database must not fail the request
