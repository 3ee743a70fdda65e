"""``nexus-assets api`` (the serving API on loopback) and ``nexus-assets keys create|list|revoke``.

Both read the pipeline's environment (``NEXUS_CATALOG``, ``NEXUS_DATA_DIR``, ``.env`` in the
current folder) and keep keys under the instance folder (``$DAGSTER_HOME``, else
``./.dagster_home``), so they work from the project folder like every other command.
"""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import socket
import sys
from pathlib import Path

__all__ = ["add_commands", "DEFAULT_PORT"]

DEFAULT_PORT = 8780


def _settings():
    from dotenv import load_dotenv

    load_dotenv(Path.cwd() / ".env", override=False)
    from nexus_assets.settings import Settings

    return Settings.from_env()


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a busy port is :class:`~nexus_assets.serving.PortInUse`."""
    from nexus_assets.serving import PortInUse

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart is not refused over TIME_WAIT
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(host, port) from None
        raise
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    from nexus_assets.api.app import API_PREFIX, create_app
    from nexus_assets.api.keys import KeyStore, instance_folder
    from nexus_assets.api.store import Store
    from nexus_assets.serving import PortInUse

    settings = _settings()
    catalog = settings.catalog()
    keys = KeyStore(instance_folder())
    try:
        sock = _listen(args.host, args.port)
    except OSError as exc:
        reason = str(exc) if isinstance(exc, PortInUse) else f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
        print(f"api: {reason}", file=sys.stderr)
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"api: warning: listening on {args.host}, not loopback", file=sys.stderr)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("nexus_assets.api.access").setLevel(logging.INFO if args.access_log else logging.WARNING)
    app = create_app(catalog=catalog, store=Store(settings.data_dir), keys=keys)
    host, port = sock.getsockname()[:2]
    active = [r for r in keys.records() if r.revoked is None]
    print(f"api       listening on http://{host}:{port}{API_PREFIX}/  (OpenAPI: {API_PREFIX}/openapi.json; Ctrl-C stops)",
          flush=True)
    print(f"          data {settings.data_dir}, catalog {catalog.path}, {len(active)} active key(s) in {keys.path}",
          flush=True)
    if not active:
        print("          no key yet: `nexus-assets keys create --name NAME --all` makes one", flush=True)
    # uvicorn's own access log would print query strings (and so any key sent there): off; the
    # API logs its own line without them. Bounded concurrency: one more connection is a 503.
    config = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False, proxy_headers=False,
                            limit_concurrency=args.max_connections, timeout_keep_alive=5, lifespan="off")
    # uvicorn stops on SIGTERM/SIGINT, then restores these handlers and raises the signal again:
    # with them, a stop is exit status 0, as for the project's other servers
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    return 0


def _split_assets(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(a.strip() for a in text.split(",") if a.strip()))


def _keys_create(args: argparse.Namespace) -> int:
    from nexus_assets.api.keys import DEFAULT_RATE, KeyStore, KeyStoreError, instance_folder

    assets = None if args.all else _split_assets(args.assets)
    if assets is not None:
        known = set(_settings().catalog().keys)
        unknown = [a for a in assets if a not in known]
        if not assets or unknown:
            print(f"keys: not in the catalog: {', '.join(unknown) or '(no asset given)'} "
                  f"(known: {', '.join(sorted(known))})", file=sys.stderr)
            return 2
    store = KeyStore(instance_folder())
    try:
        key = store.create(args.name, assets, args.rate or DEFAULT_RATE)
    except KeyStoreError as exc:
        print(f"keys: {exc}", file=sys.stderr)
        return 2
    record = next(r for r in store.records() if r.name == args.name)
    print(key)  # stdout holds the key alone, for KEY=$(nexus-assets keys create ...)
    print(f"keys: created {record.name!r} (scope {record.scope}, rate {record.rate}); the key above is shown "
          f"once: only its HMAC-SHA256 is kept in {store.path}", file=sys.stderr)
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    from nexus_assets.api.keys import KeyStore, instance_folder

    store = KeyStore(instance_folder())
    records = store.records()
    if not records:
        print(f"no keys in {store.path}")
        return 0
    rows = [("NAME", "STATUS", "SCOPE", "RATE", "CREATED", "LAST USED")]
    rows += [(r.name, "revoked" if r.revoked else "active", r.scope, r.rate, r.created, r.last_used or "never")
             for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    from nexus_assets.api.keys import KeyStore, KeyStoreError, instance_folder

    try:
        KeyStore(instance_folder()).revoke(args.name)
    except KeyStoreError as exc:
        print(f"keys: {exc}", file=sys.stderr)
        return 2
    print(f"keys: revoked {args.name!r} (a running server refuses it from its next request)")
    return 0


def add_commands(commands) -> None:
    """Add ``api`` and ``keys`` to the CLI's subparsers (every option with its help text)."""
    api = commands.add_parser("api", help="serve the materialised partitions over HTTP (the serving API) on loopback",
                              description="Serve forecasts, signals and the record of any asset as of any materialised "
                              "date over HTTP (NEXUS_DATA_DIR, NEXUS_CATALOG); keys from `nexus-assets keys`.")
    api.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback)")
    api.add_argument("--port", type=int, default=DEFAULT_PORT,
                     help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one)")
    api.add_argument("--max-connections", type=int, default=64,
                     help="connections served at once; one more is answered 503 (default 64)")
    api.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True,
                     help="one line per request on stderr: method, path, status, time; never the query string "
                          "(default on)")
    api.set_defaults(run=_api)

    keys = commands.add_parser("keys", help="create, list and revoke the serving API's keys",
                               description="API keys for `nexus-assets api`, stored hashed under the instance folder.")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a key and print it once",
                                description="Create a key and print it once on stdout (only its HMAC is stored).")
    create.add_argument("--name", required=True, help="the key's name (unique; used by list and revoke)")
    scope = create.add_mutually_exclusive_group(required=True)
    scope.add_argument("--assets", metavar="A,B", help="the catalog assets the key may read, comma separated")
    scope.add_argument("--all", action="store_true", help="the key may read every asset")
    create.add_argument("--rate", metavar="LIMITS",
                        help="rate limits, e.g. 100/min or 100/minute;1000/hour (default 100/minute;1000/hour)")
    create.set_defaults(run=_keys_create)
    listing = actions.add_parser("list", help="list the keys: name, status, scope, rate, created, last used (never the key)",
                                 description="List the keys (never the key itself).")
    listing.set_defaults(run=_keys_list)
    revoke = actions.add_parser("revoke", help="revoke a key by name", description="Revoke a key by name.")
    revoke.add_argument("name", help="the key's name")
    revoke.set_defaults(run=_keys_revoke)
