"""Encrypted backups: the whole node (keys, token, op log, ACLs) in one file.

``export`` takes a consistent copy of the database (SQLite's backup API, safe
while the node runs), packs it with the key file and owner token into a tar,
and encrypts the tar as a stream with a key derived from a passphrase
(Argon2id, then libsodium's XChaCha20-Poly1305 secretstream in 64 KiB
chunks), so a large database never sits in memory. ``restore`` decrypts into
a temporary directory beside the target and moves it into place only once
every chunk has authenticated and the database opens: a wrong passphrase, a
truncated or altered file writes nothing.

File layout: ``MAGIC`` ‖ u32 length + JSON header (kdf, salt, limits) ‖
secretstream header ‖ chunks (each u32 length + ciphertext; the last one
carries TAG_FINAL). The JSON header is authenticated as the stream's
additional data on the first chunk.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import struct
import tarfile
import tempfile
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import nacl.bindings as sodium
import nacl.exceptions
import nacl.utils
from nacl.pwhash import argon2id

from .datadir import DataDir
from .errors import BackupError, StatebusError
from .identity import INTERACTIVE, KdfLimits

MAGIC = b"statebus-backup\x00v1\n"
CHUNK = 64 * 1024
_LENGTH = struct.Struct(">I")
_MAX_HEADER = 4096
_ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
_TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
_TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
MEMBERS = ("identity.key", "owner.token", "statebus.db")


def _key(passphrase: str, salt: bytes, limits: KdfLimits) -> bytes:
    if not passphrase:
        raise BackupError("the passphrase is empty")
    password = unicodedata.normalize("NFC", passphrase).encode()
    return bytes(
        argon2id.kdf(
            sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES,
            password,
            salt,
            limits.opslimit,
            limits.memlimit,
        )
    )


def export(
    data_dir: Path, target: Path, passphrase: str, *, limits: KdfLimits = INTERACTIVE
) -> int:
    """Write an encrypted backup of ``data_dir`` to ``target``; return its size in bytes."""
    datadir = DataDir(data_dir)
    for name in ("identity.key", "owner.token"):
        if not (data_dir / name).is_file():
            raise BackupError(f"{data_dir} holds no node ({name} is missing)")
    if target.exists():
        raise BackupError(f"{target} exists already; choose a new file")
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".statebus-export-") as scratch:
        copy = Path(scratch) / "statebus.db"
        _copy_database(datadir.database, copy)
        tar_path = Path(scratch) / "node.tar"
        with tarfile.open(tar_path, "w") as tar:
            tar.add(data_dir / "identity.key", "identity.key")
            tar.add(data_dir / "owner.token", "owner.token")
            tar.add(copy, "statebus.db")
        partial = target.with_name(f".{target.name}.partial")
        try:
            with tar_path.open("rb") as plain, partial.open("wb") as sealed:
                _encrypt(plain, sealed, passphrase, limits)
                sealed.flush()
                os.fsync(sealed.fileno())
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return target.stat().st_size


def _copy_database(source: Path, copy: Path) -> None:
    """A consistent copy, even while the node writes (SQLite's online backup)."""
    if not source.exists():
        sqlite3.connect(copy).close()  # a node that never wrote: an empty log
        return
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        dst = sqlite3.connect(copy)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot read the database {source}: {exc}") from None


def _encrypt(plain: IO[bytes], sealed: IO[bytes], passphrase: str, limits: KdfLimits) -> None:
    salt = nacl.utils.random(argon2id.SALTBYTES)
    header = json.dumps(
        {
            "kdf": "argon2id",
            "salt": base64.b64encode(salt).decode(),
            "opslimit": limits.opslimit,
            "memlimit": limits.memlimit,
            "cipher": "xchacha20poly1305-secretstream",
            "chunk": CHUNK,
        }
    ).encode()
    key = _key(passphrase, salt, limits)
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    stream_header = sodium.crypto_secretstream_xchacha20poly1305_init_push(state, key)
    sealed.write(MAGIC + _LENGTH.pack(len(header)) + header + stream_header)
    aad: bytes | None = header
    chunk = plain.read(CHUNK)
    while True:
        following = plain.read(CHUNK)
        tag = _TAG_FINAL if not following else _TAG_MESSAGE
        box = sodium.crypto_secretstream_xchacha20poly1305_push(state, chunk, aad, tag)
        sealed.write(_LENGTH.pack(len(box)) + box)
        aad = None
        if tag == _TAG_FINAL:
            return
        chunk = following


def _decrypt(sealed: IO[bytes], passphrase: str) -> Iterator[bytes]:
    """The plaintext chunks; raises BackupError before yielding anything unauthenticated."""
    if sealed.read(len(MAGIC)) != MAGIC:
        raise BackupError("this is not a statebus backup (or not this version of one)")
    header = _read_framed(sealed, _MAX_HEADER, "header")
    try:
        meta: dict[str, Any] = json.loads(header)
        salt = base64.b64decode(meta["salt"])
        limits = KdfLimits(int(meta["opslimit"]), int(meta["memlimit"]))
    except (ValueError, KeyError, TypeError, StatebusError):
        raise BackupError("the backup's header is damaged") from None
    key = _key(passphrase, salt, limits)
    stream_header = sealed.read(sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES)
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    try:
        sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, stream_header, key)
    except (nacl.exceptions.CryptoError, ValueError):
        raise BackupError("the backup is damaged (truncated header)") from None
    aad: bytes | None = header
    first = True
    while True:
        box = _read_framed(sealed, CHUNK + _ABYTES, "chunk")
        try:
            chunk, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(state, box, aad)
        except (nacl.exceptions.CryptoError, ValueError):
            if first:
                raise BackupError("wrong passphrase, or the backup is damaged") from None
            raise BackupError("the backup is damaged (a chunk fails to authenticate)") from None
        first = False
        aad = None
        yield chunk
        if tag == _TAG_FINAL:
            if sealed.read(1):
                raise BackupError("the backup is damaged (data after its end)")
            return


def _read_framed(source: IO[bytes], limit: int, what: str) -> bytes:
    prefix = source.read(_LENGTH.size)
    if len(prefix) < _LENGTH.size:
        raise BackupError(f"the backup is damaged (truncated {what})")
    (length,) = _LENGTH.unpack(prefix)
    if length > limit:
        raise BackupError(f"the backup is damaged (a {what} of {length} bytes)")
    data = source.read(length)
    if len(data) < length:
        raise BackupError(f"the backup is damaged (truncated {what})")
    return data


def restore(source: Path, data_dir: Path, passphrase: str) -> list[str]:
    """Restore a backup into a new or empty ``data_dir``; return the names restored."""
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise BackupError(f"{data_dir} is not empty; restore into a new data directory")
    try:
        sealed_file = source.open("rb")
    except OSError as exc:
        raise BackupError(f"cannot read {source}: {exc.strerror}") from None
    parent = data_dir.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=parent, prefix=".statebus-import-"))
    try:
        tar_path = scratch / "node.tar"
        with sealed_file, tar_path.open("wb") as plain:
            for chunk in _decrypt(sealed_file, passphrase):
                plain.write(chunk)
        unpacked = scratch / "data"
        unpacked.mkdir(mode=0o700)
        names = _unpack(tar_path, unpacked)
        _check_database(unpacked / "statebus.db")
        for name in ("identity.key", "owner.token"):
            (unpacked / name).chmod(0o600)
        if data_dir.exists():
            data_dir.rmdir()
        os.replace(unpacked, data_dir)
        return names
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _unpack(tar_path: Path, into: Path) -> list[str]:
    try:
        with tarfile.open(tar_path, "r") as tar:
            members = tar.getmembers()
            names = sorted(m.name for m in members)
            if names != sorted(MEMBERS) or not all(m.isfile() for m in members):
                raise BackupError(f"the backup holds {names}, not a statebus node")
            tar.extractall(into, filter="data")
    except tarfile.TarError as exc:
        raise BackupError(f"the backup is damaged ({exc})") from None
    return names


def _check_database(path: Path) -> None:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            (result,) = conn.execute("PRAGMA integrity_check").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise BackupError(f"the backup's database does not open: {exc}") from None
    if result != "ok":
        raise BackupError(f"the backup's database is damaged: {result}")
