"""The one exception tree of statebus, free of HTTP.

::

    StatebusError
    ├── RequestError            the caller can fix it
    │   ├── InvalidKey          a key outside the grammar
    │   ├── InvalidBody         malformed JSON or Yjs bytes, a non-object value
    │   ├── UnsupportedMediaType
    │   ├── NotAcceptable
    │   ├── PayloadTooLarge     a body or document over its limit
    │   ├── NotAuthenticated    no or wrong credentials
    │   ├── Forbidden           credentials fine, permission missing
    │   ├── NotFound
    │   ├── Conflict            a version the request builds on is unknown or gone
    │   ├── InvalidNodeId       a mistyped node id (checksum, length, alphabet)
    │   └── QuotaExceeded       a speed bump: retry later
    ├── VerificationError       data from a peer refused
    │   ├── BadSignature
    │   ├── UnknownAuthor
    │   └── DecryptionError     wrong key or tampered ciphertext
    ├── PeerError
    │   ├── PeerUnreachable
    │   ├── PeerAuthFailed
    │   └── ProtocolError
    ├── IdentityError           the node's own key: missing, sealed, wrong passphrase
    ├── DataDirError            the data directory cannot be created, read or written
    ├── BackupError             a backup cannot be written or restored
    ├── StartupError            the node cannot start: its port is taken, its app failed
    └── StoreError              the node's own storage failed

Each error carries what its reader needs (``key``, ``peer``, ``limit``); the
server maps families to statuses in one table (``statebus.server._errors``).
"""

from __future__ import annotations


class StatebusError(Exception):
    """Root of every error statebus raises on purpose."""

    code = "statebus_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class RequestError(StatebusError):
    """The request is wrong; the caller can fix it. Nothing was changed."""

    code = "bad_request"


class InvalidKey(RequestError):
    code = "invalid_key"

    def __init__(self, detail: str, *, key: str = "") -> None:
        super().__init__(detail)
        self.key = key


class InvalidBody(RequestError):
    code = "invalid_body"


class UnsupportedMediaType(RequestError):
    code = "unsupported_media_type"


class NotAcceptable(RequestError):
    code = "not_acceptable"


class PayloadTooLarge(RequestError):
    code = "payload_too_large"

    def __init__(self, detail: str, *, limit: int) -> None:
        super().__init__(detail)
        self.limit = limit


class NotAuthenticated(RequestError):
    code = "not_authenticated"


class Forbidden(RequestError):
    code = "forbidden"


class NotFound(RequestError):
    code = "not_found"


class Conflict(RequestError):
    code = "conflict"


class InvalidNodeId(RequestError):
    code = "invalid_node_id"


class QuotaExceeded(RequestError):
    code = "quota_exceeded"

    def __init__(self, detail: str, *, retry_after: float, limit: str = "") -> None:
        super().__init__(detail)
        self.retry_after = retry_after
        self.limit = limit


class VerificationError(StatebusError):
    """Data from a peer was refused and not stored."""

    code = "verification_failed"


class BadSignature(VerificationError):
    code = "bad_signature"


class UnknownAuthor(VerificationError):
    code = "unknown_author"


class DecryptionError(VerificationError):
    code = "decryption_failed"


class PeerError(StatebusError):
    """A peer link failed."""

    code = "peer_error"

    def __init__(self, detail: str, *, peer: str = "") -> None:
        super().__init__(detail)
        self.peer = peer


class PeerUnreachable(PeerError):
    code = "peer_unreachable"


class PeerAuthFailed(PeerError):
    code = "peer_auth_failed"


class ProtocolError(PeerError):
    code = "protocol_error"


class IdentityError(StatebusError):
    """The node's own key pair is missing, sealed without a passphrase, or unreadable."""

    code = "identity_error"


class DataDirError(StatebusError):
    """The data directory cannot be created, read or written."""

    code = "data_dir_error"


class BackupError(StatebusError):
    """A backup cannot be written or restored: wrong passphrase, damaged file, busy target."""

    code = "backup_error"


class StartupError(StatebusError):
    """The node cannot start: its address is in use, or its app failed to open."""

    code = "startup_error"


class StoreError(StatebusError):
    """The node's own storage failed; not the caller's fault."""

    code = "store_error"
