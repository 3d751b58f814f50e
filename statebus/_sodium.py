"""Ed25519 verification straight from libsodium, without holding the GIL.

PyNaCl's bindings hold the GIL while libsodium verifies (about 55 µs), so a
worker thread that verifies stalls the event loop as much as doing it on the
loop would. ctypes releases the GIL around a foreign call; PyNaCl's own
extension exports libsodium's symbols, so the same library, called through
ctypes, lets federation's verifier check signatures in parallel with the loop.
Where that library or its symbols are missing, PyNaCl's bindings do the work
(correct, only slower). :func:`verify_many` goes further: a chunk of
signatures in one call of a compiled loop (``_batchverify.c``), so the GIL is
released once per chunk rather than once per signature. Signing happens in
the store's writer process (``store/_writer.py``), which has a GIL of its own.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import nacl
import nacl.bindings

log = logging.getLogger(__name__)

SIGNATURE_SIZE = 64
PUBLIC_KEY_SIZE = 32


def _well_formed(signature: bytes, public_key: bytes) -> bool:
    """Whether libsodium may be handed these (anything else is simply not valid)."""
    return len(signature) == SIGNATURE_SIZE and len(public_key) == PUBLIC_KEY_SIZE


def _load() -> ctypes.CDLL | None:
    for candidate in sorted(Path(nacl.__file__).parent.glob("_sodium*.so")):
        try:
            lib = ctypes.CDLL(str(candidate))
            lib.crypto_sign_verify_detached.argtypes = [
                ctypes.c_char_p,
                ctypes.c_char_p,
                ctypes.c_ulonglong,
                ctypes.c_char_p,
            ]
            lib.crypto_sign_verify_detached.restype = ctypes.c_int
        except (OSError, AttributeError):
            continue
        return lib
    log.warning("libsodium is not reachable through ctypes: verifying holds the GIL")
    return None


_LIB = _load()  # a handle to a loaded library: immutable, not state


def _batch() -> tuple[Callable[[int, bytes, int], bytes], int] | None:
    """The compiled loop (``_batchverify.c``) and the address of the libsodium function
    it calls, when both are there."""
    if _LIB is None:
        return None
    try:
        from . import _batchverify
    except ImportError:
        log.warning("statebus/_batchverify is not built: verifying takes the GIL per signature")
        return None
    address = ctypes.cast(_LIB.crypto_sign_verify_detached, ctypes.c_void_p).value
    return (_batchverify.verify_batch, address) if address else None


_BATCH = _batch()
BATCHED = _BATCH is not None  # whether verify_many releases the GIL once per call


def verify_detached(signature: bytes, message: bytes, public_key: bytes) -> bool:
    if not _well_formed(signature, public_key):
        return False
    if _LIB is None:
        try:
            nacl.bindings.crypto_sign_open(signature + message, public_key)
        except Exception:  # nacl's BadSignatureError, and ValueError for junk
            return False
        return True
    result: int = _LIB.crypto_sign_verify_detached(signature, message, len(message), public_key)
    return result == 0


def verify_many(items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bool]:
    """``verify_detached`` of each (signature, message, public key), in order; with the
    compiled loop, the GIL is released once for them all."""
    if _BATCH is None:
        return [verify_detached(*item) for item in items]
    verify, address = _BATCH
    packed: list[bytes] = []
    well_formed: list[bool] = []
    for signature, message, public_key in items:
        ok = _well_formed(signature, public_key) and len(message) < 2**32
        well_formed.append(ok)
        if ok:
            packed += (signature, public_key, len(message).to_bytes(4, "big"), message)
    verdicts = iter(verify(address, b"".join(packed), well_formed.count(True)))
    return [ok and next(verdicts) == 1 for ok in well_formed]
