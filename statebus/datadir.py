"""The data directory: where a node keeps its database, keys, token and address.

``DATA/statebus.db`` the op log, ``DATA/identity.key`` the key pair (0600),
``DATA/owner.token`` the owner's bearer token (0600), ``DATA/node.json`` the
address the running node listens on, so that CLI clients find it.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from .errors import DataDirError


class DataDir:
    """Paths and small files of one node's data directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def database(self) -> Path:
        return self.path / "statebus.db"

    @property
    def token_file(self) -> Path:
        return self.path / "owner.token"

    @property
    def address_file(self) -> Path:
        return self.path / "node.json"

    def ensure(self) -> None:
        """Create the directory (0700) if needed and check that it is usable."""
        if self.path.exists() and not self.path.is_dir():
            raise DataDirError(f"data directory {self.path} is not a directory")
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise DataDirError(
                f"cannot create data directory {self.path}: {exc.strerror}"
            ) from None
        if not os.access(self.path, os.R_OK | os.W_OK | os.X_OK):
            raise DataDirError(f"cannot use data directory {self.path}: permission denied")

    def owner_token(self) -> str:
        """The owner's token, made (0600) at first start."""
        try:
            return self.token_file.read_text().strip()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise DataDirError(f"cannot read {self.token_file}: {exc.strerror}") from None
        # Hex, not base64url: a token that starts with "-" is taken for an option by
        # `statebus get --token <token>` (argparse), as a test once found.
        token = secrets.token_hex(32)
        write_private(self.token_file, token + "\n")
        return token

    def read_token(self) -> str | None:
        try:
            return self.token_file.read_text().strip() or None
        except OSError:
            return None

    def write_address(self, url: str) -> None:
        write_private(self.address_file, json.dumps({"url": url, "pid": os.getpid()}) + "\n")

    def clear_address(self) -> None:
        self.address_file.unlink(missing_ok=True)

    def read_address(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.address_file.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and isinstance(data.get("url"), str) else None


def write_private(path: Path, text: str) -> None:
    """Write a small file only its owner can read, atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataDirError(f"cannot write {path}: {exc.strerror}") from None
