"""The CLI's identity and recovery commands: ``id``, ``init``, ``recover``, and the
passphrase that ``serve`` asks for. Errors are raised as ``statebus.errors`` and
printed by ``cli.main`` as one line."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import anyio

from .datadir import DataDir
from .errors import IdentityError, PeerUnreachable
from .identity import KEY_FILE, Identity
from .settings import DEFAULT_PORT, Settings

PASSPHRASE_ENV = "STATEBUS_PASSPHRASE"


def passphrase_for(data_dir: Path) -> str | None:
    """The passphrase to open ``data_dir``'s key: None if it is not sealed (or not made
    yet), else ``$STATEBUS_PASSPHRASE``, else asked on the terminal."""
    if not (data_dir / KEY_FILE).exists() or not Identity.is_sealed(data_dir):
        return os.environ.get(PASSPHRASE_ENV)
    given = os.environ.get(PASSPHRASE_ENV)
    if given is not None:
        return given
    if not sys.stdin.isatty():
        raise IdentityError(
            f"the key in {data_dir} is sealed: set {PASSPHRASE_ENV} or run on a terminal"
        )
    return getpass.getpass(f"passphrase for {data_dir / KEY_FILE}: ")


def _new_passphrase() -> str:
    given = os.environ.get(PASSPHRASE_ENV)
    if given is not None:
        if not given:
            raise IdentityError(f"{PASSPHRASE_ENV} is empty; an empty passphrase seals nothing")
        return given
    if not sys.stdin.isatty():
        raise IdentityError(f"set {PASSPHRASE_ENV} or run on a terminal to choose a passphrase")
    first = getpass.getpass("new passphrase: ")
    if first != getpass.getpass("the same passphrase again: "):
        raise IdentityError("the two passphrases differ; nothing was changed")
    if not first:
        raise IdentityError("an empty passphrase seals nothing; nothing was changed")
    return first


def share_address(datadir: DataDir) -> str:
    """``host:port`` a friend dials: where the node last said it listens, else the default."""
    address = datadir.read_address()
    if address is not None:
        parts = urlsplit(address["url"])
        if parts.hostname and parts.port:
            host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
            return f"{host}:{parts.port}"
    return f"127.0.0.1:{DEFAULT_PORT}"


def identity_command(args: argparse.Namespace) -> int:
    """``statebus id``: the node id, then the share line (the key is made if missing)."""
    datadir = DataDir(args.data)
    datadir.ensure()
    if (args.data / KEY_FILE).exists():
        node_id = Identity.recorded_id(args.data)
    else:
        node_id = Identity.load_or_create(args.data).node_id
    sys.stdout.write(f"{node_id}\n{node_id}@{share_address(datadir)}\n")
    sys.stdout.flush()
    return 0


def init_command(args: argparse.Namespace) -> int:
    """``statebus init [--passphrase]``: make the key; seal it with a passphrase."""
    datadir = DataDir(args.data)
    datadir.ensure()
    exists = (args.data / KEY_FILE).exists()
    if exists and args.passphrase and Identity.is_sealed(args.data):
        raise IdentityError(f"the key in {args.data} is sealed already")
    identity = Identity.load(args.data) if exists else Identity.generate()
    if args.passphrase:
        identity.seal(args.data, _new_passphrase())
    elif not exists:
        identity.save(args.data)
    print(identity.node_id)
    state = "sealed with a passphrase" if args.passphrase else "kept unsealed (0600)"
    made = "existing key" if exists else "new key"
    print(f"{made} in {args.data / KEY_FILE}, {state}", file=sys.stderr)
    return 0


def recover_command(args: argparse.Namespace) -> int:
    """``statebus recover --from ID@HOST:PORT``: fetch the own namespace back from a friend."""
    from .federation import PeerAddress
    from .federation._recover import Recovered, recover

    friend = PeerAddress.parse(args.source)
    if not (args.data / KEY_FILE).exists():
        raise IdentityError(
            f"no {KEY_FILE} in {args.data}: put the old key there first (recover needs it)"
        )
    identity = Identity.load(args.data, passphrase_for(args.data))
    if friend.node_id == identity.node_id:
        raise IdentityError("--from names this node itself; name a friend that holds its data")
    settings = Settings(data_dir=args.data)

    async def run() -> Recovered:
        try:
            with anyio.fail_after(args.timeout):
                return await recover(settings, identity, friend)
        except TimeoutError:
            raise PeerUnreachable(f"{friend} did not finish within {args.timeout:g} s") from None

    result = asyncio.run(run())
    print(
        f"restored {result.documents} documents ({result.values} with a value), "
        f"{result.entries} signed entries from {result.friend} in {result.seconds:.1f} s"
    )
    print(f"every entry verified as signed by {identity.node_id}")
    if result.refused:
        print(f"refused {result.refused} entries that did not verify (not stored)")
    print(
        "sharing rules (/_acl) never leave a node: share again "
        "(statebus share), or import them from an export"
    )
    return 0
