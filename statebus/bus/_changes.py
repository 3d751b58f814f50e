"""The changes a write can make: each runs inside one pycrdt transaction.

Every write (PUT JSON, PATCH, raw Yjs, DELETE) is one of these and goes through
``Bus.apply``; nothing here awaits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InvalidBody
from ..values import DocValue


class Change:
    """A write to one key, run inside the key's transaction."""

    def run(self, view: DocValue) -> None:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class PutValue(Change):
    """The value becomes ``value``; only its differences become operations.

    With ``base`` (the value at the version the writer read), only what the
    writer changed from it is applied, so concurrent writers of other fields
    are kept; without it, the differences from the current value.
    """

    value: dict[str, Any]
    base: dict[str, Any] | None = None

    def run(self, view: DocValue) -> None:
        if self.base is None:
            view.assign(self.value)
        else:
            view.merge(self.base, self.value)


@dataclass(frozen=True, slots=True)
class Patch(Change):
    """An RFC 7396 merge patch."""

    patch: dict[str, Any]

    def run(self, view: DocValue) -> None:
        view.patch(self.patch)


@dataclass(frozen=True, slots=True)
class PutUpdate(Change):
    """A raw Yjs v1 update from a Yjs client, merged as is.

    The bus stores these exact bytes (so that parts waiting for missing
    dependencies survive a restart) and undeletes the key if it changed it.
    """

    update: bytes

    def run(self, view: DocValue) -> None:
        try:
            view.doc.apply_update(self.update)
        except ValueError as exc:
            raise InvalidBody(f"the body is not a Yjs v1 update: {exc}") from None


@dataclass(frozen=True, slots=True)
class Delete(Change):
    """Remove the key: every field is deleted and the tombstone is set."""

    def run(self, view: DocValue) -> None:
        view.delete()


@dataclass(frozen=True, slots=True)
class Together(Change):
    """JSON writes to one key that came in the same turn of the loop, run in their
    order in one transaction (so they make one update and one entry: see
    ``Bus._gather``). Each is run on its own: one that raises (none should, their
    values were validated when parsed) does not stop the others; ``failed`` keeps
    what it raised, by position."""

    changes: tuple[PutValue | Patch, ...]
    failed: dict[int, Exception]

    def run(self, view: DocValue) -> None:
        for i, change in enumerate(self.changes):
            try:
                change.run(view)
            except Exception as exc:  # handed to that change's writer alone
                self.failed[i] = exc
