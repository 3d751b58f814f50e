"""Peers prove their ids to each other: one signed challenge each way.

The dialler D sends ``hello`` with a fresh nonce; the dialled node S answers
with its own nonce, a timestamp and its signature over both (purpose
``statebus/peer-server``), so D knows it reached the key behind the id it
dialled. D then signs S's nonce the same way (purpose ``statebus/peer-client``)
and S admits it. Both messages are :func:`statebus.identity.auth_message`:
the purposes keep one side's proof from being replayed as the other's, each
nonce is chosen by the side that checks it and is used once, and timestamps
further than ``MAX_SKEW`` from the checker's clock are refused. A node that
does not hold the key of the id it claims is refused on either side.

The dialler's half raises :class:`PeerAuthFailed`; the dialled node's half
raises request errors (the HTTP answer is the dialler's to read).
"""

from __future__ import annotations

import base64
import binascii
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ..errors import BadSignature, InvalidBody, InvalidNodeId, NotAuthenticated, PeerAuthFailed
from ..identity import Identity, NodeId, auth_message, parse_node_id, verify_signature

CLIENT_PURPOSE = "statebus/peer-client"
SERVER_PURPOSE = "statebus/peer-server"
NONCE_SIZE = 32
MAX_SKEW = 300  # seconds between two nodes' clocks
CHALLENGE_SECONDS = 60.0
MAX_CHALLENGES = 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidBody(f"'{name}' must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidBody(f"'{name}' is not base64") from None


def _int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidBody(f"'{name}' must be an integer")
    return value


def _node(value: Any, name: str) -> NodeId:
    if not isinstance(value, str):
        raise InvalidBody(f"'{name}' must be a node id")
    return parse_node_id(value)


# -- the dialler's half ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dial:
    """One attempt to authenticate to ``server`` as ``identity``."""

    identity: Identity
    server: NodeId
    nonce: bytes

    @classmethod
    def start(cls, identity: Identity, server: NodeId) -> Dial:
        return cls(identity, server, os.urandom(NONCE_SIZE))

    def hello(self) -> dict[str, Any]:
        """The body of ``POST /_fed/hello``."""
        return {"client": self.identity.node_id, "server": self.server, "nonce": _b64(self.nonce)}

    def proof(self, answer: Any, *, now: float | None = None) -> dict[str, Any]:
        """Check the server's answer to ``hello``; return the body of ``POST /_fed/auth``."""
        peer = f"{self.server}"
        try:
            if not isinstance(answer, dict):
                raise InvalidBody("the answer is not a JSON object")
            claimed = _node(answer.get("server"), "server")
            server_nonce = _unb64(answer.get("nonce"), "nonce")
            stamp = _int(answer.get("timestamp"), "timestamp")
            signature = _unb64(answer.get("proof"), "proof")
        except (InvalidBody, InvalidNodeId) as exc:
            raise PeerAuthFailed(f"malformed answer to hello: {exc.detail}", peer=peer) from None
        if claimed != self.server:
            raise PeerAuthFailed(f"the node there is {claimed}, not {self.server}", peer=peer)
        clock = time.time() if now is None else now
        if abs(clock - stamp) > MAX_SKEW:
            raise PeerAuthFailed(f"its clock is {stamp - clock:+.0f} s from ours", peer=peer)
        if len(server_nonce) != NONCE_SIZE:
            raise PeerAuthFailed("its nonce has the wrong size", peer=peer)
        client = self.identity.node_id
        message = auth_message(SERVER_PURPOSE, self.nonce, stamp, client, self.server, server_nonce)
        try:
            verify_signature(self.server, message, signature)
        except BadSignature:
            raise PeerAuthFailed(f"it does not hold the key of {self.server}", peer=peer) from None
        stamp = int(clock)
        signed = auth_message(CLIENT_PURPOSE, server_nonce, stamp, client, self.server, self.nonce)
        return {
            "client": client,
            "nonce": _b64(server_nonce),
            "timestamp": stamp,
            "proof": _b64(self.identity.sign(signed)),
        }


# -- the dialled node's half ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Challenge:
    client: NodeId
    client_nonce: bytes
    made: float


class Challenges:
    """The nonces this node handed to diallers, each good once and for a minute."""

    def __init__(self, identity: Identity) -> None:
        self._identity = identity
        self._open: OrderedDict[bytes, _Challenge] = OrderedDict()

    def answer(self, body: Any, *, now: float | None = None) -> dict[str, Any]:
        """Answer ``POST /_fed/hello``: this node's proof and a nonce for the dialler."""
        if not isinstance(body, dict):
            raise InvalidBody("hello takes a JSON object")
        client = _node(body.get("client"), "client")
        client_nonce = _unb64(body.get("nonce"), "nonce")
        if len(client_nonce) != NONCE_SIZE:
            raise InvalidBody(f"the nonce must be {NONCE_SIZE} bytes")
        clock = time.time() if now is None else now
        self._expire(clock)
        nonce = os.urandom(NONCE_SIZE)
        self._open[nonce] = _Challenge(client, client_nonce, clock)
        while len(self._open) > MAX_CHALLENGES:
            self._open.popitem(last=False)
        own = self._identity.node_id
        stamp = int(clock)
        message = auth_message(SERVER_PURPOSE, client_nonce, stamp, client, own, nonce)
        return {
            "server": own,
            "nonce": _b64(nonce),
            "timestamp": stamp,
            "proof": _b64(self._identity.sign(message)),
        }

    def admit(self, body: Any, *, now: float | None = None) -> NodeId:
        """Check ``POST /_fed/auth``; the dialler's proven id, or NotAuthenticated."""
        if not isinstance(body, dict):
            raise InvalidBody("auth takes a JSON object")
        client = _node(body.get("client"), "client")
        nonce = _unb64(body.get("nonce"), "nonce")
        stamp = _int(body.get("timestamp"), "timestamp")
        signature = _unb64(body.get("proof"), "proof")
        clock = time.time() if now is None else now
        self._expire(clock)
        challenge = self._open.pop(nonce, None)
        if challenge is None:
            raise NotAuthenticated("unknown or used nonce: say hello again")
        if challenge.client != client:
            raise NotAuthenticated("this nonce was given to another node")
        if abs(clock - stamp) > MAX_SKEW:
            raise NotAuthenticated(f"your clock is {stamp - clock:+.0f} s from ours")
        own = self._identity.node_id
        message = auth_message(CLIENT_PURPOSE, nonce, stamp, client, own, challenge.client_nonce)
        try:
            verify_signature(client, message, signature)
        except BadSignature:
            raise NotAuthenticated(f"the proof is not signed by {client}") from None
        return client

    def _expire(self, now: float) -> None:
        while self._open:
            nonce, challenge = next(iter(self._open.items()))
            if now - challenge.made <= CHALLENGE_SECONDS:
                break
            del self._open[nonce]
