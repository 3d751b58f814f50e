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
