"""The node's key pair, its onion-form id, and every signature statebus makes.

A node id is the Tor v3 onion form of the Ed25519 public key, so it is URL- and
hostname-safe, catches typos, and is the node's onion address:
``base32(pubkey || SHA3-256(b".onion checksum" || pubkey || b"\\x03")[:2] || b"\\x03")``.

``DATA/identity.key`` is JSON, written atomically and 0600. Unsealed::

    {"format": "statebus/identity", "version": 1, "node_id": "<56 chars>",
     "sealed": false, "seed": "<base64 of the 32-byte Ed25519 seed>"}

Sealed: ``"sealed": true`` and, instead of ``seed``, ``"kdf": "argon2id"``,
``"salt"`` (base64, 16 bytes), ``"opslimit"``, ``"memlimit"`` and ``"box"`` (base64
of SecretBox nonce || ciphertext of the seed; key = Argon2id of the NFC, UTF-8
passphrase). ``node_id`` is public: it tells whose key a file holds without the
passphrase, and ``load`` checks the seed against it.

PyNaCl's exceptions become ``statebus.errors`` in ``_nacl_errors`` and nowhere else.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import json
import os
import struct
import tempfile
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NewType, TypeVar

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.pwhash.argon2id as argon2id
import nacl.secret
import nacl.signing
import nacl.utils

from statebus._sodium import verify_detached
from statebus._sodium import verify_many as verify_detached_many
from statebus.errors import (
    BadSignature,
    DecryptionError,
    IdentityError,
    InvalidKey,
    InvalidNodeId,
    ProtocolError,
    StatebusError,
)

NodeId = NewType("NodeId", str)
_T = TypeVar("_T")

KEY_FILE = "identity.key"
PUBLIC_KEY_SIZE = 32
ONION_VERSION = 3
NODE_ID_LENGTH = 56
ENTRY_TAG = b"statebus/entry/v1\0"
AUTH_TAG = b"statebus/auth/v1\0"

_CHECKSUM_PREFIX = b".onion checksum"
_BASE32 = frozenset("abcdefghijklmnopqrstuvwxyz234567")
_FORMAT = "statebus/identity"
_FILE_VERSION = 1


# --- node ids ---------------------------------------------------------------


def _checksum(public_key: bytes) -> bytes:
    return hashlib.sha3_256(_CHECKSUM_PREFIX + public_key + bytes([ONION_VERSION])).digest()[:2]


def node_id_from_public_key(public_key: bytes) -> NodeId:
    """The onion-form id of an Ed25519 public key."""
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise InvalidNodeId(f"an Ed25519 public key is 32 bytes, got {len(public_key)}")
    raw = public_key + _checksum(public_key) + bytes([ONION_VERSION])
    return NodeId(base64.b32encode(raw).decode("ascii").lower())


@functools.lru_cache(maxsize=4096)  # pure, and on every signature's path: memoised
def _decode_node_id(text: str) -> tuple[NodeId, bytes]:
    """Validate ``text`` once, most basic fault first, so the message names the real one."""
    shown = text if len(text) <= 80 else text[:77] + "..."
    candidate = text[:-6] if text[-6:].lower() == ".onion" else text
    if len(candidate) != NODE_ID_LENGTH:
        raise InvalidNodeId(
            f"a node id is {NODE_ID_LENGTH} base32 characters, got {len(candidate)}: {shown!r}"
        )
    for position, char in enumerate(candidate):
        # isascii first: str.lower() maps a few non-ASCII letters (the Kelvin sign) to ASCII.
        if not (char.isascii() and char.lower() in _BASE32):
            raise InvalidNodeId(
                f"a node id uses only a-z and 2-7; {char!r} at position {position} is not allowed"
            )
    candidate = candidate.lower()
    raw = base64.b32decode(candidate, casefold=True)
    public_key, checksum, version = raw[:32], raw[32:34], raw[34]
    if version != ONION_VERSION:
        raise InvalidNodeId(
            f"node id version byte is {version}, expected {ONION_VERSION} (Tor v3 onion form)"
        )
    if checksum != _checksum(public_key):
        raise InvalidNodeId(f"checksum mismatch: a character is mistyped in {candidate!r}")
    return NodeId(candidate), public_key


def parse_node_id(text: str) -> NodeId:
    """Check a node id as typed (any case, optional ``.onion``) and return its normal form."""
    return _decode_node_id(text)[0]


@functools.lru_cache(maxsize=4096)
def public_key_from_node_id(node_id: str) -> bytes:
    """The 32-byte Ed25519 public key inside a node id, validated as ``parse_node_id`` does.

    Memoized (a pure function, bounded): every signed entry names its namespace,
    and decoding base32 and the checksum each time cost more than the signature's hash.
    """
    return _decode_node_id(node_id)[1]


# --- the one place PyNaCl's exceptions are named ------------------------------


@contextlib.contextmanager
def _nacl_errors(error: type[StatebusError], detail: str) -> Iterator[None]:
    """Raise ``error(detail)`` for any PyNaCl failure, keeping the cause chained."""
    try:
        yield
    except nacl.exceptions.CryptoError as exc:
        raise error(detail) from exc


# --- the node's key pair ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KdfLimits:
    """Argon2id cost of sealing the key file; stored in the file, so loading needs no guess."""

    opslimit: int = argon2id.OPSLIMIT_INTERACTIVE
    memlimit: int = argon2id.MEMLIMIT_INTERACTIVE

    def __post_init__(self) -> None:
        # Bounded both ways: a damaged file must not make load() eat the machine.
        ops_ok = argon2id.OPSLIMIT_MIN <= self.opslimit <= argon2id.OPSLIMIT_SENSITIVE
        mem_ok = argon2id.MEMLIMIT_MIN <= self.memlimit <= argon2id.MEMLIMIT_SENSITIVE
        if not (ops_ok and mem_ok):
            raise IdentityError(
                f"argon2id limits out of range: opslimit={self.opslimit}, memlimit={self.memlimit}"
            )


INTERACTIVE = KdfLimits()


def _passphrase_key(passphrase: str, salt: bytes, limits: KdfLimits) -> bytes:
    password = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    with _nacl_errors(IdentityError, "argon2id key derivation failed (out of memory?)"):
        return argon2id.kdf(
            nacl.secret.SecretBox.KEY_SIZE, password, salt, limits.opslimit, limits.memlimit
        )


class Identity:
    """The node's Ed25519 key pair; made once at startup by ``load_or_create``, then read-only.

    Loading and saving a sealed key runs Argon2id and fsync: call them from a thread.
    """

    __slots__ = ("_node_id", "_signing_key")

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        self._signing_key = signing_key
        self._node_id = node_id_from_public_key(bytes(signing_key.verify_key))

    def __repr__(self) -> str:
        return f"Identity(node_id={self._node_id!r})"

    @classmethod
    def generate(cls) -> Identity:
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """The key pair of a 32-byte Ed25519 seed (RFC 8032's secret key)."""
        with _nacl_errors(IdentityError, f"an Ed25519 seed is 32 bytes, got {len(seed)}"):
            return cls(nacl.signing.SigningKey(seed))

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    @property
    def public_key(self) -> bytes:
        return bytes(self._signing_key.verify_key)

    def sign(self, message: bytes) -> bytes:
        """A 64-byte detached Ed25519 signature of ``message``."""
        return self._signing_key.sign(message).signature

    # sealing to friends: Curve25519 keys derived from the Ed25519 ones

    def signing_secret(self) -> bytes:
        """The 64-byte libsodium secret key (seed and public key) that makes the same
        signatures as :meth:`sign`: for the store's writer process, which signs the
        node's entries off the event loop's GIL."""
        _public, secret = nacl.bindings.crypto_sign_seed_keypair(bytes(self._signing_key))
        return bytes(secret)

    def box_private_key(self) -> nacl.public.PrivateKey:
        return self._signing_key.to_curve25519_private_key()

    def unseal(self, sealed: bytes) -> bytes:
        """Open what ``seal_to(self.node_id, ...)`` made; the inverse of ``seal_to``."""
        box = nacl.public.SealedBox(self.box_private_key())
        with _nacl_errors(DecryptionError, "cannot unseal: not sealed to this node, or tampered"):
            return box.decrypt(sealed)

    # the key file

    @staticmethod
    def is_sealed(data_dir: Path) -> bool:
        """Whether ``data_dir``'s key needs a passphrase (so the CLI knows to ask)."""
        path = data_dir / KEY_FILE
        return _field(_read_key_file(path), "sealed", bool, path)

    @staticmethod
    def recorded_id(data_dir: Path) -> NodeId:
        """The id of ``data_dir``'s key, read without a passphrase (an id is public)."""
        path = data_dir / KEY_FILE
        recorded = _field(_read_key_file(path), "node_id", str, path)
        try:
            return parse_node_id(recorded)
        except InvalidNodeId as exc:
            raise IdentityError(f"{path} is damaged: {exc.detail}") from None

    @classmethod
    def load(cls, data_dir: Path, passphrase: str | None = None) -> Identity:
        """Read ``data_dir``'s key; a passphrase given for an unsealed key is ignored."""
        path = data_dir / KEY_FILE
        doc = _read_key_file(path)
        recorded = _field(doc, "node_id", str, path)
        if _field(doc, "sealed", bool, path):
            if passphrase is None:
                raise IdentityError(f"the key in {path} is sealed: a passphrase is needed")
            if _field(doc, "kdf", str, path) != "argon2id":
                raise IdentityError(f"{path} is damaged: unknown kdf {doc['kdf']!r}")
            ops, mem = _field(doc, "opslimit", int, path), _field(doc, "memlimit", int, path)
            try:
                limits = KdfLimits(ops, mem)
            except IdentityError as exc:
                raise IdentityError(f"{path} is damaged: {exc.detail}") from None
            key = _passphrase_key(passphrase, _b64_field(doc, "salt", path), limits)
            sealed_seed = _b64_field(doc, "box", path)
            with _nacl_errors(
                IdentityError, f"cannot unseal {path}: wrong passphrase (or a damaged box)"
            ):
                seed = nacl.secret.SecretBox(key).decrypt(sealed_seed)
        else:
            seed = _b64_field(doc, "seed", path)
        if len(seed) != 32:
            raise IdentityError(f"{path} is damaged: the seed is {len(seed)} bytes, not 32")
        identity = cls.from_seed(seed)
        if identity.node_id != recorded:
            raise IdentityError(f"{path} is damaged: its seed is not the key of {recorded}")
        return identity

    @classmethod
    def load_or_create(
        cls, data_dir: Path, passphrase: str | None = None, *, limits: KdfLimits = INTERACTIVE
    ) -> Identity:
        """The node's key: loaded if ``data_dir`` has one, else made and saved."""
        if (data_dir / KEY_FILE).exists():
            return cls.load(data_dir, passphrase)
        identity = cls.generate()
        identity.save(data_dir, passphrase, limits=limits)
        return identity

    def save(
        self, data_dir: Path, passphrase: str | None = None, *, limits: KdfLimits = INTERACTIVE
    ) -> None:
        """Write the key file, sealed when a passphrase is given; never over another node's key."""
        path = data_dir / KEY_FILE
        if path.exists() and (held := _read_key_file(path).get("node_id")) != self._node_id:
            raise IdentityError(f"{path} holds another key ({held!r}); move it away first")
        if passphrase == "":
            raise IdentityError("an empty passphrase seals nothing; give one or none")
        doc: dict[str, Any] = {"format": _FORMAT, "version": _FILE_VERSION}
        doc |= {"node_id": self._node_id, "sealed": passphrase is not None}
        seed = bytes(self._signing_key)
        if passphrase is None:
            doc["seed"] = _b64(seed)
        else:
            salt = nacl.utils.random(argon2id.SALTBYTES)
            box = nacl.secret.SecretBox(_passphrase_key(passphrase, salt, limits))
            doc |= {"kdf": "argon2id", "salt": _b64(salt), "opslimit": limits.opslimit}
            doc |= {"memlimit": limits.memlimit, "box": _b64(box.encrypt(seed))}
        _write_private(path, (json.dumps(doc, indent=2) + "\n").encode("utf-8"))

    def seal(self, data_dir: Path, passphrase: str, *, limits: KdfLimits = INTERACTIVE) -> None:
        """Re-save the key file sealed with ``passphrase`` (``statebus init --passphrase``)."""
        self.save(data_dir, passphrase, limits=limits)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _read_key_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise IdentityError(f"no identity key at {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise IdentityError(f"cannot read {path}: {exc}") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise IdentityError(f"{path} is damaged: not JSON ({exc.msg})") from exc
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
        raise IdentityError(f"{path} is damaged: not a statebus identity file")
    if doc.get("version") != _FILE_VERSION:
        raise IdentityError(f"{path} has version {doc.get('version')!r}; this statebus reads 1")
    return doc


def _field(doc: dict[str, Any], name: str, kind: type[_T], path: Path) -> _T:
    value = doc.get(name)
    # bool is an int in Python; a JSON true must not pass for a number.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise IdentityError(f"{path} is damaged: {name!r} is missing or not {kind.__name__}")
    return value


def _b64_field(doc: dict[str, Any], name: str, path: Path) -> bytes:
    try:
        return base64.b64decode(_field(doc, name, str, path), validate=True)
    except binascii.Error as exc:
        raise IdentityError(f"{path} is damaged: {name!r} is not base64") from exc


def _write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data``: 0600 from the start, all or nothing, durable on return."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # made 0600
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)  # so the new name survives a crash
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise IdentityError(f"cannot write {path}: {exc.strerror or exc}") from exc


# --- signed log entries --------------------------------------------------------


def _length_prefixed(data: bytes) -> bytes:
    return struct.pack("!I", len(data)) + data


def entry_message(namespace: NodeId, path: str, update: bytes) -> bytes:
    """The bytes an entry's signature covers.

    ``ENTRY_TAG`` (18 bytes, ``b"statebus/entry/v1\\0"``) || the namespace's 32-byte
    public key || u32 big-endian length of the UTF-8 path || the path || the update.
    Every field before the update has a fixed or stated length, so no two
    (namespace, path, update) share a message. ``path`` is the key inside the
    namespace (``/posts/1``), never the ``/~<id>/...`` form. The author is bound by
    the signing key itself; a replayed entry is harmless since Yjs updates are idempotent.
    """
    try:
        encoded_path = path.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidKey("a key path must be valid Unicode text", key=path) from exc
    return ENTRY_TAG + public_key_from_node_id(namespace) + _length_prefixed(encoded_path) + update


def sign_entry(identity: Identity, namespace: NodeId, path: str, update: bytes) -> bytes:
    """``identity``'s signature of one update to ``path`` in ``namespace``."""
    return identity.sign(entry_message(namespace, path, update))


def _verify(key: nacl.signing.VerifyKey, message: bytes, signature: bytes, detail: str) -> None:
    with _nacl_errors(BadSignature, detail):
        key.verify(message, bytes(signature))


def verify_signature(signer: NodeId, message: bytes, signature: bytes) -> None:
    """Raise ``BadSignature`` unless ``signer`` signed ``message`` (as in peer authentication)."""
    key = nacl.signing.VerifyKey(public_key_from_node_id(signer))
    _verify(key, message, signature, f"bad signature by {signer}")


def verify_entry(
    author: NodeId, namespace: NodeId, path: str, update: bytes, signature: bytes
) -> None:
    """Raise ``BadSignature`` unless ``author`` signed this update; ``Verifier`` caches keys."""
    Verifier(cache_size=1).verify_entry(author, namespace, path, update, signature)


@dataclass(frozen=True, slots=True)
class SignedEntry:
    """One update with its envelope, as ``Verifier.verify_many`` takes it."""

    author: NodeId
    namespace: NodeId
    path: str
    update: bytes
    signature: bytes


class Verifier:
    """Checks entry signatures by many authors; one per node, owned by federation.

    Parsed keys sit in a small LRU (a lock guards it: ``verify_many`` runs in a thread).
    """

    def __init__(self, *, cache_size: int = 1024) -> None:
        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        self._cache_size = cache_size
        self._keys: OrderedDict[NodeId, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many authors' keys are cached now."""
        return len(self._keys)

    def _key(self, author: NodeId) -> bytes:
        with self._lock:
            key = self._keys.get(author)
            if key is not None:
                self._keys.move_to_end(author)
                return key
        key = public_key_from_node_id(author)
        with self._lock:
            self._keys[author] = key
            while len(self._keys) > self._cache_size:
                self._keys.popitem(last=False)
        return key

    def verify_entry(
        self, author: NodeId, namespace: NodeId, path: str, update: bytes, signature: bytes
    ) -> None:
        """As the module's ``verify_entry``, with the author's key cached."""
        message = entry_message(namespace, path, update)
        if not verify_detached(bytes(signature), message, self._key(author)):
            raise BadSignature(f"bad signature by {author} on {path!r} in {namespace}")

    def verify_many(self, items: Iterable[SignedEntry]) -> list[bool]:
        """One verdict per entry, in order; run it in a worker thread for big batches
        (libsodium verifies them all with the GIL released once, ``_sodium``, so the
        loop runs on meanwhile)."""
        prepared: list[tuple[bytes, bytes, bytes] | None] = []
        for item in items:
            try:
                message = entry_message(item.namespace, item.path, item.update)
                prepared.append((bytes(item.signature), message, self._key(item.author)))
            except StatebusError:  # a malformed id or path: refused unchecked
                prepared.append(None)
        checked = iter(verify_detached_many([p for p in prepared if p is not None]))
        return [p is not None and next(checked) for p in prepared]


# --- sealing to friends ----------------------------------------------------------


def box_public_key(node_id: NodeId) -> nacl.public.PublicKey:
    """The Curve25519 key that sealed boxes to ``node_id`` are made for."""
    verify_key = nacl.signing.VerifyKey(public_key_from_node_id(node_id))
    with _nacl_errors(InvalidNodeId, f"{node_id} is not a usable Ed25519 key"):
        return verify_key.to_curve25519_public_key()


def seal_to(node_id: NodeId, data: bytes) -> bytes:
    """Encrypt ``data`` so that only ``node_id`` can read it (anonymous sender)."""
    return bytes(nacl.public.SealedBox(box_public_key(node_id)).encrypt(data))


# --- peer authentication -----------------------------------------------------------


def auth_message(
    purpose: str,
    nonce: bytes,
    timestamp: int,
    client_id: NodeId,
    server_id: NodeId,
    extra: bytes = b"",
) -> bytes:
    """The bytes one side signs to prove its id to the other.

    ``AUTH_TAG`` (``b"statebus/auth/v1\\0"``) || u32 length + UTF-8 ``purpose``
    (e.g. ``"client-hello"``, so one side's proof is never the other's) ||
    u32 length + ``nonce`` (16-255 bytes, chosen by the verifier) || ``timestamp``
    (unix seconds, i64 big-endian) || client public key (32) || server public key (32)
    || ``extra`` (the rest, e.g. a channel binding). Freshness and nonce reuse are
    the caller's to check.
    """
    if not 16 <= len(nonce) <= 255:
        raise ProtocolError(f"an auth nonce is 16 to 255 bytes, got {len(nonce)}")
    if not -(2**63) <= timestamp < 2**63:
        raise ProtocolError(f"auth timestamp {timestamp} does not fit in 64 bits")
    return (
        AUTH_TAG
        + _length_prefixed(purpose.encode("utf-8"))
        + _length_prefixed(nonce)
        + struct.pack("!q", timestamp)
        + public_key_from_node_id(client_id)
        + public_key_from_node_id(server_id)
        + extra
    )
