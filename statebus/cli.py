"""The command line: ``serve`` a node, and small clients of a running one.

Errors are one line on stderr (``statebus: error: ...``) and a non-zero exit,
never a traceback. Clients find the node through ``--node URL`` or the address
the node records in its data directory, and send the owner token from there.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import anyio
import httpx

from ._commands import identity_command, init_command, passphrase_for, recover_command
from .datadir import DataDir
from .errors import StatebusError
from .quotas import Limits
from .settings import DEFAULT_MAX_BODY, DEFAULT_PORT, Settings

LIMIT_FLAGS = [  # (flag, Limits field, what it counts)
    ("--limit-writes", "writes_per_minute", "updates a peer may push per minute"),
    ("--limit-bytes", "write_bytes_per_minute", "bytes a peer may push per minute"),
    ("--limit-requests", "requests_per_minute", "requests a visitor may make per minute"),
    ("--limit-streams", "open_streams", "streams a visitor may hold open at once"),
    ("--limit-document", "document_bytes", "bytes of the largest entry a peer may push"),
]
EXIT_ERROR = 1
SWITCH_INTERVAL = 1e-4  # seconds a thread holds the GIL while another waits for it (see _serve)
COMMANDS = {"id": identity_command, "init": init_command, "recover": recover_command}
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _data_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(".statebus"),
        metavar="DIR",
        help="the node's data directory (default: ./.statebus)",
    )


def _client_args(parser: argparse.ArgumentParser) -> None:
    _data_arg(parser)
    parser.add_argument(
        "--node",
        metavar="URL",
        help="the node to talk to (default: the address the node at --data recorded)",
    )
    parser.add_argument(
        "--token",
        help="the owner token (default: $STATEBUS_TOKEN, then DATA/owner.token)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="statebus",
        description="A peer-to-peer node of Yjs CRDT documents behind a reactive HTTP server.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="run a node", description="Run a node until Ctrl-C (or SIGTERM)."
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    serve.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port to listen on; 0 picks a free one (default: {DEFAULT_PORT})",
    )
    _data_arg(serve)
    serve.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="ID@HOST:PORT",
        help="a friend's node to join (repeatable; the port defaults to 8765)",
    )
    serve.add_argument(
        "--max-body",
        type=int,
        default=DEFAULT_MAX_BODY,
        metavar="BYTES",
        help="largest request body accepted (default: 16 MiB)",
    )
    bumps = serve.add_argument_group(
        "speed bumps", "limits for peers and visitors (the owner has none); past them 429 or 413"
    )
    defaults = Limits()
    for flag, field, unit in LIMIT_FLAGS:
        bumps.add_argument(
            flag,
            type=int,
            default=getattr(defaults, field),
            dest=field,
            metavar="N",
            help=f"{unit} (default: {getattr(defaults, field)})",
        )
    serve.add_argument(
        "--app",
        default="apps.twitter_clone",
        metavar="MODULE",
        help="the app shown at / (files under /_app/); '' for none (default: apps.twitter_clone)",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="how much the node logs (default: info)",
    )

    get = commands.add_parser("get", help="print a key's value as JSON")
    get.add_argument("key", help="the key, e.g. /profile or /posts/ for a folder listing")
    _client_args(get)

    put = commands.add_parser("put", help="set a key's value (a JSON object)")
    put.add_argument("key", help="the key, e.g. /profile")
    put.add_argument("value", help='the new value, e.g. \'{"name": "Ada"}\'')
    put.add_argument(
        "--encrypt-to",
        nargs="*",
        metavar="ID",
        help="seal the key end to end to these node ids (and you); naming others later "
        "re-keys it (a friend left out cannot read what comes after); no ids: only you",
    )
    _client_args(put)

    watch = commands.add_parser(
        "watch", help="stream a key's changes (like curl -N), one JSON line per event"
    )
    watch.add_argument("key", help="the key or folder, e.g. /profile or /posts/")
    watch.add_argument(
        "--raw", action="store_true", help="print the Server-Sent Events as they arrive"
    )
    _client_args(watch)

    ident = commands.add_parser(
        "id",
        help="print the node id and the share line a friend passes to --peer",
        description="Print the node id (line 1) and the share line <id>@<host:port> (line 2). "
        "Makes the key if the data directory has none.",
    )
    _data_arg(ident)

    init = commands.add_parser(
        "init",
        help="make the node's key; --passphrase seals it",
        description="Make the node's key pair if missing. With --passphrase, seal it "
        "(Argon2id + secretbox): serve then asks for the passphrase on a terminal or "
        "reads $STATEBUS_PASSPHRASE.",
    )
    _data_arg(init)
    init.add_argument(
        "--passphrase",
        action="store_true",
        help="seal the key with a passphrase (asked twice, or $STATEBUS_PASSPHRASE)",
    )

    recover = commands.add_parser(
        "recover",
        help="fetch this node's own data back from a friend",
        description="On a data directory holding only the old identity.key, fetch the "
        "node's own namespace back from a friend that holds it, verify every signature, "
        "and report what was restored. Then serve as usual.",
    )
    recover.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="ID@HOST:PORT",
        help="the friend's share line",
    )
    _data_arg(recover)
    recover.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="give up after this long (default: 300)",
    )
    share = commands.add_parser(
        "share",
        help="share a key or folder (a trailing /): public, with friends, or private again",
        description="Changes the sharing rules (/_acl) of the running node of --data. "
        "Private is the default for every key; a rule on a folder covers every key under it.",
    )
    share.add_argument("key", help="the key or folder, e.g. /profile or /posts/")
    who = share.add_mutually_exclusive_group()
    who.add_argument("--public", action="store_true", help="anyone may read it")
    who.add_argument(
        "--with", dest="friends", nargs="+", metavar="ID", help="only these node ids may read it"
    )
    who.add_argument("--private", action="store_true", help="only the owner may read it")
    share.add_argument(
        "--writers",
        nargs="*",
        metavar="ID",
        help="these node ids may also write it (a group forum); no ids: nobody else writes",
    )
    _client_args(share)

    export = commands.add_parser(
        "export",
        help="write the whole node (keys, log, sharing) to one passphrase-encrypted file",
        description="Passphrase from $STATEBUS_BACKUP_PASSPHRASE, or asked twice on a terminal. "
        "Safe while the node runs.",
    )
    export.add_argument("file", type=Path, help="the backup file to write (must not exist)")
    _data_arg(export)

    restore = commands.add_parser(
        "import",
        help="restore a backup made by export into a new data directory",
        description="Passphrase from $STATEBUS_BACKUP_PASSPHRASE, or asked on a terminal. "
        "Nothing is written unless the whole file decrypts and checks out.",
    )
    restore.add_argument("file", type=Path, help="the backup file to read")
    _data_arg(restore)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command in COMMANDS:
            return COMMANDS[args.command](args)
        if args.command in ("export", "import"):
            return _backup(args)
        return _client(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `statebus id | head -1`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except BaseException as exc:
        error = _statebus_error(exc)
        if error is None:
            raise
        _fail(error.detail)


def _statebus_error(exc: BaseException) -> StatebusError | None:
    """The StatebusError behind ``exc``, also when task groups wrapped it."""
    if isinstance(exc, StatebusError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _statebus_error(inner)
            if found is not None:
                return found
    return None


def _fail(message: str) -> NoReturn:
    print(f"statebus: error: {message}", file=sys.stderr)
    sys.exit(EXIT_ERROR)


# -- serve -------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    import uvloop

    from .federation import PeerAddress
    from .runner import NodeServer

    if not 0 <= args.port <= 65535:
        _fail(f"--port {args.port} is not a port number (0-65535)")
    if args.max_body < 1:
        _fail("--max-body must be at least 1 byte")
    for flag, field, _unit in LIMIT_FLAGS:
        if getattr(args, field) < 1:
            _fail(f"{flag} must be at least 1")
    limits = Limits(**{field: getattr(args, field) for _flag, field, _unit in LIMIT_FLAGS})
    peers = tuple(str(PeerAddress.parse(peer)) for peer in args.peer)
    settings = Settings(
        data_dir=args.data,
        host=args.host,
        port=args.port,
        peers=peers,
        passphrase=passphrase_for(args.data),
        max_body=args.max_body,
        limits=limits,
        app=args.app or None,
    )
    _configure_logging(args.log_level)

    async def run() -> None:
        async with NodeServer(settings, log_level=args.log_level) as node:
            assert node.identity is not None
            print(f"statebus node {node.identity.node_id}", flush=True)
            print(f"  listening on {node.url}  (data in {settings.data_dir})", flush=True)
            print(f"  open {node.url}/_login?token={node.owner_token}", flush=True)
            stopping = anyio.Event()
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

                async def on_signal() -> None:
                    async for _ in signals:
                        node.stop()
                        stopping.set()
                        return

                async with anyio.create_task_group() as tg:
                    tg.start_soon(on_signal)
                    await stopping.wait()
                    tg.cancel_scope.cancel()

    # Peers' signatures are verified in threads that take the GIL between chunks
    # (``_sodium.verify_many``). At CPython's default 5 ms switch interval such a
    # thread waited up to that long for it whenever the loop was busy: a peer's
    # pushes went in about 15% slower (bench/replication.py). It matters only
    # while a thread waits for the GIL.
    sys.setswitchinterval(SWITCH_INTERVAL)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())
    return 0


def _configure_logging(level: str) -> None:
    import logging

    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # peer links make one request per batch of entries: httpx's line per request is noise
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))


# -- backups -----------------------------------------------------------------


def _backup_passphrase(*, confirm: bool) -> str:
    passphrase = os.environ.get("STATEBUS_BACKUP_PASSPHRASE")
    if passphrase is not None:
        return passphrase
    if not sys.stdin.isatty():
        _fail("no passphrase: set STATEBUS_BACKUP_PASSPHRASE or run on a terminal")
    passphrase = getpass.getpass("backup passphrase: ")
    if confirm and getpass.getpass("again: ") != passphrase:
        _fail("the passphrases differ")
    return passphrase


def _backup(args: argparse.Namespace) -> int:
    from . import backup

    if args.command == "export":
        size = backup.export(args.data, args.file, _backup_passphrase(confirm=True))
        print(
            f"wrote {args.file} ({size} bytes, encrypted): the key pair, the owner token, the log"
        )
        return 0
    names = backup.restore(args.file, args.data, _backup_passphrase(confirm=False))
    print(f"restored {', '.join(names)} into {args.data}")
    return 0


# -- clients -----------------------------------------------------------------


def _client(args: argparse.Namespace) -> int:
    datadir = DataDir(args.data)
    url = args.node
    if not url:
        address = datadir.read_address()
        if address is None:
            _fail(f"no running node recorded in {args.data}; start one or pass --node URL")
        url = address["url"]
    token = args.token or os.environ.get("STATEBUS_TOKEN") or datadir.read_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    key = args.key if args.key.startswith("/") else "/" + args.key
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
            if args.command == "get":
                return _get(http, key)
            if args.command == "put":
                return _put(http, key, args.value, args.encrypt_to)
            if args.command == "share":
                return _share(http, key, args)
            return _watch(http, key, raw=args.raw)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the node at {url}: {exc}")


def _check(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        body = response.json()
        detail = f"{body['error']}: {body['detail']}"
    except (ValueError, KeyError, TypeError):
        detail = response.text.strip() or response.reason_phrase
    _fail(f"{response.status_code} {detail}")


def _get(http: httpx.Client, key: str) -> int:
    response = http.get(key, headers={"Accept": "application/json"})
    _check(response)
    print(json.dumps(response.json(), indent=2, ensure_ascii=False))
    return 0


def _put(http: httpx.Client, key: str, value: str, encrypt_to: list[str] | None) -> int:
    try:
        json.loads(value)
    except ValueError as exc:
        _fail(f"the value is not valid JSON: {exc}")
    headers = {"Content-Type": "application/json"}
    if encrypt_to is not None:
        headers["Encrypt-To"] = ", ".join(encrypt_to)
    response = http.put(key, content=value.encode(), headers=headers)
    _check(response)
    print(json.dumps(response.json()))
    return 0


def _share(http: httpx.Client, key: str, args: argparse.Namespace) -> int:
    rule: dict[str, object] = {}
    if args.public:
        rule["read"] = "public"
    elif args.friends:
        rule["read"] = args.friends
    elif args.private:
        rule["read"] = "private"
    if args.writers is not None:
        rule["write"] = args.writers
    if not rule:
        _fail("say who may read it (--public, --with ID..., --private) or write it (--writers)")
    response = http.patch(
        "/_acl",
        content=json.dumps({key: rule}).encode(),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    _check(response)
    current = http.get("/_acl", headers={"Accept": "application/json"})
    _check(current)
    print(json.dumps({key: current.json().get(key)}, ensure_ascii=False))
    return 0


def _watch(http: httpx.Client, key: str, *, raw: bool) -> int:
    headers = {"Accept": "text/event-stream"}
    with http.stream("GET", key, headers=headers, timeout=httpx.Timeout(30, read=None)) as response:
        if not response.is_success:
            response.read()
            _check(response)
        for line in response.iter_lines():
            if raw:
                print(line, flush=True)
            elif line.startswith("data:"):
                event = json.loads(line[5:])
                event.pop("update", None)
                print(json.dumps(event, ensure_ascii=False), flush=True)
    return 0
