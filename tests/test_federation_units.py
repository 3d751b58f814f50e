"""Federation's small parts on their own: share lines, frames, the signed challenge."""

from __future__ import annotations

import base64

import pytest

from statebus.errors import (
    InvalidBody,
    InvalidNodeId,
    NotAuthenticated,
    PeerAuthFailed,
    ProtocolError,
)
from statebus.federation import PeerAddress
from statebus.federation._auth import MAX_SKEW, Challenges, Dial
from statebus.federation._wire import (
    Carried,
    Control,
    FrameReader,
    decode_all,
    encode_control,
    encode_entry,
)
from statebus.identity import Identity
from statebus.store import Entry

ID = Identity.generate().node_id


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        (f"{ID}@example.org", "example.org", 8765),
        (f"{ID}@127.0.0.1:9000", "127.0.0.1", 9000),
        (f"{ID.upper()}.onion@[::1]:7", "::1", 7),
        (f" {ID}@[fe80::1] ", "fe80::1", 8765),
    ],
)
def test_share_lines(text: str, host: str, port: int) -> None:
    address = PeerAddress.parse(text)
    assert (address.node_id, address.host, address.port) == (ID, host, port)
    assert PeerAddress.parse(str(address)) == address


@pytest.mark.parametrize(
    "text",
    [ID, f"@{ID}", f"{ID}@", f"{ID}@host:0", f"{ID}@host:x", f"{ID}@[::1", f"{ID}@a b", "x@h"],
)
def test_bad_share_lines(text: str) -> None:
    with pytest.raises(InvalidNodeId):
        PeerAddress.parse(text)


def test_frames_survive_any_cut() -> None:
    entry = Entry(f"/~{ID}/posts/ü", b"\x01\x02update", ID, bytes(range(64)))
    want = encode_control("want", key=f"/~{ID}/")
    data = encode_entry(entry, public=True) + want + encode_entry(entry)
    for cut in range(len(data)):
        reader = FrameReader()
        frames = reader.feed(data[:cut]) + reader.feed(data[cut:])
        assert reader.pending == 0
        assert [type(f) for f in frames] == [Carried, Control, Carried]
        first, last = frames[0], frames[2]
        assert isinstance(first, Carried) and isinstance(last, Carried)
        assert first.public and not last.public
        assert (first.entry.key, first.entry.update, first.entry.author, first.entry.signature) == (
            entry.key,
            entry.update,
            entry.author,
            entry.signature,
        )
    assert decode_all(data)[1] == Control("want", {"t": "want", "key": f"/~{ID}/"})


@pytest.mark.parametrize(
    "data",
    [
        b"\x09\x00\x00\x00\x00",  # unknown kind
        b"\x02\x00\x00\x00\x02[]",  # control that is not an object
        b"\x02\x00\x00\x00\x01{",  # not JSON
        b"\x01\x00\x00\x00\x01\x00",  # truncated entry
        b"\x01\x7f\xff\xff\xff",  # over the limit
        b"\x02\x00\x00\x00\x05{}",  # ends inside a frame
    ],
)
def test_bad_frames_are_protocol_errors(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_all(data)


def test_the_challenge_proves_both_ids() -> None:
    server, client = Identity.generate(), Identity.generate()
    challenges = Challenges(server)
    dial = Dial.start(client, server.node_id)
    proof = dial.proof(challenges.answer(dial.hello(), now=1000.0), now=1000.0)
    assert challenges.admit(proof, now=1001.0) == client.node_id
    with pytest.raises(NotAuthenticated, match="unknown or used nonce"):
        challenges.admit(proof, now=1001.0)


def test_a_server_that_is_someone_else_is_refused() -> None:
    server, other, client = Identity.generate(), Identity.generate(), Identity.generate()
    dial = Dial.start(client, other.node_id)  # we think we dial `other`
    with pytest.raises(PeerAuthFailed, match="the node there is"):
        dial.proof(Challenges(server).answer(dial.hello()))
    answer = Challenges(server).answer(dial.hello())
    answer["server"] = other.node_id  # claiming the id without its key
    with pytest.raises(PeerAuthFailed, match="does not hold the key"):
        dial.proof(answer)


def test_stale_clocks_and_expired_nonces_are_refused() -> None:
    server, client = Identity.generate(), Identity.generate()
    challenges = Challenges(server)
    dial = Dial.start(client, server.node_id)
    answer = challenges.answer(dial.hello(), now=1000.0)
    with pytest.raises(PeerAuthFailed, match="clock"):
        dial.proof(answer, now=1000.0 + MAX_SKEW + 1)
    proof = dial.proof(answer, now=1000.0)
    with pytest.raises(NotAuthenticated, match="unknown or used nonce"):
        challenges.admit(proof, now=1000.0 + 120)  # the nonce expired after a minute


def test_a_proof_for_another_client_or_a_tampered_one_is_refused() -> None:
    server, client, thief = Identity.generate(), Identity.generate(), Identity.generate()
    challenges = Challenges(server)
    dial = Dial.start(client, server.node_id)
    proof = dial.proof(challenges.answer(dial.hello()))
    stolen = {**proof, "client": thief.node_id}
    with pytest.raises(NotAuthenticated, match="given to another node"):
        challenges.admit(stolen)
    dial = Dial.start(client, server.node_id)
    proof = dial.proof(challenges.answer(dial.hello()))
    signature = base64.b64decode(proof["proof"])
    proof["proof"] = base64.b64encode(bytes([signature[0] ^ 1]) + signature[1:]).decode()
    with pytest.raises(NotAuthenticated, match="not signed by"):
        challenges.admit(proof)
    with pytest.raises(InvalidBody):
        challenges.admit({"client": client.node_id, "nonce": "!!", "timestamp": 1, "proof": ""})
