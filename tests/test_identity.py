"""statebus.identity against published vectors and real PyNaCl: no mocks."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import struct
import threading
import unicodedata
from pathlib import Path

import nacl.exceptions
import nacl.pwhash.argon2id as argon2id
import pytest

from statebus.errors import (
    BadSignature,
    DecryptionError,
    IdentityError,
    InvalidKey,
    InvalidNodeId,
    ProtocolError,
    StatebusError,
    VerificationError,
)
from statebus.identity import (
    AUTH_TAG,
    ENTRY_TAG,
    KEY_FILE,
    Identity,
    KdfLimits,
    NodeId,
    SignedEntry,
    Verifier,
    auth_message,
    box_public_key,
    entry_message,
    node_id_from_public_key,
    parse_node_id,
    public_key_from_node_id,
    seal_to,
    sign_entry,
    verify_entry,
    verify_signature,
)

# RFC 8032 section 7.1, TEST 1: the Ed25519 secret key (seed), its public key, and the
# signature of the empty message.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_EMPTY_SIG = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555"
    "fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
# Tor's own test suite, src/test/test_hs_common.c, test_build_address(): the v3 onion
# address of that public key (made there by src/test/hs_build_address.py per prop224).
TOR_ADDRESS = "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkenl5sid"
# The same file, test_validate_address(): addresses Tor rejects with "invalid checksum"
# (the first "taken from prop224").
TOR_BAD_CHECKSUMS = [
    "l5satjgud6gucryazcyvyvhuxhr74u6ygigiuyixe3a6ysis67ororad",
    "btojiu7nu5y5iwut64eufevogqdw4wmqzugnoluw232r4t3ecsfv37ad",
]
BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
FAST = KdfLimits(opslimit=argon2id.OPSLIMIT_MIN, memlimit=argon2id.MEMLIMIT_MIN)
NS = NodeId(TOR_ADDRESS)


def onion(raw: bytes) -> str:
    return base64.b32encode(raw).decode().lower()


# --- node ids ---------------------------------------------------------------


def test_tor_vector_from_public_key() -> None:
    assert node_id_from_public_key(RFC8032_PUBLIC) == TOR_ADDRESS


def test_tor_vector_from_rfc8032_seed() -> None:
    identity = Identity.from_seed(RFC8032_SEED)
    assert identity.public_key == RFC8032_PUBLIC
    assert identity.node_id == TOR_ADDRESS
    assert identity.sign(b"") == RFC8032_EMPTY_SIG


def test_tor_vector_parses_in_any_case_with_or_without_onion() -> None:
    for text in (
        TOR_ADDRESS,
        TOR_ADDRESS.upper(),
        TOR_ADDRESS + ".onion",
        TOR_ADDRESS.upper() + ".ONION",
    ):
        assert parse_node_id(text) == TOR_ADDRESS
        assert public_key_from_node_id(text) == RFC8032_PUBLIC


@pytest.mark.parametrize("address", TOR_BAD_CHECKSUMS)
def test_tor_bad_checksum_vectors_are_refused(address: str) -> None:
    with pytest.raises(InvalidNodeId, match="checksum mismatch: a character is mistyped"):
        parse_node_id(address)


def test_round_trip_id_and_key() -> None:
    for _ in range(50):
        key = os.urandom(32)
        node_id = node_id_from_public_key(key)
        assert len(node_id) == 56
        assert node_id == node_id.lower()
        assert public_key_from_node_id(node_id) == key
        assert parse_node_id(node_id.upper()) == node_id


def test_every_single_character_change_is_refused() -> None:
    # The checksum is 16 bits, so this holds for this id, not for every id: for a random
    # id, about 1 in 40 has one substitution that the checksum misses.
    for position in range(56):
        for char in BASE32:
            if char == TOR_ADDRESS[position]:
                continue
            typo = TOR_ADDRESS[:position] + char + TOR_ADDRESS[position + 1 :]
            with pytest.raises(InvalidNodeId):
                parse_node_id(typo)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "56 base32 characters, got 0"),
        (TOR_ADDRESS[:-1], "56 base32 characters, got 55"),
        (TOR_ADDRESS + "a", "56 base32 characters, got 57"),
        (TOR_ADDRESS + ".onion.onion", "56 base32 characters, got 62"),
        (TOR_ADDRESS + ".com", "56 base32 characters, got 60"),
        (" " + TOR_ADDRESS[1:], "' ' at position 0 is not allowed"),
        (TOR_ADDRESS[:10] + "1" + TOR_ADDRESS[11:], "'1' at position 10 is not allowed"),
        (TOR_ADDRESS[:10] + "0" + TOR_ADDRESS[11:], "'0' at position 10 is not allowed"),
        (TOR_ADDRESS[:55] + "=", "'=' at position 55 is not allowed"),
        (TOR_ADDRESS[:3] + "é" + TOR_ADDRESS[4:], "'é' at position 3 is not allowed"),
        # The Kelvin sign lowercases to an ASCII "k": still not a base32 character.
        (TOR_ADDRESS[:14] + "\u212a" + TOR_ADDRESS[15:], "position 14 is not allowed"),
        (TOR_ADDRESS[:-1] + "e", "version byte is 4, expected 3"),
        (TOR_ADDRESS[:-1] + "a", "version byte is 0, expected 3"),
        (TOR_ADDRESS[:5] + "b" + TOR_ADDRESS[6:], "checksum mismatch: a character is mistyped"),
    ],
)
def test_invalid_ids_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(InvalidNodeId, match=message):
        parse_node_id(text)
    with pytest.raises(InvalidNodeId, match=message):
        public_key_from_node_id(text)


def test_version_is_checked_even_with_a_matching_checksum() -> None:
    # A well-formed id of a hypothetical version 4, checksummed for version 4.
    checksum = hashlib.sha3_256(b".onion checksum" + RFC8032_PUBLIC + b"\x04").digest()[:2]
    with pytest.raises(InvalidNodeId, match="version byte is 4"):
        parse_node_id(onion(RFC8032_PUBLIC + checksum + b"\x04"))


def test_public_key_of_wrong_length_is_refused() -> None:
    with pytest.raises(InvalidNodeId, match="32 bytes, got 31"):
        node_id_from_public_key(bytes(31))


# --- the key file ------------------------------------------------------------


def key_doc(data_dir: Path) -> dict[str, object]:
    doc = json.loads((data_dir / KEY_FILE).read_text())
    assert isinstance(doc, dict)
    return doc


def write_doc(data_dir: Path, doc: dict[str, object]) -> None:
    (data_dir / KEY_FILE).write_text(json.dumps(doc))


def test_generate_gives_distinct_keys() -> None:
    a, b = Identity.generate(), Identity.generate()
    assert a.node_id != b.node_id
    assert len(a.public_key) == 32
    assert len(a.sign(b"x")) == 64
    assert a.node_id in repr(a)


def test_save_and_load_unsealed(tmp_path: Path) -> None:
    identity = Identity.generate()
    identity.save(tmp_path)
    doc = key_doc(tmp_path)
    assert doc["version"] == 1
    assert doc["sealed"] is False
    assert doc["node_id"] == identity.node_id
    assert not Identity.is_sealed(tmp_path)
    loaded = Identity.load(tmp_path)
    assert loaded.node_id == identity.node_id
    assert loaded.sign(b"m") == identity.sign(b"m")


def test_key_file_is_0600_and_no_temp_file_is_left(tmp_path: Path) -> None:
    Identity.generate().save(tmp_path / "data")
    Identity.load(tmp_path / "data").seal(tmp_path / "data", "pw", limits=FAST)
    assert stat.S_IMODE(os.stat(tmp_path / "data" / KEY_FILE).st_mode) == 0o600
    assert os.listdir(tmp_path / "data") == [KEY_FILE]


def test_save_and_load_sealed(tmp_path: Path) -> None:
    identity = Identity.generate()
    identity.save(tmp_path / "plain")
    seed = base64.b64decode(str(key_doc(tmp_path / "plain")["seed"]))
    identity.save(tmp_path, "correct horse", limits=FAST)
    doc = key_doc(tmp_path)
    assert doc["sealed"] is True
    assert (doc["opslimit"], doc["memlimit"]) == (FAST.opslimit, FAST.memlimit)
    assert "seed" not in doc
    assert seed not in (tmp_path / KEY_FILE).read_bytes()
    assert base64.b64encode(seed) not in (tmp_path / KEY_FILE).read_bytes()
    assert Identity.is_sealed(tmp_path)
    assert Identity.load(tmp_path, "correct horse").node_id == identity.node_id


def test_passphrase_is_unicode_normalised(tmp_path: Path) -> None:
    identity = Identity.generate()
    identity.save(tmp_path, unicodedata.normalize("NFC", "café"), limits=FAST)
    loaded = Identity.load(tmp_path, unicodedata.normalize("NFD", "café"))
    assert loaded.node_id == identity.node_id


def test_wrong_passphrase(tmp_path: Path) -> None:
    Identity.generate().save(tmp_path, "right", limits=FAST)
    with pytest.raises(IdentityError, match="wrong passphrase") as info:
        Identity.load(tmp_path, "wrong")
    assert isinstance(info.value.__cause__, nacl.exceptions.CryptoError)


def test_sealed_key_without_passphrase(tmp_path: Path) -> None:
    Identity.generate().save(tmp_path, "pw", limits=FAST)
    with pytest.raises(IdentityError, match="sealed: a passphrase is needed"):
        Identity.load(tmp_path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="no identity key at"):
        Identity.load(tmp_path)
    with pytest.raises(IdentityError, match="no identity key at"):
        Identity.is_sealed(tmp_path)


def test_truncated_json(tmp_path: Path) -> None:
    Identity.generate().save(tmp_path, "pw", limits=FAST)
    path = tmp_path / KEY_FILE
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(IdentityError, match="is damaged: not JSON"):
        Identity.load(tmp_path, "pw")


def test_flipped_byte_in_the_box(tmp_path: Path) -> None:
    Identity.generate().save(tmp_path, "pw", limits=FAST)
    doc = key_doc(tmp_path)
    assert isinstance(doc["box"], str)
    box = bytearray(base64.b64decode(doc["box"]))
    box[30] ^= 0x01
    write_doc(tmp_path, doc | {"box": base64.b64encode(box).decode()})
    with pytest.raises(IdentityError, match="cannot unseal"):
        Identity.load(tmp_path, "pw")


def test_unsealed_seed_not_matching_its_node_id(tmp_path: Path) -> None:
    Identity.generate().save(tmp_path)
    write_doc(tmp_path, key_doc(tmp_path) | {"seed": base64.b64encode(RFC8032_SEED).decode()})
    with pytest.raises(IdentityError, match="its seed is not the key of"):
        Identity.load(tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seed": "not base64!"}, "'seed' is not base64"),
        ({"seed": base64.b64encode(bytes(31)).decode()}, "seed is 31 bytes"),
        ({"seed": None}, "'seed' is missing or not str"),
        ({"sealed": "no"}, "'sealed' is missing or not bool"),
        ({"node_id": 5}, "'node_id' is missing or not str"),
        ({"version": 2}, "has version 2; this statebus reads 1"),
        ({"format": "something else"}, "not a statebus identity file"),
    ],
)
def test_damaged_unsealed_fields(tmp_path: Path, change: dict[str, object], message: str) -> None:
    Identity.generate().save(tmp_path)
    write_doc(tmp_path, key_doc(tmp_path) | change)
    with pytest.raises(IdentityError, match=message):
        Identity.load(tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kdf": "scrypt"}, "unknown kdf 'scrypt'"),
        ({"opslimit": True}, "'opslimit' is missing or not int"),
        ({"memlimit": 2**40}, "is damaged: argon2id limits out of range"),
        ({"opslimit": 0}, "is damaged: argon2id limits out of range"),
        ({"salt": "???"}, "'salt' is not base64"),
    ],
)
def test_damaged_sealed_fields(tmp_path: Path, change: dict[str, object], message: str) -> None:
    Identity.generate().save(tmp_path, "pw", limits=FAST)
    write_doc(tmp_path, key_doc(tmp_path) | change)
    with pytest.raises(IdentityError, match=message):
        Identity.load(tmp_path, "pw")


def test_json_that_is_not_an_object(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_text("[1, 2]")
    with pytest.raises(IdentityError, match="not a statebus identity file"):
        Identity.load(tmp_path)


def test_load_or_create_creates_once(tmp_path: Path) -> None:
    first = Identity.load_or_create(tmp_path / "node")
    again = Identity.load_or_create(tmp_path / "node")
    assert first.node_id == again.node_id
    assert stat.S_IMODE(os.stat(tmp_path / "node" / KEY_FILE).st_mode) == 0o600


def test_load_or_create_sealed(tmp_path: Path) -> None:
    first = Identity.load_or_create(tmp_path, "pw", limits=FAST)
    assert Identity.is_sealed(tmp_path)
    assert Identity.load_or_create(tmp_path, "pw").node_id == first.node_id
    with pytest.raises(IdentityError, match="wrong passphrase"):
        Identity.load_or_create(tmp_path, "other")


def test_seal_re_saves_an_unsealed_key(tmp_path: Path) -> None:
    identity = Identity.generate()
    identity.save(tmp_path)
    identity.seal(tmp_path, "pw", limits=FAST)
    assert Identity.is_sealed(tmp_path)
    with pytest.raises(IdentityError, match="a passphrase is needed"):
        Identity.load(tmp_path)
    assert Identity.load(tmp_path, "pw").node_id == identity.node_id
    identity.save(tmp_path)  # and back: unsealing is saving without a passphrase
    assert not Identity.is_sealed(tmp_path)


def test_save_never_replaces_another_nodes_key(tmp_path: Path) -> None:
    mine = Identity.generate()
    mine.save(tmp_path)
    with pytest.raises(IdentityError, match="holds another key"):
        Identity.generate().save(tmp_path)
    assert Identity.load(tmp_path).node_id == mine.node_id


def test_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="empty passphrase"):
        Identity.generate().save(tmp_path, "", limits=FAST)
    assert not (tmp_path / KEY_FILE).exists()


def test_seed_of_wrong_length() -> None:
    with pytest.raises(IdentityError, match="32 bytes, got 16"):
        Identity.from_seed(bytes(16))


# --- signed entries ------------------------------------------------------------


def test_entry_message_layout() -> None:
    message = entry_message(NS, "/posts/é", b"\x01\x02")
    path = "/posts/é".encode()
    assert ENTRY_TAG == b"statebus/entry/v1\0"
    assert message == ENTRY_TAG + RFC8032_PUBLIC + struct.pack("!I", len(path)) + path + b"\x01\x02"


def test_entry_message_is_unambiguous() -> None:
    assert entry_message(NS, "/a", b"bc") != entry_message(NS, "/ab", b"c")
    assert entry_message(NS, "/a", b"") != entry_message(NS, "", b"/a")


def test_entry_path_must_be_encodable() -> None:
    with pytest.raises(InvalidKey):
        entry_message(NS, "/bad\ud800", b"")


def test_sign_and_verify_entry() -> None:
    author = Identity.generate()
    signature = sign_entry(author, author.node_id, "/profile", b"update")
    assert len(signature) == 64
    verify_entry(author.node_id, author.node_id, "/profile", b"update", signature)
    Verifier().verify_entry(author.node_id, author.node_id, "/profile", b"update", signature)


def test_tampered_entries_are_refused() -> None:
    author, other = Identity.generate(), Identity.generate()
    ns = author.node_id
    signature = sign_entry(author, ns, "/profile", b"update")
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    cases = [
        (author.node_id, ns, "/profile", b"updatE", signature),
        (author.node_id, ns, "/profilE", b"update", signature),
        (author.node_id, other.node_id, "/profile", b"update", signature),
        (other.node_id, ns, "/profile", b"update", signature),
        (author.node_id, ns, "/profile", b"update", flipped),
        (author.node_id, ns, "/profile", b"update", signature[:63]),
    ]
    verifier = Verifier()
    for who, namespace, path, update, sig in cases:
        with pytest.raises(BadSignature) as info:
            verify_entry(who, namespace, path, update, sig)
        assert who in info.value.detail
        assert repr(path) in info.value.detail
        with pytest.raises(BadSignature):
            verifier.verify_entry(who, namespace, path, update, sig)
    assert not any(verifier.verify_many(SignedEntry(*case) for case in cases))


def test_verify_many_keeps_order_and_refuses_malformed_authors() -> None:
    a, b = Identity.generate(), Identity.generate()
    good_a = SignedEntry(a.node_id, a.node_id, "/x", b"1", sign_entry(a, a.node_id, "/x", b"1"))
    good_b = SignedEntry(b.node_id, a.node_id, "/y", b"2", sign_entry(b, a.node_id, "/y", b"2"))
    forged = SignedEntry(a.node_id, a.node_id, "/y", b"2", good_b.signature)
    malformed = SignedEntry(NodeId("nope"), a.node_id, "/x", b"1", good_a.signature)
    items = [good_a, forged, good_b, malformed, good_a]
    assert Verifier().verify_many(items) == [True, False, True, False, True]
    assert Verifier().verify_many([]) == []


def test_verifier_cache_is_bounded_lru() -> None:
    authors = [Identity.generate() for _ in range(5)]
    entries = [
        SignedEntry(x.node_id, x.node_id, "/k", b"u", sign_entry(x, x.node_id, "/k", b"u"))
        for x in authors
    ]
    verifier = Verifier(cache_size=3)
    assert verifier.verify_many(entries) == [True] * 5
    assert len(verifier) == 3
    assert verifier.verify_many(entries[:1]) == [True]  # evicted, parsed again
    assert len(verifier) == 3
    with pytest.raises(ValueError):
        Verifier(cache_size=0)


def test_verify_many_from_threads() -> None:
    authors = [Identity.generate() for _ in range(8)]
    entries = [
        SignedEntry(x.node_id, x.node_id, f"/k{i}", b"u", sign_entry(x, x.node_id, f"/k{i}", b"u"))
        for i, x in enumerate(authors)
    ]
    bad = SignedEntry(authors[0].node_id, authors[0].node_id, "/k1", b"u", entries[1].signature)
    batch = [*entries, bad] * 20
    expected = ([True] * 8 + [False]) * 20
    verifier = Verifier(cache_size=2)  # constant eviction under contention
    results: list[list[bool]] = []
    threads = [
        threading.Thread(target=lambda: results.append(verifier.verify_many(batch)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected] * 4
    assert len(verifier) <= 2


def test_verify_signature() -> None:
    identity = Identity.from_seed(RFC8032_SEED)
    verify_signature(identity.node_id, b"", RFC8032_EMPTY_SIG)
    with pytest.raises(BadSignature, match=TOR_ADDRESS):
        verify_signature(identity.node_id, b"x", RFC8032_EMPTY_SIG)


# --- sealing to friends ----------------------------------------------------------


def test_box_keys_are_derived_from_the_signing_keys() -> None:
    identity = Identity.generate()
    assert identity.box_private_key().public_key == box_public_key(identity.node_id)


def test_seal_to_and_unseal() -> None:
    friend, stranger = Identity.generate(), Identity.generate()
    sealed = seal_to(friend.node_id, b"secret symmetric key")
    assert b"secret" not in sealed
    assert friend.unseal(sealed) == b"secret symmetric key"
    assert seal_to(friend.node_id, b"same") != seal_to(friend.node_id, b"same")
    with pytest.raises(DecryptionError, match="not sealed to this node"):
        stranger.unseal(sealed)
    for index in (0, 40, len(sealed) - 1):
        tampered = bytearray(sealed)
        tampered[index] ^= 0x80
        with pytest.raises(DecryptionError):
            friend.unseal(bytes(tampered))
    with pytest.raises(DecryptionError):
        friend.unseal(sealed[:20])


def test_seal_to_a_key_that_is_no_curve_point() -> None:
    # y = 1 encodes the neutral element: a valid id, but no key to seal to.
    weak = node_id_from_public_key(b"\x01" + bytes(31))
    with pytest.raises(InvalidNodeId, match="not a usable Ed25519 key"):
        seal_to(weak, b"data")


# --- peer authentication -----------------------------------------------------------


def test_auth_message_layout() -> None:
    client, server = Identity.generate(), Identity.generate()
    nonce = bytes(range(16))
    message = auth_message(
        "client-hello", nonce, 1_700_000_000, client.node_id, server.node_id, b"x"
    )
    assert message == (
        AUTH_TAG
        + struct.pack("!I", 12)
        + b"client-hello"
        + struct.pack("!I", 16)
        + nonce
        + struct.pack("!q", 1_700_000_000)
        + client.public_key
        + server.public_key
        + b"x"
    )
    signature = client.sign(message)
    verify_signature(client.node_id, message, signature)
    swapped = auth_message(
        "client-hello", nonce, 1_700_000_000, server.node_id, client.node_id, b"x"
    )
    other_purpose = auth_message(
        "server-hello", nonce, 1_700_000_000, client.node_id, server.node_id, b"x"
    )
    later = auth_message("client-hello", nonce, 1_700_000_001, client.node_id, server.node_id, b"x")
    for changed in (swapped, other_purpose, later):
        with pytest.raises(BadSignature):
            verify_signature(client.node_id, changed, signature)


def test_auth_message_refuses_bad_nonce_and_timestamp() -> None:
    ids = (Identity.generate().node_id, Identity.generate().node_id)
    with pytest.raises(ProtocolError, match="16 to 255 bytes, got 8"):
        auth_message("p", bytes(8), 0, *ids)
    with pytest.raises(ProtocolError, match="64 bits"):
        auth_message("p", bytes(16), 2**63, *ids)


# --- the error tree ----------------------------------------------------------------


def test_errors_belong_to_the_statebus_tree() -> None:
    assert issubclass(InvalidNodeId, StatebusError)
    assert issubclass(BadSignature, VerificationError)
    assert issubclass(DecryptionError, VerificationError)
    assert issubclass(IdentityError, StatebusError)
    raised: list[BaseException] = []
    for attempt in (
        lambda: parse_node_id("x"),
        lambda: Identity.from_seed(b""),
        lambda: Identity.generate().unseal(b"junk"),
        lambda: verify_signature(NS, b"m", bytes(64)),
        lambda: KdfLimits(opslimit=0),
    ):
        with pytest.raises(StatebusError) as info:
            attempt()
        raised.append(info.value)
    assert not any(isinstance(error, nacl.exceptions.CryptoError) for error in raised)
