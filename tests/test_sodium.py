"""Ed25519 verification through ctypes: the same verdicts as PyNaCl."""

from __future__ import annotations

import os

import nacl.bindings
import nacl.signing
import pytest

from statebus import _sodium


@pytest.fixture(params=["ctypes", "pynacl"])
def through(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "pynacl":
        monkeypatch.setattr(_sodium, "_LIB", None)  # the fallback where ctypes finds nothing
    else:
        assert _sodium._LIB is not None, "PyNaCl's libsodium should be reachable here"
    return str(request.param)


def test_pynacl_signatures_verify_and_tampered_ones_do_not(through: str) -> None:
    seed = os.urandom(32)
    public, _secret = nacl.bindings.crypto_sign_seed_keypair(seed)
    for message in (b"", b"x", os.urandom(5000)):
        signature = nacl.signing.SigningKey(seed).sign(message).signature
        assert _sodium.verify_detached(signature, message, public)
        flipped = bytes([signature[0] ^ 1]) + signature[1:]
        assert not _sodium.verify_detached(flipped, message, public)
        assert not _sodium.verify_detached(signature, message + b"!", public)
        assert not _sodium.verify_detached(signature[:-1], message, public)
        assert not _sodium.verify_detached(signature, message, public[:-1])


def _cases() -> list[tuple[bytes, bytes, bytes, bool]]:
    """(signature, message, public key, valid) for good entries and every kind of bad."""
    seed, other = os.urandom(32), os.urandom(32)
    public, _ = nacl.bindings.crypto_sign_seed_keypair(seed)
    stranger, _ = nacl.bindings.crypto_sign_seed_keypair(other)
    cases = []
    for message in (b"", b"x", os.urandom(100), os.urandom(70_000)):
        signature = nacl.signing.SigningKey(seed).sign(message).signature
        cases += [
            (signature, message, public, True),
            (
                bytes([signature[5] ^ 4]).join([signature[:5], signature[6:]]),
                message,
                public,
                False,
            ),
            (signature, message + b"!", public, False),
            (signature, message, stranger, False),
            (signature[:-1], message, public, False),
            (signature + b"\0", message, public, False),
            (signature, message, public[:-1], False),
        ]
    return cases


@pytest.mark.parametrize("batched", [True, False])
def test_many_signatures_at_once_get_the_same_verdicts(
    batched: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if batched:
        # make test builds the compiled loop (setup.py); without it this would pass on
        # the fallback and hide a broken build
        assert _sodium.BATCHED, "statebus/_batchverify.c is not built"
    else:
        monkeypatch.setattr(_sodium, "_BATCH", None)
    cases = _cases()
    items = [(signature, message, key) for signature, message, key, _ in cases]
    assert _sodium.verify_many(items) == [valid for *_, valid in cases]
    assert _sodium.verify_many([]) == []


def test_the_compiled_loop_refuses_records_that_do_not_add_up() -> None:
    from statebus import _batchverify

    batch = _sodium._BATCH
    assert batch is not None
    _, address = batch
    signature = nacl.signing.SigningKey(os.urandom(32)).sign(b"hi").signature
    record = signature + bytes(32) + (2).to_bytes(4, "big") + b"hi"
    assert _batchverify.verify_batch(address, record, 1) == b"\0"  # a wrong key: refused
    for packed, count in ((record, 2), (record[:-1], 1), (record + b"x", 1), (record[:50], 1)):
        with pytest.raises(ValueError, match="do not match their count"):
            _batchverify.verify_batch(address, packed, count)
    with pytest.raises(ValueError, match="no verify function"):
        _batchverify.verify_batch(0, record, 1)
